//! Crash safety: a writer process is killed with SIGKILL at random moments; every batch it
//! acknowledged must survive, whole, and the database must pass `PRAGMA integrity_check`.
//!
//! The writer is this test binary itself, re-executed with `BLUEZONED_CRASH_CHILD` set: the same
//! test function then plays the child role (writes batches forever, printing `ACK <n>` after each
//! `insert_sightings` returns) instead of the parent.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bluezone_protocol::{PeerId, RollingId, Sighting};
use bluezoned::store::{KeyLocation, Store, DB_FILE};
use rand::{Rng, SeedableRng};

const CHILD_ENV: &str = "BLUEZONED_CRASH_CHILD";
const ROUND_ENV: &str = "BLUEZONED_CRASH_ROUND";
const TEST_NAME: &str = "sigkill_at_random_moments_loses_no_acknowledged_batch";
const ROUNDS: u32 = 24;
const BATCH: u32 = 50;

fn batch(round: u32, n: u32) -> Vec<Sighting> {
    (0..BATCH)
        .map(|i| {
            let mut id = [0u8; 12];
            id[0..4].copy_from_slice(&round.to_be_bytes());
            id[4..8].copy_from_slice(&n.to_be_bytes());
            id[8..12].copy_from_slice(&i.to_be_bytes());
            Sighting {
                peer: PeerId::Bluezone(RollingId(id)),
                // Spread over two UTC days, so a batch is two chunks in one transaction.
                time: 1_700_000_000 + i64::from(n) * 977 + i64::from(i) * 600,
                rssi: -60,
                tx_power: None,
                aem: None,
            }
        })
        .collect()
}

fn child(dir: &Path, round: u32) -> ! {
    let mut store = Store::open_at(dir, KeyLocation::resolve(dir, None)).expect("child: open");
    let mut out = std::io::stdout().lock();
    for n in 0.. {
        store
            .insert_sightings(&batch(round, n))
            .expect("child: insert");
        writeln!(out, "ACK {n}")
            .and_then(|()| out.flush())
            .expect("child: stdout");
    }
    unreachable!()
}

/// (round, batch) → sightings present.
fn stored_batches(dir: &Path) -> BTreeMap<(u32, u32), u32> {
    let store = Store::open_at(dir, KeyLocation::resolve(dir, None)).expect("reopen after kill");
    let r = store.sightings_in_days(i64::MIN, i64::MAX).unwrap();
    assert_eq!(r.corrupt, 0, "no corrupt chunk after a crash");
    let mut m = BTreeMap::new();
    for s in r.sightings {
        let PeerId::Bluezone(RollingId(id)) = s.peer else {
            panic!("unexpected peer")
        };
        let round = u32::from_be_bytes(id[0..4].try_into().unwrap());
        let n = u32::from_be_bytes(id[4..8].try_into().unwrap());
        *m.entry((round, n)).or_insert(0) += 1;
    }
    m
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_batch() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        let round = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
        child(Path::new(&dir), round);
    }

    let dir = tempfile::tempdir().unwrap();
    drop(Store::init_at(dir.path(), KeyLocation::resolve(dir.path(), None)).unwrap());
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let exe = std::env::current_exe().unwrap();
    let mut acked: BTreeSet<(u32, u32)> = BTreeSet::new();
    let mut total_acks = 0usize;

    for round in 0..ROUNDS {
        let err_path = dir.path().join(format!("child-{round}.stderr"));
        let mut child = Command::new(&exe)
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .env(ROUND_ENV, round.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&err_path).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("ACK ") {
                    let _ = tx.send(n.parse::<u32>().unwrap());
                }
            }
        });
        // Most rounds kill while batches are being written (after the first ack); every fourth
        // round kills at a random moment from the start (open, recovery, first write).
        if round % 4 != 0 {
            rx.recv_timeout(Duration::from_secs(20))
                .expect("child acknowledged no batch");
        }
        let delay = Duration::from_micros(rng.gen_range(0..40_000));
        let t = Instant::now();
        while t.elapsed() < delay {
            std::thread::sleep(Duration::from_micros(500));
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        reader.join().unwrap();
        let stderr = fs::read_to_string(&err_path).unwrap_or_default();
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "round {round}: the child must die by SIGKILL, not on its own ({status}): {stderr}"
        );
        let mut round_acks = 0;
        while let Ok(n) = rx.try_recv() {
            acked.insert((round, n));
            round_acks += 1;
        }
        total_acks += round_acks;

        let stored = stored_batches(dir.path());
        for key in &acked {
            assert_eq!(
                stored.get(key),
                Some(&BATCH),
                "round {round}: acknowledged batch {key:?} missing or partial (seed {seed})"
            );
        }
        for (key, count) in &stored {
            assert_eq!(
                *count, BATCH,
                "batch {key:?} partially stored (seed {seed})"
            );
        }
        let ok: String = rusqlite::Connection::open(dir.path().join(DB_FILE))
            .unwrap()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok", "round {round}");
    }
    assert!(
        total_acks >= (ROUNDS as usize * 3) / 4,
        "children wrote too little to test anything"
    );
    println!("{ROUNDS} rounds, {total_acks} acknowledged batches, all present");
}
