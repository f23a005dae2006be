//! Matching every imported case list against the contact log: the `check` command, the daemon's
//! matching task and the API all run this one pipeline.
//!
//! store read-out → [`ObservationIndex`] → Bluezone and GAEN matchers → scoring → exposures
//! (persisted, one row per case key and UTC day).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bluezone_protocol::bluezone::f0::parse_f0_revocations;
use bluezone_protocol::bluezone::F0Entry;
use bluezone_protocol::gaen::revision::{revise, PublishedKey};
use bluezone_protocol::gaen::Enin;
use bluezone_protocol::matching::gaen::{match_keys, GaenKey};
use bluezone_protocol::matching::score::{Infectiousness, ScoredReportType};
use bluezone_protocol::matching::{
    bluezone::match_f0, score, CaseInfo, Exposure, ExposureWindow, ObservationIndex, ScoreContext,
};
use rand::Rng;
use serde::Serialize;

use crate::caselist::{self, CaseList, Limits};
use crate::config::Config;
use crate::store::{DeliveryState, ExposureKey, ReadOut, Store};

/// One exposure as reported by `check --json`, the API and the hook.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExposureReport {
    pub protocol: &'static str,
    /// Lower-case hex of the F0 daily key or the TEK (published material, not a secret of ours).
    pub case_key: String,
    pub day: i64,
    pub first_seen: i64,
    pub last_seen: i64,
    pub sightings: usize,
    pub distinct_ids: usize,
    pub duration_s: i64,
    pub min_attenuation_db: i32,
    pub typical_attenuation_db: i32,
    pub weighted_minutes: f64,
    pub notify: bool,
    /// The case list it came from.
    pub case_list: i64,
    /// The report type and infectiousness that were weighed (`docs/scoring.md`).
    pub report_type: ScoredReportType,
    pub infectiousness: Infectiousness,
    /// Seconds per attenuation bucket: immediate, near, medium, other.
    pub seconds_by_bucket: [i64; 4],
    /// The day's exposure windows.
    pub windows: Vec<ExposureWindow>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    pub exposures: Vec<ExposureReport>,
    pub keys_checked: u64,
    pub ids_derived: u64,
    pub sightings: usize,
    pub distinct_ids: usize,
    /// Sealed sighting chunks that failed to open and were skipped.
    pub corrupt_chunks: usize,
    #[serde(skip)]
    pub match_time: Duration,
    /// Exposures (per case key and day) whose notification became due in this run.
    #[serde(skip)]
    pub new_exposures: Vec<ExposureReport>,
    /// Case keys revoked by a publication, as (protocol, lower-case hex): GAEN keys published
    /// with report type REVOKED, and F0 daily keys in a list's `revoked` array. [`persist`]
    /// withdraws their exposures.
    #[serde(skip)]
    pub revoked_keys: Vec<(&'static str, String)>,
    /// Exposures withdrawn in this run.
    pub withdrawn: usize,
}

impl CheckReport {
    /// Keys (F0 records + GAEN keys) matched per second in the last run.
    pub fn keys_per_second(&self) -> f64 {
        let s = self.match_time.as_secs_f64();
        if s > 0.0 {
            self.keys_checked as f64 / s
        } else {
            0.0
        }
    }
}

struct Cases {
    f0: Vec<F0Entry>,
    f0_list: Vec<i64>,
    gaen: Vec<GaenKey>,
    gaen_info: Vec<CaseInfo>,
    gaen_list: Vec<i64>,
    /// (protocol, lower-case hex key) that some publication revoked: their exposures are
    /// withdrawn.
    revoked: Vec<(&'static str, String)>,
}

/// Reads every stored case list. The lists were verified when imported; duplicates across lists
/// (the same key in several daily files) are matched once. GAEN keys are resolved across
/// publications as the reference server defines revisions ([`revise`]): the latest publication
/// of a key wins, and a revoked key matches nothing and withdraws what it matched before.
/// F0 lists may carry a revocation list (`revoked`, daily keys): an entry of that key from an
/// earlier list matches nothing and its exposures are withdrawn; a later list may publish the
/// key again.
fn load_cases(store: &Store) -> Result<Cases> {
    let mut cases = Cases {
        f0: Vec::new(),
        f0_list: Vec::new(),
        gaen: Vec::new(),
        gaen_info: Vec::new(),
        gaen_list: Vec::new(),
        revoked: Vec::new(),
    };
    let mut published: Vec<PublishedKey> = Vec::new();
    // Entry → its index in `cases.f0`; the latest list holding an entry is the one recorded.
    let mut seen_f0: HashMap<([u8; 32], i64, i64), usize> = HashMap::new();
    // Daily key → the list that revoked it last.
    let mut revoked_f0: HashMap<[u8; 32], i64> = HashMap::new();
    let limits = Limits::default();
    for info in store.case_lists()? {
        let bytes = store
            .case_list_bytes(info.id)
            .with_context(|| format!("reading case list {}", info.id))?;
        let list = caselist::parse(&bytes, &[], &limits)
            .with_context(|| format!("stored case list {}", info.id))?;
        match list {
            CaseList::BluezoneF0(l) => {
                for k in parse_f0_revocations(&bytes, limits.f0.max_entries)? {
                    revoked_f0.insert(*k.as_bytes(), info.id);
                }
                for e in l.list.entries {
                    let at = (*e.daily_key.as_bytes(), e.time_start, e.time_end);
                    match seen_f0.get(&at) {
                        Some(&i) => cases.f0_list[i] = cases.f0_list[i].max(info.id),
                        None => {
                            seen_f0.insert(at, cases.f0.len());
                            cases.f0.push(e);
                            cases.f0_list.push(info.id);
                        }
                    }
                }
            }
            // Case-list ids grow with import order.
            CaseList::GaenExport(x) => {
                published.extend(PublishedKey::all_of(&x.file, info.id as u64));
            }
        }
    }
    if !revoked_f0.is_empty() {
        // An entry published only before its key's revocation matches nothing.
        let mut keep = Vec::with_capacity(cases.f0.len());
        let mut keep_list = Vec::with_capacity(cases.f0.len());
        for (e, list) in cases.f0.drain(..).zip(cases.f0_list.drain(..)) {
            if revoked_f0
                .get(e.daily_key.as_bytes())
                .is_some_and(|&by| list < by)
            {
                continue;
            }
            keep.push(e);
            keep_list.push(list);
        }
        cases.f0 = keep;
        cases.f0_list = keep_list;
        let live: HashSet<[u8; 32]> = cases.f0.iter().map(|e| *e.daily_key.as_bytes()).collect();
        cases.revoked.extend(
            revoked_f0
                .keys()
                .filter(|k| !live.contains(*k))
                .map(|k| ("bluezone", hex::encode(k))),
        );
    }
    let revised = revise(published);
    for k in revised.keys {
        cases.gaen.push(GaenKey {
            tek: k.tek.clone(),
            rolling_start: Enin(k.rolling_start),
            rolling_period: k.rolling_period,
            revoked: false,
        });
        cases.gaen_info.push(CaseInfo {
            report_type: k.report_type,
            days_since_onset: k.days_since_onset,
        });
        cases.gaen_list.push(k.publication.import_order as i64);
    }
    cases
        .revoked
        .extend(revised.revoked.iter().map(|k| ("gaen", k.tek.to_hex())));
    Ok(cases)
}

/// What matching needs from the store, read in one go.
pub struct CheckInput {
    cases: Cases,
    readout: ReadOut,
}

/// Reads every case list and the whole retained log (needs the store).
pub fn load(store: &Store) -> Result<CheckInput> {
    let cases = load_cases(store)?;
    let days = store.sighting_days()?;
    let readout = match (days.first(), days.last()) {
        (Some(&a), Some(&b)) => store.sightings_in_days(a, b)?,
        _ => Default::default(),
    };
    Ok(CheckInput { cases, readout })
}

/// Matches and scores (no store: the daemon runs this without holding the store, so sightings
/// keep being written while millions of keys are checked).
pub fn compute(input: &CheckInput, cfg: &Config) -> CheckReport {
    let cases = &input.cases;
    let started = Instant::now();
    let index = ObservationIndex::build(&input.readout.sightings, rand::thread_rng().gen());
    let (bz_hits, bz_stats) = match_f0(&cases.f0, &index, &cfg.matching);
    let (ga_hits, ga_stats) = match_keys(&cases.gaen, &index, &cfg.matching);
    let ctx = ScoreContext {
        rssi_correction_db: i32::from(cfg.radio.rssi_correction_db),
        // Not applied yet: `scoring.days_since_exposure_threshold` needs the day of the run.
        today: None,
    };
    let bz_info = vec![CaseInfo::bluezone(&cfg.scoring); cases.f0.len()];
    let bz = score(
        &bz_hits,
        index.bluezone.observations(),
        &bz_info,
        &cfg.scoring,
        &ctx,
    );
    let ga = score(
        &ga_hits,
        index.gaen.observations(),
        &cases.gaen_info,
        &cfg.scoring,
        &ctx,
    );
    let match_time = started.elapsed();

    let mut exposures: Vec<ExposureReport> = bz
        .iter()
        .map(|e| {
            let entry = &cases.f0[e.case as usize];
            report(
                "bluezone",
                entry.daily_key.to_hex(),
                cases.f0_list[e.case as usize],
                e,
            )
        })
        .chain(ga.iter().map(|e| {
            let key = &cases.gaen[e.case as usize];
            report(
                "gaen",
                key.tek.to_hex(),
                cases.gaen_list[e.case as usize],
                e,
            )
        }))
        .collect();
    exposures.sort_by(|a, b| {
        (a.first_seen, a.protocol, &a.case_key).cmp(&(b.first_seen, b.protocol, &b.case_key))
    });
    let stats = bz_stats + ga_stats;
    CheckReport {
        exposures,
        keys_checked: stats.keys_checked,
        ids_derived: stats.ids_derived,
        sightings: index.sightings(),
        distinct_ids: index.distinct_ids(),
        corrupt_chunks: input.readout.corrupt,
        match_time,
        new_exposures: Vec::new(),
        revoked_keys: cases.revoked.clone(),
        withdrawn: 0,
    }
}

/// Stores the report's exposures (typed records; the store seals them with their notification
/// state). Those whose notification became due now (first stored notifying, or crossing the
/// threshold now) become `new_exposures`, each logged as a warning without key material; the
/// daemon's notification task delivers them.
pub fn persist(store: &mut Store, report: &mut CheckReport) -> Result<()> {
    report.new_exposures.clear();
    report.withdrawn = 0;
    // Only revoked keys that have a live exposure cost a withdrawal (each reads the exposures).
    let live: HashSet<(String, String)> = if report.revoked_keys.is_empty() {
        HashSet::new()
    } else {
        store
            .exposures::<serde::de::IgnoredAny>()?
            .exposures
            .iter()
            .filter(|e| e.delivery.state != DeliveryState::Withdrawn)
            .map(|e| (e.key.protocol.clone(), e.key.case_key.to_ascii_lowercase()))
            .collect()
    };
    for (protocol, key) in &report.revoked_keys {
        if !live.contains(&(protocol.to_string(), key.clone())) {
            continue;
        }
        let reason = if *protocol == "gaen" {
            "the key was revoked (report type REVOKED)"
        } else {
            "the key was revoked (F0 revocation list)"
        };
        let n = store.withdraw_exposure(protocol, key, reason)?;
        if n > 0 {
            tracing::warn!(exposures = n, "exposure withdrawn: its key was revoked");
        }
        report.withdrawn += n;
    }
    for e in &report.exposures {
        let key = ExposureKey {
            protocol: e.protocol.to_string(),
            case_key: e.case_key.clone(),
            day: e.day,
        };
        let outcome = store.upsert_exposure(&key, e.notify, e)?;
        if outcome.became_pending {
            tracing::warn!(
                id = %outcome.id,
                protocol = e.protocol,
                day = e.day,
                minutes = e.weighted_minutes,
                "exposure notification"
            );
            report.new_exposures.push(e.clone());
        }
    }
    Ok(())
}

/// Runs the whole match and stores new exposures ([`load`], [`compute`], [`persist`]).
pub fn run_check(store: &mut Store, cfg: &Config) -> Result<CheckReport> {
    let input = load(store)?;
    let mut report = compute(&input, cfg);
    persist(store, &mut report)?;
    Ok(report)
}

fn report(protocol: &'static str, case_key: String, list: i64, e: &Exposure) -> ExposureReport {
    ExposureReport {
        protocol,
        case_key,
        day: e.day,
        first_seen: e.first_seen,
        last_seen: e.last_seen,
        sightings: e.sightings,
        distinct_ids: e.distinct_ids,
        duration_s: e.duration_s,
        min_attenuation_db: e.min_attenuation_db,
        typical_attenuation_db: e.typical_attenuation_db,
        weighted_minutes: (e.weighted_minutes * 100.0).round() / 100.0,
        notify: e.notify,
        case_list: list,
        report_type: e.report_type,
        infectiousness: e.infectiousness,
        seconds_by_bucket: e.seconds_by_bucket,
        windows: e.window_details.clone(),
    }
}
