//! Bluezone F0 matching (`shared/spec/bluezone.md` §3).
//!
//! The walk is the real app's (`BluezoneIdTrace.checkContactF`): it starts at the entry's
//! `time_start` (not its UTC midnight) with `subkey(0)` of `daily_key`, gives each sub-key a slot
//! of `86400 / max` seconds, rolls to the next daily key after `max` slots, and goes on while a
//! slot's start is ≤ `time_end`. A sighting counts when its time lies in the slot, ends included,
//! widened by the skew tolerance on both sides; also under the other common layout (96 ↔ 144,
//! the legacy builds' fallback of the spec), walked the same way.
//!
//! Work is bounded by the log, not by the entry: only days with a slot that overlaps the log's
//! time range get a sub-key chain, and a chain stops at the last slot that can still overlap it.
//! (Days before the log still cost the one hash a day that the daily-key chain needs.)
//!
//! The days of all entries are independent once their daily keys are known, so they run in
//! groups of [`LANES`] through [`subkeys`](super::subkeys) and each day's IDs are probed as one
//! batch. Entries are spread over threads with rayon in chunks, so memory stays bounded by the
//! chunk.

use rayon::prelude::*;

use super::index::ObservationIndex;
use super::sha256x::words;
use super::subkeys::{subkey_ids, subkey_ids_filtered, ProbedStep, LANES};
use super::{Hit, MatchConfig, MatchStats};
use crate::bluezone::{F0Entry, SlotsPerDay, SUBKEY_SALT};
use crate::time::{UnixSeconds, DAY_SECONDS};

const ENTRIES_PER_TASK: usize = 16;

/// One day of one entry, ready for its sub-key chain.
struct DayWork {
    entry: u32,
    /// Start of the day's slot 0: `time_start + day * 86400`.
    base: UnixSeconds,
    /// Sub-keys to derive (the slots that can overlap the log).
    steps: u32,
    key: [u8; 32],
}

impl Drop for DayWork {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

/// First sub-key message: `daily_key || "bluzonesubkey"` padded (45 bytes → one block).
pub(crate) fn subkey0_block(key: &[u8; 32]) -> [u32; 16] {
    let mut b = [0u8; 64];
    b[..32].copy_from_slice(key);
    b[32..45].copy_from_slice(SUBKEY_SALT);
    b[45] = 0x80;
    b[56..].copy_from_slice(&(45u64 * 8).to_be_bytes());
    words(&b)
}

fn fallback(max: SlotsPerDay) -> Option<SlotsPerDay> {
    match max.get() {
        96 => Some(SlotsPerDay::LEGACY),
        144 => Some(SlotsPerDay::DEFAULT),
        _ => None,
    }
}

/// The slot layouts an entry is matched under, with how many of the day's IDs each covers.
fn layouts(max: SlotsPerDay) -> impl Iterator<Item = (SlotsPerDay, u32)> {
    std::iter::once((max, max.get())).chain(fallback(max).map(|f| (f, f.get().min(max.get()))))
}

/// Sub-keys of the day starting at `base` worth deriving: under some layout, slot `i`'s start is
/// ≤ `last` (the earlier of `time_end` and the newest sighting plus the skew).
fn steps_for(base: UnixSeconds, max: SlotsPerDay, last: UnixSeconds) -> u32 {
    layouts(max)
        .map(|(m, n)| {
            if last < base {
                0
            } else {
                (last.saturating_sub(base) / m.slot_seconds() + 1).min(n as i64) as u32
            }
        })
        .max()
        .unwrap_or(0)
}

/// Matches F0 entries against the index. `hits[i].case` is the entry's position in `entries`.
pub fn match_f0(
    entries: &[F0Entry],
    index: &ObservationIndex,
    cfg: &MatchConfig,
) -> (Vec<Hit>, MatchStats) {
    let nothing = || {
        (
            Vec::new(),
            MatchStats {
                keys_checked: entries.len() as u64,
                ids_derived: 0,
            },
        )
    };
    let Some((oldest, newest)) = index.time_range else {
        return nothing();
    };
    if index.bluezone.distinct_ids() == 0 {
        return nothing();
    }
    let skew = cfg.skew_s;
    entries
        .par_chunks(ENTRIES_PER_TASK)
        .enumerate()
        .map(|(chunk, es)| {
            let base_entry = chunk * ENTRIES_PER_TASK;
            let mut work = Vec::new();
            for (k, e) in es.iter().enumerate() {
                let last = e.time_end.min(newest.saturating_add(skew));
                let mut key = e.daily_key.clone();
                let mut base = e.time_start;
                while base <= last {
                    // A day's windows all end by `base + 86400 + skew`: a day wholly before the
                    // log costs only its daily-key hash.
                    if base.saturating_add(DAY_SECONDS + skew) >= oldest {
                        work.push(DayWork {
                            entry: (base_entry + k) as u32,
                            base,
                            steps: steps_for(base, e.max, last),
                            key: *key.as_bytes(),
                        });
                    }
                    // Checked, not saturating: at the end of the time line a saturated `base`
                    // would stay `<= last` forever.
                    match base.checked_add(DAY_SECONDS) {
                        Some(next) if next <= last => {
                            base = next;
                            key = key.next_day();
                        }
                        _ => break,
                    }
                }
            }
            let mut hits = Vec::new();
            let mut derived = 0u64;
            let mut ids: [Vec<[u8; 12]>; LANES] = Default::default();
            let mut probed = Vec::new();
            let mut passed = Vec::new();
            for group in work.chunks(LANES) {
                derived += derive_and_probe(
                    group,
                    entries,
                    index,
                    skew,
                    (&mut ids, &mut probed, &mut passed),
                    &mut hits,
                );
            }
            look_up_passed(&mut passed, entries, index, skew, &mut hits);
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

/// Derives the IDs of a group of at most [`LANES`] days and probes them. With AVX-512 the
/// chains and the filter probe run together ([`subkey_ids_filtered`]) and only the IDs that
/// pass the filter are looked up; elsewhere each lane's IDs go through
/// [`find_batch`](super::index::IdTable::find_batch).
fn derive_and_probe(
    group: &[DayWork],
    entries: &[F0Entry],
    index: &ObservationIndex,
    skew: i64,
    (ids, probed, passed): Scratch<'_>,
    hits: &mut Vec<Hit>,
) -> u64 {
    let mut first = [[0u32; 16]; LANES];
    for (m, w) in first.iter_mut().zip(group) {
        *m = subkey0_block(&w.key);
    }
    let steps = group.iter().map(|w| w.steps).max().unwrap_or(0) as usize;
    let derived = group.iter().map(|w| w.steps as u64).sum();
    let table = &index.bluezone;
    let mut on_hit = |entry: u32, base: UnixSeconds, slot: usize, g: u32| {
        report(entries, table, skew, entry, base, slot, g, hits)
    };
    let (filter, key) = table.filter();
    if subkey_ids_filtered(&first[..group.len()], steps, filter, key, probed).is_some() {
        // The few IDs that passed the filter (about 0.4 % of absent ones) wait in `passed`
        // and are looked up together by the caller.
        for (slot, p) in probed.iter().enumerate() {
            let mut pass = p.pass;
            while pass != 0 {
                let l = pass.trailing_zeros() as usize;
                pass &= pass - 1;
                let w = &group[l];
                if slot < w.steps as usize {
                    passed.push(Passed {
                        id: p.id(l),
                        slot: slot as u16,
                        entry: w.entry,
                        base: w.base,
                    });
                }
            }
        }
        return derived;
    }
    subkey_ids(&first[..group.len()], steps, ids);
    for (l, w) in group.iter().enumerate() {
        let lane = &ids[l][..w.steps as usize];
        table.find_batch(lane, |slot, g| on_hit(w.entry, w.base, slot, g));
    }
    derived
}

/// A task's reusable buffers: per-lane IDs (portable path), per-step probe results (AVX-512),
/// and the IDs waiting for their full lookup.
type Scratch<'a> = (
    &'a mut [Vec<[u8; 12]>; LANES],
    &'a mut Vec<ProbedStep>,
    &'a mut Vec<Passed>,
);

/// An ID that passed the index's filter, waiting for its full lookup.
struct Passed {
    id: [u8; 12],
    slot: u16,
    entry: u32,
    base: UnixSeconds,
}

/// Full lookups of the IDs that passed the filter, all at once so that their cache misses
/// (a bucket each: in a 1M-ID index, one miss to memory) overlap.
fn look_up_passed(
    passed: &mut Vec<Passed>,
    entries: &[F0Entry],
    index: &ObservationIndex,
    skew: i64,
    hits: &mut Vec<Hit>,
) {
    let table = &index.bluezone;
    let ids: Vec<[u8; 12]> = passed.iter().map(|p| p.id).collect();
    table.find_passed(&ids, |i, g| {
        let p = &passed[i];
        report(
            entries,
            table,
            skew,
            p.entry,
            p.base,
            p.slot as usize,
            g,
            hits,
        );
    });
    passed.clear();
}

/// Sightings of group `g` in the windows of sub-key `slot` of the day starting at `base` of
/// entry `entry`, as hits.
#[allow(clippy::too_many_arguments)]
fn report(
    entries: &[F0Entry],
    table: &super::index::IdTable<12>,
    skew: i64,
    entry: u32,
    base: UnixSeconds,
    slot: usize,
    g: u32,
    hits: &mut Vec<Hit>,
) {
    let e = &entries[entry as usize];
    let mut windows = [(0i64, -1i64); 2];
    for (k, (m, n)) in layouts(e.max).enumerate() {
        let start = base.saturating_add(slot as i64 * m.slot_seconds());
        if (slot as u32) < n && start <= e.time_end {
            let end = start.saturating_add(m.slot_seconds()).saturating_add(skew);
            windows[k] = (start.saturating_sub(skew), end);
        }
    }
    for (a, b) in merge(windows) {
        let r = table.seen_within(g, a, b);
        if !r.is_empty() {
            hits.push(Hit {
                case: entry,
                group: g,
                obs: r.start as u32..r.end as u32,
                tx_power: None,
            });
        }
    }
}

/// The non-empty windows among two, overlapping or touching ones merged (so one sighting is
/// reported once).
fn merge(mut w: [(i64, i64); 2]) -> impl Iterator<Item = (i64, i64)> {
    w.sort_unstable();
    let [x, y] = w;
    let merged = if x.0 <= x.1 && y.0 <= y.1 && y.0 <= x.1.saturating_add(1) {
        [(x.0, x.1.max(y.1)), (0, -1)]
    } else {
        [x, y]
    };
    merged.into_iter().filter(|(a, b)| a <= b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_merge() {
        let m = |w| merge(w).collect::<Vec<_>>();
        assert_eq!(m([(5, 10), (0, 6)]), vec![(0, 10)]);
        assert_eq!(m([(20, 30), (0, 6)]), vec![(0, 6), (20, 30)]);
        assert_eq!(m([(20, 30), (0, -1)]), vec![(20, 30)]);
        assert_eq!(m([(0, -1), (0, -1)]), vec![]);
    }

    #[test]
    fn steps_stop_at_the_last_slot_that_can_count() {
        let d = SlotsPerDay::DEFAULT;
        assert_eq!(steps_for(1000, d, 999), 0);
        assert_eq!(steps_for(1000, d, 1000), 1);
        // Under 96 the fallback layout's (144) shorter slots start earlier and decide.
        assert_eq!(steps_for(1000, d, 1000 + 599), 1);
        assert_eq!(steps_for(1000, d, 1000 + 600), 2);
        assert_eq!(steps_for(0, d, 1800), 4);
        assert_eq!(steps_for(0, d, 10 * DAY_SECONDS), 96);
        assert_eq!(steps_for(0, SlotsPerDay::LEGACY, 1800), 4);
        assert_eq!(steps_for(0, SlotsPerDay::LEGACY, 10 * DAY_SECONDS), 144);
    }
}
