//! Property tests of the F0 list codec: it round-trips, and no input makes it panic.

use bluezone_protocol::bluezone::f0::{
    parse_f0, write_f0, F0Entry, F0Limits, F0List, EARLIEST_TIME, LATEST_TIME,
};
use bluezone_protocol::bluezone::SlotsPerDay;
use bluezone_protocol::DailyKey;
use proptest::prelude::*;

fn entry() -> impl Strategy<Value = F0Entry> {
    (
        any::<[u8; 32]>(),
        EARLIEST_TIME..=LATEST_TIME,
        0i64..400 * 86400,
        prop::sample::select(vec![2i64, 48, 96, 144, 86400]),
    )
        .prop_map(|(k, start, span, max)| F0Entry {
            daily_key: DailyKey::from_bytes(k),
            time_start: start,
            time_end: (start + span).min(LATEST_TIME),
            max: SlotsPerDay::new(max).unwrap(),
        })
}

proptest! {
    #[test]
    fn write_then_parse_round_trips(entries in prop::collection::vec(entry(), 0..20)) {
        let list = F0List { entries };
        let text = write_f0(&list);
        prop_assert_eq!(parse_f0(text.as_bytes(), &F0Limits::default()).unwrap().list, list);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_f0(&bytes, &F0Limits::default());
    }

    #[test]
    fn json_shaped_noise_never_panics(
        key in "[0-9a-fA-Fz]{0,70}",
        start in any::<i64>(),
        end in any::<i64>(),
        max in any::<i64>(),
        extra in "[a-z_]{0,8}",
    ) {
        let doc = format!(r#"{{"data":[{{"daily_key":"{key}","time_start":{start},"time_end":{end},"max":{max},"{extra}":1}}]}}"#);
        if let Ok(l) = parse_f0(doc.as_bytes(), &F0Limits::default()) {
            let e = &l.list.entries[0];
            prop_assert!(e.time_end >= e.time_start);
            prop_assert!(e.time_start >= EARLIEST_TIME && e.time_end <= LATEST_TIME);
        }
    }

    /// Slot math over any time: no panic, no wrap (a slot starts at or before its time, and the
    /// next boundary is after it unless the time line ends).
    #[test]
    fn slot_math_never_wraps(t in any::<i64>(), max in prop::sample::select(vec![2i64, 96, 144, 86400])) {
        let m = SlotsPerDay::new(max).unwrap();
        prop_assert!(m.slot(t) < m.get());
        let start = m.slot_start(t);
        prop_assert!(start <= t);
        let next = m.next_boundary(t);
        prop_assert!(next > t || next == i64::MAX);
        let _ = DailyKey::from_bytes([7; 32]).day_schedule(start, m).last();
    }

    #[test]
    fn extreme_times_in_lists_never_panic(start in any::<i64>(), end in any::<i64>(), f in any::<f64>()) {
        let key = "00".repeat(32);
        for doc in [
            format!(r#"{{"data":[{{"daily_key":"{key}","time_start":{start},"time_end":{end}}}]}}"#),
            format!(r#"{{"data":[{{"daily_key":"{key}","time_start":{f:?},"time_end":{end},"max":{f:?}}}]}}"#),
        ] {
            if let Ok(l) = parse_f0(doc.as_bytes(), &F0Limits::default()) {
                let e = &l.list.entries[0];
                prop_assert!(e.days() >= 1);
            }
        }
    }
}

fn extreme_time() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        prop::sample::select(vec![
            i64::MIN,
            i64::MIN + 1,
            -1,
            0,
            EARLIEST_TIME - 1,
            EARLIEST_TIME,
            LATEST_TIME,
            LATEST_TIME + 1,
            i64::MAX - 86_400,
            i64::MAX,
        ]),
        EARLIEST_TIME..=LATEST_TIME,
    ]
}

/// The ID the real app's walk gives the slot holding `t` of an entry starting at `start` with
/// `key`: anchored at `time_start` with `id(0)` (not at the slot counted from UTC midnight),
/// `max` slots a day, then the next daily key (`shared/spec/bluezone.md` §3).
fn walked_id(key: &DailyKey, start: i64, max: SlotsPerDay, t: i64) -> bluezone_protocol::RollingId {
    let since = t - start;
    let day = since / 86_400;
    let slot = (since % 86_400) / max.slot_seconds();
    key.advance(day as u32).id(slot as u32)
}

proptest! {
    /// Security L1: any `time_start`/`time_end` either gives an entry with exactly those times,
    /// inside the accepted window, that the matcher walks without wrapping, or skips the entry
    /// with an error naming the field and the value; the other entry is kept.
    ///
    /// A kept entry is matched as the real app walks it, from `time_start` with `id(0)`: the
    /// first ID heard at `time_start` and the ID of the slot holding `time_end` heard at
    /// `time_end` are found; the first ID heard before its window (more than the skew before
    /// `time_start`) and the ID of the slot after `time_end`'s, heard in that slot, are not.
    #[test]
    fn extreme_entry_times_are_kept_exactly_or_refused_by_name(
        start in extreme_time(),
        end in extreme_time(),
        span in 0i64..3 * 86_400,
        near in any::<bool>(),
    ) {
        use bluezone_protocol::matching::{bluezone::match_f0, MatchConfig, ObservationIndex};
        use bluezone_protocol::{PeerId, Sighting};
        // Half the cases end within three days of the start, so the end of the walk is reached
        // in a test (the matcher's work grows with the days it walks, as the app's does).
        let end = if near { start.saturating_add(span) } else { end };
        let key = DailyKey::from_bytes([3; 32]);
        let max = SlotsPerDay::DEFAULT;
        let good = format!(
            r#"{{"daily_key":"{}","time_start":1596844800,"time_end":1596931199,"max":96}}"#,
            "11".repeat(32)
        );
        let doc = format!(
            r#"{{"data":[{good},{{"daily_key":"{}","time_start":{start},"time_end":{end},"max":96}}]}}"#,
            key.to_hex()
        );
        let parsed = parse_f0(doc.as_bytes(), &F0Limits::default()).unwrap();
        let in_window = |t: i64| (EARLIEST_TIME..=LATEST_TIME).contains(&t);
        if in_window(start) && in_window(end) && end >= start {
            prop_assert_eq!(parsed.list.entries.len(), 2);
            prop_assert!(parsed.skipped.is_empty());
            let e = &parsed.list.entries[1];
            prop_assert_eq!((e.time_start, e.time_end), (start, end));
            prop_assert!(e.days() >= 1);
            let cfg = MatchConfig::default();
            let seen = |id, time| Sighting {
                peer: PeerId::Bluezone(id),
                time,
                rssi: -60,
                tx_power: None,
                aem: None,
            };
            let mut sightings = vec![
                seen(key.id(0), start),
                seen(key.id(0), start - cfg.skew_s - 1),
            ];
            let mut want = vec![(key.id(0), start)];
            if end - start < 3 * 86_400 {
                let last = walked_id(&key, start, max, end);
                sightings.push(seen(last, end));
                want.push((last, end));
                // The first slot the walk never reaches (its start is after `time_end`), heard
                // past the skew into it. Its slot 1 is skipped: under the 144-slot fallback
                // layout, ID 1's window (600..1200 s) can still reach 961 s.
                let slot_len = max.slot_seconds();
                let after = start + ((end - start) / slot_len + 1) * slot_len;
                let unwalked = walked_id(&key, start, max, after);
                if (after - start) % 86_400 / slot_len != 1 {
                    sightings.push(seen(unwalked, after + cfg.skew_s + 1));
                }
            }
            let index = ObservationIndex::build(&sightings, 1);
            let (hits, _) = match_f0(std::slice::from_ref(e), &index, &cfg);
            let mut got: Vec<_> = hits
                .iter()
                .flat_map(|h| {
                    h.obs.clone().map(|i| {
                        let id = index.bluezone.id_of(h.group);
                        (bluezone_protocol::RollingId(*id), index.bluezone.observations()[i as usize].time)
                    })
                })
                .collect();
            got.sort_by_key(|(id, t)| (*t, id.0));
            got.dedup();
            want.sort_by_key(|(id, t)| (*t, id.0));
            want.dedup();
            prop_assert_eq!(got, want);
        } else {
            prop_assert_eq!(parsed.list.entries.len(), 1, "the good entry is kept");
            prop_assert_eq!(parsed.skipped.len(), 1);
            let skip = &parsed.skipped[0];
            prop_assert_eq!(skip.index, 1);
            let msg = skip.to_string();
            let (field, values) = if !in_window(start) {
                ("time_start", vec![start])
            } else if !in_window(end) {
                ("time_end", vec![end])
            } else {
                ("time_end", vec![start, end])
            };
            prop_assert_eq!(skip.field, field, "{}", msg);
            for v in values {
                prop_assert!(msg.contains(&v.to_string()), "{}", msg);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Security L1, below the parser: the matcher itself, handed an entry and sightings at
    /// times no parser or import lets through (anywhere on the `i64` line, up to its ends),
    /// never overflows, and every sighting it reports lies within the entry's walk: from
    /// `time_start` less the skew to the end of the slot holding `time_end` plus the skew.
    /// The sightings lie within days of `time_start` (the walk costs a hash per day from
    /// `time_start` to the newest sighting, as the app's does; parsed entries start after 2000
    /// and imported sightings end a day after now); `time_end` is anything.
    #[test]
    fn the_matcher_never_wraps_on_any_times(
        anchor in extreme_time(),
        start_off in -3 * 86_400i64..=3 * 86_400,
        end in prop_oneof![extreme_time(), (-86_400i64..=4 * 86_400).prop_map(|d| d)],
        end_is_offset in any::<bool>(),
        max in prop::sample::select(vec![96i64, 144, 2]),
        at in prop::collection::vec((-4 * 86_400i64..=4 * 86_400, 0u32..100), 1..6),
    ) {
        use bluezone_protocol::matching::{bluezone::match_f0, MatchConfig, ObservationIndex};
        use bluezone_protocol::{PeerId, Sighting};
        let key = DailyKey::from_bytes([4; 32]);
        let max = SlotsPerDay::new(max).unwrap();
        let start = anchor.saturating_add(start_off);
        let end = if end_is_offset { start.saturating_add(end) } else { end };
        let e = F0Entry { daily_key: key.clone(), time_start: start, time_end: end, max };
        let sightings: Vec<Sighting> = at
            .iter()
            .map(|&(off, slot)| Sighting {
                peer: PeerId::Bluezone(key.advance((slot / 96) % 2).id(slot % 96)),
                time: anchor.saturating_add(off),
                rssi: -60,
                tx_power: None,
                aem: None,
            })
            .collect();
        let cfg = MatchConfig::default();
        let index = ObservationIndex::build(&sightings, 2);
        let (hits, _) = match_f0(std::slice::from_ref(&e), &index, &cfg);
        let lo = start.saturating_sub(cfg.skew_s);
        let hi = end.saturating_add(86_400 / 2 + cfg.skew_s);
        for h in &hits {
            for i in h.obs.clone() {
                let t = index.bluezone.observations()[i as usize].time;
                prop_assert!(lo <= t && t <= hi, "{} outside {}..={}", t, lo, hi);
            }
        }
    }
}
