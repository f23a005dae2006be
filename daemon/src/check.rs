//! Matching every imported case list against the contact log: the `check` command, the daemon's
//! matching task and the API all run this one pipeline.
//!
//! store read-out → [`ObservationIndex`] → Bluezone and GAEN matchers → scoring → exposures
//! (persisted, one row per case key and UTC day).

pub mod incremental;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bluezone_protocol::bluezone::{F0Entry, SlotsPerDay};
use bluezone_protocol::gaen::export::ReportType;
use bluezone_protocol::gaen::Enin;
use bluezone_protocol::ids::DailyKey;
use bluezone_protocol::matching::gaen::{match_keys, validity, KeyRef, KeySource};
use bluezone_protocol::matching::{
    bluezone::{match_f0, match_f0_resuming, ChainCache},
    score, CaseInfo, Exposure, Hit, ObservationIndex, ScoreContext,
};
use rand::Rng;
use serde::Serialize;

use crate::caselist::compact::{self, ListKeys, Records};
use crate::caselist::{self, Limits};
use crate::config::Config;
use crate::store::{DeliveryState, ExposureRecord, ReadOut, Store, StoredCaseList, StoredExposure};

#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    /// This run's exposures as stored by [`persist`] (each with its `id` and notification
    /// `state`): what `check --json` prints, in the shape of `GET /v1/exposures` and the hook.
    pub exposures: Vec<StoredExposure>,
    pub keys_checked: u64,
    pub ids_derived: u64,
    pub sightings: usize,
    pub distinct_ids: usize,
    /// Sealed sighting chunks that failed to open and were skipped.
    pub corrupt_chunks: usize,
    #[serde(skip)]
    pub match_time: Duration,
    /// What [`compute`] found, for [`persist`] to store.
    #[serde(skip)]
    pub matched: Vec<ExposureRecord>,
    /// Exposures (per case key and day) whose notification became due in this run.
    #[serde(skip)]
    pub new_exposures: Vec<StoredExposure>,
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

/// The effective case keys, ready for the matchers (`f0_list` runs beside `f0`).
#[derive(Clone, Default)]
pub(crate) struct Cases {
    f0: Vec<F0Entry>,
    f0_list: Vec<i64>,
    gaen: GaenCases,
    /// (protocol, lower-case hex key) that some publication revoked: their exposures are
    /// withdrawn.
    revoked: Vec<(&'static str, String)>,
}

impl Cases {
    /// Case keys (F0 entries, GAEN keys) in all.
    pub(crate) fn len(&self) -> usize {
        self.f0.len() + self.gaen.len()
    }

    /// The entries and keys for which `keep(list, [first, last] unix seconds in which a
    /// sighting can count)` holds; no revocations.
    pub(crate) fn select(&self, skew_s: i64, keep: impl Fn(i64, (i64, i64)) -> bool) -> Cases {
        let mut out = self.select_f0(skew_s, &keep);
        out.gaen = self.gaen.select(|list, k| keep(list, k.validity()));
        out
    }

    /// The entries and keys of the lists for which `is_new(list)` holds, and those whose key
    /// is in `held`, whatever their list; no revocations.
    pub(crate) fn select_new_or_held(
        &self,
        is_new: impl Fn(i64) -> bool,
        held: &ListKeys,
    ) -> Cases {
        let mut out = Cases::default();
        for (e, &list) in self.f0.iter().zip(&self.f0_list) {
            if is_new(list) || held.has_f0(e.daily_key.as_bytes()) {
                out.f0.push(e.clone());
                out.f0_list.push(list);
            }
        }
        out.gaen = self
            .gaen
            .select(|list, k| is_new(list) || held.has_gaen(k.tek));
        out
    }

    /// The records this resolution was made from (every record of its lists).
    pub(crate) fn records(&self) -> &Records {
        &self.gaen.records
    }

    /// The keys the lists `lists` (ids, ascending) held, as this resolution read them (it
    /// keeps every record of the lists it resolved, superseded ones included).
    pub(crate) fn keys_of_lists(&self, lists: &[i64]) -> ListKeys {
        self.gaen.records.keys_of_lists(lists)
    }

    /// The entries and keys of the lists for which `keep_list(list)` holds whose validity
    /// overlaps `[lo, hi]` (unix seconds); no revocations. With the GAEN keys indexed by
    /// [`index_validity`](Cases::index_validity), only the keys near that span are read (the
    /// daemon selects for each batch of new sightings, from up to millions of keys).
    pub(crate) fn select_overlapping(
        &self,
        skew_s: i64,
        (lo, hi): (i64, i64),
        keep_list: impl Fn(i64) -> bool,
    ) -> Cases {
        let keep = |list, (first, last): (i64, i64)| keep_list(list) && first <= hi && last >= lo;
        let mut out = self.select_f0(skew_s, &keep);
        out.gaen = match &self.gaen.by_start {
            Some(ix) => self.gaen.select_near(ix, (lo, hi), keep_list),
            None => self.gaen.select(|list, k| keep(list, k.validity())),
        };
        out
    }

    /// Indexes the GAEN keys by validity start for [`select_overlapping`](Cases::select_overlapping):
    /// one sort, for a selection set the daemon keeps.
    pub(crate) fn index_validity(&mut self) {
        self.gaen.index_validity();
    }

    /// The F0 entries for which `keep` holds (as [`select`](Cases::select)), nothing else.
    fn select_f0(&self, skew_s: i64, keep: &impl Fn(i64, (i64, i64)) -> bool) -> Cases {
        let mut out = Cases::default();
        for (e, &list) in self.f0.iter().zip(&self.f0_list) {
            if keep(list, (e.time_start - skew_s, e.time_end + skew_s)) {
                out.f0.push(e.clone());
                out.f0_list.push(list);
            }
        }
        out
    }

    /// The entries and keys for which `keep(protocol, lower-case hex key)` holds.
    pub(crate) fn select_keys(&self, keep: impl Fn(&str, &str) -> bool) -> Cases {
        let mut out = Cases::default();
        for (e, &list) in self.f0.iter().zip(&self.f0_list) {
            if keep("bluezone", &e.daily_key.to_hex()) {
                out.f0.push(e.clone());
                out.f0_list.push(list);
            }
        }
        out.gaen = self.gaen.select(|_, k| keep("gaen", &hex::encode(k.tek)));
        out
    }
}

/// The effective GAEN keys: the positions of their records in the opened compact case lists,
/// which every selection shares. A million keys are read where they lie, never copied into
/// per-key structs (that copy, and dropping a million zeroizing keys, cost as much as opening
/// the lists).
#[derive(Clone, Default)]
pub(crate) struct GaenCases {
    records: Arc<Records>,
    /// Record positions (in `records`), in matching order.
    pick: Vec<u32>,
    /// `pick` by validity start, if [`index_validity`](GaenCases::index_validity) built it.
    by_start: Option<Arc<ValidityIndex>>,
}

/// Keys by validity start: (rolling start, rolling period, position in `pick`), by rolling
/// start (a key's validity starts at a fixed offset before its rolling start), and the
/// longest validity (`last - first`, seconds) of any of them, so that the keys overlapping a
/// span `[lo, hi]` are among those whose validity starts in `[lo - longest, hi]`; their ends
/// are checked here, without reading the keys. 12 bytes a key.
struct ValidityIndex {
    starts: Vec<(u32, u32, u32)>,
    longest: i64,
}

impl GaenCases {
    /// What the list says of key `i` for scoring.
    fn info(&self, i: usize) -> CaseInfo {
        let k = self.records.gaen(self.pick[i] as usize);
        CaseInfo {
            report_type: ReportType::from_i32(k.report_type),
            days_since_onset: k.days_since_onset,
        }
    }

    /// The case list (id) key `i` was published by.
    #[inline]
    fn list(&self, i: usize) -> i64 {
        self.records.gaen_list(self.pick[i] as usize)
    }

    /// The keys for which `keep(list, key)` holds, sharing the records.
    fn select(&self, keep: impl Fn(i64, KeyRef<'_>) -> bool) -> GaenCases {
        GaenCases {
            records: Arc::clone(&self.records),
            pick: self
                .records
                .gaen_filter(&self.pick, |k, list| keep(list, k)),
            by_start: None,
        }
    }

    /// The keys of the lists for which `keep_list(list)` holds whose validity overlaps
    /// `[lo, hi]`, reading only the index: which keys can overlap, and their validity, come from
    /// `ix`, and a key's list from its position. No key is read (the keys the daemon selects
    /// for a batch of sightings lie all over a million-key list: a cache miss each).
    fn select_near(
        &self,
        ix: &ValidityIndex,
        (lo, hi): (i64, i64),
        keep_list: impl Fn(i64) -> bool,
    ) -> GaenCases {
        let first = |&(start, period, _): &(u32, u32, u32)| validity(Enin(start), period).0;
        let from_first = lo.saturating_sub(ix.longest);
        let from = ix.starts.partition_point(|e| first(e) < from_first);
        let to = ix.starts.partition_point(|e| first(e) <= hi);
        // On the day after a list, the day-old keys start within `longest` of every span,
        // though only the first two hours' spans reach their ends.
        let mut near: Vec<u32> = ix.starts[from..to.max(from)]
            .iter()
            .filter(|&&(start, period, _)| validity(Enin(start), period).1 >= lo)
            .map(|&(_, _, i)| i)
            .collect();
        // Positions in `pick`, ascending: the selection keeps the matching order.
        near.sort_unstable();
        let pick = near
            .into_iter()
            .map(|i| self.pick[i as usize])
            .filter(|&p| keep_list(self.records.gaen_list(p as usize)))
            .collect();
        GaenCases {
            records: Arc::clone(&self.records),
            pick,
            by_start: None,
        }
    }

    fn index_validity(&mut self) {
        let mut longest = 0;
        let entries: Vec<(u32, u32, u32)> = (0..self.pick.len())
            .map(|i| {
                let k = self.key(i);
                let (first, last) = k.validity();
                longest = longest.max(last - first);
                (k.rolling_start.0, k.rolling_period, i as u32)
            })
            .collect();
        let starts = by_start(entries);
        self.by_start = Some(Arc::new(ValidityIndex { starts, longest }));
    }
}

/// `entries` (rolling start, period, position) ordered by rolling start, which is all
/// [`GaenCases::select_near`] needs (a key's validity starts a fixed time before its rolling
/// start). Weeks of keys start in a few thousand intervals: a counting sort, one pass, when
/// their range is small beside their number; a comparison sort otherwise.
fn by_start(mut entries: Vec<(u32, u32, u32)>) -> Vec<(u32, u32, u32)> {
    let (Some(lo), Some(hi)) = (
        entries.iter().map(|e| e.0).min(),
        entries.iter().map(|e| e.0).max(),
    ) else {
        return entries;
    };
    let range = (hi - lo) as usize + 1;
    if range > entries.len().max(1 << 16) {
        entries.sort_unstable();
        return entries;
    }
    let mut at = vec![0usize; range + 1];
    for e in &entries {
        at[(e.0 - lo) as usize + 1] += 1;
    }
    for i in 1..at.len() {
        at[i] += at[i - 1];
    }
    let mut out = vec![(0, 0, 0); entries.len()];
    for e in entries {
        let slot = &mut at[(e.0 - lo) as usize];
        out[*slot] = e;
        *slot += 1;
    }
    out
}

impl KeySource for GaenCases {
    #[inline]
    fn len(&self) -> usize {
        self.pick.len()
    }
    #[inline]
    fn key(&self, i: usize) -> KeyRef<'_> {
        self.records.gaen_ref(self.pick[i] as usize)
    }
    #[inline]
    fn prefetch(&self, i: usize) {
        if let Some(&p) = self.pick.get(i) {
            self.records.gaen_prefetch(p as usize);
        }
    }
}

/// Reads the compact form of every stored case list (`caselist::compact`; a list stored
/// without one, because its original did not parse, is parsed here and fails as before).
fn load_records(store: &Store) -> Result<Records> {
    read_lists(store, &store.case_lists()?, Records::default())
}

/// The records of the stored lists `lists` (by id), taking those of the lists `have` holds
/// (`have_lists`: their ids and content hashes) from it and reading only the others: the
/// daemon's matcher, when lists come and go, reads only the new ones.
pub(crate) fn reload_records(
    store: &Store,
    lists: &[StoredCaseList],
    have: &Records,
    have_lists: &[ListId],
) -> Result<Records> {
    let held = |l: &StoredCaseList| {
        have_lists
            .binary_search_by(|(id, _)| id.cmp(&l.id))
            .is_ok_and(|i| have_lists[i].1 == l.content_hash)
    };
    let kept: Vec<i64> = lists.iter().filter(|l| held(l)).map(|l| l.id).collect();
    let new: Vec<StoredCaseList> = lists.iter().filter(|l| !held(l)).cloned().collect();
    // New lists have higher ids than every kept one (ids are given in order), so appending
    // them keeps the records in list order, which resolution's ties follow.
    if matches!((kept.last(), new.first()), (Some(&k), Some(n)) if k > n.id) {
        return read_lists(store, lists, Records::default());
    }
    let records = have.retain_lists(|id| kept.binary_search(&id).is_ok());
    read_lists(store, &new, records)
}

/// A case list as the matcher knows it: id and content hash (an id can come again, for another
/// list, once the newest list was deleted).
pub(crate) type ListId = (i64, String);

/// Appends the records of `lists` (ascending ids) to `records`.
fn read_lists(store: &Store, lists: &[StoredCaseList], mut records: Records) -> Result<Records> {
    for info in lists {
        let compact = store
            .case_list_compact(info.id)
            .with_context(|| format!("reading case list {}", info.id))?;
        let compact = match compact {
            Some(c) => c,
            None => {
                let bytes = store
                    .case_list_bytes(info.id)
                    .with_context(|| format!("reading case list {}", info.id))?;
                let list = caselist::parse(&bytes, &[], &Limits::default())
                    .with_context(|| format!("stored case list {}", info.id))?;
                compact::encode(&list, &bytes)
            }
        };
        compact::decode_into(compact, info.id, &mut records)
            .with_context(|| format!("stored case list {}", info.id))?;
    }
    Ok(records)
}

/// Reads every stored case list and resolves it to the effective case keys. The lists were
/// verified when imported; duplicates across lists (the same key in several daily files) are
/// matched once, as published by the first list holding them. GAEN keys are resolved across
/// publications as the reference server defines revisions
/// ([`revise`](bluezone_protocol::gaen::revision::revise)): the latest publication of a key
/// wins, and a revoked key matches nothing and withdraws what it matched before.
pub(crate) fn load_cases(store: &Store) -> Result<Cases> {
    Ok(resolve(&Arc::new(load_records(store)?)))
}

/// De-duplication and revision by sorting (keys are random: no hashing needed), in one pass
/// when the records are already in key order (as a single export from a server is).
pub(crate) fn resolve(r: &Arc<Records>) -> Cases {
    let mut cases = Cases::default();

    // F0: the first occurrence of each (daily key, start, end), in list order, with the latest
    // list that published it (a list after a revocation publishes the key again).
    let f0_id = |i: u32| {
        let e = &r.f0[i as usize];
        (e.key, e.time_start, e.time_end)
    };
    let mut order: Vec<u32> = (0..r.f0.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| f0_id(a).cmp(&f0_id(b)).then(a.cmp(&b)));
    let mut firsts: Vec<(u32, i64)> = Vec::with_capacity(order.len());
    for &i in &order {
        let list = r.f0[i as usize].list;
        match firsts.last_mut() {
            Some((first, latest)) if f0_id(*first) == f0_id(i) => *latest = (*latest).max(list),
            _ => firsts.push((i, list)),
        }
    }
    firsts.sort_unstable();
    // Daily key → the latest F0 list that revoked it.
    let mut revoked_by: Vec<([u8; 32], i64)> = r.f0_revoked.clone();
    revoked_by.sort_unstable();
    let revoked_at = |key: &[u8; 32]| {
        let end = revoked_by.partition_point(|(k, _)| k <= key);
        (end > 0 && &revoked_by[end - 1].0 == key).then(|| revoked_by[end - 1].1)
    };
    for (i, latest) in firsts {
        let e = &r.f0[i as usize];
        // An entry published only before its key's revocation matches nothing.
        if revoked_at(&e.key).is_some_and(|by| latest <= by) {
            continue;
        }
        let Ok(max) = SlotsPerDay::new(i64::from(e.max)) else {
            continue; // checked at import; a compact form is never written with another value
        };
        cases.f0.push(F0Entry {
            daily_key: DailyKey::from_bytes(e.key),
            time_start: e.time_start,
            time_end: e.time_end,
            max,
        });
        cases.f0_list.push(e.list);
    }
    if !revoked_by.is_empty() {
        let mut live: Vec<[u8; 32]> = cases.f0.iter().map(|e| *e.daily_key.as_bytes()).collect();
        live.sort_unstable();
        revoked_by.dedup_by(|b, a| a.0 == b.0);
        for (k, _) in &revoked_by {
            if live.binary_search(k).is_err() {
                cases.revoked.push(("bluezone", hex::encode(k)));
            }
        }
    }

    // GAEN: per (TEK, rolling start) the winning publication: REVOKED first, then the
    // latest (export end, import order, revised entry); of equals, the first seen. The records
    // are read where they lie, in the opened compact forms.
    let n = r.gaen_len();
    let id = |i: usize| r.gaen_key(i);
    let rank = |i: usize| {
        let k = r.gaen(i);
        (
            k.report_type == ReportType::Revoked.to_i32(),
            k.end_timestamp,
            k.list,
            k.revised,
        )
    };
    let sorted = (1..n).all(|i| id(i - 1) < id(i));
    // Identity when already in key order (a single export from a server): no index array.
    let order: Option<Vec<u32>> = (!sorted).then(|| key_order(n, id));
    let at_ = |k: usize| order.as_ref().map_or(k, |o| o[k] as usize);
    let mut pick = Vec::with_capacity(n);
    let mut at = 0;
    while at < n {
        let mut best = at_(at);
        let mut next = at + 1;
        while next < n && id(at_(next)) == id(best) {
            if rank(at_(next)) > rank(best) {
                best = at_(next);
            }
            next += 1;
        }
        at = next;
        if r.gaen_ref(best).revoked {
            cases.revoked.push(("gaen", hex::encode(id(best).0)));
            continue;
        }
        pick.push(best as u32);
    }
    cases.gaen = GaenCases {
        records: Arc::clone(r),
        pick,
        by_start: None,
    };
    cases
}

/// Positions `0..n` by (`id`, position). Sorted by each key's first 8 bytes beside its position
/// (16-byte items, read in one pass), then by the whole `id` only within runs that share them:
/// comparing records in place would read two scattered records per comparison.
fn key_order<'a>(n: usize, id: impl Fn(usize) -> (&'a [u8; 16], u32)) -> Vec<u32> {
    let prefix = |i: usize| {
        let (tek, _) = id(i);
        u64::from_be_bytes(tek[..8].try_into().unwrap_or_default())
    };
    let mut by_prefix: Vec<(u64, u32)> = (0..n).map(|i| (prefix(i), i as u32)).collect();
    by_prefix.sort_unstable();
    let mut order: Vec<u32> = by_prefix.iter().map(|&(_, i)| i).collect();
    let mut at = 0;
    while at < n {
        let end = at + by_prefix[at..].partition_point(|p| p.0 == by_prefix[at].0);
        if end - at > 1 {
            order[at..end]
                .sort_unstable_by(|&a, &b| id(a as usize).cmp(&id(b as usize)).then(a.cmp(&b)));
        }
        at = end;
    }
    // The prefixes are key material: wiped (a plain fill; `black_box` keeps it).
    by_prefix.fill((0, 0));
    std::hint::black_box(&mut by_prefix);
    order
}

/// What matching needs from the store, read in one go.
pub struct CheckInput {
    pub(crate) cases: Cases,
    pub(crate) readout: ReadOut,
    /// Where the F0 entries' sub-key chains stood after the last run over earlier sightings
    /// (the daemon's incremental matcher keeps one); `None`: every chain from its start.
    pub(crate) chains: Option<Arc<Mutex<ChainCache>>>,
}

/// Reads every case list and the whole retained log (needs the store).
pub fn load(store: &Store) -> Result<CheckInput> {
    let cases = load_cases(store)?;
    let days = store.sighting_days()?;
    let readout = match (days.first(), days.last()) {
        (Some(&a), Some(&b)) => store.sightings_in_days(a, b)?,
        _ => Default::default(),
    };
    Ok(CheckInput {
        cases,
        readout,
        chains: None,
    })
}

/// Matches and scores (no store: the daemon runs this without holding the store, so sightings
/// keep being written while millions of keys are checked). `today` is the UTC day of the run,
/// from the daemon's clock: exposures more than `scoring.days_since_exposure_threshold` days
/// before it do not notify.
pub fn compute(input: &CheckInput, cfg: &Config, today: i64) -> CheckReport {
    let cases = &input.cases;
    let started = Instant::now();
    let index = ObservationIndex::build(&input.readout.sightings, rand::thread_rng().gen());
    let (bz_hits, bz_stats) = match &input.chains {
        Some(chains) => {
            // A poisoned cache is as good as any: results never depend on what it holds.
            let mut chains = chains.lock().unwrap_or_else(|e| e.into_inner());
            match_f0_resuming(&cases.f0, &index, &cfg.matching, &mut chains)
        }
        None => match_f0(&cases.f0, &index, &cfg.matching),
    };
    let (ga_hits, ga_stats) = match_keys(&cases.gaen, &index, &cfg.matching);
    let ctx = ScoreContext {
        rssi_correction_db: i32::from(cfg.radio.rssi_correction_db),
        today: Some(today),
    };
    let bz_info = vec![CaseInfo::bluezone(&cfg.scoring); cases.f0.len()];
    let bz = score(
        &bz_hits,
        index.bluezone.observations(),
        &bz_info,
        &cfg.scoring,
        &ctx,
    );
    // The scorer's case table holds only the keys that were hit (a handful of a million).
    let (ga_hits, ga_keys) = renumber(ga_hits);
    let ga_info: Vec<CaseInfo> = ga_keys.iter().map(|&i| cases.gaen.info(i)).collect();
    let ga = score(
        &ga_hits,
        index.gaen.observations(),
        &ga_info,
        &cfg.scoring,
        &ctx,
    );
    let match_time = started.elapsed();

    let mut matched: Vec<ExposureRecord> = bz
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
            let i = ga_keys[e.case as usize];
            report(
                "gaen",
                hex::encode(cases.gaen.key(i).tek),
                cases.gaen.list(i),
                e,
            )
        }))
        .collect();
    matched.sort_by(|a, b| {
        (a.first_seen, &a.protocol, &a.case_key).cmp(&(b.first_seen, &b.protocol, &b.case_key))
    });
    let stats = bz_stats + ga_stats;
    CheckReport {
        exposures: Vec::new(),
        matched,
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
/// state) and fills [`CheckReport::exposures`] with them as stored. Those whose notification
/// became due now (first stored notifying, or crossing the threshold now) become
/// `new_exposures`, each logged as a warning without key material; the daemon's notification
/// task delivers them.
pub fn persist(store: &mut Store, report: &mut CheckReport) -> Result<()> {
    report.exposures.clear();
    report.new_exposures.clear();
    report.withdrawn = 0;
    // Only revoked keys that have a live exposure cost a withdrawal (each reads the exposures).
    let live: HashSet<(String, String)> = if report.revoked_keys.is_empty() {
        HashSet::new()
    } else {
        store
            .exposure_states()?
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
    let outcomes = store.upsert_exposures(&report.matched)?;
    for (record, outcome) in report.matched.iter().zip(outcomes) {
        let stored = StoredExposure {
            id: outcome.id,
            key: record.key(),
            delivery: outcome.delivery,
            record: record.clone(),
        };
        if outcome.became_pending {
            tracing::warn!(
                id = %stored.id,
                protocol = %record.protocol,
                day = record.day,
                minutes = record.weighted_minutes,
                "exposure notification"
            );
            report.new_exposures.push(stored.clone());
        }
        report.exposures.push(stored);
    }
    Ok(())
}

/// Runs the whole match on UTC day `today` and stores new exposures ([`load`], [`compute`],
/// [`persist`]).
pub fn run_check(store: &mut Store, cfg: &Config, today: i64) -> Result<CheckReport> {
    let input = load(store)?;
    let mut report = compute(&input, cfg, today);
    persist(store, &mut report)?;
    Ok(report)
}

/// Hits renumbered to the distinct cases they hit (in order of first hit), and those cases'
/// positions in the matcher's input.
fn renumber(mut hits: Vec<Hit>) -> (Vec<Hit>, Vec<usize>) {
    let mut cases: Vec<usize> = Vec::new();
    let mut local: std::collections::HashMap<u32, u32> = Default::default();
    for h in &mut hits {
        h.case = *local.entry(h.case).or_insert_with(|| {
            cases.push(h.case as usize);
            (cases.len() - 1) as u32
        });
    }
    (hits, cases)
}

fn report(protocol: &str, case_key: String, list: i64, e: &Exposure) -> ExposureRecord {
    ExposureRecord {
        protocol: protocol.to_string(),
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
        report_type: Some(e.report_type),
        infectiousness: Some(e.infectiousness),
        seconds_by_bucket: e.seconds_by_bucket,
        windows: e.window_details.clone(),
    }
}

#[cfg(test)]
mod tests {
    use bluezone_protocol::gaen::export::{write_unsigned_export, ExportFile, ExportKey};
    use bluezone_protocol::ids::Tek;
    use rand::{rngs::StdRng, RngCore, SeedableRng};

    use super::*;
    use crate::caselist::Format;

    /// The (list, TEK) of every GAEN key selected, in matching order.
    fn keys(c: &Cases) -> Vec<(i64, [u8; 16])> {
        (0..c.gaen.len())
            .map(|i| (c.gaen.list(i), *c.gaen.key(i).tek))
            .collect()
    }

    /// Resolution's key order equals sorting the records themselves by (id, position), with
    /// keys sharing their first 8 bytes (or all 16, as republished keys do).
    #[test]
    fn key_order_equals_a_sort_of_the_records() {
        let mut rng = StdRng::seed_from_u64(11);
        let mut ids: Vec<([u8; 16], u32)> = Vec::new();
        for _ in 0..3000 {
            let mut tek = [0u8; 16];
            rng.fill_bytes(&mut tek);
            match rng.next_u32() % 4 {
                0 if !ids.is_empty() => tek[..8].copy_from_slice(&ids[ids.len() / 2].0[..8]),
                1 if !ids.is_empty() => tek = ids[rng.next_u32() as usize % ids.len()].0,
                _ => {}
            }
            ids.push((tek, rng.next_u32() % 3));
        }
        let id = |i: usize| (&ids[i].0, ids[i].1);
        let mut want: Vec<u32> = (0..ids.len() as u32).collect();
        want.sort_by(|&a, &b| id(a as usize).cmp(&id(b as usize)).then(a.cmp(&b)));
        assert_eq!(key_order(ids.len(), id), want);
        assert!(key_order(0, id).is_empty());
    }

    /// The validity index's order: by rolling start, every entry once, whether the starts lie
    /// close (counting sort) or far apart (comparison sort).
    #[test]
    fn by_start_orders_every_entry_by_start() {
        let mut rng = StdRng::seed_from_u64(12);
        for spread in [1u32, 3000, 1 << 30] {
            let entries: Vec<(u32, u32, u32)> = (0..5000)
                .map(|i| (2_650_000 + rng.next_u32() % spread, rng.next_u32() % 145, i))
                .collect();
            let got = by_start(entries.clone());
            assert!(got.windows(2).all(|w| w[0].0 <= w[1].0), "spread {spread}");
            let (mut a, mut b) = (got, entries);
            a.sort_unstable();
            b.sort_unstable();
            assert_eq!(a, b, "spread {spread}");
        }
        assert!(by_start(Vec::new()).is_empty());
    }

    /// The daemon's validity index selects exactly the keys (and in the same order) a pass
    /// over all of them does, for spans anywhere around and between keys of every period.
    #[test]
    fn indexed_selection_equals_a_full_pass() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::init(dir.path()).unwrap();
        let mut rng = StdRng::seed_from_u64(5);
        let day0 = 18_482i64;
        for list in 0..3 {
            let keys = (0..400)
                .map(|_| {
                    let mut tek = [0u8; 16];
                    rng.fill_bytes(&mut tek);
                    let start = (day0 * 144) as u32 + rng.gen_range(0..144 * 10);
                    ExportKey {
                        rolling_period: rng.gen_range(1..=144),
                        ..ExportKey::new(Tek::from_bytes(tek), start)
                    }
                })
                .collect();
            let file = ExportFile {
                end_timestamp: ((day0 + 11 + list) * 86_400) as u64,
                keys,
                ..ExportFile::default()
            };
            let bytes = write_unsigned_export(&file).unwrap();
            store
                .insert_case_list(day0 + 11, Format::GaenExport, 400, &bytes)
                .unwrap();
        }
        let all = load_cases(&store).unwrap();
        let mut indexed = all.clone();
        indexed.index_validity();
        let newest = store.case_lists().unwrap()[1].id;
        for _ in 0..300 {
            let lo = (day0 - 1) * 86_400 + rng.gen_range(0..13 * 86_400);
            let hi = lo + rng.gen_range(0..2 * 86_400);
            let want = all.select(60, |list, (first, last)| {
                list <= newest && first <= hi && last >= lo
            });
            let got = indexed.select_overlapping(60, (lo, hi), |list| list <= newest);
            assert_eq!(keys(&got), keys(&want), "span {lo}..={hi}");
            let inside = (day0 * 86_400..(day0 + 10) * 86_400).contains(&lo);
            assert!(!inside || !keys(&want).is_empty(), "span {lo}..={hi}");
        }
    }
}
