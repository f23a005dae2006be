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
