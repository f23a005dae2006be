//! Matching throughput: `cargo bench --bench matching`.
//!
//! Elements are F0-days for Bluezone and keys for GAEN. The observation index is built outside
//! the timed loop (the daemon builds it once per check). About 1 % of the case keys were really
//! seen, so the hit path is exercised too. Sizes whose one iteration takes more than a few
//! seconds run only with `BLUEZONED_BENCH_FULL=1`; `RAYON_NUM_THREADS=1` gives the one-core row.
//!
//! `BLUEZONED_FORCE_PORTABLE=1` runs every kernel on its portable path (no SHA-NI, AVX-512,
//! VAES); the groups are then named `…-portable`, so both sets of rows sit side by side in
//! criterion's reports. The `sha256*/sha2-compress256-16x96` row is the `sha2` crate on the
//! same chains: its software backend when built with `--features sha2/force-soft` (and `aes`,
//! the floor of the portable RPI path, the bitsliced AES, is software with
//! `RUSTFLAGS='--cfg aes_force_soft'`);
//! `benches/run-table.sh` builds the portable rows that way.
//!
//! `BLUEZONED_BENCH_SECS=S` sets every group's measurement time to `S` seconds (flat sampling,
//! ten samples): the short settings of `benches/run-table.sh`.

use std::time::Duration;

use bluezone_protocol::bluezone::{F0Entry, SlotsPerDay};
use bluezone_protocol::gaen::{self, Enin, Metadata};
use bluezone_protocol::matching::gaen::GaenKey;
use bluezone_protocol::matching::subkeys::{subkey_ids, Kept, LANES};
use bluezone_protocol::matching::{bluezone, cpu, MatchConfig, ObservationIndex};
use bluezone_protocol::{Aem, DailyKey, PeerId, RollingId, Rpi, Sighting, Tek};
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode,
    Throughput,
};
use rand::{rngs::StdRng, Rng, RngCore, SeedableRng};

/// The daemon's allocator (large blocks on transparent huge pages), so that the figures are
/// the daemon's.
#[global_allocator]
static ALLOC: bluezoned::hugepages::HugePageAlloc = bluezoned::hugepages::HugePageAlloc;

const DAY0: i64 = 1_596_844_800; // 2020-08-08 00:00 UTC
const DAYS: i64 = 14;

fn full() -> bool {
    std::env::var_os("BLUEZONED_BENCH_FULL").is_some()
}

/// A group name, marked when the portable paths are forced.
fn group(name: &str) -> String {
    if cpu::force_portable() {
        format!("{name}-portable")
    } else {
        name.to_string()
    }
}

/// Measurement time: `default` seconds, or `BLUEZONED_BENCH_SECS` when set.
fn secs(default: u64) -> Duration {
    let s = std::env::var("BLUEZONED_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(default as f64);
    Duration::from_secs_f64(s)
}

/// Ten samples of equal iteration counts: rows whose one iteration takes a good part of a
/// second would otherwise need 55 iterations for criterion's linear sampling.
fn setup<M: criterion::measurement::Measurement>(g: &mut BenchmarkGroup<'_, M>) {
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .sampling_mode(SamplingMode::Flat);
}

fn random_sightings(rng: &mut StdRng, n: usize, gaen: bool) -> Vec<Sighting> {
    (0..n)
        .map(|_| {
            let peer = if gaen {
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
                time: DAY0 + rng.gen_range(0..DAYS * 86400),
                rssi: -70,
                tx_power: None,
                aem: gaen.then_some(Aem([0; 4])),
            }
        })
        .collect()
}

fn f0_entries(rng: &mut StdRng, n: usize) -> Vec<F0Entry> {
    (0..n)
        .map(|_| {
            let mut k = [0u8; 32];
            rng.fill_bytes(&mut k);
            F0Entry {
                daily_key: DailyKey::from_bytes(k),
                time_start: DAY0,
                time_end: DAY0 + DAYS * 86400 - 1,
                max: SlotsPerDay::DEFAULT,
            }
        })
        .collect()
}

/// Replaces `n_seen` of the random sightings with real IDs of the first entries.
fn plant_bluezone(sightings: &mut [Sighting], entries: &[F0Entry], n_seen: usize) {
    for (i, e) in entries.iter().take(n_seen).enumerate() {
        let slot = (i % 96) as u32;
        let id = e.daily_key.id(slot);
        if let Some(s) = sightings.get_mut(i) {
            s.peer = PeerId::Bluezone(id);
            s.time = DAY0 + slot as i64 * 900 + 30;
        }
    }
}

fn bench_bluezone(c: &mut Criterion) {
    let mut g = c.benchmark_group(group("bluezone"));
    setup(&mut g);
    let records: &[usize] = if full() {
        &[1000, 15000, 200000]
    } else {
        &[1000, 15000]
    };
    for &ids in &[5000usize, 100_000, 1_000_000] {
        let mut rng = StdRng::seed_from_u64(ids as u64);
        let mut sightings = random_sightings(&mut rng, ids, false);
        let all = f0_entries(&mut rng, *records.last().unwrap_or(&1000));
        plant_bluezone(&mut sightings, &all, all.len() / 100);
        let index = ObservationIndex::build(&sightings, rng.gen());
        for &n in records {
            let entries = &all[..n];
            g.throughput(Throughput::Elements(n as u64 * DAYS as u64));
            g.measurement_time(secs(if n >= 15000 { 20 } else { 5 }));
            g.bench_with_input(BenchmarkId::new(format!("{n}x14d"), ids), &ids, |b, _| {
                b.iter(|| bluezone::match_f0(entries, &index, &MatchConfig::default()))
            });
        }
    }
    g.finish();
}

fn gaen_keys(rng: &mut StdRng, n: usize) -> Vec<GaenKey> {
    let first = Enin::from_unix(DAY0).0;
    (0..n)
        .map(|_| {
            let mut k = [0u8; 16];
            rng.fill_bytes(&mut k);
            GaenKey {
                tek: Tek::from_bytes(k),
                rolling_start: Enin(first + 144 * rng.gen_range(0..DAYS as u32)),
                rolling_period: 144,
                revoked: false,
            }
        })
        .collect()
}

fn bench_gaen(c: &mut Criterion) {
    let mut g = c.benchmark_group(group("gaen"));
    setup(&mut g);
    let key_counts: &[usize] = if full() {
        &[100_000, 1_000_000, 5_000_000]
    } else {
        &[100_000, 1_000_000]
    };
    let mut rng = StdRng::seed_from_u64(7);
    let keys = gaen_keys(&mut rng, *key_counts.last().unwrap_or(&100_000));
    for &rpis in &[5000usize, 100_000, 1_000_000] {
        let mut sightings = random_sightings(&mut rng, rpis, true);
        for (i, k) in keys.iter().take(keys.len() / 100).enumerate() {
            if let Some(s) = sightings.get_mut(i) {
                let j = (i % 144) as u32;
                let sched = gaen::key_schedule(&k.tek, k.rolling_start, 144, Metadata::v1_0(-20));
                let (enin, rpi, aem) = sched[j as usize];
                *s = Sighting {
                    peer: PeerId::Gaen(rpi),
                    time: enin.to_unix() + 5,
                    rssi: -60,
                    tx_power: None,
                    aem: Some(aem),
                };
            }
        }
        let index = ObservationIndex::build(&sightings, rng.gen());
        for &n in key_counts {
            g.throughput(Throughput::Elements(n as u64));
            g.measurement_time(secs(if n >= 1_000_000 { 20 } else { 5 }));
            g.bench_with_input(BenchmarkId::new(n.to_string(), rpis), &rpis, |b, _| {
                b.iter(|| {
                    bluezone_protocol::matching::gaen::match_keys(
                        &keys[..n],
                        &index,
                        &MatchConfig::default(),
                    )
                })
            });
        }
    }
    g.finish();
}

/// Bluezone's own method: one SQLite query per derived ID over its contact table
/// (`WHERE hex(blid_contact)=? AND timestamp BETWEEN ? AND ?`). The table is given an index on
/// `timestamp`, which is more than the app had, so the baseline is if anything flattered.
fn bench_baseline(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(99);
    let mut sightings = random_sightings(&mut rng, 5000, false);
    let entries = f0_entries(&mut rng, 1000);
    plant_bluezone(&mut sightings, &entries, 10);
    let db = rusqlite::Connection::open_in_memory().expect("in-memory db");
    db.execute_batch(
        "CREATE TABLE trace (id INTEGER PRIMARY KEY, blid_contact BLOB, rssi INTEGER, timestamp INTEGER);
         CREATE INDEX trace_ts ON trace(timestamp);",
    )
    .expect("schema");
    {
        let mut ins = db
            .prepare("INSERT INTO trace (blid_contact, rssi, timestamp) VALUES (?1, ?2, ?3)")
            .expect("insert");
        for s in &sightings {
            ins.execute(rusqlite::params![s.peer.as_slice(), s.rssi, s.time * 1000])
                .expect("row");
        }
    }
    let mut g = c.benchmark_group("baseline");
    g.sample_size(10).warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(30));
    g.throughput(Throughput::Elements(entries.len() as u64 * DAYS as u64));
    g.bench_function("bluezone-app", |b| {
        b.iter(|| {
            let mut q = db
                .prepare_cached(
                    "SELECT COUNT(*) FROM trace WHERE hex(blid_contact) = ?1 AND timestamp BETWEEN ?2 AND ?3",
                )
                .expect("query");
            let mut found = 0u64;
            for e in &entries {
                let mut key = e.daily_key.clone();
                for d in 0..DAYS {
                    let day = DAY0 + d * 86400;
                    for (start, id) in key.day_schedule(day, SlotsPerDay::DEFAULT) {
                        let n: i64 = q
                            .query_row(
                                rusqlite::params![id.to_hex().to_uppercase(), start * 1000, (start + 899) * 1000],
                                |r| r.get(0),
                            )
                            .expect("row");
                        found += n as u64;
                    }
                    key = key.next_day();
                }
            }
            found
        })
    });
    g.finish();
}

/// SHA-256 alone: sixteen sub-key chains of 96 steps (elements are compressions).
fn bench_sha256(c: &mut Criterion) {
    let mut g = c.benchmark_group(group("sha256"));
    setup(&mut g);
    g.measurement_time(secs(3));
    let first: Vec<[u32; 16]> = (0..LANES as u32)
        .map(|l| std::array::from_fn(|w| l.wrapping_mul(0x9E37_79B9) ^ w as u32))
        .collect();
    let mut ids: [Vec<[u8; 12]>; LANES] = Default::default();
    let mut kept = Kept::none();
    g.throughput(Throughput::Elements((LANES * 96) as u64));
    g.bench_function("subkey-chains-16x96", |b| {
        b.iter(|| {
            subkey_ids(&first, 96, &mut ids, &mut kept);
            ids[LANES - 1][95]
        })
    });
    // The same chains through the `sha2` crate's `compress256`, one block at a time.
    g.bench_function("sha2-compress256-16x96", |b| {
        b.iter(|| {
            let mut st = [[0u32; 8]; LANES];
            for (s, f) in st.iter_mut().zip(&first) {
                s.copy_from_slice(&f[..8]);
            }
            for _ in 0..96 {
                for s in st.iter_mut() {
                    let mut block = [0u8; 64];
                    for (c, w) in block.chunks_exact_mut(4).zip(s.iter()) {
                        c.copy_from_slice(&w.to_be_bytes());
                    }
                    block[32] = 0x80;
                    block[62] = 1; // 256 bits
                    let mut next = bluezone_protocol::matching::sha256x::IV;
                    sha2::compress256(&mut next, &[block.into()]);
                    *s = next;
                }
            }
            st[LANES - 1]
        })
    });
    g.finish();
}

/// The 144 RPIs of a key (elements are AES blocks): the matcher's `rpi_blocks` (VAES, or on the
/// portable path the bitsliced SSE2/NEON AES) next to the `aes` crate's `encrypt_blocks` on the
/// same blocks.
fn bench_rpi_aes(c: &mut Criterion) {
    use aes::cipher::{BlockEncrypt, KeyInit};
    use bluezone_protocol::matching::rpi_aes::{rpi_blocks, MAX_RPIS};
    let mut g = c.benchmark_group(group("rpi-aes"));
    setup(&mut g);
    g.measurement_time(secs(3));
    let key = [0x5au8; 16];
    let first = Enin::from_unix(DAY0);
    let mut out = [[0u8; 16]; MAX_RPIS];
    g.throughput(Throughput::Elements(MAX_RPIS as u64));
    g.bench_function("rpi_blocks-144", |b| {
        b.iter(|| {
            rpi_blocks(&key, first, MAX_RPIS, &mut out);
            out[MAX_RPIS - 1]
        })
    });
    g.bench_function("aes-crate-144", |b| {
        b.iter(|| {
            let cipher = aes::Aes128Enc::new(&key.into());
            let mut blocks: [aes::Block; MAX_RPIS] = std::array::from_fn(|j| {
                gaen::padded_data(Enin(first.0.wrapping_add(j as u32))).into()
            });
            cipher.encrypt_blocks(&mut blocks);
            blocks[MAX_RPIS - 1]
        })
    });
    g.finish();
}

/// Index flooding (security review M3): IDs that share their first 8 bytes, as a peer
/// broadcasting crafted IDs would log them, against random IDs. Both the build and a match of
/// 1000 F0 entries × 14 days; the crafted rows should cost no more than the random ones. The
/// same for GAEN: RPIs that share their first 12 bytes against random ones, 100k keys matched
/// (`match-gaen-100000`, elements = keys).
fn bench_flood(c: &mut Criterion) {
    let mut g = c.benchmark_group(group("flood"));
    setup(&mut g);
    g.measurement_time(secs(5));
    const IDS: usize = 100_000;
    let mut rng = StdRng::seed_from_u64(13);
    let random = random_sightings(&mut rng, IDS, false);
    let crafted: Vec<Sighting> = random
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut id = [0x42u8; 12];
            id[8..].copy_from_slice(&(i as u32).to_le_bytes());
            Sighting {
                peer: PeerId::Bluezone(RollingId(id)),
                ..*s
            }
        })
        .collect();
    let entries = f0_entries(&mut rng, 1000);
    for (name, sightings) in [("random", &random), ("crafted", &crafted)] {
        let seed = rng.gen();
        g.throughput(Throughput::Elements(IDS as u64));
        g.bench_with_input(BenchmarkId::new("build", name), &name, |b, _| {
            b.iter(|| ObservationIndex::build(sightings, seed))
        });
        let index = ObservationIndex::build(sightings, seed);
        g.throughput(Throughput::Elements(entries.len() as u64 * DAYS as u64));
        g.bench_with_input(BenchmarkId::new("match-1000x14d", name), &name, |b, _| {
            b.iter(|| bluezone::match_f0(&entries, &index, &MatchConfig::default()))
        });
    }
    let random = random_sightings(&mut rng, IDS, true);
    let crafted: Vec<Sighting> = random
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut id = [0x42u8; 16];
            id[12..].copy_from_slice(&(i as u32).to_le_bytes());
            Sighting {
                peer: PeerId::Gaen(Rpi(id)),
                ..*s
            }
        })
        .collect();
    let keys = gaen_keys(&mut rng, 100_000);
    for (name, sightings) in [("random", &random), ("crafted", &crafted)] {
        let index = ObservationIndex::build(sightings, rng.gen());
        g.throughput(Throughput::Elements(keys.len() as u64));
        g.bench_with_input(
            BenchmarkId::new("match-gaen-100000", name),
            &name,
            |b, _| {
                b.iter(|| {
                    bluezone_protocol::matching::gaen::match_keys(
                        &keys[..],
                        &index,
                        &MatchConfig::default(),
                    )
                })
            },
        );
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_sha256,
    bench_rpi_aes,
    bench_flood,
    bench_bluezone,
    bench_gaen,
    bench_baseline
);
criterion_main!(benches);
