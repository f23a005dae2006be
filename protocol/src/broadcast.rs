//! What a device puts on air at time t, and when that changes.
//!
//! Both protocols count from 00:00 UTC: the Bluezone ID changes at every slot boundary
//! (`SlotsPerDay::DEFAULT`, spec bluezone §1), the GAEN RPI and its AEM at every ENIN boundary
//! (spec gaen §2). A device switches at exactly those instants, so there is no late-ID window
//! (real phones lag up to ~15 s and lose the sightings in between). Keys are per UTC day: the
//! caller hands in the day's keys, and [`BroadcastKeys::next_switch`] includes midnight so the
//! caller knows when to fetch the next day's.

use crate::bluezone::SlotsPerDay;
use crate::gaen::{self, Aemk, Enin, Metadata, Rpik, INTERVAL_SECONDS};
use crate::ids::{Aem, DailyKey, RollingId, Rpi, Tek};
use crate::time::{utc_midnight, UnixSeconds, DAY_SECONDS};

/// The GAEN identifier on air: the RPI and the metadata encrypted under it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GaenOnAir {
    pub rpi: Rpi,
    pub aem: Aem,
}

/// Everything a device broadcasts at one moment; `None` for a protocol it does not speak.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OnAir {
    /// The Bluezone ID: Android advert layout and the iOS GATT characteristic.
    pub bluezone: Option<RollingId>,
    pub gaen: Option<GaenOnAir>,
}

/// The GAEN keys of one day, derived once from the TEK, and the metadata to encrypt.
#[derive(Clone)]
pub struct GaenBroadcastKeys {
    rpik: Rpik,
    aemk: Aemk,
    metadata: Metadata,
}

impl GaenBroadcastKeys {
    /// `metadata` carries the tx power actually requested from the radio (spec gaen §3: the
    /// receiver computes attenuation from it), so the caller passes what it asked the adapter for.
    pub fn new(tek: &Tek, metadata: Metadata) -> GaenBroadcastKeys {
        GaenBroadcastKeys {
            rpik: Rpik::derive(tek),
            aemk: Aemk::derive(tek),
            metadata,
        }
    }
}

/// One UTC day's keys of the protocols a device speaks.
#[derive(Clone, Default)]
pub struct BroadcastKeys {
    pub bluezone: Option<DailyKey>,
    pub gaen: Option<GaenBroadcastKeys>,
}

impl BroadcastKeys {
    /// What is on air at `t` (which must fall in the keys' day: the caller picks the day's keys).
    pub fn on_air(&self, t: UnixSeconds) -> OnAir {
        OnAir {
            bluezone: self
                .bluezone
                .as_ref()
                .map(|k| k.id(SlotsPerDay::DEFAULT.slot(t))),
            gaen: self.gaen.as_ref().map(|k| {
                let rpi = gaen::rpi(&k.rpik, Enin::from_unix(t));
                GaenOnAir {
                    rpi,
                    aem: gaen::encrypt_metadata(&k.aemk, &rpi, k.metadata),
                }
            }),
        }
    }

    /// The first instant after `t` at which [`BroadcastKeys::on_air`] may change: the next
    /// Bluezone slot or ENIN boundary of the protocols spoken, and at the latest the next UTC
    /// midnight (new keys).
    pub fn next_switch(&self, t: UnixSeconds) -> UnixSeconds {
        next_switch(t, self.bluezone.is_some(), self.gaen.is_some())
    }
}

/// [`BroadcastKeys::next_switch`] by protocol, for callers that do not hold the keys yet.
pub fn next_switch(t: UnixSeconds, bluezone: bool, gaen: bool) -> UnixSeconds {
    let mut next = utc_midnight(t) + DAY_SECONDS;
    if bluezone {
        next = next.min(SlotsPerDay::DEFAULT.next_boundary(t));
    }
    if gaen {
        next = next.min((t.div_euclid(INTERVAL_SECONDS) + 1) * INTERVAL_SECONDS);
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    // Official EN v1.2 vectors (testdata gaen/en-v1.2-vectors.txt): this TEK, metadata 40080000,
    // interval 2642977 (offset 1 of the day starting 1585785600).
    const TEK: &str = "75c734c6dd1a782de7a965da5eb93125";
    const GAEN_DAY: i64 = 1_585_785_600;
    // Bluezone v3 vectors (testdata bluezone/rolling-id-vectors.txt): day 0 key, slot 1.
    const DAILY_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const BZ_DAY: i64 = 1_596_844_800;

    fn gaen_keys() -> GaenBroadcastKeys {
        GaenBroadcastKeys::new(&Tek::from_hex(TEK).unwrap(), Metadata::v1_0(8))
    }

    fn daily_key() -> DailyKey {
        let mut b = [0u8; 32];
        hex::decode_to_slice(DAILY_KEY, &mut b).unwrap();
        DailyKey::from_bytes(b)
    }

    #[test]
    fn gaen_on_air_is_the_vector_of_the_interval() {
        let keys = BroadcastKeys {
            bluezone: None,
            gaen: Some(gaen_keys()),
        };
        let want = GaenOnAir {
            rpi: Rpi::from_hex("3c9a1de5dd6b02afa7fded7b570b3e56").unwrap(),
            aem: Aem::from_hex("c29211b1").unwrap(),
        };
        // Any instant of the interval, first and last second included.
        for t in [GAEN_DAY + 600, GAEN_DAY + 899, GAEN_DAY + 1199] {
            assert_eq!(keys.on_air(t).gaen, Some(want), "t = {t}");
            assert_eq!(keys.on_air(t).bluezone, None);
        }
        assert_ne!(keys.on_air(GAEN_DAY + 1200).gaen, Some(want));
        assert_eq!(
            keys.on_air(GAEN_DAY).gaen.map(|g| g.rpi),
            Some(Rpi::from_hex("8be6cd371c5c891604bfbe49df845096").unwrap())
        );
    }

    #[test]
    fn the_metadata_carries_the_given_tx_power() {
        let tek = Tek::from_hex(TEK).unwrap();
        let keys = BroadcastKeys {
            bluezone: None,
            gaen: Some(GaenBroadcastKeys::new(&tek, Metadata::v1_0(-12))),
        };
        let g = keys.on_air(GAEN_DAY).gaen.unwrap();
        let md = gaen::decrypt_metadata(&Aemk::derive(&tek), &g.rpi, &g.aem);
        assert_eq!(md.tx_power_dbm, -12);
    }

    #[test]
    fn bluezone_on_air_is_the_vector_of_the_slot() {
        let keys = BroadcastKeys {
            bluezone: Some(daily_key()),
            gaen: None,
        };
        let slot1 = RollingId::from_hex("893dae342437130ce5e23837").unwrap();
        assert_eq!(keys.on_air(BZ_DAY + 900).bluezone, Some(slot1));
        assert_eq!(keys.on_air(BZ_DAY + 1799).bluezone, Some(slot1));
        assert_eq!(
            keys.on_air(BZ_DAY + 899).bluezone,
            Some(RollingId::from_hex("130cea6472130c185d8643df").unwrap())
        );
        assert_eq!(keys.on_air(BZ_DAY).gaen, None);
    }

    #[test]
    fn both_protocols_at_once() {
        let keys = BroadcastKeys {
            bluezone: Some(daily_key()),
            gaen: Some(gaen_keys()),
        };
        let a = keys.on_air(BZ_DAY + 900);
        assert!(a.bluezone.is_some() && a.gaen.is_some());
    }

    #[test]
    fn next_switch_is_the_nearest_boundary() {
        let day = BZ_DAY;
        assert_eq!(next_switch(day, true, false), day + 900);
        assert_eq!(next_switch(day, false, true), day + 600);
        assert_eq!(next_switch(day + 600, true, true), day + 900);
        assert_eq!(next_switch(day + 899, true, false), day + 900);
        assert_eq!(next_switch(day + 86_399, true, true), day + DAY_SECONDS);
        // Speaking neither protocol: only the day's keys change.
        assert_eq!(next_switch(day + 5, false, false), day + DAY_SECONDS);
        let keys = BroadcastKeys {
            bluezone: Some(daily_key()),
            gaen: Some(gaen_keys()),
        };
        assert_eq!(keys.next_switch(day + 1), day + 600);
        // The switch is strictly after t, also exactly at a boundary.
        assert_eq!(keys.next_switch(day + 600), day + 900);
        assert_eq!(keys.next_switch(day + 900), day + 1200);
    }
}
