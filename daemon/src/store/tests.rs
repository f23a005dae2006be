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
    assert_eq!(store.stats().unwrap().schema_version, 5);
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

mod ratchet {
    //! L8: the forward-ratcheting wrap key (`store::ratchet`).
    use super::super::keys::DerivedKeys;
    use super::super::master_key::MasterKey;
    use super::super::ratchet::{
        ratchet_path, CrashPoint, Ratchet, CRASH_AT, SLOT_LEN, SLOT_STRIDE,
    };
    use super::*;
    use std::fs;

    const D: i64 = 20_000;

    fn day_batch(day: i64, n: usize, tag: u32) -> Vec<Sighting> {
        let mut b = batch(n, tag);
        for (i, s) in b.iter_mut().enumerate() {
            s.time = day * 86_400 + 100 + i as i64;
        }
        b
    }

    fn setup() -> (tempfile::TempDir, KeyLocation, Store) {
        let dir = tempfile::tempdir().unwrap();
        let loc = KeyLocation::resolve(dir.path(), None);
        let (mut store, _) = Store::init_at(dir.path(), loc.clone()).unwrap();
        store.insert_sightings(&day_batch(D, 3, 1)).unwrap();
        store.insert_sightings(&day_batch(D + 1, 4, 2)).unwrap();
        store.insert_sightings(&day_batch(D + 2, 5, 3)).unwrap();
        (dir, loc, store)
    }

    fn wrapped(store: &Store, day: i64) -> Vec<u8> {
        store
            .conn_for_tests()
            .query_row("SELECT wrapped FROM day_keys WHERE day = ?1", [day], |r| {
                r.get(0)
            })
            .unwrap()
    }

    /// What someone holding the master key and a copy of the ratchet file (as it is now) can
    /// do with a wrapped day key: load the file at `epoch` and try to open it.
    fn attacker_opens(
        master: &MasterKey,
        file_copy: &[u8],
        epoch: u64,
        day: i64,
        wrapped: &[u8],
    ) -> Result<bool, StoreError> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("wrap-ratchet");
        fs::write(&p, file_copy).unwrap();
        fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let r = Ratchet::load(&p, master, epoch)?;
        let mut k = DerivedKeys::new(master);
        k.set_wrap(k.epoch_wrap(r.epoch(), r.key()));
        Ok(k.unwrap_day_key(day, wrapped).is_some())
    }

    fn nonzero_slots(file: &[u8]) -> usize {
        (0..2)
            .filter(|s| {
                let at = s * SLOT_STRIDE as usize;
                file[at..at + SLOT_LEN].iter().any(|&b| b != 0)
            })
            .count()
    }

    fn all_sightings(store: &Store) -> usize {
        let r = store.sightings_in_days(i64::MIN, i64::MAX).unwrap();
        assert_eq!(r.corrupt, 0);
        r.sightings.len()
    }

    /// A purge that deletes a day key steps the epoch: copies of wrapped day keys taken before
    /// (the purged day's and a retained day's) no longer open with the master key and the
    /// ratchet file as it is after the step; the old file would have opened them (so the check
    /// can fail); the retained data reads after reopening.
    #[test]
    fn purge_steps_the_epoch_and_old_wrapped_keys_no_longer_open() {
        let (dir, loc, mut store) = setup();
        let master = MasterKey::read_file(&loc.path).unwrap();
        let rfile = ratchet_path(store.path());
        let e0 = store.wrap_epoch();
        let old_file = fs::read(&rfile).unwrap();
        let (old_d, old_d2) = (wrapped(&store, D), wrapped(&store, D + 2));
        assert!(attacker_opens(&master, &old_file, e0, D, &old_d).unwrap());
        assert!(attacker_opens(&master, &old_file, e0, D + 2, &old_d2).unwrap());

        // Nothing deleted: no step.
        let r = store.purge_older_than(D + 21, 21).unwrap();
        assert_eq!((r.day_keys, r.wrap_epoch), (0, e0));
        // Day D deleted: one step.
        let r = store.purge_older_than(D + 1 + 21, 21).unwrap();
        assert_eq!((r.day_keys, r.wrap_epoch), (1, e0 + 1));
        let new_file = fs::read(&rfile).unwrap();
        assert_eq!(nonzero_slots(&new_file), 1, "old epoch key erased");
        assert_ne!(wrapped(&store, D + 2), old_d2, "re-wrapped");
        for (day, w) in [(D, &old_d), (D + 2, &old_d2)] {
            assert!(!attacker_opens(&master, &new_file, e0 + 1, day, w).unwrap());
            // Nor can the new file be walked back to the old epoch.
            let e = attacker_opens(&master, &new_file, e0, day, w).unwrap_err();
            assert!(matches!(e, StoreError::Ratchet { .. }), "{e}");
        }
        drop(store);
        let store = Store::open_at(dir.path(), loc).unwrap();
        assert_eq!(store.wrap_epoch(), e0 + 1);
        assert_eq!(all_sightings(&store), 4 + 5);
    }

    /// A crash at each reachable point of a step (next key written, day keys re-wrapped, not
    /// committed; committed, old slot not erased) leaves a store that opens with every row,
    /// and the file is tidied to one slot on open. A torn write of the unused slot is harmless.
    #[test]
    fn a_crash_during_an_epoch_step_loses_nothing() {
        for (point, expect_epoch) in [(CrashPoint::BeforeCommit, 0), (CrashPoint::AfterCommit, 1)] {
            let (dir, loc, mut store) = setup();
            let rfile = ratchet_path(store.path());
            assert_eq!(store.wrap_epoch(), 0);
            CRASH_AT.with(|c| c.set(Some(point)));
            let e = store.advance_wrap_epoch().unwrap_err();
            CRASH_AT.with(|c| c.set(None));
            assert!(e.to_string().contains("simulated crash"), "{e}");
            drop(store); // as kill -9: only what reached the files counts
            assert_eq!(nonzero_slots(&fs::read(&rfile).unwrap()), 2, "{point:?}");
            let mut store = Store::open_at(dir.path(), loc.clone()).unwrap();
            assert_eq!(store.wrap_epoch(), expect_epoch, "{point:?}");
            assert_eq!(all_sightings(&store), 12, "{point:?}");
            assert_eq!(nonzero_slots(&fs::read(&rfile).unwrap()), 1, "{point:?}");
            // Later steps work as usual.
            assert_eq!(store.advance_wrap_epoch().unwrap(), expect_epoch + 1);
            drop(store);

            // A torn write into the unused slot (garbage there): opens, slot cleared.
            let mut f = fs::read(&rfile).unwrap();
            let used = if f[..SLOT_LEN].iter().any(|&b| b != 0) {
                0
            } else {
                1
            };
            let at = (1 - used) * SLOT_STRIDE as usize;
            f[at..at + SLOT_LEN].fill(0x5a);
            fs::write(&rfile, &f).unwrap();
            let store = Store::open_at(dir.path(), loc).unwrap();
            assert_eq!(all_sightings(&store), 12);
            assert_eq!(nonzero_slots(&fs::read(&rfile).unwrap()), 1);
        }
    }

    /// Also through `purge_older_than`: a crash before the commit keeps the rows and the
    /// epoch; the next purge deletes and steps.
    #[test]
    fn a_crash_during_a_purge_step_rolls_back_the_purge() {
        let (dir, loc, mut store) = setup();
        CRASH_AT.with(|c| c.set(Some(CrashPoint::BeforeCommit)));
        assert!(store.purge_older_than(D + 1 + 21, 21).is_err());
        CRASH_AT.with(|c| c.set(None));
        drop(store);
        let mut store = Store::open_at(dir.path(), loc).unwrap();
        assert_eq!((store.wrap_epoch(), all_sightings(&store)), (0, 12));
        let r = store.purge_older_than(D + 1 + 21, 21).unwrap();
        assert_eq!((r.day_keys, r.wrap_epoch), (1, 1));
        assert_eq!(all_sightings(&store), 9);
    }

    fn db_bytes(dir: &Path) -> Vec<u8> {
        let mut v = fs::read(dir.join(DB_FILE)).unwrap();
        v.extend(fs::read(dir.join(format!("{DB_FILE}-wal"))).unwrap_or_default());
        v
    }

    /// A missing ratchet file, or one newer than the store (store restored from an older
    /// backup): a clear error naming the file, the store untouched. A ratchet file older than
    /// the store (restored from an older backup) is derived forward.
    #[test]
    fn ratchet_file_missing_newer_or_older_than_the_store() {
        let (dir, loc, mut store) = setup();
        let rfile = ratchet_path(store.path());
        let file_e0 = fs::read(&rfile).unwrap();
        store.advance_wrap_epoch().unwrap();
        store.advance_wrap_epoch().unwrap();
        drop(store);

        // Older file: derived forward from epoch 0 to 2, rewritten at epoch 2.
        let file_e2 = fs::read(&rfile).unwrap();
        fs::write(&rfile, &file_e0).unwrap();
        let store = Store::open_at(dir.path(), loc.clone()).unwrap();
        assert_eq!((store.wrap_epoch(), all_sightings(&store)), (2, 12));
        drop(store);
        let master = MasterKey::read_file(&loc.path).unwrap();
        let now = fs::read(&rfile).unwrap();
        assert_eq!(nonzero_slots(&now), 1);
        assert!(Ratchet::load(&rfile, &master, 2).is_ok());
        drop(file_e2);

        // Missing.
        fs::rename(&rfile, dir.path().join("aside")).unwrap();
        let before = db_bytes(dir.path());
        let e = Store::open_at(dir.path(), loc.clone()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&rfile.display().to_string()) && msg.contains("missing"),
            "{msg}"
        );
        assert_eq!(db_bytes(dir.path()), before, "store untouched");
        fs::rename(dir.path().join("aside"), &rfile).unwrap();

        // Store older than the file: make the store claim epoch 1 (as a restored older copy).
        {
            let c = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
            c.execute("UPDATE meta SET value = 1 WHERE key = 'wrap_epoch'", [])
                .unwrap();
        }
        let before = db_bytes(dir.path());
        let e = Store::open_at(dir.path(), loc).unwrap_err();
        assert!(matches!(e, StoreError::Ratchet { .. }), "{e}");
        assert!(e.to_string().contains(&rfile.display().to_string()), "{e}");
        assert_eq!(db_bytes(dir.path()), before, "store untouched");
    }

    /// A ratchet file restored from an older copy while another connection holds the store:
    /// that connection derives forward without rewriting the file, and a step it then starts
    /// (crashing before the commit) never overwrites the only key the store's epoch derives
    /// from.
    #[test]
    fn a_step_after_following_an_older_file_keeps_the_source_slot() {
        let (dir, loc, mut a) = setup();
        let rfile = ratchet_path(a.path());
        let mut b = Store::open_at(dir.path(), loc.clone()).unwrap();
        let file_e0 = fs::read(&rfile).unwrap();
        a.advance_wrap_epoch().unwrap();
        fs::write(&rfile, &file_e0).unwrap();
        assert_eq!(
            all_sightings(&b),
            12,
            "b follows epoch 1 from the epoch-0 file"
        );
        CRASH_AT.with(|c| c.set(Some(CrashPoint::BeforeCommit)));
        assert!(b.advance_wrap_epoch().is_err());
        CRASH_AT.with(|c| c.set(None));
        drop((a, b));
        let s = Store::open_at(dir.path(), loc).unwrap();
        assert_eq!((s.wrap_epoch(), all_sightings(&s)), (1, 12));
    }

    /// Schema v4 (day keys wrapped under the master-derived key, no ratchet file) migrates on
    /// first open: the file is created 0600, every day key re-wrapped (the master-derived key
    /// no longer opens any), no row lost.
    #[test]
    fn a_v4_store_gets_the_ratchet_on_first_open() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, loc, store) = setup();
        let rfile = ratchet_path(store.path());
        store.downgrade_to_v4_for_tests().unwrap();
        assert!(!rfile.exists());
        let master = MasterKey::read_file(&loc.path).unwrap();
        let legacy = DerivedKeys::new(&master);
        let v4_keys: Vec<(i64, Vec<u8>)> = {
            let c = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
            let mut st = c.prepare("SELECT day, wrapped FROM day_keys").unwrap();
            let v = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            v
        };
        assert_eq!(v4_keys.len(), 3);
        for (day, w) in &v4_keys {
            assert!(legacy.unwrap_day_key(*day, w).is_some(), "v4 format");
        }

        let store = Store::open_at(dir.path(), loc).unwrap();
        assert_eq!(store.stats().unwrap().schema_version, 5);
        assert_eq!(store.wrap_epoch(), 0);
        assert_eq!(all_sightings(&store), 12);
        assert_eq!(
            fs::metadata(&rfile).unwrap().permissions().mode() & 0o777,
            0o600
        );
        for (day, _) in &v4_keys {
            assert!(legacy
                .unwrap_day_key(*day, &wrapped(&store, *day))
                .is_none());
        }
    }
}

/// L8: a chunk written before padding (codec version 1, unpadded) still reads, beside padded
/// ones; its blob is exactly `5 + 17n + 28` bytes, the padded one a size class.
#[test]
fn unpadded_v1_chunks_still_decode() {
    use super::codec::encode_chunk_unpadded;
    use super::keys::{day_key_for_read, Ad};
    let dir = tempfile::tempdir().unwrap();
    let loc = KeyLocation::resolve(dir.path(), None);
    let (mut store, _) = Store::init_at(dir.path(), loc.clone()).unwrap();
    let day = 1_700_000_000 / 86_400;
    let padded = batch(3, 1);
    store.insert_sightings(&padded).unwrap();
    let old = batch(5, 2);
    let key = day_key_for_read(store.conn_for_tests(), &store.keys, day)
        .unwrap()
        .unwrap();
    let mut plain = Vec::new();
    encode_chunk_unpadded(day, &old, &mut plain);
    let blob = key.seal(&Ad::sightings(day, 2), &plain);
    assert_eq!(blob.len(), 5 + 17 * 5 + 28);
    store
        .conn_for_tests()
        .execute(
            "INSERT INTO sightings (id, day, blob) VALUES (2, ?1, ?2)",
            rusqlite::params![day, blob],
        )
        .unwrap();
    drop(store);
    let store = Store::open_at(dir.path(), loc).unwrap();
    let r = store.sightings_in_days(day, day).unwrap();
    assert_eq!(r.corrupt, 0);
    let expected: Vec<Sighting> = padded.iter().chain(&old).copied().collect();
    assert_eq!(r.sightings, expected);
    let first_len: i64 = store
        .conn_for_tests()
        .query_row("SELECT length(blob) FROM sightings WHERE id = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(first_len, 64 + 28);
}

/// L8 with two processes on one store (the daemon and a writing command, which purges): one
/// steps the wrap epoch while the other holds the store open with the previous epoch's keys.
/// The other follows the step on its next read or write, nothing becomes unreadable, and a
/// step by either leaves a file that the store opens with.
#[test]
fn a_wrap_step_by_another_connection_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let loc = KeyLocation::resolve(dir.path(), None);
    let day = 1_700_000_000 / 86_400;
    let at = |d: i64, n: usize, tag: u32| -> Vec<Sighting> {
        let mut b = batch(n, tag);
        for s in &mut b {
            s.time += (d - day) * 86_400;
        }
        b
    };
    let (mut a, _) = Store::init_at(dir.path(), loc.clone()).unwrap();
    a.insert_sightings(&at(day, 2, 1)).unwrap();
    a.insert_sightings(&at(day + 1, 3, 2)).unwrap();
    let mut b = Store::open_at(dir.path(), loc.clone()).unwrap();
    assert_eq!(b.wrap_epoch(), 0);
    // A purges day `day` and steps; B still holds epoch 0.
    let r = a.purge_older_than(day + 1 + 21, 21).unwrap();
    assert_eq!((r.day_keys, r.wrap_epoch), (1, 1));
    // B reads (follows the step) and writes a new day (its day key wrapped under epoch 1).
    let read = b.sightings_in_days(i64::MIN, i64::MAX).unwrap();
    assert_eq!((read.sightings.len(), read.corrupt), (3, 0));
    b.insert_sightings(&at(day + 2, 4, 3)).unwrap();
    assert_eq!(b.wrap_epoch(), 1);
    // B steps; A follows.
    assert_eq!(b.advance_wrap_epoch().unwrap(), 2);
    a.insert_sightings(&at(day + 3, 1, 4)).unwrap();
    let read = a.sightings_in_days(i64::MIN, i64::MAX).unwrap();
    assert_eq!((read.sightings.len(), read.corrupt), (8, 0));
    assert_eq!(a.advance_wrap_epoch().unwrap(), 3);
    drop((a, b));
    let s = Store::open_at(dir.path(), loc).unwrap();
    assert_eq!(s.wrap_epoch(), 3);
    let read = s.sightings_in_days(i64::MIN, i64::MAX).unwrap();
    assert_eq!((read.sightings.len(), read.corrupt), (8, 0));
}
