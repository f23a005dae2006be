//! Bluezone v3 (`shared/spec/bluezone.md`).
//!
//! - [`rolling`]: the daily-key chain, the sub-key chain, 12-byte IDs, slot arithmetic.
//! - [`f0`]: the positive-case (F0) JSON list.
//! - [`read_cache`]: one GATT read per iOS peer per slot.

pub mod f0;
pub mod read_cache;
pub mod rolling;

pub use f0::{F0Entry, F0List};
pub use read_cache::{IosReadCache, ReadDecision};
pub use rolling::*;
