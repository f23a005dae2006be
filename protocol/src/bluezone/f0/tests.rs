//! The F0 list: spec and real-phone layouts, skipped entries, limits, revocations.

use super::*;

/// The work an entry costs is bounded by the retained log, not by its span (issue 10 §3):
/// an entry starting a year ago derives exactly the sub-keys of one starting at the oldest
/// retained day, and its only extra cost is the daily-key hash chain, walked once, one hash
/// per day (the chain cannot be skipped: day n's key is SHA256ⁿ of the published one).
#[test]
fn a_year_long_entry_costs_the_retention_periods_sub_keys_and_one_linear_chain_walk() {
    use crate::bluezone::rolling::NEXT_DAY_HASHES;
    use crate::bluezone::SlotsPerDay;
    use crate::matching::bluezone::match_f0;
    use crate::matching::{MatchConfig, ObservationIndex};
    use crate::{PeerId, Sighting};

    const TODAY: i64 = 20_000;
    const RETAINED: i64 = 21;
    const YEAR: i64 = 365;
    let year_key = DailyKey::from_bytes([0x3c; 32]);
    // Both entries publish the same chain: the retention-long one starts where the year-long
    // one is on the oldest retained day.
    let retained_key = year_key.advance((YEAR - (RETAINED - 1)) as u32);
    let day0 = TODAY - (RETAINED - 1);
    // The log: one sighting of the case's slot-10 ID on each retained day.
    let sightings: Vec<Sighting> = (0..RETAINED)
        .map(|d| Sighting {
            peer: PeerId::Bluezone(retained_key.advance(d as u32).id(10)),
            time: (day0 + d) * 86_400 + 10 * 900 + 30,
            rssi: -60,
            tx_power: None,
            aem: None,
        })
        .collect();
    let index = ObservationIndex::build(&sightings, 5);
    let entry = |key: &DailyKey, days: i64| F0Entry {
        daily_key: key.clone(),
        time_start: (TODAY - (days - 1)) * 86_400,
        time_end: TODAY * 86_400 + 86_399,
        max: SlotsPerDay::DEFAULT,
    };
    let year = entry(&year_key, YEAR + 1);
    let retained = entry(&retained_key, RETAINED);
    // One worker thread, so that the per-thread hash count sees all of the walk.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let measure = |entries: &[F0Entry]| {
        pool.install(|| {
            NEXT_DAY_HASHES.with(|n| n.set(0));
            let (hits, stats) = match_f0(entries, &index, &MatchConfig::default());
            (
                hits.len(),
                stats.ids_derived,
                NEXT_DAY_HASHES.with(|n| n.get()),
            )
        })
    };
    let (year_hits, year_ids, year_hashes) = measure(std::slice::from_ref(&year));
    let (kept_hits, kept_ids, kept_hashes) = measure(std::slice::from_ref(&retained));
    assert_eq!(year_hits, RETAINED as usize, "every retained day matched");
    assert_eq!(kept_hits, year_hits);
    // Sub-key work: equal, and only for the retained days (96 a day; the newest day stops
    // at the newest sighting's slot, 10, plus the legacy layout's slot 15 within the skew).
    assert_eq!(year_ids, kept_ids);
    assert!(
        kept_ids <= (RETAINED as u64) * 96,
        "{kept_ids} sub-keys for {RETAINED} days"
    );
    // The chain: one hash per day walked, from time_start to the newest sighting's day, once.
    assert_eq!(year_hashes, YEAR as u64);
    assert_eq!(kept_hashes, (RETAINED - 1) as u64);
    // Two entries cost the sum: nothing is walked again per matched day or per entry.
    let (both_hits, both_ids, both_hashes) = measure(&[year.clone(), retained.clone()]);
    assert_eq!(both_hits, 2 * year_hits);
    assert_eq!(both_ids, year_ids + kept_ids);
    assert_eq!(both_hashes, year_hashes + kept_hashes);
}

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const T0: i64 = 1596844800;

fn one(entry: &str) -> Result<F0Parsed, F0Error> {
    parse_f0(
        format!(r#"{{"data":[{entry}]}}"#).as_bytes(),
        &F0Limits::default(),
    )
}

fn good(start: &str, end: &str) -> String {
    format!(r#"{{"daily_key":"{KEY}","time_start":{start},"time_end":{end}}}"#)
}

#[test]
fn parses_spec_example_and_upper_case() {
    let l = one(&format!(
        r#"{{"daily_key":"{}","time_start":1596844800,"max":96,"time_end":1596931199}}"#,
        KEY.to_uppercase()
    ))
    .unwrap();
    assert!(l.skipped.is_empty());
    let l = l.list;
    assert_eq!(l.entries.len(), 1);
    assert_eq!(l.entries[0].daily_key.to_hex(), KEY);
    assert_eq!(l.entries[0].days(), 1);
    let back = parse_f0(write_f0(&l).as_bytes(), &F0Limits::default()).unwrap();
    assert_eq!(back.list, l);
}

#[test]
fn real_phone_lists_are_accepted() {
    // 36.5 days, as the only public reconstruction of a real push.
    let l = one(&good("1596844800", &(T0 + 36 * 86400 + 43200).to_string())).unwrap();
    assert_eq!(l.list.entries[0].days(), 37);
    // iOS writes times as doubles.
    let l = one(&good("1596844800.0", "1.5969312e9")).unwrap();
    assert_eq!(l.list.entries[0].time_start, T0);
    assert_eq!(l.list.entries[0].time_end, 1_596_931_200);
    assert_eq!(
        l.list.entries[0].max,
        SlotsPerDay::DEFAULT,
        "missing max is 96"
    );
    let e = one(&good("1596844800.5", "1596931199")).unwrap_err();
    assert!(
        matches!(
            e,
            F0Error::Entry {
                field: "time_start",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("1596844800.5"), "{e}");
}

#[test]
fn one_bad_entry_does_not_lose_the_rest() {
    let body = format!(
        r#"{{"data":[{},{{"daily_key":"zz","time_start":{T0},"time_end":{T0}}},{},7,{}]}}"#,
        good("1596844800", "1596844900"),
        good("1.5", "1596844900"),
        good("1596844800", "1596844999"),
    );
    let p = parse_f0(body.as_bytes(), &F0Limits::default()).unwrap();
    assert_eq!(p.list.entries.len(), 2);
    assert_eq!(p.skipped_total, 3);
    let got: Vec<(usize, &str)> = p.skipped.iter().map(|s| (s.index, s.field)).collect();
    assert_eq!(got, [(1, "daily_key"), (2, "time_start"), (3, "entry")]);
}

#[test]
fn times_outside_the_window_are_skipped() {
    for t in [
        "0",
        "-1",
        "946684799",
        "4133980800",
        "9223372036854775807",
        "1e300",
    ] {
        let body = format!(
            r#"{{"data":[{},{}]}}"#,
            good(t, "1596844900"),
            good("1596844800", "1596844900")
        );
        let p = parse_f0(body.as_bytes(), &F0Limits::default()).unwrap();
        assert_eq!(p.list.entries.len(), 1, "{t}");
        assert_eq!(p.skipped[0].field, "time_start", "{t}");
    }
    assert!(one(&good("946684800", "4133980799")).is_ok());
}

#[test]
fn precise_errors() {
    let e = one(r#"{"daily_key":"abcd","time_start":1,"time_end":2}"#).unwrap_err();
    assert!(
        matches!(
            e,
            F0Error::Entry {
                index: 0,
                field: "daily_key",
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("expected 64 hex characters, got 4"),
        "{e}"
    );
    let e = one(&good("1596844810", "1596844805")).unwrap_err();
    assert!(
        matches!(
            e,
            F0Error::Entry {
                field: "time_end",
                ..
            }
        ),
        "{e}"
    );
    let e = one(&format!(
        r#"{{"daily_key":"{KEY}","time_start":{T0},"time_end":{T0},"max":97}}"#
    ))
    .unwrap_err();
    assert!(matches!(e, F0Error::Entry { field: "max", .. }), "{e}");
    let e = one(&format!(
        r#"{{"daily_key":"{KEY}","time_start":{T0},"time_end":{T0},"max":[1]}}"#
    ))
    .unwrap_err();
    assert!(matches!(e, F0Error::Entry { field: "max", .. }), "{e}");
    let e = parse_f0(b"{\"data\":[", &F0Limits::default()).unwrap_err();
    assert!(matches!(e, F0Error::Json { .. }), "{e}");
    assert_eq!(
        parse_f0(b"{}", &F0Limits::default()).unwrap_err(),
        F0Error::MissingData
    );
    assert!(parse_f0(br#"{"data":[]}"#, &F0Limits::default())
        .unwrap()
        .list
        .entries
        .is_empty());
}

#[test]
fn skipped_descriptions_are_bounded() {
    let bad = r#"{"daily_key":"x"}"#;
    let mut body = format!(r#"{{"data":[{}"#, good("1596844800", "1596844900"));
    for _ in 0..MAX_REPORTED_SKIPS + 5 {
        body.push(',');
        body.push_str(bad);
    }
    body.push_str("]}");
    let p = parse_f0(body.as_bytes(), &F0Limits::default()).unwrap();
    assert_eq!(p.skipped.len(), MAX_REPORTED_SKIPS);
    assert_eq!(p.skipped_total, MAX_REPORTED_SKIPS + 5);
}

#[test]
fn entry_limit() {
    let e = good("1596844800", "1596844805");
    let body = format!(r#"{{"data":[{e},{e},{e}]}}"#);
    let lim = F0Limits { max_entries: 2 };
    assert_eq!(
        parse_f0(body.as_bytes(), &lim).unwrap_err(),
        F0Error::TooManyEntries { limit: 2 }
    );
    assert_eq!(
        parse_f0(body.as_bytes(), &F0Limits { max_entries: 3 })
            .unwrap()
            .list
            .entries
            .len(),
        3
    );
}

#[test]
fn revocations_round_trip_and_plain_lists_have_none() {
    let list = F0List {
        entries: vec![F0Entry {
            daily_key: DailyKey::from_bytes([1; 32]),
            time_start: 1_596_844_800,
            time_end: 1_596_931_199,
            max: SlotsPerDay::DEFAULT,
        }],
    };
    let revoked = [DailyKey::from_bytes([2; 32]), DailyKey::from_bytes([3; 32])];
    let json = write_f0_with_revocations(&list, &revoked);
    assert_eq!(parse_f0_revocations(json.as_bytes(), 10).unwrap(), revoked);
    assert_eq!(
        parse_f0_revocations(json.as_bytes(), 1).unwrap(),
        revoked[..1]
    );
    // Bluezone's parser reads the entries and ignores the field.
    let parsed = parse_f0(json.as_bytes(), &F0Limits::default()).unwrap();
    assert_eq!(parsed.list, list);
    // Only revocations: an empty `data` array is a valid list.
    let only = write_f0_with_revocations(&F0List::default(), &revoked[..1]);
    assert!(parse_f0(only.as_bytes(), &F0Limits::default())
        .unwrap()
        .list
        .entries
        .is_empty());
    assert_eq!(
        parse_f0_revocations(only.as_bytes(), 10).unwrap(),
        revoked[..1]
    );
    let plain = write_f0(&list);
    assert_eq!(write_f0_with_revocations(&list, &[]), plain);
    assert!(parse_f0_revocations(plain.as_bytes(), 10)
        .unwrap()
        .is_empty());
    // A malformed key is skipped, the others kept.
    let bad = format!(
        "{{\"data\":[],\"revoked\":[\"zz\",7,\"{}\"]}}",
        revoked[0].to_hex()
    );
    assert_eq!(
        parse_f0_revocations(bad.as_bytes(), 10).unwrap(),
        revoked[..1]
    );
}
