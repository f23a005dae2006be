//! Bluezone F0 matching (`shared/spec/bluezone.md` §3).
//!
//! Per F0 entry the daily keys follow the hash chain (one hash a day); after that the days are
//! independent, so `LANES` days run their 96-step sub-key chains in lockstep through
//! [`sha256x`](super::sha256x) and the IDs of each group of days are probed as one batch.
//! Entries are spread over threads with rayon in chunks, so memory stays bounded by the chunk.
//!
//! A sighting of `id(i)` counts when its time lies in slot `i` under the entry's `max`, or under
//! the other common layout (96 ↔ 144, the legacy builds' fallback of the spec), widened by the
//! skew tolerance on both sides, and within the entry's `[time_start, time_end]` (also widened).

use rayon::prelude::*;

use super::index::ObservationIndex;
use super::sha256x::{compress_lanes, pad32, words, IV};
use super::{Hit, MatchConfig, MatchStats};
use crate::bluezone::{F0Entry, SlotsPerDay, SUBKEY_SALT};
use crate::time::{utc_day, UnixSeconds, DAY_SECONDS};

const LANES: usize = 4;
const ENTRIES_PER_TASK: usize = 16;

/// One day of one entry, ready for its sub-key chain.
struct DayWork {
    entry: u32,
    day_start: UnixSeconds,
    key: [u8; 32],
    max: SlotsPerDay,
}

impl Drop for DayWork {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

/// First sub-key message: `daily_key || "bluzonesubkey"` padded (45 bytes → one block).
fn subkey0_block(key: &[u8; 32]) -> [u32; 16] {
    let mut b = [0u8; 64];
    b[..32].copy_from_slice(key);
    b[32..45].copy_from_slice(SUBKEY_SALT);
    b[45] = 0x80;
    b[56..].copy_from_slice(&(45u64 * 8).to_be_bytes());
    words(&b)
}

/// The 12 ID bytes, taken from the digest words (bytes 0,4,...,16,18,...,30).
#[inline(always)]
fn id_of(s: &[u32; 8]) -> [u8; 12] {
    [
        (s[0] >> 24) as u8,
        (s[1] >> 24) as u8,
        (s[2] >> 24) as u8,
        (s[3] >> 24) as u8,
        (s[4] >> 24) as u8,
        (s[4] >> 8) as u8,
        (s[5] >> 24) as u8,
        (s[5] >> 8) as u8,
        (s[6] >> 24) as u8,
        (s[6] >> 8) as u8,
        (s[7] >> 24) as u8,
        (s[7] >> 8) as u8,
    ]
}

fn fallback(max: SlotsPerDay) -> Option<SlotsPerDay> {
    match max.get() {
        96 => Some(SlotsPerDay::LEGACY),
        144 => Some(SlotsPerDay::DEFAULT),
        _ => None,
    }
}

/// Matches F0 entries against the index. `hits[i].case` is the entry's position in `entries`.
pub fn match_f0(
    entries: &[F0Entry],
    index: &ObservationIndex,
    cfg: &MatchConfig,
) -> (Vec<Hit>, MatchStats) {
    let Some((oldest, newest)) = index.time_range else {
        return (
            Vec::new(),
            MatchStats {
                keys_checked: entries.len() as u64,
                ids_derived: 0,
            },
        );
    };
    if index.bluezone.distinct_ids() == 0 {
        return (
            Vec::new(),
            MatchStats {
                keys_checked: entries.len() as u64,
                ids_derived: 0,
            },
        );
    }
    entries
        .par_chunks(ENTRIES_PER_TASK)
        .enumerate()
        .map(|(chunk, es)| {
            let base = chunk * ENTRIES_PER_TASK;
            let mut work = Vec::new();
            for (k, e) in es.iter().enumerate() {
                let mut key = e.daily_key.clone();
                for d in utc_day(e.time_start)..=utc_day(e.time_end) {
                    let day_start = d * DAY_SECONDS;
                    // Cheap rejection: a day wholly outside the log needs no sub-key chain.
                    if day_start + DAY_SECONDS + cfg.skew_s > oldest
                        && day_start - cfg.skew_s <= newest
                    {
                        work.push(DayWork {
                            entry: (base + k) as u32,
                            day_start,
                            key: *key.as_bytes(),
                            max: e.max,
                        });
                    }
                    key = key.next_day();
                }
            }
            let mut hits = Vec::new();
            let mut derived = 0u64;
            for group in work.chunks(LANES) {
                derived += derive_and_probe(group, entries, index, cfg, &mut hits);
            }
            (
                hits,
                MatchStats {
                    keys_checked: es.len() as u64,
                    ids_derived: derived,
                },
            )
        })
        .reduce(|| (Vec::new(), MatchStats::default()), super::join_results)
}

fn derive_and_probe(
    group: &[DayWork],
    entries: &[F0Entry],
    index: &ObservationIndex,
    cfg: &MatchConfig,
    hits: &mut Vec<Hit>,
) -> u64 {
    let mut msgs = [[0u32; 16]; LANES];
    for (m, w) in msgs.iter_mut().zip(group) {
        *m = subkey0_block(&w.key);
    }
    let steps = group.iter().map(|w| w.max.get()).max().unwrap_or(0) as usize;
    let mut ids: [Vec<[u8; 12]>; LANES] = Default::default();
    for v in ids.iter_mut() {
        v.reserve(steps);
    }
    let mut states = [IV; LANES];
    compress_lanes(&mut states, &msgs);
    for step in 0..steps {
        for l in 0..group.len() {
            if step < group[l].max.get() as usize {
                ids[l].push(id_of(&states[l]));
            }
        }
        if step + 1 < steps {
            let mut next = [[0u32; 16]; LANES];
            for (n, s) in next.iter_mut().zip(states.iter()) {
                *n = pad32(s);
            }
            states = [IV; LANES];
            compress_lanes(&mut states, &next);
        }
    }
    let mut derived = 0;
    for (l, w) in group.iter().enumerate() {
        derived += ids[l].len() as u64;
        let e = &entries[w.entry as usize];
        let lo = e.time_start - cfg.skew_s;
        let hi = e.time_end + cfg.skew_s;
        index.bluezone.find_batch(&ids[l], |slot, g| {
            let mut windows = vec![slot_window(w.day_start, w.max, slot as u32, cfg.skew_s)];
            if let Some(f) = fallback(w.max) {
                if (slot as u32) < f.get() {
                    windows.push(slot_window(w.day_start, f, slot as u32, cfg.skew_s));
                }
            }
            for (a, b) in merge(windows) {
                let (a, b) = (a.max(lo), b.min(hi));
                if a > b {
                    continue;
                }
                let r = index.bluezone.seen_within(g, a, b);
                if !r.is_empty() {
                    hits.push(Hit {
                        case: w.entry,
                        group: g,
                        obs: r.start as u32..r.end as u32,
                        tx_power: None,
                    });
                }
            }
        });
    }
    derived
}

/// Inclusive time window of slot `i`, widened by the skew.
fn slot_window(day_start: UnixSeconds, max: SlotsPerDay, i: u32, skew: i64) -> (i64, i64) {
    let len = max.slot_seconds();
    let a = day_start + i as i64 * len;
    (a - skew, a + len - 1 + skew)
}

fn merge(mut w: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    w.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(w.len());
    for (a, b) in w {
        match out.last_mut() {
            Some(last) if a <= last.1 + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_ids_equal_the_reference_chain() {
        let key = crate::DailyKey::from_bytes([3; 32]);
        let work = [DayWork {
            entry: 0,
            day_start: 0,
            key: *key.as_bytes(),
            max: SlotsPerDay::DEFAULT,
        }];
        let mut msgs = [[0u32; 16]; 1];
        msgs[0] = subkey0_block(&work[0].key);
        let mut st = [IV; 1];
        compress_lanes(&mut st, &msgs);
        for (i, id) in key.ids().take(5).enumerate() {
            assert_eq!(id_of(&st[0]), id.0, "slot {i}");
            let n = [pad32(&st[0])];
            st = [IV; 1];
            compress_lanes(&mut st, &n);
        }
    }

    #[test]
    fn windows_merge() {
        assert_eq!(merge(vec![(5, 10), (0, 6)]), vec![(0, 10)]);
        assert_eq!(merge(vec![(20, 30), (0, 6)]), vec![(0, 6), (20, 30)]);
    }
}
