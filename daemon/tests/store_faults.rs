//! Disk full: the writer gets an error, and exactly the acknowledged batches are stored.
//!
//! As root (CI runs as root) the store lives on a tiny tmpfs that really fills up (ENOSPC from
//! the kernel). Where `mount` is not permitted the test says so on stderr and simulates a full
//! disk with SQLite's `PRAGMA max_page_count` instead (the same SQLITE_FULL path in SQLite).

use std::path::{Path, PathBuf};
use std::process::Command;

use bluezone_protocol::{PeerId, RollingId, Sighting};
use bluezoned::store::{KeyLocation, Store, StoreError, DB_FILE};

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).ok()?;
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?
            .success();
        ok.then(|| Tmpfs(at.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success(), "remount");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn batch(n: u32) -> Vec<Sighting> {
    (0..100u32)
        .map(|i| {
            let mut id = [0u8; 12];
            id[0..4].copy_from_slice(&n.to_be_bytes());
            id[4..8].copy_from_slice(&i.to_be_bytes());
            Sighting {
                peer: PeerId::Bluezone(RollingId(id)),
                time: 1_700_000_000 + i64::from(i),
                rssi: -50,
                tx_power: None,
                aem: None,
            }
        })
        .collect()
}

fn batches_present(dir: &Path) -> Vec<u32> {
    let store = Store::open_at(dir, KeyLocation::resolve(dir, None)).unwrap();
    let r = store.sightings_in_days(i64::MIN, i64::MAX).unwrap();
    assert_eq!(r.corrupt, 0);
    let mut counts = std::collections::BTreeMap::<u32, usize>::new();
    for s in &r.sightings {
        *counts
            .entry(u32::from_be_bytes(
                s.peer.as_slice()[0..4].try_into().unwrap(),
            ))
            .or_default() += 1;
    }
    assert!(
        counts.values().all(|&c| c == 100),
        "a batch is partially stored: {counts:?}"
    );
    counts.into_keys().collect()
}

#[test]
fn disk_full_is_reported_and_nothing_unacknowledged_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    let tmpfs = Tmpfs::mount(&mnt, "384k");
    let dir = match &tmpfs {
        Some(_) => mnt.clone(),
        None => {
            eprintln!("mount not permitted: simulating a full disk with PRAGMA max_page_count");
            tmp.path().to_path_buf()
        }
    };
    let (mut store, _) = Store::init_at(&dir, KeyLocation::resolve(&dir, None)).unwrap();
    if tmpfs.is_none() {
        store.set_max_page_count(40).unwrap();
    }
    let mut acked = Vec::new();
    let mut error = None;
    for n in 0..100_000u32 {
        match store.insert_sightings(&batch(n)) {
            Ok(()) => acked.push(n),
            Err(e) => {
                error = Some((n, e));
                break;
            }
        }
    }
    let (failed, e) = error.expect("the disk must fill up");
    eprintln!(
        "{}: full after {} acknowledged batches: {e}",
        if tmpfs.is_some() {
            "tmpfs"
        } else {
            "max_page_count"
        },
        acked.len()
    );
    assert!(matches!(e, StoreError::DiskFull { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("disk full") && msg.contains(DB_FILE), "{msg}");
    assert!(!acked.is_empty());
    // The writer may retry: still refused while the disk is full, never half-written.
    let again = store.insert_sightings(&batch(failed)).unwrap_err();
    assert!(again.is_disk_full(), "{again}");
    drop(store);
    if let Some(t) = &tmpfs {
        t.resize("8m");
    }
    assert_eq!(
        batches_present(&dir),
        acked,
        "exactly the acknowledged batches"
    );
    let ok: String = rusqlite::Connection::open(dir.join(DB_FILE))
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    // With space again, writing resumes.
    let mut store = Store::open_at(&dir, KeyLocation::resolve(&dir, None)).unwrap();
    store.insert_sightings(&batch(failed)).unwrap();
    drop(store);
    assert_eq!(batches_present(&dir).len(), acked.len() + 1);
}
