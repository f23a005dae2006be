//! Bluezone v3 rolling IDs (`docs/bluezone.md` §2).
//!
//! ```text
//! daily_key(d) = SHA256^n(base_key)           subkey(0)   = SHA256(daily_key || "bluzonesubkey")
//! subkey(i+1)  = SHA256(subkey(i))            id(i)       = subkey(i)[0,4,8,12,16,18,20,22,24,26,28,30]
//! slot(t)      = (t - utc_midnight(t)) / (86400 / max)
//! ```
//! Real phones derive every day from one base key, so publishing one daily key reveals all later
//! days. For the device's *own* keys this project draws each day fresh at random
//! ([`DailyKey::random`]); [`DailyKey::next_day`] follows the hash chain exactly, as real phones do,
//! for keys that come from a published F0 list.

use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};

use crate::ids::{DailyKey, RollingId};
use crate::time::{UnixSeconds, DAY_SECONDS};

/// Spelled exactly so in Bluezone's code (sic: "bluzone").
pub const SUBKEY_SALT: &[u8; 13] = b"bluzonesubkey";

/// The byte positions of a sub-key that form the 12-byte ID.
pub const ID_BYTE_POSITIONS: [usize; 12] = [0, 4, 8, 12, 16, 18, 20, 22, 24, 26, 28, 30];

/// Slots per day in current builds (15-minute slots).
pub const DEFAULT_MAX: u32 = 96;
/// Slots per day in older builds (10-minute slots).
pub const LEGACY_MAX: u32 = 144;

/// Slots per day ("max" in F0 lists). Valid when it divides 86400 and is at least 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SlotsPerDay(u32);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("slots per day (max) must divide 86400 and be at least 2, got {0}")]
pub struct InvalidSlotsPerDay(pub i64);

impl SlotsPerDay {
    pub const DEFAULT: SlotsPerDay = SlotsPerDay(DEFAULT_MAX);
    pub const LEGACY: SlotsPerDay = SlotsPerDay(LEGACY_MAX);

    pub fn new(max: i64) -> Result<Self, InvalidSlotsPerDay> {
        if (2..=DAY_SECONDS).contains(&max) && DAY_SECONDS % max == 0 {
            Ok(SlotsPerDay(max as u32))
        } else {
            Err(InvalidSlotsPerDay(max))
        }
    }
    pub fn get(self) -> u32 {
        self.0
    }
    /// Length of one slot in seconds.
    pub fn slot_seconds(self) -> i64 {
        DAY_SECONDS / self.0 as i64
    }
    // Slot math takes times from published lists and peers, so it must not overflow for any
    // `i64`: the remainder never does, and the ends of the time line saturate.

    /// The slot index containing `t`.
    pub fn slot(self, t: UnixSeconds) -> u32 {
        (t.rem_euclid(DAY_SECONDS) / self.slot_seconds()) as u32
    }
    /// Start of the slot containing `t` (a slot length divides the day, so this is also the
    /// day's midnight plus whole slots).
    pub fn slot_start(self, t: UnixSeconds) -> UnixSeconds {
        t.saturating_sub(t.rem_euclid(self.slot_seconds()))
    }
    /// Start of the next slot after the one containing `t` (where an advertiser switches ID).
    pub fn next_boundary(self, t: UnixSeconds) -> UnixSeconds {
        self.slot_start(t).saturating_add(self.slot_seconds())
    }
}

impl Default for SlotsPerDay {
    fn default() -> Self {
        Self::DEFAULT
    }
}

fn id_from_subkey(subkey: &[u8; 32]) -> RollingId {
    let mut id = [0u8; 12];
    for (dst, &pos) in id.iter_mut().zip(ID_BYTE_POSITIONS.iter()) {
        *dst = subkey[pos];
    }
    RollingId(id)
}

#[cfg(test)]
thread_local! {
    /// Daily-key chain hashes ([`DailyKey::next_day`]) made on this thread: lets unit tests count
    /// the chain walk's work.
    pub(crate) static NEXT_DAY_HASHES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// `SHA256(daily_key || "bluzonesubkey")`.
pub fn first_subkey(key: &DailyKey) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(key.as_bytes());
    h.update(SUBKEY_SALT);
    h.finalize().into()
}

impl DailyKey {
    /// A fresh random key for one of the device's own days (spec §5.1).
    pub fn random<R: RngCore + CryptoRng>(rng: &mut R) -> DailyKey {
        let mut b = [0u8; 32];
        rng.fill_bytes(&mut b);
        let k = DailyKey::from_bytes(b);
        zeroize::Zeroize::zeroize(&mut b);
        k
    }

    /// The next day's key on the published hash chain: `SHA256(daily_key)`.
    pub fn next_day(&self) -> DailyKey {
        #[cfg(test)]
        NEXT_DAY_HASHES.with(|n| n.set(n.get() + 1));
        DailyKey::from_bytes(Sha256::digest(self.as_bytes()).into())
    }

    /// The key `n` days later on the hash chain.
    pub fn advance(&self, n: u32) -> DailyKey {
        let mut k = self.clone();
        for _ in 0..n {
            k = k.next_day();
        }
        k
    }

    /// The IDs `id(0), id(1), ...` of this key (an endless iterator; take `max`).
    pub fn ids(&self) -> RollingIds {
        RollingIds {
            subkey: first_subkey(self),
        }
    }

    /// The ID of slot `slot`.
    pub fn id(&self, slot: u32) -> RollingId {
        self.ids().nth(slot as usize).unwrap_or(RollingId([0; 12]))
    }

    /// Every slot of the day: `(slot start, id)`, for `max` slots from `day_start` (00:00 UTC).
    pub fn day_schedule(
        &self,
        day_start: UnixSeconds,
        max: SlotsPerDay,
    ) -> impl Iterator<Item = (UnixSeconds, RollingId)> {
        let step = max.slot_seconds();
        self.ids()
            .take(max.get() as usize)
            .enumerate()
            .map(move |(i, id)| (day_start.saturating_add(i as i64 * step), id))
    }
}

/// The sub-key chain of one daily key.
pub struct RollingIds {
    subkey: [u8; 32],
}

impl Iterator for RollingIds {
    type Item = RollingId;
    fn next(&mut self) -> Option<RollingId> {
        let id = id_from_subkey(&self.subkey);
        self.subkey = Sha256::digest(self.subkey).into();
        Some(id)
    }
}

impl Drop for RollingIds {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.subkey);
    }
}

/// The device's current ID at time `t` under its key for that day.
pub fn current_id(key_of_day: &DailyKey, t: UnixSeconds, max: SlotsPerDay) -> RollingId {
    key_of_day.id(max.slot(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_per_day_validation() {
        assert!(SlotsPerDay::new(96).is_ok());
        assert!(SlotsPerDay::new(144).is_ok());
        assert!(SlotsPerDay::new(2).is_ok());
        assert!(SlotsPerDay::new(86400).is_ok());
        assert!(SlotsPerDay::new(1).is_err());
        assert!(SlotsPerDay::new(0).is_err());
        assert!(SlotsPerDay::new(-96).is_err());
        assert!(SlotsPerDay::new(97).is_err());
        assert!(SlotsPerDay::new(172800).is_err());
    }

    #[test]
    fn slot_boundaries() {
        let m = SlotsPerDay::DEFAULT;
        let day = 1596844800;
        assert_eq!(m.slot(day), 0);
        assert_eq!(m.slot(day + 899), 0);
        assert_eq!(m.slot(day + 900), 1);
        assert_eq!(m.slot(day + 86399), 95);
        assert_eq!(m.next_boundary(day + 10), day + 900);
        assert_eq!(SlotsPerDay::LEGACY.slot(day + 600), 1);
        assert_eq!(m.slot(day - 1), 95);
        assert_eq!(m.slot_start(day - 1), day - 900);
    }
}
