//! The matching core: case lists against the contact log.
//!
//! - [`index`]: the observation index built from the store's read-out.
//! - [`bluezone`]: F0 entries → daily keys → sub-key chains → probes.
//! - [`gaen`]: TEKs → RPIKs → RPIs → probes.
//! - [`score`]: matched sightings → GAEN v2 scan instances and exposure windows → daily
//!   weighted minutes → notification.
//! - [`rpi_aes`]: a key's 144 RPIs at once (VAES/AVX-512 where present).
//! - `aes_bitslice`: the portable RPI path, bitsliced AES-128 on eight blocks (SSE2 / NEON).
//! - [`sha256x`]: multi-lane SHA-256 (SHA-NI) that both matchers' derivations run on.
//! - `sha256x16`: SHA-256 sixteen lanes a zmm register (AVX-512), words kept lane-wise.
//! - [`subkeys`]: Bluezone sub-key chains sixteen at a time (AVX-512 lanes where present).
//! - [`cpu`]: the run-time choice of instruction-set paths, and the switch forcing the portable ones.
//!
//! Both matchers are pure functions of (keys, index, config) and parallel over cores with rayon.

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod aes_bitslice;
pub mod bluezone;
pub mod cpu;
pub mod gaen;
pub mod index;
pub mod rpi_aes;
pub mod score;
pub mod sha256x;
#[cfg(target_arch = "x86_64")]
pub mod sha256x16;
pub mod subkeys;

pub use index::{Observation, ObservationIndex};
pub use score::{score, CaseInfo, Exposure, ExposureWindow, ScoreContext, ScoringConfig};

/// Matching knobs; also the `[matching]` section of the daemon's config file.
#[derive(Clone, Copy, Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatchConfig {
    /// Clock-skew tolerance at Bluezone slot edges (either side), seconds.
    pub skew_s: i64,
}

impl Default for MatchConfig {
    fn default() -> Self {
        MatchConfig { skew_s: 60 }
    }
}

/// Sightings of one derived identifier that fall inside its window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    /// Which case key (position in the matcher's input).
    pub case: u32,
    /// The identifier's group in the index table of its protocol.
    pub group: u32,
    /// Indices into that table's observations.
    pub obs: std::ops::Range<u32>,
    /// The sender's calibrated tx power where the match revealed it (GAEN metadata).
    pub tx_power: Option<i8>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MatchStats {
    pub keys_checked: u64,
    pub ids_derived: u64,
}

impl std::ops::Add for MatchStats {
    type Output = MatchStats;
    fn add(self, o: MatchStats) -> MatchStats {
        MatchStats {
            keys_checked: self.keys_checked + o.keys_checked,
            ids_derived: self.ids_derived + o.ids_derived,
        }
    }
}

/// A hint that `*p` will be read soon: its cache line is fetched now (x86-64; nothing
/// elsewhere). Never faults, whatever `p` points at.
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that never faults or reads architecturally.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Joins the results of two parallel matching tasks.
pub(crate) fn join_results(
    (mut hits, stats): (Vec<Hit>, MatchStats),
    (more, more_stats): (Vec<Hit>, MatchStats),
) -> (Vec<Hit>, MatchStats) {
    hits.extend(more);
    (hits, stats + more_stats)
}
