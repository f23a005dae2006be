//! Incremental matching for the daemon: keep what has been matched, match only what changed.
//!
//! - A new case list: its keys (those whose effective publication it is, so a revision by a
//!   later list is matched again with its new report type) are matched against the whole
//!   retained log once; keys it revokes withdraw their exposures.
//! - New sightings (chunks above the last mark): matched only against the keys whose validity
//!   covers their UTC days, with those days' whole logs (so each (key, day) exposure is scored
//!   from all of its sightings and replaces the stored one).
//! - A list removed (retention): the keys it held are matched again against the whole log as
//!   the remaining lists now publish them (a removal may hand a key back to an older
//!   publication); nothing else is.
//! - Lists are resolved again whenever one comes or goes, but only new lists are read from the
//!   store: the others' records are kept from the last resolution (shared, not copied).
//! - Nothing changed: nothing is read beyond two small queries (the lists' ids and hashes,
//!   the sightings' mark), nothing is derived.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use bluezone_protocol::matching::bluezone::ChainCache;

use super::{reload_records, resolve, Cases, CheckInput, CheckReport, ListId};
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
    /// The case lists resolved into `cases`, by id.
    lists: Vec<ListId>,
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
    /// New lists' keys, and those a removed list held, against the whole log.
    pub full: Option<CheckInput>,
    /// Known keys whose validity overlaps the new sightings' time span, against those only.
    pub probe: Option<CheckInput>,
    lists: Vec<ListId>,
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
        let lists_changed = !self.started || store.case_list_ids()? != self.lists;
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
        let mut plan = Plan {
            full: None,
            probe: None,
            lists: self.lists.clone(),
            mark,
            cases: None,
        };
        // The lists whose keys were matched against the whole log before (by id).
        let mut old: Vec<i64> = self.lists.iter().map(|(id, _)| *id).collect();
        if lists_changed {
            let stored = store.case_lists()?;
            plan.lists = stored
                .iter()
                .map(|l| (l.id, l.content_hash.clone()))
                .collect();
            let (kept, removed): (Vec<&ListId>, Vec<&ListId>) = self
                .lists
                .iter()
                .partition(|l| plan.lists.binary_search(l).is_ok());
            old = kept.iter().map(|(id, _)| *id).collect();
            // Lists that stayed are not read again.
            let records = reload_records(store, &stored, self.cases.records(), &self.lists)?;
            let all = resolve(&Arc::new(records));
            let is_new = |list: i64| old.binary_search(&list).is_err();
            let mut fresh = if removed.is_empty() {
                all.select(skew_s, |list, _| is_new(list))
            } else {
                // A removed list (retention) may hand a key it held to another publication
                // (another report type, or live again once its revocation is gone): those keys
                // are matched again as now resolved, beside the new lists' keys.
                let removed: Vec<i64> = removed.iter().map(|(id, _)| *id).collect();
                let held = self.cases.keys_of_lists(&removed);
                all.select_new_or_held(is_new, &held)
            };
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
        if new_sightings && !old.is_empty() {
            let known = plan.cases.as_ref().unwrap_or(&self.cases);
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
                let cases = known
                    .select_overlapping(skew_s, (lo, hi), |list| old.binary_search(&list).is_ok());
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

    /// Stores, as imported on `day`, an export of `keys` ending at the end of `end_day`; its id.
    fn import(store: &mut Store, day: i64, end_day: i64, keys: &[(u8, i64, ReportType)]) -> i64 {
        let bytes = export(end_day, keys);
        let n = keys.len() as u64;
        store
            .insert_case_list(day, Format::GaenExport, n, &bytes)
            .unwrap()
            .0
    }

    /// A new store (in the returned directory), the default configuration and a new matcher.
    fn setup() -> (tempfile::TempDir, Store, Config, Incremental) {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::init(dir.path()).unwrap();
        (dir, store, Config::default(), Incremental::new())
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
        let (_dir, mut store, cfg, mut m) = setup();
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

    /// Retention deletes a list: only the keys it held are matched again, as the remaining
    /// lists publish them, and what is stored is what a full match finds.
    #[test]
    fn a_removed_list_rematches_only_the_keys_it_held() {
        let (_dir, mut store, cfg, mut m) = setup();
        for (n, day) in [(1, D0), (2, D0 + 1), (3, D0 + 2), (4, D0 + 3)] {
            store.insert_sightings(&heard(n, day)).unwrap();
        }
        let confirmed = |n: u8| (n, D0 + i64::from(n) - 1, ReportType::ConfirmedTest);
        let a = export(
            D0 + 4,
            &[confirmed(1), confirmed(2), confirmed(3), confirmed(4)],
        );
        store
            .insert_case_list(D0 + 3, Format::GaenExport, 4, &a)
            .unwrap();
        // A later export, imported a month earlier by day (retention deletes it first): it
        // revises key 2 to a self-report and revokes key 3.
        let b = export(
            D0 + 5,
            &[
                (2, D0 + 1, ReportType::SelfReport),
                (3, D0 + 2, ReportType::Revoked),
            ],
        );
        store
            .insert_case_list(D0 - 30, Format::GaenExport, 2, &b)
            .unwrap();
        let ids: Vec<i64> = store.case_lists().unwrap().iter().map(|l| l.id).collect();
        // (case key, day) → the list each live exposure was published by.
        let lists = |store: &Store| -> BTreeMap<(String, i64), i64> {
            store
                .exposures()
                .unwrap()
                .exposures
                .into_iter()
                .filter(|e| e.delivery.state != DeliveryState::Withdrawn)
                .map(|e| ((e.key.case_key, e.key.day), e.record.case_list))
                .collect()
        };
        let key = |n: u8| hex::encode([n; 16]);

        step(&mut m, &mut store, &cfg, true);
        let before = lists(&store);
        assert_eq!(before.get(&(key(2), D0 + 1)), Some(&ids[1]));
        assert!(!before.contains_key(&(key(3), D0 + 2)), "revoked");
        assert_eq!(live(&store), full(&store, &cfg));

        // Cut-off day D0 - 29: list b goes, every sighting and exposure stays.
        let purged = store.purge_older_than(D0 - 8, 21).unwrap();
        assert_eq!((purged.case_lists, purged.sightings_chunks), (1, 0));
        let derived = m.work.ids_derived;
        let checked = step(&mut m, &mut store, &cfg, false);
        let after = lists(&store);
        assert_eq!(after.get(&(key(2), D0 + 1)), Some(&ids[0]), "{after:?}");
        assert_eq!(after.get(&(key(3), D0 + 2)), Some(&ids[0]), "{after:?}");
        assert_eq!(after.len(), 4, "{after:?}");
        assert_eq!(live(&store), full(&store, &cfg));
        // Keys 2 and 3, not 1 and 4.
        assert_eq!(checked, Some(2));
        assert!(m.work.ids_derived > derived);
        assert_eq!(step(&mut m, &mut store, &cfg, true), None);
    }

    /// The same with F0 lists: a deleted list that revoked a daily key lifts the revocation
    /// (the key, still published by a kept list, matches again), and an entry it shared with a
    /// kept list stays matched.
    #[test]
    fn a_removed_f0_list_lifts_its_revocations() {
        use bluezone_protocol::ids::DailyKey;

        let (_dir, mut store, cfg, mut m) = setup();
        let day = D0 * DAY_SECONDS;
        let (k1, k2) = (
            DailyKey::from_bytes([71; 32]),
            DailyKey::from_bytes([72; 32]),
        );
        let sightings: Vec<Sighting> = [&k1, &k2]
            .iter()
            .map(|k| Sighting {
                peer: PeerId::Bluezone(k.id(10)),
                time: day + 10 * 900 + 30,
                rssi: -60,
                tx_power: None,
                aem: None,
            })
            .collect();
        store.insert_sightings(&sightings).unwrap();
        let entry = |k: &DailyKey| {
            format!(
                r#"{{"daily_key":"{}","time_start":{day},"max":96,"time_end":{}}}"#,
                k.to_hex(),
                day + DAY_SECONDS - 1
            )
        };
        let a = format!(r#"{{"data":[{},{}]}}"#, entry(&k1), entry(&k2));
        store
            .insert_case_list(D0 + 3, Format::BluezoneF0, 2, a.as_bytes())
            .unwrap();
        // Imported on an old day (retention deletes it first): k1 again, and k2 revoked.
        let b = format!(
            r#"{{"data":[{}],"revoked":["{}"]}}"#,
            entry(&k1),
            k2.to_hex()
        );
        store
            .insert_case_list(D0 - 30, Format::BluezoneF0, 1, b.as_bytes())
            .unwrap();
        let key = |k: &DailyKey| ("bluezone".to_string(), k.to_hex(), D0);
        step(&mut m, &mut store, &cfg, true);
        let before = live(&store);
        assert!(before.contains_key(&key(&k1)) && !before.contains_key(&key(&k2)));
        assert_eq!(before, full(&store, &cfg));

        assert_eq!(store.purge_older_than(D0 - 8, 21).unwrap().case_lists, 1);
        let checked = step(&mut m, &mut store, &cfg, false);
        let after = live(&store);
        assert!(
            after.contains_key(&key(&k1)) && after.contains_key(&key(&k2)),
            "{after:?}"
        );
        assert_eq!(after, full(&store, &cfg));
        // Both keys were in the deleted list: both are matched again, nothing else.
        assert_eq!(checked, Some(2));
    }

    /// Retention deleting the only list that held a key is age, not a retraction: the exposure
    /// that key gave stays as it was (not withdrawn, not re-scored), though a match from
    /// scratch would no longer find it; the kept list's exposure is untouched too.
    #[test]
    fn an_exposure_from_a_deleted_lists_own_key_stays() {
        let (_dir, mut store, cfg, mut m) = setup();
        store.insert_sightings(&heard(1, D0)).unwrap();
        store.insert_sightings(&heard(6, D0 + 1)).unwrap();
        import(
            &mut store,
            D0 + 2,
            D0 + 2,
            &[(1, D0, ReportType::ConfirmedTest)],
        );
        // Imported on an old day (retention deletes it): the only list with key 6.
        import(
            &mut store,
            D0 - 30,
            D0 + 3,
            &[(6, D0 + 1, ReportType::ConfirmedTest)],
        );
        step(&mut m, &mut store, &cfg, true);
        let stored = |store: &Store| {
            let mut e: Vec<_> = store
                .exposures()
                .unwrap()
                .exposures
                .into_iter()
                .map(|e| (e.key.case_key, e.key.day, e.delivery.state, e.record))
                .collect();
            e.sort_by(|x, y| (&x.0, x.1).cmp(&(&y.0, y.1)));
            e
        };
        let before = stored(&store);
        assert_eq!(before.len(), 2, "{:?}", live(&store));
        assert_eq!(live(&store), full(&store, &cfg));

        assert_eq!(store.purge_older_than(D0 - 8, 21).unwrap().case_lists, 1);
        let checked = step(&mut m, &mut store, &cfg, false);
        // Key 6 is in no list now: there is nothing to match it against again.
        assert_eq!(checked.unwrap_or(0), 0);
        assert_eq!(stored(&store), before);
        let key6 = ("gaen".to_string(), hex::encode([6u8; 16]), D0 + 1);
        assert!(live(&store).contains_key(&key6));
        assert!(!full(&store, &cfg).contains_key(&key6));
        assert_eq!(step(&mut m, &mut store, &cfg, true), None);
    }

    /// Deleting the newest list gives its id to the next one (SQLite takes the highest id + 1):
    /// that list is still a new list, matched against the whole log.
    #[test]
    fn a_new_list_under_a_deleted_lists_id_is_matched() {
        let (_dir, mut store, cfg, mut m) = setup();
        store.insert_sightings(&heard(1, D0)).unwrap();
        store.insert_sightings(&heard(5, D0 + 1)).unwrap();
        import(
            &mut store,
            D0 + 2,
            D0 + 2,
            &[(1, D0, ReportType::ConfirmedTest)],
        );
        // Imported on an old day: retention deletes it, and it is the newest list.
        let b_id = import(
            &mut store,
            D0 - 30,
            D0 + 3,
            &[(2, D0, ReportType::ConfirmedTest)],
        );
        assert_eq!(step(&mut m, &mut store, &cfg, true), Some(2));
        assert_eq!(store.purge_older_than(D0 - 8, 21).unwrap().case_lists, 1);
        let c_id = import(
            &mut store,
            D0 + 3,
            D0 + 3,
            &[(5, D0 + 1, ReportType::ConfirmedTest)],
        );
        assert_eq!(c_id, b_id, "the id is given again");
        // Only c's key: a's stayed, b's key is in no list now.
        assert_eq!(step(&mut m, &mut store, &cfg, false), Some(1));
        let got = live(&store);
        assert!(got.contains_key(&("gaen".into(), hex::encode([5u8; 16]), D0 + 1)));
        assert_eq!(got, full(&store, &cfg));
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

        let (_dir, mut store, cfg, mut m) = setup();
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
