//! Property tests of the F0 list codec: it round-trips, and no input makes it panic.

use bluezone_protocol::bluezone::f0::{parse_f0, write_f0, F0Entry, F0Limits, F0List};
use bluezone_protocol::bluezone::SlotsPerDay;
use bluezone_protocol::DailyKey;
use proptest::prelude::*;

fn entry() -> impl Strategy<Value = F0Entry> {
    (
        any::<[u8; 32]>(),
        0i64..4_000_000_000,
        0i64..30 * 86400,
        prop::sample::select(vec![2i64, 48, 96, 144, 86400]),
    )
        .prop_map(|(k, start, span, max)| F0Entry {
            daily_key: DailyKey::from_bytes(k),
            time_start: start,
            time_end: start + span,
            max: SlotsPerDay::new(max).unwrap(),
        })
}

proptest! {
    #[test]
    fn write_then_parse_round_trips(entries in prop::collection::vec(entry(), 0..20)) {
        let list = F0List { entries };
        let text = write_f0(&list);
        prop_assert_eq!(parse_f0(text.as_bytes(), &F0Limits::default()).unwrap(), list);
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
            let e = &l.entries[0];
            prop_assert!(e.time_end >= e.time_start && e.time_end - e.time_start < 30 * 86400);
        }
    }
}
