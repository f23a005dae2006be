//! The store's library API: round trips, sealing and binding, faults at open, corrupt records.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use bluezone_protocol::{Aem, PeerId, RollingId, Rpi, Sighting};
use bluezoned::caselist::Format;
use bluezoned::store::{
    DeliveryState, ExposureKey, ExposureRecord, KeyLocation, KeySource, Store, StoreError, DB_FILE,
    KEY_FILE,
};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rusqlite::Connection;

const DAY: i64 = 86_400;
const D0: i64 = 19_700; // a UTC day number

fn loc(dir: &Path) -> KeyLocation {
    KeyLocation::resolve(dir, None)
}

fn init(dir: &Path) -> Store {
    Store::init_at(dir, loc(dir)).unwrap().0
}

fn reopen(dir: &Path) -> Store {
    Store::open_at(dir, loc(dir)).unwrap()
}

fn bz(n: u32, day: i64, secs: i64) -> Sighting {
    let mut id = [0x42u8; 12];
    id[..4].copy_from_slice(&n.to_be_bytes());
    Sighting {
        peer: PeerId::Bluezone(RollingId(id)),
        time: day * DAY + secs,
        rssi: -((n % 100) as i8),
        tx_power: None,
        aem: None,
    }
}

fn gaen(n: u32, day: i64, secs: i64) -> Sighting {
    let mut id = [0x17u8; 16];
    id[..4].copy_from_slice(&n.to_be_bytes());
    Sighting {
        peer: PeerId::Gaen(Rpi(id)),
        time: day * DAY + secs,
        rssi: -80,
        tx_power: Some(-12),
        aem: Some(Aem([1, 2, 3, n as u8])),
    }
}

fn raw(dir: &Path) -> Connection {
    Connection::open(dir.join(DB_FILE)).unwrap()
}

fn file_bytes(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap()
}

#[test]
fn sightings_round_trip_across_days_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = init(dir.path());
    let batch: Vec<Sighting> = vec![
        bz(1, D0, 0),
        gaen(2, D0, 86_399),
        bz(3, D0 + 1, 5),
        gaen(4, D0 + 2, 60),
        bz(5, D0, 10),
    ];
    store.insert_sightings(&batch).unwrap();
    store.insert_sightings(&[bz(6, D0 + 1, 7)]).unwrap();
    store.insert_sightings(&[]).unwrap();
    drop(store);

    let store = reopen(dir.path());
    let all = store.sightings_in_days(D0, D0 + 2).unwrap();
    assert_eq!(all.corrupt, 0);
    // Day order, then insertion order within the day.
    assert_eq!(
        all.sightings,
        vec![
            batch[0],
            batch[1],
            batch[4],
            batch[2],
            bz(6, D0 + 1, 7),
            batch[3]
        ]
    );
    let one = store.sightings_in_days(D0 + 1, D0 + 1).unwrap();
    assert_eq!(one.sightings, vec![batch[2], bz(6, D0 + 1, 7)]);
    assert!(store
        .sightings_in_days(D0 + 3, D0 + 10)
        .unwrap()
        .sightings
        .is_empty());
    assert_eq!(store.sighting_days().unwrap(), vec![D0, D0 + 1, D0 + 2]);
    assert_eq!(store.key_source(), KeySource::File);

    // Only the day is stored in clear: one chunk per (batch, day), sealed.
    let c = raw(dir.path());
    let rows: Vec<(i64, i64)> = c
        .prepare("SELECT day, length(blob) FROM sightings ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let days: Vec<i64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(days, vec![D0, D0 + 1, D0 + 2, D0 + 1]);
    // Chunk D0: 5-byte header, bz 17 + gaen (1+16+3+1+1+4 = 26) + bz 17 = 65 bytes, padded to
    // its size class (128, L8), plus nonce and tag.
    assert_eq!(rows[0].1, 128 + 28);
}

/// L8: a sealed chunk's length tells its batch's sighting count only to within its size class
/// (a power of two of plaintext bytes): batches of 20 and 29 Bluezone sightings (345 and 498
/// plaintext bytes) give equal blob lengths, one of 40 (685) the next class.
#[test]
fn chunk_sizes_reveal_only_a_size_class() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = init(dir.path());
    for (n, base) in [(20u32, 0u32), (29, 100), (40, 200)] {
        let batch: Vec<Sighting> = (0..n).map(|i| bz(base + i, D0, i64::from(i))).collect();
        store.insert_sightings(&batch).unwrap();
    }
    let lens: Vec<i64> = raw(dir.path())
        .prepare("SELECT length(blob) FROM sightings ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(lens, vec![512 + 28, 512 + 28, 1024 + 28]);
    assert_eq!(store.sightings_in_days(D0, D0).unwrap().sightings.len(), 89);
}

#[test]
fn large_batches_are_split_into_chunks_in_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = init(dir.path());
    let n = bluezoned::store::MAX_CHUNK_SIGHTINGS as u32 * 2 + 3;
    let batch: Vec<Sighting> = (0..n).map(|i| bz(i, D0, i64::from(i % 86_400))).collect();
    store.insert_sightings(&batch).unwrap();
    let chunks: i64 = raw(dir.path())
        .query_row("SELECT count(*) FROM sightings", [], |r| r.get(0))
        .unwrap();
    assert_eq!(chunks, 3);
    assert_eq!(store.sightings_in_days(D0, D0).unwrap().sightings, batch);
}

#[test]
fn flipped_byte_is_counted_corrupt_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = init(dir.path());
    store
        .insert_sightings(&[bz(1, D0, 1), bz(2, D0, 2)])
        .unwrap();
    store.insert_sightings(&[bz(3, D0, 3)]).unwrap();
    store.insert_sightings(&[bz(4, D0, 4)]).unwrap();
    let c = raw(dir.path());
    let mut blob: Vec<u8> = c
        .query_row("SELECT blob FROM sightings WHERE id = 2", [], |r| r.get(0))
        .unwrap();
    blob[20] ^= 0x04;
    c.execute("UPDATE sightings SET blob = ?1 WHERE id = 2", [&blob])
        .unwrap();
    let r = store.sightings_in_days(D0, D0).unwrap();
    assert_eq!(r.corrupt, 1);
    assert_eq!(r.sightings, vec![bz(1, D0, 1), bz(2, D0, 2), bz(4, D0, 4)]);
    // A blob that is not even a blob (wrong SQLite type) or too short: also just corrupt.
    c.execute("UPDATE sightings SET blob = 'x' WHERE id = 1", [])
        .unwrap();
    c.execute("UPDATE sightings SET blob = x'00' WHERE id = 3", [])
        .unwrap();
    let r = store.sightings_in_days(D0, D0).unwrap();
    assert_eq!((r.corrupt, r.sightings.len()), (3, 0));
    let st = store.stats().unwrap();
    assert_eq!(st.corrupt_chunks, 3);
}

#[test]
fn sealed_values_moved_to_another_row_or_day_fail_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = init(dir.path());
    store.insert_sightings(&[bz(1, D0, 1)]).unwrap();
    store.insert_sightings(&[bz(2, D0, 2)]).unwrap();
    store.insert_sightings(&[bz(3, D0 + 1, 3)]).unwrap();
    let c = raw(dir.path());
    // Swap the two chunks of day D0 (same key, other row).
    c.execute(
        "UPDATE sightings SET blob = (SELECT blob FROM sightings WHERE id = 2) WHERE id = 1",
        [],
    )
    .unwrap();
    let r = store.sightings_in_days(D0, D0).unwrap();
    assert_eq!(r.corrupt, 1, "chunk 1 now holds chunk 2's sealed value");
    assert_eq!(r.sightings, vec![bz(2, D0, 2)]);
    // Relabel a chunk to another day.
    c.execute("UPDATE sightings SET day = ?1 WHERE id = 3", [D0])
        .unwrap();
    let r = store.sightings_in_days(D0, D0 + 1).unwrap();
    assert_eq!(r.corrupt, 2);
    // Move a wrapped day key to another day: that day's rows no longer open.
    c.execute(
        "UPDATE day_keys SET wrapped = (SELECT wrapped FROM day_keys WHERE day = ?1) WHERE day = ?2",
        [D0, D0 + 1],
    )
    .unwrap();
    c.execute("UPDATE sightings SET day = ?1 WHERE id = 3", [D0 + 1])
        .unwrap();
    let r = store.sightings_in_days(D0 + 1, D0 + 1).unwrap();
    assert_eq!((r.corrupt, r.sightings.len()), (1, 0));
    // Writing to a day whose key does not open is refused, not papered over with a new key.
    let e = store.insert_sightings(&[bz(9, D0 + 1, 9)]).unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::Corrupt {
                table: "day_keys",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn own_keys_persist_rotate_and_are_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = init(dir.path());
    let mut rng = StdRng::seed_from_u64(7);
    let (d1, t1) = store.own_keys_for_day(D0, &mut rng).unwrap();
    let (d1b, t1b) = store.own_keys_for_day(D0, &mut rng).unwrap();
    assert_eq!(
        (d1.as_bytes(), t1.as_bytes()),
        (d1b.as_bytes(), t1b.as_bytes())
    );
    let (d2, _) = store.own_keys_for_day(D0 + 1, &mut rng).unwrap();
    assert_ne!(d1.as_bytes(), d2.as_bytes(), "each day is drawn fresh");
    drop(store);

    let mut store = reopen(dir.path());
    let keys = store.own_keys_in_days(D0..=D0 + 5).unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].day, D0);
    assert_eq!(keys[0].daily_key.as_bytes(), d1.as_bytes());
    assert_eq!(keys[0].tek.as_bytes(), t1.as_bytes());
    assert_eq!(keys[1].day, D0 + 1);
    assert!(!format!("{keys:?}").contains(&hex::encode(d1.as_bytes())));
    assert!(store.own_keys_in_days(D0 + 2..=D0 + 9).unwrap().is_empty());

    let (r1, rt1) = store.rotate_own_keys(D0, &mut rng).unwrap();
    assert_ne!(r1.as_bytes(), d1.as_bytes());
    let (again, tek_again) = store.own_keys_for_day(D0, &mut rng).unwrap();
    assert_eq!(again.as_bytes(), r1.as_bytes());
    assert_eq!(tek_again.as_bytes(), rt1.as_bytes());
    drop(store);

    // Neither the rotated-out key nor the current one is anywhere in the files.
    for entry in fs::read_dir(dir.path()).unwrap() {
        let p = entry.unwrap().path();
        let bytes = file_bytes(&p);
        for secret in [d1.as_bytes().as_slice(), r1.as_bytes(), d2.as_bytes()] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret),
                "key in clear in {}",
                p.display()
            );
        }
    }

    // A corrupt own key is an error (never silently replaced).
    let c = raw(dir.path());
    c.execute(
        "UPDATE own_keys SET blob = zeroblob(60) WHERE day = ?1 AND protocol = 'gaen'",
        [D0],
    )
    .unwrap();
    let mut store = reopen(dir.path());
    let e = store.own_keys_for_day(D0, &mut rng).unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::Corrupt {
                table: "own_keys",
                ..
            }
        ),
        "{e}"
    );
    assert!(store.own_keys_in_days(D0..=D0).is_err());
}

#[test]
fn case_lists_are_idempotent_and_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = init(dir.path());
    let content = br#"{"data":[{"daily_key":"SECRETCASELISTCONTENT","time_start":1}]}"#;
    let (id, inserted) = store
        .insert_case_list(D0 - 1, Format::BluezoneF0, 1, content)
        .unwrap();
    assert!(inserted);
    let (id2, inserted2) = store
        .insert_case_list(D0, Format::BluezoneF0, 1, content)
        .unwrap();
    assert_eq!((id2, inserted2), (id, false));
    let (id3, inserted3) = store
        .insert_case_list(D0, Format::GaenExport, 7, b"other list")
        .unwrap();
    assert!(inserted3 && id3 != id);
    let lists = store.case_lists().unwrap();
    assert_eq!(lists.len(), 2);
    assert_eq!(lists[0].format, Format::BluezoneF0);
    assert_eq!(lists[0].imported_day, D0 - 1);
    assert_eq!(lists[1].format, Format::GaenExport);
    assert_eq!(lists[0].entries, 1);
    assert_eq!(lists[0].content_hash.len(), 64);
    assert_eq!(lists[1].imported_day, D0);
    assert_eq!(store.case_list_bytes(id).unwrap(), content);
    assert_eq!(store.case_list_bytes(id3).unwrap(), b"other list");
    assert!(matches!(
        store.case_list_bytes(999),
        Err(StoreError::NotFound { .. })
    ));
    drop(store);
    let db = file_bytes(&dir.path().join(DB_FILE));
    assert!(!db.windows(21).any(|w| w == b"SECRETCASELISTCONTENT"));

    // The clear columns are bound too: tampering with entries makes the list fail to open.
    let c = raw(dir.path());
    c.execute("UPDATE case_lists SET entries = 2 WHERE id = ?1", [id])
        .unwrap();
    let store = reopen(dir.path());
    let e = store.case_list_bytes(id).unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::Corrupt {
                table: "case_lists",
                ..
            }
        ),
        "{e}"
    );
}

fn xkey(case_key: &str, day: i64) -> ExposureKey {
    ExposureKey {
        protocol: "gaen".into(),
        case_key: case_key.into(),
        day,
    }
}

fn record(case_key: &str, day: i64, minutes: f64, notify: bool) -> ExposureRecord {
    ExposureRecord {
        protocol: "gaen".into(),
        case_key: case_key.into(),
        day,
        weighted_minutes: minutes,
        notify,
        ..Default::default()
    }
}

/// The batch upsert (one transaction) reports and stores what one upsert at a time does.
#[test]
fn exposures_upsert_in_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = init(dir.path());
    let first = store
        .upsert_exposures(&[
            record("aa11", D0, 5.0, false),
            record("bb22", D0 + 1, 30.0, true),
        ])
        .unwrap();
    assert_eq!(first.len(), 2);
    assert!(first[0].inserted && !first[0].became_pending);
    assert!(first[1].inserted && first[1].became_pending);
    assert_eq!(first[1].delivery.state, DeliveryState::Pending);
    let again = store
        .upsert_exposures(&[record("aa11", D0, 9.0, true)])
        .unwrap();
    assert!(!again[0].inserted && again[0].became_pending);
    assert_eq!(again[0].id, first[0].id);
    let ex = store.exposures().unwrap();
    assert_eq!(ex.exposures.len(), 2);
    assert_eq!(ex.exposures[0].record, record("aa11", D0, 9.0, true));
    assert!(store.upsert_exposures(&[]).unwrap().is_empty());
}

#[test]
fn exposures_upsert() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = init(dir.path());
    let a = store
        .upsert_exposure(&record("aa11", D0, 5.0, false))
        .unwrap();
    assert!(a.inserted && !a.became_pending);
    assert_eq!(a.delivery.state, DeliveryState::NotNotifying);
    let b = store
        .upsert_exposure(&record("bb22", D0 + 1, 30.0, true))
        .unwrap();
    assert!(b.inserted && b.became_pending);
    let a2 = store
        .upsert_exposure(&record("aa11", D0, 9.0, false))
        .unwrap();
    assert!(!a2.inserted);
    assert_eq!(a2.id, a.id);
    // The id is a keyed hash: not computable from the (public) case key alone.
    assert_eq!(a.id.as_str().len(), 64);
    assert_ne!(a.id, b.id);
    let ex = store.exposures().unwrap();
    assert_eq!(ex.corrupt, 0);
    assert_eq!(ex.exposures.len(), 2);
    assert_eq!(ex.exposures[0].id, a.id);
    assert_eq!(ex.exposures[0].record, record("aa11", D0, 9.0, false));
    assert_eq!(ex.exposures[0].key, xkey("aa11", D0));
    assert_eq!(ex.exposures[1].key.day, D0 + 1);
    assert_eq!(ex.exposures[1].delivery.state, DeliveryState::Pending);
    // The light read agrees without decoding the records.
    let states = store.exposure_states().unwrap();
    assert_eq!(states.exposures.len(), 2);
    assert_eq!(states.exposures[1].id, b.id);
    assert_eq!(states.exposures[1].delivery.state, DeliveryState::Pending);
    // Moving a sealed exposure to another row fails to open; it is counted, not fatal.
    raw(dir.path())
        .execute(
            "UPDATE exposures SET blob = (SELECT blob FROM exposures WHERE key_hash = ?1) \
             WHERE key_hash = ?2",
            [a.id.as_str(), b.id.as_str()],
        )
        .unwrap();
    let ex = store.exposures().unwrap();
    assert_eq!((ex.exposures.len(), ex.corrupt), (1, 1));
}

/// `check --json`, `GET /v1/exposures` and the hook all serialize a stored exposure: the
/// record's fields plus `id`, `state` and `withdrawn_reason`; a withdrawn one reports
/// `notify: false`.
#[test]
fn a_stored_exposure_reports_its_record_id_and_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = init(dir.path());
    let r = record("aa11", D0, 30.0, true);
    let o = store.upsert_exposure(&r).unwrap();
    let x = &store.exposures().unwrap().exposures[0];
    let v = serde_json::to_value(x).unwrap();
    let mut expected = serde_json::to_value(&r).unwrap();
    expected["id"] = o.id.as_str().into();
    expected["state"] = "pending".into();
    expected["withdrawn_reason"] = serde_json::Value::Null;
    assert_eq!(v, expected);
    store
        .withdraw_exposure("gaen", "AA11", "the key was revoked")
        .unwrap();
    let x = &store.exposures().unwrap().exposures[0];
    assert!(x.record.notify, "the stored record keeps what was matched");
    let v = serde_json::to_value(x).unwrap();
    assert_eq!(v["notify"], false);
    assert_eq!(v["state"], "withdrawn");
    assert_eq!(v["withdrawn_reason"], "the key was revoked");
}

#[test]
fn wrong_master_key_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = init(dir.path());
    store.insert_sightings(&[bz(1, D0, 1)]).unwrap();
    drop(store);
    let db = dir.path().join(DB_FILE);
    let before = file_bytes(&db);
    let key = dir.path().join(KEY_FILE);
    fs::write(&key, [0x99u8; 32]).unwrap();
    let e = Store::open_at(dir.path(), loc(dir.path())).unwrap_err();
    assert!(matches!(e, StoreError::WrongKey { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("does not match") && msg.contains(&key.display().to_string()),
        "{msg}"
    );
    assert!(!msg.contains("9999"), "{msg}");
    // init with the wrong key: refused as well, nothing created.
    let e = Store::init_at(dir.path(), loc(dir.path())).unwrap_err();
    assert!(matches!(e, StoreError::WrongKey { .. }), "{e}");
    assert_eq!(file_bytes(&db), before, "database bytes unchanged");
    let wal = dir.path().join(format!("{DB_FILE}-wal"));
    assert!(!wal.exists() || fs::metadata(&wal).unwrap().len() == 0);
}

#[test]
fn a_file_that_is_not_a_database_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DB_FILE);
    let junk = b"this is not a database, just some text that is long enough to matter".repeat(10);
    fs::write(&db, &junk).unwrap();
    for result in [
        Store::open_at(dir.path(), loc(dir.path())).map(|_| ()),
        Store::init_at(dir.path(), loc(dir.path())).map(|_| ()),
    ] {
        let e = result.unwrap_err();
        assert!(matches!(e, StoreError::NotAStore { .. }), "{e}");
        assert!(e.to_string().contains(&db.display().to_string()), "{e}");
    }
    assert_eq!(file_bytes(&db), junk);
    let names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with("-wal") || n.ends_with("-shm")),
        "{names:?}"
    );

    // Another application's SQLite database: refused too, unchanged.
    fs::remove_file(&db).unwrap();
    Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    bluezoned::store::MasterKey::create_file(&dir.path().join(KEY_FILE)).unwrap();
    let before = file_bytes(&db);
    for result in [
        Store::open_at(dir.path(), loc(dir.path())).map(|_| ()),
        Store::init_at(dir.path(), loc(dir.path())).map(|_| ()),
    ] {
        let e = result.unwrap_err();
        assert!(matches!(e, StoreError::NotAStore { .. }), "{e}");
        assert!(e.to_string().contains("another application"), "{e}");
    }
    assert_eq!(file_bytes(&db), before);
}

#[test]
fn key_file_permissions_and_size_are_checked_at_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(init(dir.path()));
    let key = dir.path().join(KEY_FILE);
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let secret = file_bytes(&key);
    for mode in [0o604, 0o640, 0o660, 0o644] {
        fs::set_permissions(&key, fs::Permissions::from_mode(mode)).unwrap();
        let e = Store::open_at(dir.path(), loc(dir.path())).unwrap_err();
        assert!(matches!(e, StoreError::KeyPermissions { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains(&key.display().to_string()), "{msg}");
        assert!(!msg.contains(&hex::encode(&secret)), "{msg}");
    }
    fs::set_permissions(&key, fs::Permissions::from_mode(0o400)).unwrap();
    reopen(dir.path());
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(&key, [&secret[..], b"\n"].concat()).unwrap();
    let e = Store::open_at(dir.path(), loc(dir.path())).unwrap_err();
    assert!(matches!(e, StoreError::KeySize { found: 33, .. }), "{e}");
    assert!(e.to_string().contains("expected exactly 32 bytes"), "{e}");
    // Missing key file next to an existing store: "run init", and init refuses to make a new key.
    fs::remove_file(&key).unwrap();
    let e = Store::open_at(dir.path(), loc(dir.path())).unwrap_err();
    assert!(e.to_string().contains("run `bluezoned init` first"), "{e}");
    let e = Store::init_at(dir.path(), loc(dir.path())).unwrap_err();
    assert!(
        e.to_string().contains("refusing to create a new key"),
        "{e}"
    );
    assert!(!key.exists());
}

#[test]
fn missing_store_says_run_init() {
    let dir = tempfile::tempdir().unwrap();
    let e = Store::open_at(&dir.path().join("nope"), loc(dir.path())).unwrap_err();
    assert!(matches!(e, StoreError::NotInitialised { .. }), "{e}");
    assert!(e.to_string().contains("run `bluezoned init` first"), "{e}");
    assert!(!dir.path().join("nope").exists(), "open never creates");
}

#[test]
fn init_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (s, r) = Store::init_at(&data, loc(&data)).unwrap();
    assert!(r.created_dir && r.created_key && r.created_store);
    drop(s);
    assert_eq!(
        fs::metadata(&data).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let key = file_bytes(&data.join(KEY_FILE));
    let db = file_bytes(&data.join(DB_FILE));
    let (s, r) = Store::init_at(&data, loc(&data)).unwrap();
    assert!(r.nothing_changed(), "{r:?}");
    drop(s);
    assert_eq!(file_bytes(&data.join(KEY_FILE)), key);
    assert_eq!(file_bytes(&data.join(DB_FILE)), db);
}

#[test]
fn credential_key_location() {
    let dir = tempfile::tempdir().unwrap();
    let creds = tempfile::tempdir().unwrap();
    let cred = creds.path().join(KEY_FILE);
    fs::write(&cred, [5u8; 32]).unwrap();
    fs::set_permissions(&cred, fs::Permissions::from_mode(0o400)).unwrap();
    let l = KeyLocation::resolve(dir.path(), Some(creds.path()));
    let (mut s, r) = Store::init_at(dir.path(), l.clone()).unwrap();
    assert!(!r.created_key && r.created_store);
    assert_eq!(s.key_source(), KeySource::Credential);
    assert!(
        !dir.path().join(KEY_FILE).exists(),
        "no key file next to the store"
    );
    s.insert_sightings(&[bz(1, D0, 1)]).unwrap();
    drop(s);
    let s = Store::open_at(dir.path(), l).unwrap();
    assert_eq!(s.sightings_in_days(D0, D0).unwrap().sightings.len(), 1);
    assert_eq!(s.stats().unwrap().key_source, KeySource::Credential);
}

#[test]
fn debug_output_has_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let store = init(dir.path());
    let key = file_bytes(&dir.path().join(KEY_FILE));
    let dbg = format!("{store:?}");
    assert!(!dbg.contains(&hex::encode(&key)), "{dbg}");
    assert!(dbg.contains("Store"));
    let m = bluezoned::store::MasterKey::from_bytes(key.try_into().unwrap());
    assert_eq!(format!("{m:?}"), "MasterKey(<redacted>)");
}

#[test]
fn stats_count_per_day() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = init(dir.path());
    store
        .insert_sightings(&[bz(1, D0, 1), bz(1, D0, 2), bz(2, D0, 3), gaen(3, D0 + 1, 4)])
        .unwrap();
    let st = store.stats().unwrap();
    assert_eq!(st.sightings, 4);
    assert_eq!(st.distinct_ids, 3);
    assert_eq!(st.days.len(), 2);
    assert_eq!(
        (
            st.days[0].day,
            st.days[0].sightings,
            st.days[0].distinct_ids
        ),
        (D0, 3, 2)
    );
    assert_eq!(st.oldest_day, Some(D0));
    assert!(st.store_bytes > 0);
    assert_eq!(st.schema_version, 5);
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// M5: a data directory that already exists with 0755 (e.g. `mkdir` under umask 022, or
/// `StateDirectoryMode=` left at its default) is fixed to 0700, and the store, WAL and SHM files
/// are 0600 whatever the process umask; files left 0644 by an older version are fixed on open.
#[test]
fn data_dir_and_store_files_are_private_whatever_their_prior_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let mut store = init(&dir);
    store.insert_sightings(&[bz(1, D0, 10)]).unwrap();
    assert_eq!(mode(&dir), 0o700);
    let db = dir.join(DB_FILE);
    for suffix in ["", "-wal", "-shm"] {
        let p = Path::new(&format!("{}{suffix}", db.display())).to_path_buf();
        assert!(p.exists(), "{} exists while the store is open", p.display());
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
    drop(store);
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&db, fs::Permissions::from_mode(0o644)).unwrap();
    let store = reopen(&dir);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&db), 0o600);
    assert_eq!(store.sightings_in_days(D0, D0).unwrap().sightings.len(), 1);
}

/// H3: systemd hands a `LoadCredential=` key to the service user through an ACL, so it shows
/// 0440: accepted there. The 0600 rule still holds for a key file in the data directory.
#[test]
fn a_0440_key_in_the_credentials_directory_is_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let creds = tmp.path().join("creds");
    fs::create_dir(&creds).unwrap();
    let key = creds.join(KEY_FILE);
    fs::write(&key, [0x17u8; 32]).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o440)).unwrap();
    let cred = KeyLocation::resolve(&data, Some(&creds));
    assert_eq!(cred.source, KeySource::Credential);
    let (mut store, report) = Store::init_at(&data, cred.clone()).unwrap();
    assert!(report.created_store && !report.created_key);
    store.insert_sightings(&[bz(2, D0, 20)]).unwrap();
    drop(store);
    let store = Store::open_at(&data, cred).unwrap();
    assert_eq!(store.sightings_in_days(D0, D0).unwrap().sightings.len(), 1);

    // The same mode in the data directory is refused.
    let other = tmp.path().join("other");
    fs::create_dir(&other).unwrap();
    fs::write(other.join(KEY_FILE), [0x17u8; 32]).unwrap();
    fs::set_permissions(other.join(KEY_FILE), fs::Permissions::from_mode(0o440)).unwrap();
    let e = Store::init_at(&other, loc(&other)).unwrap_err();
    assert!(
        matches!(e, StoreError::KeyPermissions { mode: 0o440, .. }),
        "{e}"
    );
}

/// L4: reading the own keys of a day that has none creates nothing.
#[test]
fn reading_own_keys_never_creates_them() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = init(tmp.path());
    assert!(store.own_keys(D0).unwrap().is_none());
    assert!(store.own_keys(D0).unwrap().is_none());
    assert!(store.own_keys_in_days(D0..=D0).unwrap().is_empty());
    let (d, t) = store
        .own_keys_for_day(D0, &mut StdRng::seed_from_u64(1))
        .unwrap();
    let k = store.own_keys(D0).unwrap().expect("stored now");
    assert_eq!(
        (k.daily_key.as_bytes(), k.tek.as_bytes()),
        (d.as_bytes(), t.as_bytes())
    );
}

/// L20: the counts for status and metrics come from counters kept with every insert and purge,
/// not from decrypting: they stay right when no sealed value can be opened at all.
#[test]
fn counts_need_no_decryption_and_follow_inserts_and_purges() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = init(dir.path());
    store
        .insert_sightings(&[bz(1, D0, 1), bz(1, D0, 2), bz(2, D0, 3), gaen(3, D0 + 1, 4)])
        .unwrap();
    store.insert_sightings(&[bz(4, D0 + 1, 9)]).unwrap();
    let c = store.counts().unwrap();
    assert_eq!(c.days, vec![(D0, 3), (D0 + 1, 2)]);
    assert_eq!(c.sightings, 5);
    assert_eq!(c.oldest_day, Some(D0));
    assert!(c.store_bytes > 0);
    // Every day key destroyed: nothing can be decrypted, the counts are unchanged.
    raw(dir.path())
        .execute("UPDATE day_keys SET wrapped = x'00'", [])
        .unwrap();
    assert_eq!(store.stats().unwrap().sightings, 0, "stats decrypts");
    let after = store.counts().unwrap();
    assert_eq!((after.days, after.sightings), (c.days, c.sightings));
    // Purge removes the counters with their rows.
    store.purge_older_than(D0 + 1 + 21, 21).unwrap();
    assert_eq!(store.counts().unwrap().days, vec![(D0 + 1, 2)]);
}

/// A store written before the counters (schema v2) gets them filled from its chunks on open.
#[test]
fn counts_are_filled_when_a_v2_store_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = init(dir.path());
    store
        .insert_sightings(&[bz(1, D0, 1), bz(2, D0, 2), gaen(3, D0 + 2, 4)])
        .unwrap();
    store.downgrade_to_v4_for_tests().unwrap();
    raw(dir.path())
        .execute_batch(
            "DROP TABLE day_counts; ALTER TABLE case_lists DROP COLUMN compact; \
             PRAGMA user_version = 2;",
        )
        .unwrap();
    let store = reopen(dir.path());
    assert_eq!(store.stats().unwrap().schema_version, 5);
    assert_eq!(store.counts().unwrap().days, vec![(D0, 2), (D0 + 2, 1)]);
}

/// H3 as systemd really does it: `write_credential()` makes the file 0400 and grants the
/// service user read access with a named-user ACL (`user::r, user:UID:r, group::-, mask::r,
/// other::-`), so `stat` shows 0440. The ACL is written as the `system.posix_acl_access` xattr
/// (no `setfacl` needed); a filesystem without ACLs skips the test, saying so.
#[test]
fn a_credential_key_readable_through_a_posix_acl_is_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let creds = tmp.path().join("creds");
    fs::create_dir(&creds).unwrap();
    let key = creds.join(KEY_FILE);
    fs::write(&key, [0x21u8; 32]).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o400)).unwrap();
    // struct posix_acl_xattr_header { u32 version = 2 } + entries { u16 tag, u16 perm, u32 id },
    // little-endian, sorted by tag.
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 4u16, u32::MAX), // ACL_USER_OBJ r
        (0x02, 4, 65_534),         // ACL_USER nobody r (the DynamicUser)
        (0x04, 0, u32::MAX),       // ACL_GROUP_OBJ -
        (0x10, 4, u32::MAX),       // ACL_MASK r
        (0x20, 0, u32::MAX),       // ACL_OTHER -
    ] {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&perm.to_le_bytes());
        acl.extend_from_slice(&id.to_le_bytes());
    }
    let path = std::ffi::CString::new(key.as_os_str().as_encoded_bytes()).unwrap();
    let name = c"system.posix_acl_access";
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let r = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            acl.as_ptr().cast(),
            acl.len(),
            0,
        )
    };
    if r != 0 {
        eprintln!(
            "skipped: this filesystem takes no POSIX ACL ({})",
            std::io::Error::last_os_error()
        );
        return;
    }
    let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o440, "the ACL mask shows in the group bits");
    let cred = KeyLocation::resolve(&data, Some(&creds));
    assert_eq!(cred.source, KeySource::Credential);
    let (mut store, _) = Store::init_at(&data, cred.clone()).unwrap();
    store.insert_sightings(&[bz(3, D0, 30)]).unwrap();
    drop(store);
    let store = Store::open_at(&data, cred).unwrap();
    assert_eq!(store.sightings_in_days(D0, D0).unwrap().sightings.len(), 1);
}

/// A store written before compact case lists (schema v3) gets them derived from the stored
/// originals on open: no row is lost, a list that parses gets its compact form (the records
/// matching reads), one that does not keeps none and still opens as before.
#[test]
fn compact_case_lists_are_derived_when_a_v3_store_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = init(dir.path());
    let key = hex::encode([7u8; 32]);
    let f0 = format!(
        r#"{{"data":[{{"daily_key":"{key}","time_start":1728000000,"max":96,"time_end":1728086399}}]}}"#
    );
    let (good, _) = store
        .insert_case_list(D0, Format::BluezoneF0, 1, f0.as_bytes())
        .unwrap();
    let (bad, _) = store
        .insert_case_list(D0, Format::GaenExport, 7, b"not a zip")
        .unwrap();
    assert!(store.case_list_compact(good).unwrap().is_some());
    assert!(store.case_list_compact(bad).unwrap().is_none());
    store.downgrade_to_v4_for_tests().unwrap();
    raw(dir.path())
        .execute_batch("ALTER TABLE case_lists DROP COLUMN compact; PRAGMA user_version = 3;")
        .unwrap();
    let store = reopen(dir.path());
    assert_eq!(store.stats().unwrap().schema_version, 5);
    assert_eq!(store.case_lists().unwrap().len(), 2, "no row lost");
    let compact = store.case_list_compact(good).unwrap().expect("derived");
    let mut records = bluezoned::caselist::compact::Records::default();
    bluezoned::caselist::compact::decode_into(compact, good, &mut records).unwrap();
    assert_eq!(records.f0.len(), 1);
    assert_eq!(records.f0[0].key, [7u8; 32]);
    assert_eq!(
        (
            records.f0[0].time_start,
            records.f0[0].time_end,
            records.f0[0].max
        ),
        (1728000000, 1728086399, 96)
    );
    assert!(store.case_list_compact(bad).unwrap().is_none());
    assert_eq!(store.case_list_bytes(bad).unwrap(), b"not a zip");
    // The compact form is sealed and bound to its row like the original.
    drop(store);
    raw(dir.path())
        .execute("UPDATE case_lists SET compact = (SELECT compact FROM case_lists WHERE id = ?1) WHERE id = ?2", [good, bad])
        .unwrap();
    let store = reopen(dir.path());
    assert!(matches!(
        store.case_list_compact(bad),
        Err(StoreError::Corrupt {
            table: "case_lists",
            ..
        })
    ));
}
