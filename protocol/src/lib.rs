//! Sans-I/O core of bluezoned.
//!
//! Everything here is deterministic: no sockets, files, Bluetooth, async runtime or clock. Every
//! function that depends on time takes the time (unix seconds) as an argument, and randomness comes
//! in as an `RngCore`. That makes every codec and derivation testable byte for byte against the
//! published vectors, and benchmarkable in isolation.
//!
//! - [`ids`]: newtypes for keys and identifiers (secrets zeroize and never print).
//! - [`bluezone`]: Bluezone v3 rolling IDs, the F0 case-list JSON, the `data_trace.txt` log and
//!   the iOS read cache (`docs/bluezone.md`).
//! - [`gaen`]: Exposure Notification v1.2 crypto and signed export files (`docs/gaen.md`).
//! - [`matching`]: the matching core: the observation index, the Bluezone and GAEN matchers and
//!   scoring.
//! - [`adv`]: BLE advertisement codecs for both protocols.
//! - [`broadcast`]: what a device puts on air at time t, and when that changes.
//! - [`dedup`]: receptions to sightings, one per peer per window, RSSI averaged.
//! - [`sighting`]: one reception of an identifier, the unit the store and matcher share.
//! - [`time`]: UTC day and slot arithmetic shared by both.

pub mod adv;
pub mod bluezone;
pub mod broadcast;
pub mod dedup;
pub mod gaen;
pub mod ids;
pub mod matching;
pub mod sighting;
pub mod time;

pub use ids::{Aem, DailyKey, HexError, PeerId, RollingId, Rpi, Tek};
pub use sighting::Sighting;
