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
