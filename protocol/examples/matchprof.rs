//! Profiling driver for the matching core (instruction counts under callgrind, `perf stat`).
//!
//! `cargo run --release -p bluezone-protocol --example matchprof -- MODE N IDS REPS`
//! with MODE one of `bluezone` (N F0 entries × 14 days), `gaen` (N keys), `chains`
//! (N groups of sixteen 96-step sub-key chains). Prints the wall time per element, which is
//! only indicative on a shared machine; compare variants by instruction counts.

use bluezone_protocol::bluezone::{F0Entry, SlotsPerDay};
use bluezone_protocol::gaen::Enin;
use bluezone_protocol::matching::gaen::{match_keys, GaenKey};
use bluezone_protocol::matching::subkeys::{subkey_ids, Kept, LANES};
use bluezone_protocol::matching::{bluezone, MatchConfig, ObservationIndex};
use bluezone_protocol::{DailyKey, PeerId, RollingId, Rpi, Sighting, Tek};
use rand::{rngs::StdRng, Rng, RngCore, SeedableRng};

const DAY0: i64 = 1_596_844_800;
const DAYS: i64 = 14;

fn sightings(rng: &mut StdRng, n: usize, gaen: bool) -> Vec<Sighting> {
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
                aem: None,
            }
        })
        .collect()
}

/// CPU time of the process's threads (`/proc/self/task/*/schedstat`, nanoseconds on CPU):
/// unlike wall time, it does not count the time other processes held the cores.
struct Instant(u64);

impl Instant {
    fn now() -> Instant {
        let mut total = 0;
        for t in std::fs::read_dir("/proc/self/task")
            .into_iter()
            .flatten()
            .flatten()
        {
            let s = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            total += s
                .split_whitespace()
                .next()
                .and_then(|x| x.parse::<u64>().ok())
                .unwrap_or(0);
        }
        Instant(total)
    }
    fn elapsed(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(Instant::now().0 - self.0)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("bluezone");
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let ids: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let reps: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(1);
    let mut rng = StdRng::seed_from_u64(1);
    let cfg = MatchConfig::default();
    match mode {
        "bluezone" => {
            let index = ObservationIndex::build(&sightings(&mut rng, ids, false), rng.gen());
            let entries: Vec<F0Entry> = (0..n)
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
                .collect();
            let t = Instant::now();
            let mut derived = 0;
            for _ in 0..reps {
                derived += bluezone::match_f0(&entries, &index, &cfg).1.ids_derived;
            }
            let per = t.elapsed().as_secs_f64() / (reps * n * DAYS as usize) as f64;
            println!(
                "bluezone {n}x14d vs {ids}: {:.0} ns/F0-day, {:.0}k F0-days/s ({derived} ids)",
                per * 1e9,
                1e-3 / per
            );
        }
        "gaen" => {
            let index = ObservationIndex::build(&sightings(&mut rng, ids, true), rng.gen());
            let first = Enin::from_unix(DAY0).0;
            let keys: Vec<GaenKey> = (0..n)
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
                .collect();
            let t = Instant::now();
            let mut derived = 0;
            for _ in 0..reps {
                derived += match_keys(&keys, &index, &cfg).1.ids_derived;
            }
            let per = t.elapsed().as_secs_f64() / (reps * n) as f64;
            println!(
                "gaen {n} keys vs {ids}: {:.0} ns/key, {:.2}M keys/s ({derived} ids)",
                per * 1e9,
                1e-6 / per
            );
        }
        "fpr" => {
            // The filter's pass rate on absent IDs.
            use bluezone_protocol::matching::index::{filter_hash, filter_slot};
            let index = ObservationIndex::build(&sightings(&mut rng, ids, false), rng.gen());
            let (f, key) = index.bluezone.filter();
            let mut pass = 0;
            for _ in 0..n {
                let w = [rng.gen(), rng.gen(), rng.gen(), 0];
                let (i, m) = filter_slot(filter_hash(w, &key), key.words);
                pass += (f[i] & m == m) as usize;
            }
            println!(
                "filter: {} words for {ids} IDs, {:.3} % of absent IDs pass",
                f.len(),
                100.0 * pass as f64 / n as f64
            );
        }
        "sha2" => {
            // The `sha2` crate's `compress256` (its software backend where the CPU, or
            // valgrind, offers no SHA-NI): the same 16 × 96 chained compressions.
            let mut st = [[0u32; 8]; LANES];
            let t = Instant::now();
            for _ in 0..n {
                for (l, s) in st.iter_mut().enumerate() {
                    *s = [l as u32; 8];
                }
                for _ in 0..96 {
                    for s in st.iter_mut() {
                        let mut block = [0u8; 64];
                        for (c, w) in block.chunks_exact_mut(4).zip(s.iter()) {
                            c.copy_from_slice(&w.to_be_bytes());
                        }
                        block[32] = 0x80;
                        block[62] = 1;
                        let mut next = bluezone_protocol::matching::sha256x::IV;
                        sha2::compress256(&mut next, &[block.into()]);
                        *s = next;
                    }
                }
            }
            let per = t.elapsed().as_secs_f64() / (n * LANES * 96) as f64;
            println!(
                "sha2 compress256: {:.1} ns/compression ({})",
                per * 1e9,
                st[0][0]
            );
        }
        _ => {
            let first: Vec<[u32; 16]> = (0..LANES as u32)
                .map(|l| std::array::from_fn(|w| l.wrapping_mul(0x9E37_79B9) ^ w as u32))
                .collect();
            let mut out: [Vec<[u8; 12]>; LANES] = Default::default();
            let t = Instant::now();
            let mut x = 0u8;
            for _ in 0..n {
                subkey_ids(&first, 96, &mut out, &mut Kept::none());
                x ^= out[LANES - 1][95][0];
            }
            let per = t.elapsed().as_secs_f64() / (n * LANES * 96) as f64;
            println!("chains: {:.1} ns/compression ({x})", per * 1e9);
        }
    }
}
