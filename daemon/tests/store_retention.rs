//! Retention and data at rest, checked on the raw bytes of the database, `-wal`, `-shm` and
//! `-journal` files.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use bluezone_protocol::{PeerId, RollingId, Rpi, Sighting};
use bluezoned::caselist::Format;
use bluezoned::store::{ExposureRecord, KeyLocation, Store, DB_FILE};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use rusqlite::Connection;

const DAY: i64 = 86_400;
const TODAY: i64 = 19_800;
const WINDOW: usize = 16;

fn store_files(dir: &Path) -> Vec<PathBuf> {
    ["", "-wal", "-shm", "-journal"]
        .iter()
        .map(|s| dir.join(format!("{DB_FILE}{s}")))
        .filter(|p| p.exists())
        .collect()
}

/// Every `WINDOW`-byte substring of every store file.
fn windows_on_disk(dir: &Path) -> HashSet<[u8; WINDOW]> {
    let mut set = HashSet::new();
    for p in store_files(dir) {
        let bytes = fs::read(&p).unwrap();
        for w in bytes.windows(WINDOW) {
            set.insert(<[u8; WINDOW]>::try_from(w).unwrap());
        }
    }
    set
}

/// Whether any `WINDOW`-byte piece (at every offset) of `value` is on disk.
fn any_piece_on_disk(disk: &HashSet<[u8; WINDOW]>, value: &[u8]) -> bool {
    value
        .windows(WINDOW)
        .any(|w| disk.contains(&<[u8; WINDOW]>::try_from(w).unwrap()))
}

fn sightings(rng: &mut StdRng, day: i64, n: usize) -> Vec<Sighting> {
    (0..n)
        .map(|i| {
            let peer = if i % 3 == 0 {
                let mut b = [0u8; 16];
                rng.fill_bytes(&mut b);
                PeerId::Gaen(Rpi(b))
            } else {
                let mut b = [0u8; 12];
                rng.fill_bytes(&mut b);
                PeerId::Bluezone(RollingId(b))
            };
            Sighting {
                peer,
                time: day * DAY + (i as i64 * 37) % DAY,
                rssi: -70,
                tx_power: None,
                aem: None,
            }
        })
        .collect()
}

/// Sealed rows of old days, as they are on disk.
fn old_sealed_values(dir: &Path, cutoff: i64) -> Vec<Vec<u8>> {
    let c = Connection::open(dir.join(DB_FILE)).unwrap();
    let mut out = Vec::new();
    for q in [
        "SELECT blob FROM sightings WHERE day < ?1",
        "SELECT wrapped FROM day_keys WHERE day < ?1",
        "SELECT blob FROM own_keys WHERE day < ?1",
        "SELECT blob FROM case_lists WHERE imported_day < ?1",
        "SELECT blob FROM exposures WHERE day < ?1",
    ] {
        let mut st = c.prepare(q).unwrap();
        let rows = st.query_map([cutoff], |r| r.get::<_, Vec<u8>>(0)).unwrap();
        out.extend(rows.map(Result::unwrap));
    }
    out
}

#[test]
fn purge_erases_old_rows_and_day_keys_from_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) =
        Store::init_at(dir.path(), KeyLocation::resolve(dir.path(), None)).unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    // 30 days of data, 20 sightings a day in two batches; own keys, a case list and an
    // exposure on old and recent days.
    for day in TODAY - 29..=TODAY {
        for _ in 0..2 {
            store
                .insert_sightings(&sightings(&mut rng, day, 10))
                .unwrap();
        }
        store.own_keys_for_day(day, &mut rng).unwrap();
    }
    store
        .insert_case_list(TODAY - 25, Format::BluezoneF0, 1, b"old case list")
        .unwrap();
    store
        .insert_case_list(TODAY, Format::BluezoneF0, 1, b"new case list")
        .unwrap();
    for (case_key, day) in [("old", TODAY - 24), ("new", TODAY - 1)] {
        let record = ExposureRecord {
            protocol: "gaen".into(),
            case_key: case_key.into(),
            day,
            notify: true,
            ..Default::default()
        };
        store.upsert_exposure(&record).unwrap();
    }

    let keep: u32 = 21;
    let cutoff = TODAY - i64::from(keep);
    let old = old_sealed_values(dir.path(), cutoff);
    // 8 days × (2 chunks + 1 day key + 2 own keys) + 1 case list + 1 exposure.
    assert_eq!(old.len(), 8 * 5 + 2);
    // The scan does find them before the purge (in the database or the WAL).
    let disk = windows_on_disk(dir.path());
    for v in &old {
        assert!(
            any_piece_on_disk(&disk, v),
            "sealed value not found before purge"
        );
    }

    let report = store.purge_older_than(TODAY, keep).unwrap();
    assert_eq!(report.cutoff_day, cutoff);
    assert_eq!(report.day_keys, 8);
    assert_eq!(report.sightings_chunks, 16);
    assert_eq!(report.own_keys, 16);
    assert_eq!((report.case_lists, report.exposures), (1, 1));
    assert!(report.wal_truncated);
    let wal = dir.path().join(format!("{DB_FILE}-wal"));
    assert_eq!(
        fs::metadata(&wal).map(|m| m.len()).unwrap_or(0),
        0,
        "WAL truncated"
    );

    for when in ["after purge", "after close"] {
        let disk = windows_on_disk(dir.path());
        for v in &old {
            assert!(
                !any_piece_on_disk(&disk, v),
                "old sealed value still on disk {when}"
            );
        }
        if when == "after purge" {
            // Retained data still reads back.
            let r = store.sightings_in_days(i64::MIN, i64::MAX).unwrap();
            assert_eq!((r.sightings.len(), r.corrupt), (22 * 20, 0));
            assert_eq!(r.sightings.iter().map(|s| s.time / DAY).min(), Some(cutoff));
            assert_eq!(store.own_keys_in_days(0..=TODAY).unwrap().len(), 22);
            assert_eq!(store.case_lists().unwrap().len(), 1);
            assert_eq!(store.exposures().unwrap().exposures.len(), 1);
            assert_eq!(store.stats().unwrap().oldest_day, Some(cutoff));
            drop(std::mem::replace(
                &mut store,
                Store::open_at(dir.path(), KeyLocation::resolve(dir.path(), None)).unwrap(),
            ));
        }
    }
    let ok: String = Connection::open(dir.path().join(DB_FILE))
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}

#[test]
fn no_plaintext_identifier_or_key_is_ever_written() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) =
        Store::init_at(dir.path(), KeyLocation::resolve(dir.path(), None)).unwrap();
    let mut rng = StdRng::seed_from_u64(2);
    let mut all = Vec::new();
    for day in TODAY - 2..=TODAY {
        for _ in 0..5 {
            let b = sightings(&mut rng, day, 40);
            store.insert_sightings(&b).unwrap();
            all.extend(b);
        }
    }
    let (daily, tek) = store.own_keys_for_day(TODAY, &mut rng).unwrap();
    let master = fs::read(dir.path().join(bluezoned::store::KEY_FILE)).unwrap();

    let check = |when: &str| {
        let mut files = store_files(dir.path());
        assert!(!files.is_empty());
        files.retain(|p| fs::metadata(p).unwrap().len() > 0);
        let contents: Vec<Vec<u8>> = files.iter().map(|p| fs::read(p).unwrap()).collect();
        let found = |needle: &[u8]| {
            contents
                .iter()
                .any(|c| c.windows(needle.len()).any(|w| w == needle))
        };
        for s in &all {
            assert!(!found(s.peer.as_slice()), "peer id in clear {when}");
        }
        assert!(!found(daily.as_bytes()), "own daily key in clear {when}");
        assert!(!found(tek.as_bytes()), "own TEK in clear {when}");
        assert!(!found(&master), "master key in a store file {when}");
    };
    // While open (pages in the WAL), and after close (checkpointed into the database).
    check("while open");
    drop(store);
    check("after close");
}
