//! Incremental matching for the daemon: keep what has been matched, match only what changed.
//!
//! - A new case list: its keys (those whose effective publication it is, so a revision by a
//!   later list is matched again with its new report type) are matched against the whole
//!   retained log once; keys it revokes withdraw their exposures.
//! - New sightings (chunks above the last mark): matched only against the keys whose validity
//!   covers their UTC days, with those days' whole logs (so each (key, day) exposure is scored
//!   from all of its sightings and replaces the stored one).
//! - Nothing changed: nothing is read beyond two small queries, nothing is derived.
//!
//! A list removed (retention) may hand a key back to an older publication: that resolves
//! everything again, as a full match does.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use bluezone_protocol::matching::bluezone::ChainCache;

use super::{load_cases, Cases, CheckInput, CheckReport};
use crate::store::{ReadOut, Store};

/// What the incremental matcher has done since it started (the work a test can count).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Work {
    /// Matching runs (reports computed, probes included).
    pub runs: u64,
    /// Case keys (F0 entries, GAEN keys) given to the matchers.
    pub keys_checked: u64,
    /// Identifiers derived from them.
    pub ids_derived: u64,
}

/// The state of the matched store.
#[derive(Default)]
pub struct Incremental {
    /// All effective case keys as last resolved.
    cases: Cases,
    /// Ids of the case lists resolved into `cases`, ascending.
    lists: Vec<i64>,
    /// Sightings chunks up to this id have been matched against `cases`.
    mark: i64,
    started: bool,
    /// The F0 chains' places after the last probe of new sightings, for the next.
    chains: Arc<Mutex<ChainCache>>,
    pub work: Work,
}

/// Matching to do, read from the store by [`Incremental::plan`]. Compute each input with
/// [`super::compute`] (no store needed): persist `full`'s report; `probe`'s report only
/// finds which keys hit the new sightings, and [`Incremental::rescore`] reads what scores
/// them. Then [`Incremental::commit`].
pub struct Plan {
    /// New lists' keys against the whole log.
    pub full: Option<CheckInput>,
    /// Known keys whose validity overlaps the new sightings' time span, against those only.
    pub probe: Option<CheckInput>,
    lists: Vec<i64>,
    mark: i64,
    cases: Option<Cases>,
}

impl Incremental {
    pub fn new() -> Incremental {
        Incremental::default()
    }

    /// Reads what changed since the last [`commit`](Incremental::commit). New case lists are
    /// always planned; new sightings only when `sightings_due` (they arrive all the time, and
    /// are matched on a slower cadence), or with new lists. `None`: nothing to do.
    pub fn plan(&self, store: &Store, sightings_due: bool, skew_s: i64) -> Result<Option<Plan>> {
        let generation = store.case_lists_generation()?;
        let known = (
            self.lists.len() as i64,
            self.lists.last().copied().unwrap_or(0),
        );
        let lists_changed = !self.started || generation != known;
        if !lists_changed && !sightings_due {
            return Ok(None);
        }
        // Read the mark before the sightings: chunks written meanwhile are matched again next
        // time, which only rewrites the same exposures.
        let mark = store.sightings_mark()?;
        let new_sightings = !self.started || mark != self.mark;
        if !lists_changed && !new_sightings {
            return Ok(None);
        }
        let lists = if lists_changed {
            store.case_lists()?.iter().map(|l| l.id).collect()
        } else {
            self.lists.clone()
        };
        let mut plan = Plan {
            full: None,
            probe: None,
            lists,
            mark,
            cases: None,
        };
        // Newest list whose keys were matched against the whole log before.
        let mut newest_old = i64::MAX;
        if lists_changed {
            let all = load_cases(store)?;
            let removed = self
                .lists
                .iter()
                .any(|id| plan.lists.binary_search(id).is_err());
            newest_old = if removed || !self.started {
                i64::MIN // resolve and match everything
            } else {
                self.lists.last().copied().unwrap_or(i64::MIN)
            };
            let mut fresh = all.select(skew_s, |list, _| list > newest_old);
            fresh.revoked = all.revoked.clone();
            if fresh.len() > 0 || !fresh.revoked.is_empty() {
                plan.full = Some(CheckInput {
                    cases: fresh,
                    readout: whole_log(store)?,
                    chains: None,
                });
            }
            plan.cases = Some(all);
        }
        if new_sightings && newest_old > i64::MIN {
            let old = plan.cases.as_ref().unwrap_or(&self.cases);
            // Chunk ids reused after a purge: read everything again.
            let after = if mark < self.mark {
                i64::MIN
            } else {
                self.mark
            };
            let readout = store.sightings_after(after)?;
            let span = readout.sightings.iter().map(|s| s.time);
            if let (Some(lo), Some(hi)) = (span.clone().min(), span.max()) {
                // Keys of new lists are matched against the whole log above.
                let cases = old.select_overlapping(skew_s, (lo, hi), |list| list <= newest_old);
                if cases.len() > 0 {
                    // Probes usually follow each other in time, so the chains go on from the
                    // last one's places (where they cannot, they are walked from the start).
                    let chains = Some(Arc::clone(&self.chains));
                    plan.probe = Some(CheckInput {
                        cases,
                        readout,
                        chains,
                    });
                }
            }
        }
        Ok(Some(plan))
    }

    /// The keys that hit in `probe`'s report (`probe_report`), with the whole logs of the days
    /// they hit, to score and persist; `None` if nothing hit.
    pub fn rescore(
        store: &Store,
        probe: &CheckInput,
        probe_report: &CheckReport,
    ) -> Result<Option<CheckInput>> {
        let hits: HashSet<(&str, &str)> = probe_report
            .matched
            .iter()
            .map(|e| (e.protocol.as_str(), e.case_key.as_str()))
            .collect();
        let days = probe_report.matched.iter().map(|e| e.day);
        let (Some(first), Some(last)) = (days.clone().min(), days.max()) else {
            return Ok(None);
        };
        let cases = probe
            .cases
            .select_keys(|protocol, key| hits.contains(&(protocol, key)));
        // A day's exposure spans at most that day and its neighbours' edges (skew, RPI validity).
        let readout = store.sightings_in_days(first - 1, last + 1)?;
        Ok(Some(CheckInput {
            cases,
            readout,
            chains: None,
        }))
    }

    /// Records a plan whose persisted reports are `reports`.
    pub fn commit(&mut self, plan: Plan, reports: &[CheckReport]) {
        self.lists = plan.lists;
        self.mark = plan.mark;
        if let Some(mut c) = plan.cases {
            c.index_validity();
            self.cases = c;
        }
        self.started = true;
        for r in reports {
            self.work.runs += 1;
            self.work.keys_checked += r.keys_checked;
            self.work.ids_derived += r.ids_derived;
        }
    }
}

fn whole_log(store: &Store) -> Result<ReadOut> {
    let days = store.sighting_days()?;
    Ok(match (days.first(), days.last()) {
        (Some(&a), Some(&b)) => store.sightings_in_days(a, b)?,
        _ => ReadOut::default(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bluezone_protocol::gaen::export::{
        write_unsigned_export, ExportFile, ExportKey, ReportType,
    };
    use bluezone_protocol::gaen::{key_schedule, Enin, Metadata};
    use bluezone_protocol::ids::{PeerId, Tek};
    use bluezone_protocol::sighting::Sighting;
    use bluezone_protocol::time::DAY_SECONDS;

    use super::*;
    use crate::caselist::Format;
    use crate::check::{compute, load, persist};
    use crate::config::Config;
    use crate::store::DeliveryState;

    const D0: i64 = 18_482; // 2020-08-08

    fn tek(n: u8) -> Tek {
        Tek::from_bytes([n; 16])
    }

    /// 25 minutes of `tek(n)`'s RPIs, heard from 02:00 on `day`.
    fn heard(n: u8, day: i64) -> Vec<Sighting> {
        let sched = key_schedule(&tek(n), Enin((day * 144) as u32), 144, Metadata::v1_0(-20));
        (0..25i64)
            .map(|m| {
                let (enin, rpi, aem) = sched[12 + (m / 10) as usize];
                Sighting {
                    peer: PeerId::Gaen(rpi),
                    time: enin.to_unix() + (m % 10) * 60,
                    rssi: -60,
                    tx_power: None,
                    aem: Some(aem),
                }
            })
            .collect()
    }

    /// An export of `(tek number, day, report type)`, ending at the end of `end_day`.
    fn export(end_day: i64, keys: &[(u8, i64, ReportType)]) -> Vec<u8> {
        let file = ExportFile {
            start_timestamp: ((end_day - 1) * DAY_SECONDS) as u64,
            end_timestamp: (end_day * DAY_SECONDS) as u64,
            region: "VN".into(),
            batch_num: 1,
            batch_size: 1,
            keys: keys
                .iter()
                .map(|&(n, day, report_type)| ExportKey {
                    report_type,
                    ..ExportKey::new(tek(n), (day * 144) as u32)
                })
                .collect(),
            ..ExportFile::default()
        };
        write_unsigned_export(&file).unwrap()
    }

    /// One incremental step, as the daemon runs it; the reports' keys checked.
    fn step(m: &mut Incremental, store: &mut Store, cfg: &Config, due: bool) -> Option<u64> {
        let mut plan = m.plan(store, due, cfg.matching.skew_s).unwrap()?;
        let mut reports = Vec::new();
        if let Some(full) = plan.full.take() {
            let mut r = compute(&full, cfg, D0 + 1);
            persist(store, &mut r).unwrap();
            reports.push(r);
        }
        if let Some(probe) = plan.probe.take() {
            let r = compute(&probe, cfg, D0 + 1);
            if let Some(input) = Incremental::rescore(store, &probe, &r).unwrap() {
                let mut r = compute(&input, cfg, D0 + 1);
                persist(store, &mut r).unwrap();
                reports.push(r);
            }
            reports.push(r);
        }
        m.commit(plan, &reports);
        Some(reports.iter().map(|r| r.keys_checked).sum())
    }

    /// (protocol, case key, day) → sightings of every live stored exposure.
    fn live(store: &Store) -> BTreeMap<(String, String, i64), u64> {
        store
            .exposures()
            .unwrap()
            .exposures
            .into_iter()
            .filter(|e| e.delivery.state != DeliveryState::Withdrawn)
            .map(|e| {
                let k = e.key;
                let n = e.record.sightings as u64;
                ((k.protocol, k.case_key, k.day), n)
            })
            .collect()
    }

    /// The same exposures a full match computes from scratch.
    fn full(store: &Store, cfg: &Config) -> BTreeMap<(String, String, i64), u64> {
        compute(&load(store).unwrap(), cfg, D0 + 1)
            .matched
            .into_iter()
            .map(|e| ((e.protocol, e.case_key, e.day), e.sightings as u64))
            .collect()
    }

    #[test]
    fn only_what_changed_is_matched_and_the_result_equals_a_full_match() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::init(dir.path()).unwrap();
        let cfg = Config::default();
        let mut m = Incremental::new();
        store.insert_sightings(&heard(1, D0)).unwrap();
        let list1 = export(
            D0 + 3,
            &[
                (1, D0, ReportType::ConfirmedTest),
                (2, D0 + 2, ReportType::ConfirmedTest),
                (3, D0 + 1, ReportType::ConfirmedTest),
            ],
        );
        store
            .insert_case_list(D0 + 3, Format::GaenExport, 3, &list1)
            .unwrap();

        // Start: every key against the whole log, once.
        assert_eq!(step(&mut m, &mut store, &cfg, true), Some(3));
        assert_eq!(live(&store).len(), 1);
        let derived = m.work.ids_derived;
        assert!(derived > 0);

        // Nothing changed: nothing is read or derived, whether or not sightings are due.
        for due in [false, true, true] {
            assert_eq!(step(&mut m, &mut store, &cfg, due), None);
        }
        assert_eq!(m.work.ids_derived, derived);

        // Sightings of a day no key covers: nothing derived.
        store.insert_sightings(&heard(9, D0 + 6)).unwrap();
        assert_eq!(step(&mut m, &mut store, &cfg, false), None, "not due yet");
        assert_eq!(step(&mut m, &mut store, &cfg, true), Some(0));
        assert_eq!(m.work.ids_derived, derived);

        // Sightings of key 2: probed against the one key whose validity overlaps them (key 3's
        // ends two hours into that day, before them), then that key is scored.
        store.insert_sightings(&heard(2, D0 + 2)).unwrap();
        assert_eq!(step(&mut m, &mut store, &cfg, true), Some(2));
        assert_eq!(live(&store).len(), 2);

        // A new list: only its keys are matched (4 is new; 2 republished in an earlier
        // export than list 1's keeps list 1's publication), and the key it revokes is withdrawn.
        let list2 = export(
            D0 + 4,
            &[
                (4, D0 + 2, ReportType::ConfirmedTest),
                (1, D0, ReportType::Revoked),
            ],
        );
        store
            .insert_case_list(D0 + 4, Format::GaenExport, 2, &list2)
            .unwrap();
        let list3 = export(D0 + 2, &[(2, D0 + 2, ReportType::SelfReport)]);
        store
            .insert_case_list(D0 + 4, Format::GaenExport, 1, &list3)
            .unwrap();
        assert_eq!(step(&mut m, &mut store, &cfg, false), Some(1));
        assert_eq!(step(&mut m, &mut store, &cfg, true), None);

        let got = live(&store);
        assert_eq!(got, full(&store, &cfg));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got.contains_key(&("gaen".into(), hex::encode([2u8; 16]), D0 + 2)));
    }

    /// A day of quarter-hour batches against F0 entries that run through it, as the daemon
    /// meets them: each probe goes on from where the last left the entries' sub-key chains
    /// (the work is about the day's slots, not the day's slots for every batch), and what is
    /// stored is what a full match finds.
    #[test]
    fn a_day_of_f0_probes_resumes_the_chains() {
        use bluezone_protocol::bluezone::f0::{write_f0, F0List};
        use bluezone_protocol::bluezone::{F0Entry, SlotsPerDay};
        use bluezone_protocol::ids::{DailyKey, RollingId};

        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::init(dir.path()).unwrap();
        let cfg = Config::default();
        let day = D0 * DAY_SECONDS;
        let keys: Vec<DailyKey> = (0..4u8)
            .map(|i| DailyKey::from_bytes([i + 60; 32]))
            .collect();
        let list = F0List {
            entries: keys
                .iter()
                .map(|k| F0Entry {
                    daily_key: k.clone(),
                    time_start: day - 2 * DAY_SECONDS,
                    time_end: day + DAY_SECONDS - 1,
                    max: SlotsPerDay::DEFAULT,
                })
                .collect(),
        };
        let bytes = write_f0(&list).into_bytes();
        store
            .insert_case_list(D0, Format::BluezoneF0, 4, &bytes)
            .unwrap();
        let mut m = Incremental::new();
        step(&mut m, &mut store, &cfg, true);
        let start = m.work.ids_derived;
        for q in 0..96i64 {
            // Entry q % 4 heard in its slot q (of 96), with a stranger.
            let t = day + q * 900;
            let id = keys[q as usize % 4].advance(2).id(q as u32);
            let heard = [
                (PeerId::Bluezone(id), t + 300),
                (PeerId::Bluezone(RollingId([7; 12])), t + 600),
            ];
            let sightings: Vec<Sighting> = heard
                .into_iter()
                .map(|(peer, time)| Sighting {
                    peer,
                    time,
                    rssi: -60,
                    tx_power: None,
                    aem: None,
                })
                .collect();
            store.insert_sightings(&sightings).unwrap();
            step(&mut m, &mut store, &cfg, true);
        }
        let got = live(&store);
        assert_eq!(got, full(&store, &cfg));
        assert_eq!(got.len(), 4, "each entry's day: {got:?}");
        // Fresh probes derive each entry's sub-keys from midnight every quarter-hour: 31,040
        // here, rescoring included. Resumed, a probe derives the few slots that can reach its
        // batch (7,720, most of it rescoring the hit entry's day).
        let probes = m.work.ids_derived - start;
        assert!(probes < 12_000, "{probes}");
    }
}
