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

use std::collections::HashMap;

use rayon::prelude::*;
use zeroize::Zeroize;

use super::index::ObservationIndex;
use super::sha256x::{pad32, words};
use super::subkeys::{subkey_ids, subkey_ids_filtered, Kept, ProbedStep, KEPT, LANES};
use super::{Hit, MatchConfig, MatchStats};
use crate::bluezone::{F0Entry, SlotsPerDay, SUBKEY_SALT};
use crate::ids::DailyKey;
use crate::time::{UnixSeconds, DAY_SECONDS};

const ENTRIES_PER_TASK: usize = 16;

/// One day of one entry, ready for its sub-key chain: sub-keys `from..steps` are derived,
/// starting from the message block `first`.
struct DayWork {
    entry: u32,
    /// Start of the day's slot 0: `time_start + day * 86400`.
    base: UnixSeconds,
    /// The first sub-key to derive: 0, or where a [`ChainCache`] left the chain.
    from: u32,
    /// Sub-keys up to this one (exclusive) can overlap the log.
    steps: u32,
    /// The block whose hash is sub-key `from`: the daily key and salt, or the padded sub-key
    /// `from - 1`.
    first: [u32; 16],
    /// The entry's saved chain (in the task's saved states) if this is its last day.
    save: Option<usize>,
    /// For each layout, the sub-key count at which to keep the chain's state for the next
    /// run (`from < keep[k] <= steps`), or 0.
    keep: [u32; KEPT],
}

impl Drop for DayWork {
    fn drop(&mut self) {
        self.first.zeroize();
    }
}

/// Where the F0 entries' chains stood after a run of [`match_f0_resuming`], so that the next run
/// over a later log goes on from there instead of walking every entry's daily keys and each
/// day's sub-keys from the start again.
///
/// The daemon matches each quarter-hour's new sightings against the entries whose validity
/// covers them; without this, every such run derives each entry's daily keys since its
/// `time_start` and the day's sub-keys since midnight. A chain is resumed only where the
/// sub-keys skipped cannot count in the new log (their slots end, skew included, before its
/// first sighting): otherwise it is walked from the start as without a cache, so results never
/// depend on what the cache holds. It keeps only the entries of the last run (its working
/// set), one state each.
///
/// The entries are published case keys, not the device's own: the saved states are zeroized
/// when the cache drops them (not every copy a run makes on the stack, nor a table's old
/// allocation after it grows), and there is no `Debug` that shows them.
#[derive(Default)]
pub struct ChainCache {
    chains: HashMap<ChainId, Resume>,
}

impl ChainCache {
    /// Entries with a saved chain.
    pub fn len(&self) -> usize {
        self.chains.len()
    }

    /// Whether none has.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty()
    }
}

impl std::fmt::Debug for ChainCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChainCache({} entries)", self.chains.len())
    }
}

/// An entry, as its chain depends on it: first daily key and start.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ChainId {
    key: [u8; 32],
    time_start: UnixSeconds,
}

impl ChainId {
    fn of(e: &F0Entry) -> ChainId {
        ChainId {
            key: *e.daily_key.as_bytes(),
            time_start: e.time_start,
        }
    }
}

/// Day `day` of an entry (its daily key `daily`), and where its sub-key chain can go on from
/// under each slot layout the entry is matched under (in [`layouts`] order).
struct Resume {
    day: u32,
    daily: DailyKey,
    points: [Point; KEPT],
}

/// A place in a day's sub-key chain: sub-keys `0..slots` are behind it, the last of them being
/// `state` (SHA-256 state words; meaningless when `slots` is 0).
#[derive(Clone, Copy)]
struct Point {
    slots: u32,
    state: [u32; 8],
}

impl Point {
    const START: Point = Point {
        slots: 0,
        state: [0; 8],
    };
}

impl Drop for Resume {
    fn drop(&mut self) {
        for p in &mut self.points {
            p.state.zeroize();
        }
    }
}

impl Drop for ChainId {
    fn drop(&mut self) {
        self.key.zeroize();
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

/// Matches F0 entries against the index. `hits[i].case` is the entry's position in `entries`.
pub fn match_f0(
    entries: &[F0Entry],
    index: &ObservationIndex,
    cfg: &MatchConfig,
) -> (Vec<Hit>, MatchStats) {
    let (hits, stats, _) = run(entries, index, cfg, None);
    (hits, stats)
}

/// [`match_f0`], going on from where `cache` says the entries' chains stood wherever the
/// sub-keys skipped cannot count in this log, and leaving in `cache` where they stand now.
/// The same hits as [`match_f0`] whatever the cache holds.
pub fn match_f0_resuming(
    entries: &[F0Entry],
    index: &ObservationIndex,
    cfg: &MatchConfig,
    cache: &mut ChainCache,
) -> (Vec<Hit>, MatchStats) {
    let (hits, stats, saved) = run(entries, index, cfg, Some(cache));
    if let Some(saved) = saved {
        // In place: the table keeps its allocation from run to run.
        cache.chains.clear();
        cache.chains.extend(saved);
    }
    (hits, stats)
}

type Saved = Vec<(ChainId, Resume)>;

fn run(
    entries: &[F0Entry],
    index: &ObservationIndex,
    cfg: &MatchConfig,
    cache: Option<&ChainCache>,
) -> (Vec<Hit>, MatchStats, Option<Saved>) {
    let nothing = || {
        (
            Vec::new(),
            MatchStats {
                keys_checked: entries.len() as u64,
                ids_derived: 0,
            },
            None,
        )
    };
    let Some((oldest, newest)) = index.time_range else {
        return nothing();
    };
    if index.bluezone.distinct_ids() == 0 {
        return nothing();
    }
    let skew = cfg.skew_s;
    let (hits, stats, saved) = entries
        .par_chunks(ENTRIES_PER_TASK)
        .enumerate()
        .map(|(chunk, es)| {
            let base_entry = chunk * ENTRIES_PER_TASK;
            let mut work = Vec::new();
            let mut saved: Saved = Vec::new();
            for (k, e) in es.iter().enumerate() {
                let last = e.time_end.min(newest.saturating_add(skew));
                let mut key = e.daily_key.clone();
                let mut base = e.time_start;
                let mut day = 0u32;
                // Where this run may start the first day's chains, if not at sub-key 0.
                let mut resume: Option<[Point; KEPT]> = None;
                let id = cache.map(|_| ChainId::of(e));
                if let Some(r) = id.as_ref().and_then(|id| cache?.chains.get(id)) {
                    let at = e.time_start.checked_add(i64::from(r.day) * DAY_SECONDS);
                    // The days before the saved one end (skew included) before the log.
                    let skipped = |at: i64| r.day == 0 || at.saturating_add(skew) < oldest;
                    if let Some(at) = at.filter(|&at| at <= last && skipped(at)) {
                        base = at;
                        key = r.daily.clone();
                        day = r.day;
                        resume = Some(r.points);
                    }
                }
                while base <= last {
                    // Where the next run can go on from in this day's chains (saved if it is
                    // the entry's last day in this log), and this day's work.
                    let mut points = [Point::START; KEPT];
                    let mut pushed = [None; KEPT];
                    // A day's windows all end by `base + 86400 + skew`: a day wholly before the
                    // log costs only its daily-key hash.
                    if base.saturating_add(DAY_SECONDS + skew) >= oldest {
                        let plan =
                            plan_day(base, e.max, (oldest, newest, last), skew, resume.take());
                        points = plan.points;
                        for (seg, slot) in plan.segments.iter().flatten().zip(&mut pushed) {
                            *slot = Some(work.len());
                            work.push(DayWork {
                                entry: (base_entry + k) as u32,
                                base,
                                from: seg.from,
                                steps: seg.to,
                                first: match seg.start {
                                    Some(state) => pad32(&state),
                                    None => subkey0_block(key.as_bytes()),
                                },
                                save: None,
                                // States are kept only for a cache to save them in.
                                keep: if cache.is_some() { seg.keep } else { [0; KEPT] },
                            });
                        }
                    }
                    // Checked, not saturating: at the end of the time line a saturated `base`
                    // would stay `<= last` forever.
                    match base.checked_add(DAY_SECONDS) {
                        Some(next) if next <= last => {
                            base = next;
                            key = key.next_day();
                            day += 1;
                            resume = None;
                        }
                        _ => {
                            if let Some(id) = &id {
                                // Brought up to date below as the day's chains are derived.
                                for w in pushed.into_iter().flatten() {
                                    work[w].save = Some(saved.len());
                                }
                                let daily = key.clone();
                                saved.push((id.clone(), Resume { day, daily, points }));
                            }
                            break;
                        }
                    }
                }
            }
            let mut hits = Vec::new();
            let mut derived = 0u64;
            let mut ids: [Vec<[u8; 12]>; LANES] = Default::default();
            let mut probed = Vec::new();
            let mut passed = Vec::new();
            let mut kept = Kept::none();
            for group in work.chunks(LANES) {
                derive_and_probe(
                    group,
                    entries,
                    index,
                    skew,
                    (&mut ids, &mut probed, &mut passed, &mut kept),
                    &mut hits,
                );
                derived += group
                    .iter()
                    .map(|w| u64::from(w.steps - w.from))
                    .sum::<u64>();
                for (l, w) in group.iter().enumerate() {
                    let Some((_, r)) = w.save.and_then(|i| saved.get_mut(i)) else {
                        continue;
                    };
                    for (k, &n) in w.keep.iter().enumerate() {
                        if n > 0 {
                            let state = kept.states[k][l];
                            r.points[k] = Point { slots: n, state };
                        }
                    }
                }
            }
            look_up_passed(&mut passed, entries, index, skew, &mut hits);
            (
                hits,
                MatchStats {
                    keys_checked: es.len() as u64,
                    ids_derived: derived,
                },
                saved,
            )
        })
        // Collected, then joined once: a pairwise reduce copies the saved chains at every level.
        .collect::<Vec<_>>()
        .into_iter()
        .fold(
            (Vec::new(), MatchStats::default(), Vec::new()),
            |(mut hits, stats, mut saved), (more, more_stats, more_saved)| {
                hits.extend(more);
                saved.push(more_saved);
                (hits, stats + more_stats, saved)
            },
        );
    (
        hits,
        stats,
        cache.map(|_| saved.into_iter().flatten().collect()),
    )
}

/// Sub-keys of the day starting at `base` whose windows under layout `m` (`count` slots) all
/// end before `before`, skew excluded: `0..ended`.
fn ended(base: UnixSeconds, m: SlotsPerDay, count: u32, before: UnixSeconds) -> u32 {
    // Slot i ends at base + (i + 1) * slot.
    let room = before.saturating_sub(base).saturating_sub(1);
    if room < 0 {
        0
    } else {
        (room / m.slot_seconds()).min(i64::from(count)) as u32
    }
}

/// Sub-keys of the day starting at `base` whose slot under layout `m` starts by `last`:
/// `0..begun`.
fn begun(base: UnixSeconds, m: SlotsPerDay, count: u32, last: UnixSeconds) -> u32 {
    if last < base {
        0
    } else {
        (last.saturating_sub(base) / m.slot_seconds() + 1).min(i64::from(count)) as u32
    }
}

/// Sub-keys `from..to` of a day's chain to derive, starting from sub-key 0's block or from the
/// padded state of sub-key `from - 1`; `keep` as [`DayWork::keep`].
#[derive(Clone, Copy)]
struct Segment {
    from: u32,
    to: u32,
    start: Option<[u32; 8]>,
    keep: [u32; KEPT],
}

/// What to derive of a day, and where its chains will stand for the next run.
struct DayPlan {
    segments: [Option<Segment>; KEPT],
    points: [Point; KEPT],
}

/// The sub-keys of the day starting at `base` to derive for a log spanning `[oldest, newest]`
/// (`last`: the entry's last second that can count in it), going on from `resume` (the day's
/// saved points) where the sub-keys skipped all end before the log.
///
/// Without a cache it is one chain from sub-key 0 to the last that can count. With one, each
/// layout goes on from its own point: the 96- and 144-slot layouts' slots for a given time
/// are far apart in the chain (slot `t / 900` against `t / 600`), so one point would make
/// each run derive the stretch between them again. The points saved for the next run are at
/// the first sub-key whose window can reach a sighting from `newest` on.
fn plan_day(
    base: UnixSeconds,
    max: SlotsPerDay,
    (oldest, newest, last): (UnixSeconds, UnixSeconds, UnixSeconds),
    skew: i64,
    resume: Option<[Point; KEPT]>,
) -> DayPlan {
    let mut plan = DayPlan {
        segments: [None; KEPT],
        points: [Point::START; KEPT],
    };
    let mut segs: [Option<Segment>; KEPT] = [None; KEPT];
    let mut next = [0u32; KEPT];
    for (k, (m, count)) in layouts(max).enumerate() {
        let lo = ended(base, m, count, oldest.saturating_sub(skew));
        let to = begun(base, m, count, last);
        next[k] = ended(base, m, count, newest.saturating_sub(skew)).min(to);
        let start = resume
            .map(|p| p[k])
            .filter(|p| p.slots > 0 && p.slots <= lo)
            .unwrap_or(Point::START);
        plan.points[k] = start;
        if start.slots < to {
            segs[k] = Some(Segment {
                from: start.slots,
                to,
                start: (start.slots > 0).then_some(start.state),
                keep: [0; KEPT],
            });
        }
    }
    // Overlapping or touching segments are one: the earlier-starting one, to the later end.
    let [a, b] = segs;
    plan.segments = match (a, b) {
        (Some(a), Some(b)) => {
            let (first, second) = if a.from <= b.from { (a, b) } else { (b, a) };
            if second.from <= first.to {
                [
                    Some(Segment {
                        to: first.to.max(second.to),
                        ..first
                    }),
                    None,
                ]
            } else {
                [Some(first), Some(second)]
            }
        }
        other => [other.0, other.1],
    };
    for seg in plan.segments.iter_mut().flatten() {
        for (k, &n) in next.iter().enumerate() {
            if seg.from < n && n <= seg.to {
                seg.keep[k] = n;
            }
        }
    }
    plan
}

/// Derives the IDs of a group of at most [`LANES`] days and probes them, keeping the states
/// the days' [`DayWork::keep`] ask for. With AVX-512
/// the chains and the filter probe run together ([`subkey_ids_filtered`]) and only the IDs that
/// pass the filter are looked up; elsewhere each lane's IDs go through
/// [`find_batch`](super::index::IdTable::find_batch).
fn derive_and_probe(
    group: &[DayWork],
    entries: &[F0Entry],
    index: &ObservationIndex,
    skew: i64,
    (ids, probed, passed, kept): Scratch<'_>,
    hits: &mut Vec<Hit>,
) {
    let mut first = [[0u32; 16]; LANES];
    for (l, (m, w)) in first.iter_mut().zip(group).enumerate() {
        *m = w.first;
        for k in 0..KEPT {
            // Sub-key count `n` is the state after step `n - from - 1`.
            kept.at[k][l] = match w.keep[k] {
                0 => u32::MAX,
                n => n - w.from - 1,
            };
        }
    }
    let steps = group.iter().map(|w| w.steps - w.from).max().unwrap_or(0) as usize;
    let table = &index.bluezone;
    let mut on_hit = |entry: u32, base: UnixSeconds, slot: usize, g: u32| {
        report(entries, table, skew, entry, base, slot, g, hits)
    };
    let (filter, key) = table.filter();
    let filtered = subkey_ids_filtered(&first[..group.len()], steps, filter, key, probed, kept);
    first.zeroize();
    if filtered.is_some() {
        // The few IDs that passed the filter (about 0.4 % of absent ones) wait in `passed`
        // and are looked up together by the caller.
        for (step, p) in probed.iter().enumerate() {
            let mut pass = p.pass;
            while pass != 0 {
                let l = pass.trailing_zeros() as usize;
                pass &= pass - 1;
                let w = &group[l];
                let slot = w.from as usize + step;
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
        return;
    }
    let mut first = [[0u32; 16]; LANES];
    for (m, w) in first.iter_mut().zip(group) {
        *m = w.first;
    }
    subkey_ids(&first[..group.len()], steps, ids, kept);
    first.zeroize();
    for (l, w) in group.iter().enumerate() {
        let lane = &ids[l][..(w.steps - w.from) as usize];
        table.find_batch(lane, |step, g| {
            on_hit(w.entry, w.base, w.from as usize + step, g)
        });
    }
}

/// A task's reusable buffers: per-lane IDs (portable path), per-step probe results (AVX-512),
/// the IDs waiting for their full lookup, and the chains' end states.
type Scratch<'a> = (
    &'a mut [Vec<[u8; 12]>; LANES],
    &'a mut Vec<ProbedStep>,
    &'a mut Vec<Passed>,
    &'a mut Kept,
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

    /// The sub-keys a day needs without a cache: one chain from sub-key 0 to the last slot
    /// that starts by `last` under some layout.
    fn steps_for(base: i64, max: SlotsPerDay, last: i64) -> Option<(u32, u32)> {
        let plan = plan_day(base, max, (base, base, last), 0, None);
        assert!(plan.segments[1].is_none(), "one chain");
        plan.segments[0].map(|s| (s.from, s.to))
    }

    #[test]
    fn steps_stop_at_the_last_slot_that_can_count() {
        let d = SlotsPerDay::DEFAULT;
        assert_eq!(steps_for(1000, d, 999), None);
        assert_eq!(steps_for(1000, d, 1000), Some((0, 1)));
        // Under 96 the fallback layout's (144) shorter slots start earlier and decide.
        assert_eq!(steps_for(1000, d, 1000 + 599), Some((0, 1)));
        assert_eq!(steps_for(1000, d, 1000 + 600), Some((0, 2)));
        assert_eq!(steps_for(0, d, 1800), Some((0, 4)));
        assert_eq!(steps_for(0, d, 10 * DAY_SECONDS), Some((0, 96)));
        assert_eq!(steps_for(0, SlotsPerDay::LEGACY, 1800), Some((0, 4)));
        assert_eq!(
            steps_for(0, SlotsPerDay::LEGACY, 10 * DAY_SECONDS),
            Some((0, 144))
        );
    }

    /// With saved points each layout goes on from its own, where the slots it skips end
    /// before the log; the points for the next run are at the first slot that can reach a
    /// sighting from the log's newest on.
    #[test]
    fn a_day_goes_on_from_each_layouts_point() {
        let d = SlotsPerDay::DEFAULT; // 96 slots of 900 s, and 144 of 600 s
        let p = |slots| Point {
            slots,
            state: [slots; 8],
        };
        // Log 36,000..36,900 (10:00-10:15), skew 60: the 96-layout needs slots 39.. (39 ends at
        // 36,000, plus the skew), the 144-layout slots 59..; both up to 36,960's.
        let plan = plan_day(0, d, (36_000, 36_900, 36_960), 60, Some([p(39), p(59)]));
        // (from, to, goes on from a saved state) of each segment.
        let spans = |plan: &DayPlan| -> Vec<(u32, u32, bool)> {
            let segs = plan.segments.iter().flatten();
            segs.map(|s| (s.from, s.to, s.start.is_some())).collect()
        };
        assert_eq!(spans(&plan), vec![(39, 42, true), (59, 62, true)]);
        // Next run from 36,900: 96-layout slot 40 is the first that can reach it (it ends at
        // 36,900 + 60), 144's slot 61 (60 ends at 36,600 + 60).
        assert_eq!(plan.segments[0].unwrap().keep, [40, 0]);
        assert_eq!(plan.segments[1].unwrap().keep, [0, 61]);
        // A point past the first slot the log needs is not used: that layout starts over
        // from sub-key 0; the other still goes on from its point.
        let plan = plan_day(0, d, (36_000, 36_900, 36_960), 60, Some([p(41), p(59)]));
        assert_eq!(spans(&plan), vec![(0, 42, false), (59, 62, true)]);
        assert_eq!(plan.segments[0].unwrap().keep, [40, 0]);
        // When the stretches meet, one chain covers both.
        let plan = plan_day(0, d, (36_000, 36_900, 36_960), 60, Some([p(41), p(30)]));
        assert_eq!(spans(&plan), vec![(0, 62, false)]);
        assert_eq!(plan.segments[0].unwrap().keep, [40, 61]);
    }
}
