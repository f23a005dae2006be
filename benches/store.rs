//! Encrypted store throughput: `cargo bench --bench store`.
//!
//! - `store/insert_batch100`: `insert_sightings` of 100 sightings, one durable transaction each
//!   (WAL, `synchronous=FULL`: one fsync per batch). Elements are sightings.
//! - `store/insert_batch1`: the worst case, one sighting per transaction.
//! - `store/open`: opening an existing store holding 1M sightings (key file, key check, pragmas).
//! - `store/read_out_1M`: `sightings_in_days` over 14 days holding 1,000,000 sightings (decrypt +
//!   decode, one core). Elements are sightings. The fixture is built once, outside the timed loop.
//!
//! The store lives in a temporary directory on the file system of `$TMPDIR` (default `/tmp`):
//! insert numbers are fsync numbers of that disk.

use std::path::Path;
use std::time::{Duration, Instant};

use bluezone_protocol::{PeerId, RollingId, Rpi, Sighting};
use bluezoned::store::{KeyLocation, Store};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const DAY0: i64 = 1_596_844_800; // 2020-08-08 00:00 UTC
const DAYS: i64 = 14;
const READ_OUT: usize = 1_000_000;
/// Fixture batch size: 1M sightings as 1,000 durable batches (not 10,000 batches of 100, which
/// would spend most of the bench's time in fsync before measuring anything).
const FIXTURE_BATCH: usize = 1_000;

/// splitmix64: deterministic IDs without a dependency.
struct Ids(u64);

impl Ids {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `n` sightings spread evenly over `[start, start + span)`, one in eight a GAEN RPI with tx
    /// power and metadata (as a mixed Android/iOS/GAEN entrance would log).
    fn sightings(&mut self, n: usize, start: i64, span: i64) -> Vec<Sighting> {
        (0..n)
            .map(|i| {
                let a = self.next().to_le_bytes();
                let b = self.next().to_le_bytes();
                let gaen = i % 8 == 0;
                let peer = if gaen {
                    let mut id = [0u8; 16];
                    id[..8].copy_from_slice(&a);
                    id[8..].copy_from_slice(&b);
                    PeerId::Gaen(Rpi(id))
                } else {
                    let mut id = [0u8; 12];
                    id[..8].copy_from_slice(&a);
                    id[8..].copy_from_slice(&b[..4]);
                    PeerId::Bluezone(RollingId(id))
                };
                Sighting {
                    peer,
                    time: start + (i as i64 * span) / n as i64,
                    rssi: -40 - (b[5] % 60) as i8,
                    tx_power: gaen.then_some(-12),
                    aem: gaen.then_some(bluezone_protocol::Aem([b[4], b[5], b[6], b[7]])),
                }
            })
            .collect()
    }
}

fn init(dir: &Path) -> Store {
    Store::init_at(dir, KeyLocation::resolve(dir, None))
        .expect("init store")
        .0
}

fn bench_insert(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = init(dir.path());
    let mut ids = Ids(1);
    // A busy hour at an entrance: batches of 100 sightings within the same minute.
    let batches: Vec<Vec<Sighting>> = (0..64)
        .map(|k| ids.sightings(100, DAY0 + k * 60, 60))
        .collect();
    let mut g = c.benchmark_group("store");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(100));
    let mut k = 0;
    g.bench_function("insert_batch100", |b| {
        b.iter(|| {
            store
                .insert_sightings(&batches[k % batches.len()])
                .expect("insert");
            k += 1;
        })
    });
    // Worst case: the scanner commits every sighting on its own (one fsync each).
    g.throughput(Throughput::Elements(1));
    let single: Vec<Sighting> = batches[0].iter().take(1).copied().collect();
    g.bench_function("insert_batch1", |b| {
        b.iter(|| store.insert_sightings(&single).expect("insert"))
    });
    g.finish();
}

fn bench_read_out(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let built = Instant::now();
    {
        let mut store = init(dir.path());
        let mut ids = Ids(2);
        let per_batch_span = DAYS * 86_400 / (READ_OUT / FIXTURE_BATCH) as i64;
        for k in 0..(READ_OUT / FIXTURE_BATCH) as i64 {
            let batch = ids.sightings(FIXTURE_BATCH, DAY0 + k * per_batch_span, per_batch_span);
            store.insert_sightings(&batch).expect("fixture insert");
        }
    }
    eprintln!(
        "store: 1M-sighting fixture built in {:.1} s",
        built.elapsed().as_secs_f64()
    );
    let store = Store::open_at(dir.path(), KeyLocation::resolve(dir.path(), None)).expect("open");
    let first = DAY0.div_euclid(86_400);
    let check = store
        .sightings_in_days(first, first + DAYS - 1)
        .expect("read out");
    assert_eq!((check.sightings.len(), check.corrupt), (READ_OUT, 0));

    let mut g = c.benchmark_group("store");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("open", |b| {
        b.iter(|| Store::open_at(dir.path(), KeyLocation::resolve(dir.path(), None)).expect("open"))
    });
    g.throughput(Throughput::Elements(READ_OUT as u64));
    g.bench_function("read_out_1M", |b| {
        b.iter(|| {
            let r = store
                .sightings_in_days(first, first + DAYS - 1)
                .expect("read out");
            assert_eq!(r.sightings.len(), READ_OUT);
            r
        })
    });
    // What `check` does before matching: decrypt the range and build the observation index.
    g.bench_function("read_out_and_index_1M", |b| {
        b.iter(|| {
            let r = store
                .sightings_in_days(first, first + DAYS - 1)
                .expect("read out");
            bluezone_protocol::matching::ObservationIndex::build(&r.sightings, 0x5eed)
        })
    });
    g.finish();
}

criterion_group!(benches, bench_insert, bench_read_out);
criterion_main!(benches);
