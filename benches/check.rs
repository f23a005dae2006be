//! `check` end to end: `cargo bench --bench check`. `RAYON_NUM_THREADS=1` gives the one-core
//! rows.
//!
//! Each fixture is a real store (encrypted, in `$TMPDIR`) filled outside the timed loop through
//! the import path (`Store::insert_case_list`: the compact form is written at import), and each
//! timed iteration is the whole `check` path on it: read the compact case lists and the log,
//! resolve revisions and duplicates, index, match, score, persist.
//!
//! - `check/gaen/1000000/100000`: one signed export of 1,000,000 TEKs (14 days, sorted by key
//!   as a server publishes them) against 100,000 observed RPIs; 100 of the keys were really
//!   seen. Elements are keys.
//! - `check/bluezone/15000x14d/100000`: 15,000 F0 records of 14 days against 100,000 observed
//!   Bluezone IDs; 100 really seen. Elements are F0-days.
//! - `check/load/gaen-1000000`: only reading the 1M compact keys and the log (`check::load`),
//!   to compare with the matching above (target: under 10 % of it).
//! - `check/daemon-day`: the daemon's incremental matcher over one simulated day after the
//!   above (both lists stored and matched at start): 17,280 polls of the store at the daemon's
//!   5 s cadence with nothing new, and 96 quarter-hours each logging 700 new sightings (half
//!   Bluezone, half GAEN) that are then matched. The day is the first after the log, on which
//!   keys still cover new sightings: the last GAEN keys for 2 h, and 1,072 of the 15,000 F0
//!   entries (a 14th, each case's latest daily key) all day. The day starts with retention
//!   deleting an old daily export (71,428 keys, imported 22 days before and matched then, as a
//!   daemon with `keep_days = 21` does every day); its import and the purge are not timed. The
//!   time is the process's CPU time (all threads) spent in the matcher; it should stay under 1 s.
//!
//! `BLUEZONED_CHECK_BIN=target/release/bluezoned` also runs that binary's `check` once on the
//! GAEN fixture and prints its peak RSS (the child's own `VmHWM`, see `rss_of_check`) and wall
//! time.

use std::path::Path;
use std::time::{Duration, Instant};

use bluezone_protocol::bluezone::SlotsPerDay;
use bluezone_protocol::gaen::export::{write_export, ExportFile, ExportKey, ExportSigner};
use bluezone_protocol::gaen::{rpi, Enin, Rpik};
use bluezone_protocol::{DailyKey, PeerId, RollingId, Rpi, Sighting, Tek};
use bluezoned::caselist::Format;
use bluezoned::check::{self, incremental::Incremental};
use bluezoned::config::Config;
use bluezoned::store::Store;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{rngs::StdRng, Rng, RngCore, SeedableRng};

/// The daemon's allocator (large blocks on transparent huge pages), so that the figures are
/// the daemon's.
#[global_allocator]
static ALLOC: bluezoned::hugepages::HugePageAlloc = bluezoned::hugepages::HugePageAlloc;

const DAY0: i64 = 1_596_844_800; // 2020-08-08 00:00 UTC
const DAYS: i64 = 14;
/// The UTC day the checks run on: the day after the last logged day.
const TODAY: i64 = DAY0 / 86400 + DAYS + 1;
const GAEN_KEYS: usize = 1_000_000;
const F0_RECORDS: usize = 15_000;
const OBSERVED: usize = 100_000;
const SEEN: usize = 100;

fn signer() -> ExportSigner {
    ExportSigner::new(
        "452",
        "v1",
        p256::ecdsa::SigningKey::from_slice(&[7; 32]).expect("key"),
    )
}

fn insert(store: &mut Store, mut sightings: Vec<Sighting>) {
    sightings.sort_by_key(|s| s.time);
    for batch in sightings.chunks(5_000) {
        store.insert_sightings(batch).expect("sightings");
    }
}

/// 1M random TEKs over 14 days in one signed export; `OBSERVED` RPIs of which `SEEN` are real.
fn gaen_fixture(dir: &Path) -> Store {
    let (mut store, _) = Store::init(dir).expect("init");
    let mut rng = StdRng::seed_from_u64(1);
    let first = Enin::from_unix(DAY0).0;
    let mut keys: Vec<ExportKey> = (0..GAEN_KEYS)
        .map(|i| {
            let mut k = [0u8; 16];
            rng.fill_bytes(&mut k);
            ExportKey::new(Tek::from_bytes(k), first + 144 * (i as u32 % DAYS as u32))
        })
        .collect();
    keys.sort_by(|a, b| a.tek.as_bytes().cmp(b.tek.as_bytes()));
    let mut sightings: Vec<Sighting> = (0..OBSERVED)
        .map(|_| {
            let mut b = [0u8; 16];
            rng.fill_bytes(&mut b);
            Sighting {
                peer: PeerId::Gaen(Rpi(b)),
                time: DAY0 + rng.gen_range(0..DAYS * 86400),
                rssi: -70,
                tx_power: None,
                aem: Some(bluezone_protocol::Aem([0; 4])),
            }
        })
        .collect();
    for (s, k) in sightings
        .iter_mut()
        .zip(keys.iter().step_by(GAEN_KEYS / SEEN))
    {
        let enin = Enin(k.rolling_start + 60);
        s.peer = PeerId::Gaen(rpi(&Rpik::derive(&k.tek), enin));
        s.time = enin.to_unix() + 30;
    }
    let file = ExportFile {
        start_timestamp: DAY0 as u64,
        end_timestamp: (DAY0 + DAYS * 86400) as u64,
        region: "VN".into(),
        batch_num: 1,
        batch_size: 1,
        keys,
        ..ExportFile::default()
    };
    let zip = write_export(&file, &signer()).expect("export");
    let day = DAY0 / 86400 + DAYS;
    store
        .insert_case_list(day, Format::GaenExport, GAEN_KEYS as u64, &zip)
        .expect("case list");
    insert(&mut store, sightings);
    store
}

/// 15k F0 records of 14 days; `OBSERVED` Bluezone IDs of which `SEEN` are real.
/// `through_today`: every 14th record (a case's latest daily key) runs on through the day after
/// the log (F0 entries may extend past their publication), the others end with the log.
fn bluezone_fixture(dir: &Path, through_today: bool) -> Store {
    let (mut store, _) = Store::init(dir).expect("init");
    let mut rng = StdRng::seed_from_u64(2);
    let keys: Vec<[u8; 32]> = (0..F0_RECORDS)
        .map(|_| {
            let mut k = [0u8; 32];
            rng.fill_bytes(&mut k);
            k
        })
        .collect();
    let mut sightings: Vec<Sighting> = (0..OBSERVED)
        .map(|_| {
            let mut b = [0u8; 12];
            rng.fill_bytes(&mut b);
            Sighting {
                peer: PeerId::Bluezone(RollingId(b)),
                time: DAY0 + rng.gen_range(0..DAYS * 86400),
                rssi: -70,
                tx_power: None,
                aem: None,
            }
        })
        .collect();
    for (i, (s, k)) in sightings
        .iter_mut()
        .zip(keys.iter().step_by(F0_RECORDS / SEEN))
        .enumerate()
    {
        let slot = (i * 7 % 96) as u32;
        s.peer = PeerId::Bluezone(DailyKey::from_bytes(*k).id(slot));
        s.time = DAY0 + slot as i64 * SlotsPerDay::DEFAULT.slot_seconds() + 30;
    }
    let data: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            format!(
                r#"{{"daily_key":"{}","time_start":{DAY0},"max":96,"time_end":{}}}"#,
                hex::encode(k),
                DAY0 + (DAYS + i64::from(through_today && i % 14 == 0)) * 86400 - 1
            )
        })
        .collect();
    let json = format!(r#"{{"data":[{}]}}"#, data.join(","));
    let day = DAY0 / 86400 + DAYS;
    store
        .insert_case_list(day, Format::BluezoneF0, F0_RECORDS as u64, json.as_bytes())
        .expect("case list");
    insert(&mut store, sightings);
    store
}

fn bench_check(c: &mut Criterion) {
    let cfg = Config::default();
    let mut g = c.benchmark_group("check");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(20));

    let gaen_dir = tempfile::tempdir().expect("tempdir");
    let mut gaen = gaen_fixture(gaen_dir.path());
    g.throughput(Throughput::Elements(GAEN_KEYS as u64));
    g.bench_with_input(BenchmarkId::new("gaen", GAEN_KEYS), &OBSERVED, |b, _| {
        b.iter(|| check::run_check(&mut gaen, &cfg, TODAY).expect("check"))
    });
    g.bench_function(format!("load/gaen-{GAEN_KEYS}"), |b| {
        b.iter(|| check::load(&gaen).expect("load"))
    });
    drop(gaen);
    if let Some(bin) = std::env::var_os("BLUEZONED_CHECK_BIN") {
        rss_of_check(Path::new(&bin), gaen_dir.path());
    }

    let bz_dir = tempfile::tempdir().expect("tempdir");
    let mut bz = bluezone_fixture(bz_dir.path(), false);
    g.throughput(Throughput::Elements((F0_RECORDS as i64 * DAYS) as u64));
    g.bench_with_input(
        BenchmarkId::new("bluezone", format!("{F0_RECORDS}x{DAYS}d")),
        &OBSERVED,
        |b, _| b.iter(|| check::run_check(&mut bz, &cfg, TODAY).expect("check")),
    );
    drop(bz);
    g.finish();

    // The daemon's day: both lists in one store.
    let mut g = c.benchmark_group("check");
    g.sample_size(10).warm_up_time(Duration::from_secs(1));
    let mut store = {
        let mut s = gaen_fixture(bz_dir.path().join("day").as_path().tap_mkdir());
        let bytes = bluezone_list_bytes(&mut bluezone_fixture(
            bz_dir.path().join("f0").as_path().tap_mkdir(),
            true,
        ));
        s.insert_case_list(DAY0 / 86400 + DAYS, Format::BluezoneF0, 1, &bytes)
            .expect("f0 list");
        s
    };
    let mut matcher = Incremental::new();
    step(&mut matcher, &mut store, &cfg, true);
    let mut rng = StdRng::seed_from_u64(3);
    let expiring = expiring_export(&mut rng);
    let log_day = DAY0 / 86400 + DAYS;
    // Every iteration is the same day, the first after the log and the lists' publication: the
    // day on which keys still cover new sightings (the last GAEN keys' validity runs 2 h into
    // it, and a 14th of the F0 entries all through it). Later days would find every key
    // expired and measure nothing but polling.
    let today = DAY0 + DAYS * 86400;
    g.bench_function("daemon-day", |b| {
        b.iter_custom(|iters| {
            let mut cpu = Duration::ZERO;
            for _ in 0..iters {
                // Retention's daily deletion: the export imported 22 days before (matched when
                // it came) is purged at the start of the day; the matcher then meets a removed
                // list at its first step.
                store
                    .insert_case_list(log_day - 22, Format::GaenExport, EXPIRING, &expiring)
                    .expect("expiring list");
                step(&mut matcher, &mut store, &cfg, false);
                let purged = store.purge_older_than(log_day, 21).expect("purge");
                assert_eq!(purged.case_lists, 1, "retention deletes that list only");
                for quarter in 0..96 {
                    let start = today + quarter * 900;
                    let new: Vec<Sighting> = (0..700)
                        .map(|i| {
                            // Half Bluezone IDs, half GAEN RPIs, as a phone hears both.
                            let mut id = [0u8; 16];
                            rng.fill_bytes(&mut id);
                            let peer = if i % 2 == 0 {
                                PeerId::Bluezone(RollingId(id[..12].try_into().expect("12")))
                            } else {
                                PeerId::Gaen(Rpi(id))
                            };
                            Sighting {
                                peer,
                                time: start + i * 900 / 700,
                                rssi: -70,
                                tx_power: None,
                                aem: None,
                            }
                        })
                        .collect();
                    store.insert_sightings(&new).expect("sightings");
                    let t = cpu_time();
                    for _ in 0..180 {
                        step(&mut matcher, &mut store, &cfg, false);
                    }
                    step(&mut matcher, &mut store, &cfg, true);
                    cpu += cpu_time() - t;
                }
            }
            cpu
        })
    });
    eprintln!(
        "check/daemon-day: matcher work since start (first run included): {:?}",
        matcher.work
    );
    g.finish();
}

/// Keys of the daily export that retention deletes on the daemon's day: a 14th of the big
/// list's, as one day's publication.
const EXPIRING: u64 = GAEN_KEYS as u64 / DAYS as u64;

/// That export: `EXPIRING` keys of the 14 days before the log, signed.
fn expiring_export(rng: &mut StdRng) -> Vec<u8> {
    let first = Enin::from_unix(DAY0 - DAYS * 86400).0;
    let mut keys: Vec<ExportKey> = (0..EXPIRING as u32)
        .map(|i| {
            let mut k = [0u8; 16];
            rng.fill_bytes(&mut k);
            ExportKey::new(Tek::from_bytes(k), first + 144 * (i % DAYS as u32))
        })
        .collect();
    keys.sort_by(|a, b| a.tek.as_bytes().cmp(b.tek.as_bytes()));
    let file = ExportFile {
        start_timestamp: (DAY0 - 86400) as u64,
        end_timestamp: DAY0 as u64,
        region: "VN".into(),
        batch_num: 1,
        batch_size: 1,
        keys,
        ..ExportFile::default()
    };
    write_export(&file, &signer()).expect("export")
}

/// One step of the daemon's matcher (`service::maintenance::match_once` without the runtime).
fn step(m: &mut Incremental, store: &mut Store, cfg: &Config, due: bool) {
    let Some(mut plan) = m.plan(store, due, cfg.matching.skew_s).expect("plan") else {
        return;
    };
    let mut reports = Vec::new();
    if let Some(full) = plan.full.take() {
        let mut r = check::compute(&full, cfg, TODAY);
        check::persist(store, &mut r).expect("persist");
        reports.push(r);
    }
    if let Some(probe) = plan.probe.take() {
        let r = check::compute(&probe, cfg, TODAY);
        if let Some(input) = Incremental::rescore(store, &probe, &r).expect("rescore") {
            let mut r = check::compute(&input, cfg, TODAY);
            check::persist(store, &mut r).expect("persist");
            reports.push(r);
        }
        reports.push(r);
    }
    m.commit(plan, &reports);
}

fn bluezone_list_bytes(store: &mut Store) -> Vec<u8> {
    let id = store.case_lists().expect("lists")[0].id;
    store.case_list_bytes(id).expect("bytes")
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for &Path {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(self).expect("mkdir");
        self
    }
}

/// CPU time of this process (all threads).
fn cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `bin check` on the store in `dir` once; prints its peak RSS and wall time.
///
/// The peak is the child's own `VmHWM` (`/proc/<pid>/status`), read every 5 ms until it exits:
/// `getrusage(RUSAGE_CHILDREN)` would report this bench process's RSS instead (the child's
/// maximum includes the address space it shared with us until `exec`, hundreds of MB of
/// fixtures), which is what the earlier 204–266 MB figures measured.
fn rss_of_check(bin: &Path, dir: &Path) {
    let started = Instant::now();
    let mut child = std::process::Command::new(bin)
        .arg("--data-dir")
        .arg(dir)
        .arg("check")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run bluezoned check");
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0u64;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for bluezoned check") {
            break status;
        }
        let hwm = std::fs::read_to_string(&status_file).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        });
        peak_kb = peak_kb.max(hwm.unwrap_or(0));
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(status.success(), "bluezoned check failed: {status}");
    eprintln!(
        "bluezoned check (GAEN, {GAEN_KEYS} keys vs {OBSERVED} RPIs): peak RSS {} MB (VmHWM), wall {:.2} s",
        peak_kb / 1024,
        started.elapsed().as_secs_f64()
    );
}

criterion_group!(benches, bench_check);
criterion_main!(benches);
