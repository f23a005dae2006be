//! iOS peers: one GATT read per peer per Bluezone slot.
//!
//! A Bluezone iOS phone does not put its ID in the advert (spec bluezone §3): a scanner must
//! connect and read the characteristic, which costs a connection and the peer's battery. The ID
//! only changes at the slot boundary, so what was read for a peer's address holds until then:
//! the cache forgets everything at each boundary of `SlotsPerDay::DEFAULT` (iOS rotates its
//! random address at about the same rhythm, so a stale address→ID mapping must not survive it).
//! Failed reads are remembered too, so a peer that refuses is retried only after a pause.

use std::collections::HashMap;
use std::hash::Hash;

use crate::bluezone::SlotsPerDay;
use crate::ids::RollingId;
use crate::time::UnixSeconds;

/// The IDs read from iOS peers this slot, by peer address (any key type: the radio's address).
#[derive(Debug)]
pub struct IosReadCache<A> {
    slot_seconds: i64,
    /// Start of the slot the entries belong to.
    slot_start: Option<UnixSeconds>,
    ids: HashMap<A, RollingId>,
    /// When a read of the address last failed.
    failed: HashMap<A, UnixSeconds>,
}

impl<A: Eq + Hash> Default for IosReadCache<A> {
    fn default() -> Self {
        IosReadCache::new()
    }
}

/// Whether to connect to a peer now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadDecision {
    /// Its ID is known for this slot: no connection needed.
    Known(RollingId),
    /// Read it.
    Read,
    /// A read failed less than the retry pause ago.
    Wait,
}

impl<A: Eq + Hash> IosReadCache<A> {
    pub fn new() -> IosReadCache<A> {
        IosReadCache {
            slot_seconds: SlotsPerDay::DEFAULT.slot_seconds(),
            slot_start: None,
            ids: HashMap::new(),
            failed: HashMap::new(),
        }
    }

    /// Starts a new slot's cache when `t` is past the current one.
    fn roll(&mut self, t: UnixSeconds) {
        let start = t - t.rem_euclid(self.slot_seconds);
        if self.slot_start != Some(start) {
            self.slot_start = Some(start);
            self.ids.clear();
            self.failed.clear();
        }
    }

    /// What to do about the peer at `addr` heard at `t`; a failed read is retried after
    /// `retry_after_s`.
    pub fn decide(&mut self, addr: &A, t: UnixSeconds, retry_after_s: i64) -> ReadDecision {
        self.roll(t);
        if let Some(id) = self.ids.get(addr) {
            return ReadDecision::Known(*id);
        }
        match self.failed.get(addr) {
            Some(&at) if t - at < retry_after_s => ReadDecision::Wait,
            _ => ReadDecision::Read,
        }
    }

    /// A read of `addr` started at `started` returned `id`. A read that straddled a slot
    /// boundary is not cached: the ID may be the old slot's.
    pub fn read_ok(&mut self, addr: A, id: RollingId, started: UnixSeconds, now: UnixSeconds) {
        self.roll(now);
        if Some(started - started.rem_euclid(self.slot_seconds)) == self.slot_start {
            self.failed.remove(&addr);
            self.ids.insert(addr, id);
        }
    }

    /// A read of `addr` failed at `t`.
    pub fn read_failed(&mut self, addr: A, t: UnixSeconds) {
        self.roll(t);
        self.failed.insert(addr, t);
    }

    /// Addresses with a known ID this slot.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLOT0: i64 = 1_596_844_800;

    fn id(b: u8) -> RollingId {
        RollingId([b; 12])
    }

    #[test]
    fn one_read_per_peer_per_slot() {
        let mut c = IosReadCache::new();
        assert_eq!(c.decide(&"a", SLOT0 + 10, 60), ReadDecision::Read);
        c.read_ok("a", id(1), SLOT0 + 10, SLOT0 + 11);
        assert_eq!(c.decide(&"a", SLOT0 + 899, 60), ReadDecision::Known(id(1)));
        assert_eq!(c.decide(&"b", SLOT0 + 899, 60), ReadDecision::Read);
        // The slot is SlotsPerDay::DEFAULT's: at 900 s the ID has changed, read again.
        assert_eq!(SlotsPerDay::DEFAULT.slot_seconds(), 900);
        assert_eq!(c.decide(&"a", SLOT0 + 900, 60), ReadDecision::Read);
        assert!(c.is_empty());
    }

    #[test]
    fn failures_wait_then_retry_and_reset_with_the_slot() {
        let mut c = IosReadCache::new();
        c.read_failed("a", SLOT0 + 100);
        assert_eq!(c.decide(&"a", SLOT0 + 159, 60), ReadDecision::Wait);
        assert_eq!(c.decide(&"a", SLOT0 + 160, 60), ReadDecision::Read);
        c.read_failed("a", SLOT0 + 890);
        assert_eq!(c.decide(&"a", SLOT0 + 895, 60), ReadDecision::Wait);
        assert_eq!(c.decide(&"a", SLOT0 + 900, 60), ReadDecision::Read);
    }

    #[test]
    fn a_read_across_the_boundary_is_not_cached() {
        let mut c = IosReadCache::new();
        c.read_ok("a", id(1), SLOT0 + 898, SLOT0 + 902);
        assert_eq!(c.decide(&"a", SLOT0 + 903, 60), ReadDecision::Read);
        assert_eq!(c.len(), 0);
    }
}
