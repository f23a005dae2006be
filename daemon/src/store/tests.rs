//! Unit tests that need the crate's internals; behaviour tests live in `daemon/tests/store_*.rs`.

use super::*;
use bluezone_protocol::{PeerId, RollingId, Sighting};
use std::ffi::OsString;
use std::path::Path;

#[test]
fn data_dir_resolution() {
    let r = resolve_data_dir_with;
    assert_eq!(r(Some("/x".into()), Some("/s".into())), Path::new("/x"));
    assert_eq!(
        r(None, Some(OsString::from("/var/lib/bz"))),
        Path::new("/var/lib/bz")
    );
    assert_eq!(r(None, Some(OsString::from("/a:/b"))), Path::new("/a"));
    assert_eq!(
        r(None, Some(OsString::new())),
        Path::new("./bluezoned-data")
    );
    assert_eq!(r(None, None), Path::new("./bluezoned-data"));
}

fn batch(n: usize, tag: u32) -> Vec<Sighting> {
    (0..n)
        .map(|i| {
            let mut id = [0u8; 12];
            id[..4].copy_from_slice(&tag.to_be_bytes());
            id[4..8].copy_from_slice(&(i as u32).to_be_bytes());
            Sighting {
                peer: PeerId::Bluezone(RollingId(id)),
                time: 1_700_000_000 + i as i64,
                rssi: -60,
                tx_power: None,
                aem: None,
            }
        })
        .collect()
}

/// Disk full, simulated with `PRAGMA max_page_count` (works without root; the tmpfs variant is
/// `daemon/tests/store_faults.rs`): the writer gets `DiskFull`, and exactly the acknowledged
/// batches are stored.
#[test]
fn disk_full_via_max_page_count() {
    let dir = tempfile::tempdir().unwrap();
    let loc = KeyLocation::resolve(dir.path(), None);
    let (mut store, _) = Store::init_at(dir.path(), loc.clone()).unwrap();
    let pages: u32 = store
        .conn_for_tests()
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    store.set_max_page_count(pages + 8).unwrap();
    let mut acked = 0u32;
    let mut failure = None;
    for b in 0..10_000u32 {
        match store.insert_sightings(&batch(100, b)) {
            Ok(()) => acked += 1,
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let e = failure.expect("the page limit must be hit");
    assert!(e.is_disk_full(), "{e}");
    assert!(e.to_string().contains("disk full"), "{e}");
    assert!(acked > 0);
    drop(store);
    let store = Store::open_at(dir.path(), loc).unwrap();
    let r = store.sightings_in_days(i64::MIN, i64::MAX).unwrap();
    assert_eq!(r.corrupt, 0);
    assert_eq!(r.sightings.len(), acked as usize * 100);
    let mut expected: Vec<Sighting> = (0..acked).flat_map(|b| batch(100, b)).collect();
    let mut got = r.sightings;
    expected.sort_by_key(|s| (s.peer, s.time));
    got.sort_by_key(|s| (s.peer, s.time));
    assert_eq!(got, expected);
}

/// H2: a store written by schema v1 (exposures keyed by plain SHA-256 of public values) opens
/// with this build: every row is still there, readable, keyed by the HMAC, and no plain hash is
/// left anywhere in the table.
#[test]
fn v1_exposures_migrate_to_keyed_hashes_without_losing_a_row() {
    use super::keys::{Ad, DerivedKeys};
    use super::master_key::MasterKey;
    use sha2::{Digest, Sha256};

    let dir = tempfile::tempdir().unwrap();
    let loc = KeyLocation::resolve(dir.path(), None);
    let master = MasterKey::create_file(&loc.path).unwrap();
    let keys = DerivedKeys::new(&master);
    let db = dir.path().join(DB_FILE);
    let rows: Vec<(String, String, i64, bool)> = (0..5)
        .map(|i| {
            (
                if i % 2 == 0 { "gaen" } else { "bluezone" }.to_string(),
                format!("{:032x}", 0xabc0 + i),
                19_000 + i as i64 % 2,
                i % 3 == 0,
            )
        })
        .collect();
    let mut plain_hashes = Vec::new();
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(super::schema::MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "application_id", super::schema::APPLICATION_ID)
            .unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('key_check', ?1)",
            [&keys.check[..]],
        )
        .unwrap();
        let mut day_keys = std::collections::HashMap::new();
        for (protocol, case_key, day, notify) in &rows {
            let dk = day_keys.entry(*day).or_insert_with(|| {
                let (k, wrapped) = keys.new_day_key(*day);
                conn.execute(
                    "INSERT INTO day_keys (day, wrapped) VALUES (?1, ?2)",
                    rusqlite::params![day, wrapped],
                )
                .unwrap();
                k
            });
            // The v1 row key, as `check.rs` computed it.
            let mut h = Sha256::new();
            h.update(protocol.as_bytes());
            h.update(case_key.as_bytes());
            h.update(day.to_le_bytes());
            let hash = hex::encode(h.finalize());
            // The v1 record: the report before GAEN v2 scoring (no report type, buckets or
            // windows).
            let json = serde_json::json!({
                "protocol": protocol, "case_key": case_key, "day": day,
                "first_seen": day * 86_400 + 600, "last_seen": day * 86_400 + 1800,
                "sightings": 21, "distinct_ids": 2, "duration_s": 1200,
                "min_attenuation_db": 30, "typical_attenuation_db": 31,
                "weighted_minutes": 20.0, "notify": notify, "case_list": 1,
            });
            let blob = dk.seal(
                &Ad::exposure(*day, &hash),
                &serde_json::to_vec(&json).unwrap(),
            );
            conn.execute(
                "INSERT INTO exposures (day, key_hash, blob) VALUES (?1, ?2, ?3)",
                rusqlite::params![day, hash, blob],
            )
            .unwrap();
            plain_hashes.push(hash);
        }
        // One row that never opened (sealed under another day's AD): kept, still unreadable.
        conn.execute(
            "INSERT INTO exposures (day, key_hash, blob) VALUES (19000, ?1, x'00112233')",
            [&"f".repeat(64)],
        )
        .unwrap();
        plain_hashes.push("f".repeat(64));
    }

    let mut store = Store::open_at(dir.path(), loc.clone()).unwrap();
    assert_eq!(store.stats().unwrap().schema_version, 4);
    let x = store.exposures().unwrap();
    assert_eq!(x.exposures.len(), rows.len());
    assert_eq!(x.corrupt, 1);
    let total: i64 = store
        .conn_for_tests()
        .query_row("SELECT COUNT(*) FROM exposures", [], |r| r.get(0))
        .unwrap();
    assert_eq!(total as usize, rows.len() + 1, "no row lost");
    let stored_hashes: Vec<String> = {
        let mut st = store
            .conn_for_tests()
            .prepare("SELECT key_hash FROM exposures")
            .unwrap();
        let v = st
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        v
    };
    for h in &plain_hashes {
        assert!(!stored_hashes.contains(h), "plain SHA-256 {h} left");
    }
    for (protocol, case_key, day, notify) in &rows {
        let e = x
            .exposures
            .iter()
            .find(|e| &e.key.case_key == case_key)
            .expect("row kept");
        assert_eq!((&e.key.protocol, e.key.day), (protocol, *day));
        assert_eq!(e.record.notify, *notify);
        assert_eq!((e.record.weighted_minutes, e.record.sightings), (20.0, 21));
        assert_eq!(e.record.report_type, None, "not weighed in v1");
        assert!(e.record.windows.is_empty());
        let expected = if *notify {
            DeliveryState::Pending
        } else {
            DeliveryState::NotNotifying
        };
        assert_eq!(e.delivery.state, expected);
        // The migrated id is the one the new code computes: later matches update this row.
        let again = store.upsert_exposure(&e.record).unwrap();
        assert_eq!(again.id, e.id);
        assert!(!again.inserted);
    }
    drop(store);
    // Opening again changes nothing (the migration ran once).
    let store = Store::open_at(dir.path(), loc).unwrap();
    assert_eq!(store.exposures().unwrap().exposures.len(), rows.len());
}

/// A row sealed before the store took typed records (an envelope around the report JSON that
/// `check` wrote, GAEN v2 fields included) opens as an [`ExposureRecord`], and reports the same
/// JSON as before plus `id`, `state` and `withdrawn_reason`.
#[test]
fn an_exposure_row_written_as_generic_json_reads_as_a_typed_record() {
    use super::keys::{day_key_for_write, Ad};
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) =
        Store::init_at(dir.path(), KeyLocation::resolve(dir.path(), None)).unwrap();
    let day = 19_700;
    let record = serde_json::json!({
        "protocol": "gaen", "case_key": "00112233445566778899aabbccddeeff", "day": day,
        "first_seen": day * 86_400 + 600, "last_seen": day * 86_400 + 1_500,
        "sightings": 16, "distinct_ids": 2, "duration_s": 900,
        "min_attenuation_db": 28, "typical_attenuation_db": 33,
        "weighted_minutes": 15.0, "notify": true, "case_list": 3,
        "report_type": "confirmed_clinical_diagnosis", "infectiousness": "high",
        "seconds_by_bucket": [900, 0, 0, 0],
        "windows": [{
            "start": day * 86_400 + 600, "first_seen": day * 86_400 + 600,
            "last_seen": day * 86_400 + 1_500, "scan_instances": 16, "sightings": 16,
            "seconds_by_bucket": [900, 0, 0, 0], "min_attenuation_db": 28,
            "typical_attenuation_db": 33, "score": 900.0, "counted": true,
        }],
    });
    let key = ExposureKey {
        protocol: "gaen".into(),
        case_key: "00112233445566778899aabbccddeeff".into(),
        day,
    };
    let id = store.keys.exposure_hash(&key);
    let env = serde_json::json!({
        "key": key,
        "delivery": {
            "state": "delivered", "withdrawn_reason": null, "withdrawal_due": false,
            "attempts": 0, "next_attempt": 0,
        },
        "record": record,
    });
    store
        .write_tx(|tx, path, keys| {
            let blob = day_key_for_write(tx, path, keys, day)?
                .seal(&Ad::exposure(day, &id), &serde_json::to_vec(&env).unwrap());
            tx.execute(
                "INSERT INTO exposures (day, key_hash, blob) VALUES (?1, ?2, ?3)",
                rusqlite::params![day, id, blob],
            )
            .unwrap();
            Ok(())
        })
        .unwrap();
    let x = store.exposures().unwrap();
    assert_eq!((x.exposures.len(), x.corrupt), (1, 0));
    let e = &x.exposures[0];
    assert_eq!(e.delivery.state, DeliveryState::Delivered);
    assert_eq!(e.record.windows.len(), 1);
    assert_eq!(
        e.record.infectiousness,
        Some(bluezone_protocol::matching::score::Infectiousness::High)
    );
    let mut expected = record.clone();
    expected["id"] = id.clone().into();
    expected["state"] = "delivered".into();
    expected["withdrawn_reason"] = serde_json::Value::Null;
    assert_eq!(serde_json::to_value(e).unwrap(), expected);
    // A later match updates the same row.
    let again = store.upsert_exposure(&e.record).unwrap();
    assert_eq!((again.id.as_str(), again.inserted), (id.as_str(), false));
}

/// `data_version` moves when another connection (another process: `cases import`) commits,
/// and not for this connection's own writes, which the daemon's tasks announce themselves.
#[test]
fn data_version_sees_other_connections_writes_only() {
    let dir = tempfile::tempdir().unwrap();
    let loc = KeyLocation::resolve(dir.path(), None);
    let (mut daemon, _) = Store::init_at(dir.path(), loc.clone()).unwrap();
    let v0 = daemon.data_version().unwrap();
    daemon.insert_sightings(&batch(3, 1)).unwrap();
    assert_eq!(daemon.data_version().unwrap(), v0, "own write");
    let mut other = Store::open_at(dir.path(), loc).unwrap();
    other.insert_sightings(&batch(3, 2)).unwrap();
    let v1 = daemon.data_version().unwrap();
    assert_ne!(v1, v0, "another connection's commit");
    assert_eq!(daemon.data_version().unwrap(), v1, "nothing new");
}
