//! Pins the derivations to the published vectors in the repository's `testdata/`.

use bluezone_protocol::bluezone::{F0Entry, SlotsPerDay};
use bluezone_protocol::gaen::{self, Aemk, Enin, Metadata, Rpik};
use bluezone_protocol::matching::bluezone::match_f0;
use bluezone_protocol::matching::gaen::{match_keys, GaenKey};
use bluezone_protocol::matching::{MatchConfig, ObservationIndex};
use bluezone_protocol::{Aem, DailyKey, PeerId, RollingId, Rpi, Sighting, Tek};

mod support;

fn testdata(rel: &str) -> String {
    String::from_utf8(support::read_testdata(rel)).expect("vectors are UTF-8")
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.strip_prefix(key)?.strip_prefix(' ')
}

#[test]
fn bluezone_rolling_ids_match_all_vectors() {
    let text = testdata("bluezone/rolling-id-vectors.txt");
    let mut base = None;
    let mut base_day = 0i64;
    let mut daily = Vec::new();
    let mut ids = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        if let Some(v) = field(line, "base_key") {
            base = Some(DailyKey::from_hex(v).unwrap());
        } else if let Some(v) = field(line, "base_day_unix") {
            base_day = v.parse().unwrap();
        } else if let Some(v) = field(line, "daily_key") {
            let (n, k) = v.split_once(' ').unwrap();
            daily.push((n.parse::<u32>().unwrap(), k.to_string()));
        } else if let Some(v) = field(line, "id") {
            let c: Vec<&str> = v.split(' ').collect();
            ids.push((
                c[0].parse::<u32>().unwrap(),
                c[1].parse::<u32>().unwrap(),
                c[2].parse::<i64>().unwrap(),
                RollingId::from_hex(c[3]).unwrap(),
            ));
        }
    }
    let base = base.expect("base_key line");
    assert_eq!(daily.len(), 3);
    for (n, hex) in &daily {
        assert_eq!(&base.advance(*n).to_hex(), hex, "daily_key {n}");
    }
    assert_eq!(ids.len(), 192, "two days of 96 IDs");
    // The matching kernels (16-lane AVX-512 chains, SHA-NI, or portable, as this run picks) on
    // the same vectors: an entry for the base key over both days finds each vector ID heard in
    // its slot, and a stranger's entry nothing.
    let entry = |key: DailyKey| F0Entry {
        daily_key: key,
        time_start: base_day,
        time_end: base_day + 2 * 86400 - 1,
        max: SlotsPerDay::DEFAULT,
    };
    let entries = [entry(DailyKey::from_bytes([3; 32])), entry(base.clone())];
    let sightings: Vec<Sighting> = ids
        .iter()
        .map(|&(_, _, t, id)| Sighting {
            peer: PeerId::Bluezone(id),
            time: t + 450,
            rssi: -60,
            tx_power: None,
            aem: None,
        })
        .collect();
    let index = ObservationIndex::build(&sightings, 6);
    let (hits, _) = match_f0(&entries, &index, &MatchConfig::default());
    assert_eq!(hits.len(), 192);
    assert!(hits.iter().all(|h| h.case == 1));
    for day in 0..2u32 {
        let key = base.advance(day);
        let start = base_day + day as i64 * 86400;
        let schedule: Vec<_> = key.day_schedule(start, SlotsPerDay::DEFAULT).collect();
        let expected: Vec<_> = ids
            .iter()
            .filter(|(d, ..)| *d == day)
            .map(|(_, _, t, id)| (*t, *id))
            .collect();
        assert_eq!(schedule, expected, "day {day}");
        for (_, slot, t, id) in ids.iter().filter(|(d, ..)| *d == day) {
            assert_eq!(key.id(*slot), *id);
            assert_eq!(SlotsPerDay::DEFAULT.slot(*t), *slot);
            assert_eq!(SlotsPerDay::DEFAULT.slot(*t + 899), *slot);
        }
    }
}

#[test]
fn gaen_all_144_official_vectors() {
    let text = testdata("gaen/en-v1.2-vectors.txt");
    let mut tek = None;
    let mut rpik_hex = String::new();
    let mut aemk_hex = String::new();
    let mut metadata = [0u8; 4];
    let mut rows = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        if let Some(v) = field(line, "tek") {
            tek = Some(Tek::from_hex(v).unwrap());
        } else if let Some(v) = field(line, "rpik") {
            rpik_hex = v.to_string();
        } else if let Some(v) = field(line, "aemk") {
            aemk_hex = v.to_string();
        } else if let Some(v) = field(line, "metadata") {
            hex::decode_to_slice(v, &mut metadata).unwrap();
        } else if !line.trim().is_empty() {
            let c: Vec<&str> = line.split(' ').collect();
            rows.push((
                Enin(c[1].parse().unwrap()),
                Rpi::from_hex(c[2]).unwrap(),
                Aem::from_hex(c[3]).unwrap(),
            ));
        }
    }
    let tek = tek.expect("tek line");
    let rpik = Rpik::derive(&tek);
    let aemk = Aemk::derive(&tek);
    assert_eq!(hex::encode(rpik.as_bytes()), rpik_hex);
    assert_eq!(hex::encode(aemk.as_bytes()), aemk_hex);
    assert_eq!(rows.len(), 144);
    let start = rows[0].0;
    assert_eq!(start, Enin::from_unix(1585785600));
    let md = Metadata::from_bytes(metadata);
    let schedule = gaen::key_schedule(&tek, start, 144, md);
    assert_eq!(schedule, rows);
    for (enin, rpi, aem) in &rows {
        assert_eq!(gaen::rpi(&rpik, *enin), *rpi);
        assert_eq!(gaen::decrypt_metadata(&aemk, rpi, aem), md);
    }

    // The matching kernels (whichever tier this run picks: AVX-512 HKDF lanes and VAES, SHA-NI
    // and AES-NI, or the portable code) on the same vectors: the key, among 20 others, finds
    // each of its 144 official RPIs heard in its own interval, with the AEM's tx power.
    let mut keys: Vec<GaenKey> = (0..20u8)
        .map(|i| GaenKey {
            tek: Tek::from_bytes([i; 16]),
            rolling_start: start,
            rolling_period: 144,
            revoked: false,
        })
        .collect();
    keys.insert(
        7,
        GaenKey {
            tek: tek.clone(),
            rolling_start: start,
            rolling_period: 144,
            revoked: false,
        },
    );
    let sightings: Vec<Sighting> = rows
        .iter()
        .map(|(enin, rpi, aem)| Sighting {
            peer: PeerId::Gaen(*rpi),
            time: enin.to_unix() + 300,
            rssi: -60,
            tx_power: None,
            aem: Some(*aem),
        })
        .collect();
    let index = ObservationIndex::build(&sightings, 5);
    let (hits, _) = match_keys(&keys, &index, &MatchConfig::default());
    assert_eq!(hits.len(), 144);
    assert!(hits.iter().all(|h| h.case == 7));
    assert!(hits.iter().all(|h| h.tx_power == Some(md.tx_power_dbm)));
}

/// Bluezone `data_trace.txt` in its real layouts: Android (upper-case hex, milliseconds), iOS
/// (seconds), iOS with an empty own-ID column, and CRLF lines; each against its parsed rows.
#[test]
fn bluezone_trace_vectors_parse_to_their_expected_rows() {
    use bluezone_protocol::bluezone::trace::{parse_trace, write_trace_row, TraceRow};
    use bluezone_protocol::PeerId;
    for name in ["android", "ios", "ios-empty-own-id", "crlf"] {
        let raw = support::read_testdata(&format!("bluezone/trace/{name}.txt"));
        let rows = parse_trace(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected: Vec<TraceRow> = testdata(&format!("bluezone/trace/{name}.expected"))
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let c: Vec<&str> = l.split(' ').collect();
                TraceRow {
                    own: (c[0] != "-").then(|| RollingId::from_hex(c[0]).unwrap()),
                    contact: PeerId::from_hex(c[1]).unwrap(),
                    rssi: c[2].parse().unwrap(),
                    time: c[3].parse().unwrap(),
                }
            })
            .collect();
        assert!(!expected.is_empty(), "{name}");
        assert_eq!(rows, expected, "{name}");
        // Written back in the Android layout, the rows parse to themselves.
        let mut text = String::new();
        for r in &rows {
            write_trace_row(&mut text, r).unwrap();
        }
        assert_eq!(parse_trace(text.as_bytes()).unwrap(), rows, "{name}");
        // Upper-case hex and milliseconds (the seconds the daemon keeps, times 1000).
        assert_eq!(text, text.to_uppercase(), "{name}");
        assert!(text.lines().all(|l| l.ends_with("000")), "{name}: {text}");
    }
}
