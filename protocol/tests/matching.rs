//! The matchers against built scenarios, a straightforward reference matcher, and the signed
//! sample files.

use std::collections::BTreeSet;

use bluezone_protocol::bluezone::{F0Entry, SlotsPerDay};
use bluezone_protocol::gaen::export::{parse_export, ExportLimits, TrustedKey};
use bluezone_protocol::gaen::{self, Enin, Metadata};
use bluezone_protocol::matching::bluezone::{match_f0, match_f0_resuming, ChainCache};
use bluezone_protocol::matching::gaen::{match_keys, GaenKey};
use bluezone_protocol::matching::{Hit, MatchConfig, ObservationIndex};
use bluezone_protocol::{Aem, DailyKey, PeerId, RollingId, Rpi, Sighting, Tek};
use proptest::prelude::*;

const DAY: i64 = 1_596_844_800; // 2020-08-08 00:00 UTC

fn bz(id: RollingId, t: i64) -> Sighting {
    Sighting {
        peer: PeerId::Bluezone(id),
        time: t,
        rssi: -60,
        tx_power: None,
        aem: None,
    }
}

fn ga(rpi: Rpi, aem: Aem, t: i64) -> Sighting {
    Sighting {
        peer: PeerId::Gaen(rpi),
        time: t,
        rssi: -60,
        tx_power: None,
        aem: Some(aem),
    }
}

/// (case, id hex, time) for every sighting the fast matcher attributes to a case.
fn matched(hits: &[Hit], index: &ObservationIndex, gaen: bool) -> BTreeSet<(u32, String, i64)> {
    let mut out = BTreeSet::new();
    for h in hits {
        for i in h.obs.clone() {
            let (id, t) = if gaen {
                (
                    hex::encode(index.gaen.id_of(h.group)),
                    index.gaen.observations()[i as usize].time,
                )
            } else {
                (
                    hex::encode(index.bluezone.id_of(h.group)),
                    index.bluezone.observations()[i as usize].time,
                )
            };
            out.insert((h.case, id, t));
        }
    }
    out
}

/// The spec's matching rule written as plainly as possible: the real app's walk
/// (`BluezoneIdTrace.checkContactF`: anchored at `time_start`, slot after slot while the slot's
/// start is ≤ `time_end`, inclusive windows), every ID derived, every sighting scanned; plus the
/// skew tolerance and the 96 ↔ 144 fallback layout.
fn reference_f0(
    entries: &[F0Entry],
    sightings: &[Sighting],
    skew: i64,
) -> BTreeSet<(u32, String, i64)> {
    let mut out = BTreeSet::new();
    for (c, e) in entries.iter().enumerate() {
        let mut key = e.daily_key.clone();
        let mut base = e.time_start;
        let mut layouts = vec![e.max];
        match e.max.get() {
            96 => layouts.push(SlotsPerDay::LEGACY),
            144 => layouts.push(SlotsPerDay::DEFAULT),
            _ => {}
        }
        while base <= e.time_end {
            for (i, id) in key.ids().take(e.max.get() as usize).enumerate() {
                for s in sightings {
                    if s.peer != PeerId::Bluezone(id) {
                        continue;
                    }
                    let inside = layouts.iter().any(|m| {
                        let a = base + i as i64 * m.slot_seconds();
                        (i as u32) < m.get()
                            && a <= e.time_end
                            && s.time >= a - skew
                            && s.time <= a + m.slot_seconds() + skew
                    });
                    if inside {
                        out.insert((c as u32, id.to_hex(), s.time));
                    }
                }
            }
            key = key.next_day();
            base += 86400;
        }
    }
    out
}

fn reference_gaen(keys: &[GaenKey], sightings: &[Sighting]) -> BTreeSet<(u32, String, i64)> {
    let mut out = BTreeSet::new();
    for (c, k) in keys.iter().enumerate() {
        if k.revoked {
            continue;
        }
        let sched =
            gaen::key_schedule(&k.tek, k.rolling_start, k.rolling_period, Metadata::v1_0(0));
        for (enin, rpi, _) in sched {
            for s in sightings {
                if s.peer == PeerId::Gaen(rpi)
                    && (Enin::from_unix(s.time).0 as i64 - enin.0 as i64).abs() <= 12
                {
                    out.insert((c as u32, rpi.to_hex(), s.time));
                }
            }
        }
    }
    out
}

fn entry(key: &DailyKey, start: i64, end: i64, max: SlotsPerDay) -> F0Entry {
    F0Entry {
        daily_key: key.clone(),
        time_start: start,
        time_end: end,
        max,
    }
}

#[test]
fn bluezone_slot_edges_skew_fallback_and_rollover() {
    let key = DailyKey::from_bytes([7; 32]);
    let next = key.next_day();
    let e = entry(&key, DAY, DAY + 2 * 86400 - 1, SlotsPerDay::DEFAULT);
    let s10 = DAY + 10 * 900;
    let id10 = key.id(10);
    let sightings = vec![
        bz(id10, s10 - 61),                 // 0: outside (skew is 60)
        bz(id10, s10 - 60),                 // 1: inside by skew
        bz(id10, s10 + 900 + 60),           // 2: inside by skew (the end is inclusive)
        bz(id10, s10 + 900 + 61),           // 3: outside
        bz(key.id(50), DAY + 50 * 600 + 5), // 4: slot 50 under the legacy 144 layout only
        bz(key.id(95), DAY + 86400 + 30),   // 5: yesterday's last ID just after midnight
        bz(next.id(0), DAY + 86400 + 5),    // 6: next day's chain
        bz(next.id(0), DAY + 5),            // 7: right ID, wrong day
        bz(RollingId([9; 12]), s10),        // 8: never broadcast
    ];
    let index = ObservationIndex::build(&sightings, 11);
    let cfg = MatchConfig::default();
    let (hits, stats) = match_f0(std::slice::from_ref(&e), &index, &cfg);
    let got: BTreeSet<i64> = matched(&hits, &index, false)
        .into_iter()
        .map(|x| x.2)
        .collect();
    let want: BTreeSet<i64> = [1usize, 2, 4, 5, 6]
        .iter()
        .map(|&i| sightings[i].time)
        .collect();
    assert_eq!(got, want);
    assert_eq!(stats.keys_checked, 1);
    // The second day's chain stops at the newest sighting (plus skew): one sub-key.
    assert_eq!(stats.ids_derived, 96 + 1);
    assert_eq!(
        matched(&hits, &index, false),
        reference_f0(&[e], &sightings, 60)
    );

    // Without skew tolerance the edge sightings drop out.
    let (hits, _) = match_f0(
        &[entry(&key, DAY, DAY + 2 * 86400 - 1, SlotsPerDay::DEFAULT)],
        &index,
        &MatchConfig { skew_s: 0 },
    );
    let got: BTreeSet<i64> = matched(&hits, &index, false)
        .into_iter()
        .map(|x| x.2)
        .collect();
    assert!(!got.contains(&sightings[1].time) && !got.contains(&sightings[2].time));

    // A one-day entry (time_end = time_start + 86399) does not roll into the next day.
    let one_day = entry(&key, DAY, DAY + 86399, SlotsPerDay::DEFAULT);
    let (hits, _) = match_f0(&[one_day], &index, &cfg);
    let got: BTreeSet<i64> = matched(&hits, &index, false)
        .into_iter()
        .map(|x| x.2)
        .collect();
    assert!(!got.contains(&sightings[6].time));
}

#[test]
fn bluezone_legacy_144_entries() {
    let key = DailyKey::from_bytes([8; 32]);
    let e = entry(&key, DAY, DAY + 86399, SlotsPerDay::LEGACY);
    let sightings = vec![
        bz(key.id(130), DAY + 130 * 600 + 1), // 144 layout
        bz(key.id(20), DAY + 20 * 900 + 1),   // 96 layout fallback
        bz(key.id(130), DAY + 20 * 900 + 1),  // wrong slot
    ];
    let index = ObservationIndex::build(&sightings, 3);
    let (hits, stats) = match_f0(std::slice::from_ref(&e), &index, &MatchConfig::default());
    // Slot 130 (plus skew) is the last that can hold a sighting.
    assert_eq!(stats.ids_derived, 131);
    let got = matched(&hits, &index, false);
    assert_eq!(got.len(), 2);
    assert_eq!(got, reference_f0(&[e], &sightings, 60));
}

/// Issue 10 §3: the walk is the real app's, anchored at `time_start` rather than its midnight.
#[test]
fn bluezone_walk_is_anchored_at_time_start_and_runs_while_slot_start_le_time_end() {
    let key = DailyKey::from_bytes([5; 32]);
    let next = key.next_day();
    let t0 = DAY + 5000;
    // time_end is exactly the start of the next day's slot 3.
    let e = entry(&key, t0, t0 + 86400 + 3 * 900, SlotsPerDay::DEFAULT);
    let sightings = vec![
        bz(key.id(0), t0 + 10),                     // 0: slot 0 starts at time_start
        bz(key.id(0), DAY + 10),                    // 1: midnight-anchored slot 0: no
        bz(key.id(5), t0 + 6 * 900),                // 2: slot 5's inclusive end
        bz(key.id(5), t0 + 6 * 900 + 61),           // 3: past it and the skew
        bz(next.id(0), t0 + 86400 + 1),             // 4: the next key after `max` slots
        bz(next.id(3), t0 + 86400 + 3 * 900 + 899), // 5: last walked slot, past time_end
        bz(next.id(4), t0 + 86400 + 4 * 900 + 1),   // 6: slot start > time_end: not walked
        bz(key.id(95), t0 + 95 * 900 + 100),        // 7: the day's last slot
    ];
    let index = ObservationIndex::build(&sightings, 21);
    let (hits, _) = match_f0(std::slice::from_ref(&e), &index, &MatchConfig::default());
    let got: BTreeSet<i64> = matched(&hits, &index, false)
        .into_iter()
        .map(|x| x.2)
        .collect();
    let want: BTreeSet<i64> = [0usize, 2, 4, 5, 7]
        .iter()
        .map(|&i| sightings[i].time)
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        matched(&hits, &index, false),
        reference_f0(&[e], &sightings, 60)
    );
}

/// Security L1: at the end of the time line the walk ends. An entry and sightings within two
/// days of `i64::MAX` (no parser lets them through; the matcher must still not wrap or spin: a
/// saturated day start stayed `<= time_end` forever) are matched like any others.
#[test]
fn bluezone_walk_ends_at_the_end_of_the_time_line() {
    let key = DailyKey::from_bytes([9; 32]);
    let t0 = i64::MAX - 2 * 86400 + 1;
    let e = entry(&key, t0, i64::MAX, SlotsPerDay::DEFAULT);
    let sightings = vec![
        bz(key.id(0), t0),
        bz(key.next_day().id(95), i64::MAX - 10),
        bz(key.id(5), i64::MAX),
    ];
    let index = ObservationIndex::build(&sightings, 23);
    let (hits, _) = match_f0(std::slice::from_ref(&e), &index, &MatchConfig::default());
    let got: BTreeSet<i64> = matched(&hits, &index, false)
        .into_iter()
        .map(|x| x.2)
        .collect();
    assert_eq!(got, BTreeSet::from([t0, i64::MAX - 10]));
}

/// Issue 10 §3: an entry spanning a year costs no more sub-keys than the log's days need.
#[test]
fn bluezone_work_is_bounded_by_the_log_not_the_entry() {
    let key = DailyKey::from_bytes([6; 32]);
    let t0 = DAY - 300 * 86400;
    let year = entry(&key, t0, t0 + 365 * 86400, SlotsPerDay::DEFAULT);
    let day300 = key.advance(300);
    let day301 = key.advance(301);
    let sightings = vec![
        bz(day300.id(7), DAY + 7 * 900 + 3),
        bz(day301.id(90), DAY + 86400 + 90 * 900 + 3),
    ];
    let index = ObservationIndex::build(&sightings, 22);
    let (hits, stats) = match_f0(std::slice::from_ref(&year), &index, &MatchConfig::default());
    // The day before the log (its last slot's window reaches the log by the skew), and the
    // two days of the log: at most three days of sub-keys, not 365.
    assert!(stats.ids_derived <= 3 * 96, "{}", stats.ids_derived);
    assert_eq!(matched(&hits, &index, false).len(), 2);
    assert_eq!(
        matched(&hits, &index, false),
        reference_f0(&[year], &sightings, 60)
    );
}

/// A day of quarter-hour batches, as the daemon matches them: with the chain cache each
/// sub-key of the day is derived about once, not again from midnight for every batch, and
/// what is found is what fresh runs find.
#[test]
fn resumed_chains_derive_each_sub_key_about_once() {
    let entries: Vec<F0Entry> = (0..5u8)
        .map(|i| {
            entry(
                &DailyKey::from_bytes([i + 40; 32]),
                DAY - 3 * 86400,
                DAY + 86400 - 1,
                SlotsPerDay::DEFAULT,
            )
        })
        .collect();
    let cfg = MatchConfig::default();
    let mut cache = ChainCache::default();
    let (mut resumed, mut fresh, mut found) = (0, 0, 0);
    for q in 0..96i64 {
        let t = DAY + q * 900;
        // Entry q % 5 is heard in this quarter-hour (its slot q), with a stranger.
        let e = &entries[q as usize % 5];
        let sightings = vec![
            bz(e.daily_key.advance(3).id(q as u32), t + 400),
            bz(RollingId([q as u8; 12]), t + 899),
        ];
        let index = ObservationIndex::build(&sightings, 81);
        let (hits, stats) = match_f0_resuming(&entries, &index, &cfg, &mut cache);
        let (want, fresh_stats) = match_f0(&entries, &index, &cfg);
        assert_eq!(
            matched(&hits, &index, false),
            matched(&want, &index, false),
            "quarter {q}"
        );
        found += matched(&hits, &index, false).len();
        resumed += stats.ids_derived;
        fresh += fresh_stats.ids_derived;
    }
    assert_eq!(found, 96, "each quarter-hour's sighting is found");
    assert_eq!(cache.len(), 5);
    // A fresh run derives the day's sub-keys from midnight: ~5 × 96 × 65 in all. Resumed, a
    // run derives only the slots that can reach its quarter-hour under each layout (two or
    // three of 900 s, three or four of 600 s, the skew included).
    assert!(fresh > 25_000, "{fresh}");
    assert!(resumed <= 5 * 96 * 6, "{resumed} (fresh {fresh})");
}

/// A run that goes back to just before the day the cache stands at: the previous day's last
/// slot, heard within the skew of its end, must still be found (the cache's day is not
/// jumped to when the day before can still count).
#[test]
fn resumed_chains_go_back_a_day_when_the_log_does() {
    let key = DailyKey::from_bytes([77; 32]);
    let e = entry(&key, DAY, DAY + 3 * 86400 - 1, SlotsPerDay::DEFAULT);
    let cfg = MatchConfig::default();
    let mut cache = ChainCache::default();
    let noon = DAY + 86400 + 43_200;
    let index = ObservationIndex::build(&[bz(RollingId([1; 12]), noon)], 82);
    match_f0_resuming(std::slice::from_ref(&e), &index, &cfg, &mut cache);
    // Day 0's last 96-layout slot (95) ends at DAY + 86400; heard 30 s after (within the 60 s
    // skew), in a log that starts there.
    let late = bz(key.id(95), DAY + 86400 + 30);
    let sightings = vec![late, bz(RollingId([2; 12]), noon)];
    let index = ObservationIndex::build(&sightings, 83);
    let (hits, _) = match_f0_resuming(std::slice::from_ref(&e), &index, &cfg, &mut cache);
    let (want, _) = match_f0(std::slice::from_ref(&e), &index, &cfg);
    assert_eq!(matched(&want, &index, false).len(), 1);
    assert_eq!(matched(&hits, &index, false), matched(&want, &index, false));
}

#[test]
fn gaen_period_validity_and_revocation() {
    let tek = Tek::from_bytes([4; 16]);
    let start = Enin::from_unix(DAY);
    let sched = gaen::key_schedule(&tek, start, 144, Metadata::v1_0(-25));
    let at = |j: usize, offset_intervals: i64| {
        let (enin, rpi, aem) = sched[j];
        ga(rpi, aem, enin.to_unix() + offset_intervals * 600 + 7)
    };
    let sightings = vec![
        at(113, 0),  // 0: last interval of a 114-period key
        at(114, 0),  // 1: beyond the period
        at(50, 12),  // 2: two hours late: still valid
        at(50, 13),  // 3: too late
        at(60, -12), // 4: two hours early
        at(60, -13), // 5: too early
    ];
    let index = ObservationIndex::build(&sightings, 5);
    let key = GaenKey {
        tek: tek.clone(),
        rolling_start: start,
        rolling_period: 114,
        revoked: false,
    };
    let revoked = GaenKey {
        revoked: true,
        ..key.clone()
    };
    let keys = vec![key, revoked];
    let (hits, stats) = match_keys(&keys, &index, &MatchConfig::default());
    let got: BTreeSet<i64> = matched(&hits, &index, true)
        .into_iter()
        .map(|x| x.2)
        .collect();
    let want: BTreeSet<i64> = [0usize, 2, 4].iter().map(|&i| sightings[i].time).collect();
    assert_eq!(got, want);
    assert!(
        hits.iter().all(|h| h.case == 0),
        "a revoked key never matches"
    );
    assert!(
        hits.iter().all(|h| h.tx_power == Some(-25)),
        "tx power comes from the AEM"
    );
    assert_eq!(stats.keys_checked, 2);
    // The log runs from interval 47 (sighting 5) to 114: RPIs of intervals 35..=113 can count
    // in it (±12 intervals), the key's first 35 cannot and are not derived.
    assert_eq!(stats.ids_derived, 114 - 35);
    assert_eq!(
        matched(&hits, &index, true),
        reference_gaen(&keys, &sightings)
    );
}

#[test]
fn keys_outside_the_log_are_rejected_before_derivation() {
    let key = DailyKey::from_bytes([1; 32]);
    let sightings = vec![bz(key.id(3), DAY + 3 * 900)];
    let index = ObservationIndex::build(&sightings, 1);
    let old = entry(
        &key,
        DAY - 20 * 86400,
        DAY - 10 * 86400,
        SlotsPerDay::DEFAULT,
    );
    let (hits, stats) = match_f0(&[old], &index, &MatchConfig::default());
    assert!(hits.is_empty());
    assert_eq!(stats.ids_derived, 0);
}

mod support;

fn shared(rel: &str) -> Vec<u8> {
    support::read_testdata(&format!("gaen/{rel}"))
}

#[test]
fn signed_sample_keys_match_their_own_rpis() {
    for (zip, pem, id, version) in [
        (
            "google-server-example-2keys.zip",
            "google-server-example-2keys.pub.pem",
            "some_id",
            "1",
        ),
        (
            "google-internals-sample-140keys.zip",
            "google-internals-sample-140keys.pub.pem",
            "310",
            "v1",
        ),
    ] {
        let trust =
            TrustedKey::from_pem(id, version, &String::from_utf8(shared(pem)).unwrap()).unwrap();
        let export = parse_export(&shared(zip), &[trust], &ExportLimits::default()).unwrap();
        let keys: Vec<GaenKey> = export.file.keys.iter().map(GaenKey::from).collect();
        // One sighting of the middle RPI of every key, as a phone nearby would have logged it.
        let sightings: Vec<Sighting> = keys
            .iter()
            .map(|k| {
                let j = k.rolling_period / 2;
                let (enin, rpi, aem) = gaen::key_schedule(
                    &k.tek,
                    k.rolling_start,
                    k.rolling_period,
                    Metadata::v1_0(-30),
                )[j as usize];
                ga(rpi, aem, enin.to_unix() + 100)
            })
            .collect();
        let index = ObservationIndex::build(&sightings, 9);
        let (hits, _) = match_keys(&keys, &index, &MatchConfig::default());
        let cases: BTreeSet<u32> = hits.iter().map(|h| h.case).collect();
        let live: BTreeSet<u32> = (0..keys.len() as u32)
            .filter(|&i| !keys[i as usize].revoked)
            .collect();
        assert_eq!(cases, live, "{zip}");
        assert_eq!(
            matched(&hits, &index, true),
            reference_gaen(&keys, &sightings),
            "{zip}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn fast_bluezone_matcher_agrees_with_reference(
        seeds in prop::collection::vec(any::<[u8; 32]>(), 1..6),
        picks in prop::collection::vec((0usize..6, 0u32..3, 0u32..144, -1200i64..1200), 0..40),
        noise in prop::collection::vec((any::<[u8; 12]>(), 0i64..3 * 86400), 0..20),
        legacy in any::<bool>(),
        span_days in 1i64..3,
        start_offset in 0i64..86400,
    ) {
        let max = if legacy { SlotsPerDay::LEGACY } else { SlotsPerDay::DEFAULT };
        let entries: Vec<F0Entry> = seeds.iter().map(|s| F0Entry {
            daily_key: DailyKey::from_bytes(*s),
            time_start: DAY + start_offset / 2,
            time_end: DAY + span_days * 86400 - 1 - start_offset / 3,
            max,
        }).collect();
        let mut sightings: Vec<Sighting> = picks.iter().map(|&(e, d, slot, jitter)| {
            let e = &entries[e % entries.len()];
            let key = e.daily_key.advance(d);
            let t = e.time_start + d as i64 * 86400 + slot as i64 * 600 + jitter;
            bz(key.id(slot), t)
        }).collect();
        sightings.extend(noise.iter().map(|(id, t)| bz(RollingId(*id), DAY + t)));
        let index = ObservationIndex::build(&sightings, 77);
        let (hits, _) = match_f0(&entries, &index, &MatchConfig::default());
        prop_assert_eq!(matched(&hits, &index, false), reference_f0(&entries, &sightings, 60));
    }

    /// The daemon's way: one run per batch of new sightings, each resuming the entries'
    /// chains where the last left them. Batches mostly move forward through the days, as
    /// sightings arrive, but may go back (a late chunk, a clock step), overlap, or skip days;
    /// every run must find what a fresh run (and the reference) finds.
    #[test]
    fn resumed_bluezone_matching_agrees_with_a_fresh_match(
        seeds in prop::collection::vec(any::<[u8; 32]>(), 1..20),
        spans in prop::collection::vec((-86400i64..86400, 0i64..3 * 86400), 1..20),
        legacy in any::<bool>(),
        // Each batch: where it starts (seconds after the last one's start; negative goes
        // back, by up to a day), how long it is, and which entries are heard in it: when (a
        // fraction of the batch), under which layout, and a slot offset from the one that
        // time falls in (±1: seen only within the skew of the slot's edge).
        batches in prop::collection::vec(
            (
                prop_oneof![4 => -3600i64..8000, 1 => -100_000i64..40_000],
                prop_oneof![3 => 0i64..3600, 1 => 0i64..40_000],
                prop::collection::vec((0usize..20, 0i64..=1000, any::<bool>(), -1i64..=1), 0..8),
            ),
            1..24,
        ),
    ) {
        let max = if legacy { SlotsPerDay::LEGACY } else { SlotsPerDay::DEFAULT };
        let other = if legacy { SlotsPerDay::DEFAULT } else { SlotsPerDay::LEGACY };
        let mut entries: Vec<F0Entry> = seeds.iter().zip(spans.iter().cycle()).map(|(s, &(a, len))| {
            F0Entry {
                daily_key: DailyKey::from_bytes(*s),
                time_start: DAY + a,
                time_end: DAY + a + len,
                max,
            }
        }).collect();
        // The first key again with the same start and another end and layout (a revised
        // publication): one saved chain serves both.
        entries.push(F0Entry {
            time_end: entries[0].time_end + 40_000,
            max: other,
            ..entries[0].clone()
        });
        let cfg = MatchConfig::default();
        let mut cache = ChainCache::default();
        let (mut resumed_work, mut fresh_work) = (0, 0);
        let mut t = DAY;
        for (shift, len, heard) in &batches {
            t += shift;
            let sightings: Vec<Sighting> = heard.iter().filter_map(|&(e, frac, fallback, off)| {
                let e = &entries[e % entries.len()];
                let at = t + len * frac / 1000;
                let into = at - e.time_start;
                let day = u32::try_from(into.div_euclid(86400)).ok()?;
                let layout = if fallback { other } else { max };
                let slot = into.rem_euclid(86400) / layout.slot_seconds() + off;
                let slot = u32::try_from(slot).ok().filter(|&s| s < layout.get())?;
                Some(bz(e.daily_key.advance(day).id(slot), at))
            }).chain([bz(RollingId([9; 12]), t), bz(RollingId([8; 12]), t + len)]).collect();
            let index = ObservationIndex::build(&sightings, 80);
            let (hits, stats) = match_f0_resuming(&entries, &index, &cfg, &mut cache);
            let (fresh, fresh_stats) = match_f0(&entries, &index, &cfg);
            // The same hits as the fresh run, counted (the sets below would hide a sub-key
            // reported twice).
            let all = |hits: &[Hit]| {
                let mut v: Vec<_> = hits.iter().map(|h| (h.case, h.group, h.obs.clone())).collect();
                v.sort_unstable_by_key(|x| (x.0, x.1, x.2.start, x.2.end));
                v
            };
            prop_assert_eq!(all(&hits), all(&fresh));
            prop_assert_eq!(matched(&hits, &index, false), matched(&fresh, &index, false));
            prop_assert_eq!(matched(&hits, &index, false), reference_f0(&entries, &sightings, 60));
            resumed_work += stats.ids_derived;
            fresh_work += fresh_stats.ids_derived;
        }
        prop_assert!(resumed_work <= fresh_work, "{resumed_work} > {fresh_work}");
    }

    #[test]
    fn fast_gaen_matcher_agrees_with_reference(
        // Up to 40 keys: several groups of four, across more than one 16-key HKDF batch.
        teks in prop::collection::vec((any::<[u8; 16]>(), 0u32..3, 1u32..=144, any::<bool>()), 1..40),
        picks in prop::collection::vec((0usize..40, 0usize..144, -20i64..20), 0..60),
        noise in prop::collection::vec((any::<[u8; 16]>(), 0i64..3 * 86400), 0..20),
    ) {
        let base = Enin::from_unix(DAY).0;
        let keys: Vec<GaenKey> = teks.iter().map(|(t, d, period, revoked)| GaenKey {
            tek: Tek::from_bytes(*t),
            rolling_start: Enin(base + 144 * d),
            rolling_period: *period,
            revoked: *revoked,
        }).collect();
        let mut sightings: Vec<Sighting> = picks.iter().map(|&(k, j, off)| {
            let k = &keys[k % keys.len()];
            let sched = gaen::key_schedule(&k.tek, k.rolling_start, 144, Metadata::v1_0(-10));
            let (enin, rpi, aem) = sched[j];
            ga(rpi, aem, enin.to_unix() + off * 600 + 3)
        }).collect();
        sightings.extend(noise.iter().map(|(r, t)| ga(Rpi(*r), Aem([0; 4]), DAY + t)));
        let index = ObservationIndex::build(&sightings, 78);
        let (hits, _) = match_keys(&keys, &index, &MatchConfig::default());
        // Each RPI's lookup reported once, in key order (the set below would hide both).
        let order: Vec<(u32, u32)> = hits.iter().map(|h| (h.case, h.group)).collect();
        let mut unique = order.clone();
        unique.sort_unstable();
        unique.dedup();
        prop_assert_eq!(unique.len(), order.len(), "a hit reported twice: {:?}", order);
        prop_assert!(order.windows(2).all(|w| w[0].0 <= w[1].0), "out of key order: {:?}", order);
        prop_assert_eq!(matched(&hits, &index, true), reference_gaen(&keys, &sightings));
    }

    /// A log of less than a quarter-hour (what the daemon matches as new sightings arrive):
    /// the matcher derives only the intervals whose RPIs can count in it, so RPIs just inside
    /// and just outside their ±2 h windows must still come out as the reference says.
    #[test]
    fn gaen_matcher_on_a_short_log_agrees_with_reference(
        teks in prop::collection::vec((any::<[u8; 16]>(), 0u32..3, 1u32..=144), 1..24),
        // The log's start: an interval of the keys' three days, and seconds into it.
        at in (0u32..3 * 144, 0i64..600),
        // Heard RPIs: a key, an interval up to 16 either side of the log's, and when.
        picks in prop::collection::vec((0usize..24, -16i64..=16, 0i64..900), 1..30),
        noise in prop::collection::vec((any::<[u8; 16]>(), 0i64..900), 0..10),
    ) {
        let base = Enin::from_unix(DAY).0;
        let keys: Vec<GaenKey> = teks.iter().map(|(t, d, period)| GaenKey {
            tek: Tek::from_bytes(*t),
            rolling_start: Enin(base + 144 * d),
            rolling_period: *period,
            revoked: false,
        }).collect();
        let t0 = DAY + i64::from(at.0) * 600 + at.1;
        let mut sightings: Vec<Sighting> = picks.iter().filter_map(|&(k, dj, dt)| {
            let k = &keys[k % keys.len()];
            let j = i64::from(at.0) + dj - i64::from(k.rolling_start.0 - base);
            let j = usize::try_from(j).ok().filter(|&j| j < 144)?;
            let sched = gaen::key_schedule(&k.tek, k.rolling_start, 144, Metadata::v1_0(-10));
            let (_, rpi, aem) = sched[j];
            Some(ga(rpi, aem, t0 + dt))
        }).collect();
        sightings.extend(noise.iter().map(|(r, dt)| ga(Rpi(*r), Aem([0; 4]), t0 + dt)));
        let index = ObservationIndex::build(&sightings, 79);
        let (hits, stats) = match_keys(&keys, &index, &MatchConfig::default());
        prop_assert_eq!(matched(&hits, &index, true), reference_gaen(&keys, &sightings));
        // Each hit's AEM decrypted with its own RPI (the packed probe's, not the lane's slot).
        prop_assert!(hits.iter().all(|h| h.tx_power == Some(-10)), "{:?}", hits);
        // At most the 25 intervals around each of the log's (at most three) intervals.
        prop_assert!(stats.ids_derived <= keys.len() as u64 * 27, "{}", stats.ids_derived);
    }
}
