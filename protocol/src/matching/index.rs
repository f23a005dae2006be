//! The observation index: every identifier heard, with its sightings, laid out for fast probing.
//!
//! A `HashSet` with SipHash costs ≈ 12–22 ns a probe here; the matcher probes every derived ID
//! (97 per Bluezone F0-day, 144 per GAEN key), so the index is an open-addressing table of
//! 16-byte slots (4 to a cache line) holding a 64-bit tag of the ID and the ID's group number.
//! The slot position is a multiply-shift hash of the tag under a per-build seed, so peers who
//! choose the IDs we log cannot aim them at one cluster of slots. Probes come in batches: all
//! positions are computed and prefetched first, so the cache misses of one batch overlap.
//! A tag hit is confirmed against the full ID before it counts.

use crate::ids::{Aem, PeerId};
use crate::sighting::Sighting;
use crate::time::UnixSeconds;

/// One reception, as the matcher and scorer need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    pub time: UnixSeconds,
    pub rssi: i8,
    pub tx_power: Option<i8>,
    pub aem: Option<Aem>,
}

#[derive(Clone, Copy, Default)]
#[repr(C, align(16))]
struct Slot {
    /// 0 marks an empty slot; a real tag of 0 is stored as 1 (the full-ID check sorts it out).
    tag: u64,
    group: u32,
    _pad: u32,
}

const MUL: u64 = 0x9E37_79B9_7F4A_7C15;

/// Identifiers of one length (`N` = 12 for Bluezone, 16 for GAEN) with their observations.
pub struct IdTable<const N: usize> {
    slots: Vec<Slot>,
    shift: u32,
    seed: u64,
    ids: Vec<[u8; N]>,
    /// `obs[starts[g]..starts[g + 1]]` are group `g`'s observations, sorted by time.
    starts: Vec<u32>,
    obs: Vec<Observation>,
}

#[inline(always)]
fn tag_of<const N: usize>(id: &[u8; N]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&id[..8]);
    match u64::from_le_bytes(b) {
        0 => 1,
        t => t,
    }
}

impl<const N: usize> IdTable<N> {
    fn build(mut items: Vec<([u8; N], Observation)>, seed: u64) -> Self {
        items.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.time.cmp(&b.1.time)));
        let mut ids = Vec::new();
        let mut starts = Vec::new();
        let mut obs = Vec::with_capacity(items.len());
        for (id, o) in items {
            if ids.last() != Some(&id) {
                ids.push(id);
                starts.push(obs.len() as u32);
            }
            obs.push(o);
        }
        starts.push(obs.len() as u32);
        let cap = (ids.len() * 2).next_power_of_two().max(16);
        let mut t = IdTable {
            slots: vec![Slot::default(); cap],
            shift: 64 - cap.trailing_zeros(),
            seed: seed | 1,
            ids,
            starts,
            obs,
        };
        for g in 0..t.ids.len() {
            let tag = tag_of(&t.ids[g]);
            let mut pos = t.position(tag);
            while t.slots[pos].tag != 0 {
                pos = (pos + 1) & (cap - 1);
            }
            t.slots[pos] = Slot {
                tag,
                group: g as u32,
                _pad: 0,
            };
        }
        t
    }

    #[inline(always)]
    fn position(&self, tag: u64) -> usize {
        ((tag ^ self.seed).wrapping_mul(MUL) >> self.shift) as usize
    }

    pub fn distinct_ids(&self) -> usize {
        self.ids.len()
    }

    pub fn observations(&self) -> &[Observation] {
        &self.obs
    }

    /// The group of `id`, if it was ever seen.
    #[inline]
    pub fn find(&self, id: &[u8; N]) -> Option<u32> {
        let tag = tag_of(id);
        let mask = self.slots.len() - 1;
        let mut pos = self.position(tag);
        loop {
            // `pos` is always masked to the table size.
            let s = self.slots[pos];
            if s.tag == 0 {
                return None;
            }
            if s.tag == tag && self.ids[s.group as usize] == *id {
                return Some(s.group);
            }
            pos = (pos + 1) & mask;
        }
    }

    /// Probes a batch, calling `hit(i, group)` for each `ids[i]` that was seen. The table
    /// positions of the whole batch are prefetched first so that their misses overlap.
    #[inline]
    pub fn find_batch(&self, ids: &[[u8; N]], mut hit: impl FnMut(usize, u32)) {
        if self.ids.is_empty() {
            return;
        }
        for id in ids {
            prefetch(&self.slots[self.position(tag_of(id))]);
        }
        for (i, id) in ids.iter().enumerate() {
            if let Some(g) = self.find(id) {
                hit(i, g);
            }
        }
    }

    /// Observation indices of group `g` with `t0 <= time <= t1`.
    #[inline]
    pub fn seen_within(&self, g: u32, t0: UnixSeconds, t1: UnixSeconds) -> std::ops::Range<usize> {
        let (a, b) = (
            self.starts[g as usize] as usize,
            self.starts[g as usize + 1] as usize,
        );
        let o = &self.obs[a..b];
        let lo = o.partition_point(|x| x.time < t0);
        let hi = o.partition_point(|x| x.time <= t1);
        if lo >= hi {
            a..a
        } else {
            a + lo..a + hi
        }
    }

    pub fn id_of(&self, g: u32) -> &[u8; N] {
        &self.ids[g as usize]
    }
}

#[inline(always)]
fn prefetch<T>(p: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint; it never faults, and `p` is a valid reference anyway.
    unsafe {
        core::arch::x86_64::_mm_prefetch(p as *const T as *const i8, core::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Both protocols' identifiers, built from the store's read-out.
pub struct ObservationIndex {
    pub bluezone: IdTable<12>,
    pub gaen: IdTable<16>,
    /// Time of the oldest and newest sighting (keys entirely outside are rejected cheaply).
    pub time_range: Option<(UnixSeconds, UnixSeconds)>,
}

impl ObservationIndex {
    /// `seed` should be random per build (the daemon draws it); it only spreads the table.
    pub fn build(sightings: &[Sighting], seed: u64) -> ObservationIndex {
        let mut bz = Vec::new();
        let mut ga = Vec::new();
        let mut range: Option<(i64, i64)> = None;
        for s in sightings {
            let o = Observation {
                time: s.time,
                rssi: s.rssi,
                tx_power: s.tx_power,
                aem: s.aem,
            };
            range = Some(match range {
                None => (s.time, s.time),
                Some((a, b)) => (a.min(s.time), b.max(s.time)),
            });
            match s.peer {
                PeerId::Bluezone(id) => bz.push((id.0, o)),
                PeerId::Gaen(rpi) => ga.push((rpi.0, o)),
            }
        }
        ObservationIndex {
            bluezone: IdTable::build(bz, seed),
            gaen: IdTable::build(ga, seed.rotate_left(17)),
            time_range: range,
        }
    }

    pub fn distinct_ids(&self) -> usize {
        self.bluezone.distinct_ids() + self.gaen.distinct_ids()
    }

    pub fn sightings(&self) -> usize {
        self.bluezone.observations().len() + self.gaen.observations().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RollingId;

    fn s(id: u8, t: i64) -> Sighting {
        Sighting {
            peer: PeerId::Bluezone(RollingId([id; 12])),
            time: t,
            rssi: -60,
            tx_power: None,
            aem: None,
        }
    }

    #[test]
    fn finds_what_was_seen_and_nothing_else() {
        let sightings: Vec<_> = (0..200u8).map(|i| s(i, 1000 + i as i64)).chain([s(5, 10)]).collect();
        let idx = ObservationIndex::build(&sightings, 42);
        assert_eq!(idx.bluezone.distinct_ids(), 200);
        assert_eq!(idx.time_range, Some((10, 1199)));
        let g = idx.bluezone.find(&[5; 12]).unwrap();
        assert_eq!(idx.bluezone.seen_within(g, 0, 100).len(), 1);
        assert_eq!(idx.bluezone.seen_within(g, 0, 2000).len(), 2);
        assert_eq!(idx.bluezone.seen_within(g, 11, 1004).len(), 0);
        assert_eq!(idx.bluezone.find(&[0xee; 12]), None);
        let mut hits = vec![];
        idx.bluezone
            .find_batch(&[[1; 12], [0xfe; 12], [199; 12]], |i, _| hits.push(i));
        assert_eq!(hits, vec![0, 2]);
        // An ID whose tag is 0 is still found.
        let z = ObservationIndex::build(&[s(0, 1)], 7);
        assert!(z.bluezone.find(&[0; 12]).is_some());
        let empty = ObservationIndex::build(&[], 1);
        assert_eq!(empty.bluezone.find(&[0; 12]), None);
    }
}
