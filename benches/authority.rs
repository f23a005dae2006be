//! Publishing at a country's scale: `cargo bench --bench authority`.
//!
//! - `authority/publish/N`: one `authority publish` of a window holding N uploaded GAEN keys:
//!   read them from the authority's SQLite, sort, split into files of at most 750,000 keys, write
//!   and sign each export (ECDSA P-256 over the whole `export.bin`), write `index.txt`, commit.
//!   Elements are keys. The upload (the fixture) is made outside the timed part.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bluezone_protocol::gaen::export::{ExportKey, ReportType};
use bluezone_protocol::ids::Tek;
use bluezoned::authority::db::Db;
use bluezoned::authority::output::Output;
use bluezoned::authority::tokens::TokenId;
use bluezoned::authority::upload::{CaseUpload, UploadFormat};
use bluezoned::authority::{init, publish::publish, Authority, InitSettings};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::{RngCore, SeedableRng};

const NOW: i64 = 1_764_460_800; // 2025-11-30 00:00 UTC

fn fixture(keys: usize) -> (tempfile::TempDir, Authority, Mutex<Db>) {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("auth");
    init(&dir, &InitSettings::default()).unwrap();
    let auth = Authority::open(&dir).unwrap();
    let mut db = Db::open(&auth.database_path()).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(keys as u64);
    let day = NOW / 86_400 - 1;
    let gaen = (0..keys)
        .map(|i| {
            let mut b = [0u8; 16];
            rng.fill_bytes(&mut b);
            ExportKey {
                report_type: ReportType::ConfirmedTest,
                ..ExportKey::new(Tek::from_bytes(b), ((day - (i % 14) as i64) * 144) as u32)
            }
        })
        .collect();
    let upload = CaseUpload {
        format: UploadFormat::PublishJson,
        gaen,
        f0: Vec::new(),
        skipped: Vec::new(),
    };
    db.insert_case(&[1; 32], &upload, &TokenId("bench".into()), NOW - 10)
        .unwrap();
    (t, auth, Mutex::new(db))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("authority/publish");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    for keys in [100_000usize, 1_000_000] {
        g.throughput(Throughput::Elements(keys as u64));
        g.bench_function(format!("{keys}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (_t, auth, db) = fixture(keys);
                    let out = Output::parse(&auth.out_location(None)).unwrap();
                    let start = Instant::now();
                    let r = rt.block_on(publish(&auth, &db, &out, NOW)).unwrap();
                    total += start.elapsed();
                    assert_eq!(r.gaen_keys, keys);
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
