//! Bluezone v3 (`docs/bluezone.md`).
//!
//! - [`rolling`]: the daily-key chain, the sub-key chain, 12-byte IDs, slot arithmetic.
//! - [`f0`]: the positive-case (F0) JSON list.
//! - [`trace`]: the phone's contact log `data_trace.txt`.
//! - [`signed`]: an F0 list signed by a health authority for publication (our format).
//! - [`read_cache`]: one GATT read per iOS peer per slot.

pub mod f0;
pub mod read_cache;
pub mod rolling;
pub mod signed;
pub mod trace;

pub use f0::{F0Entry, F0List, F0Parsed, SkippedEntry};
pub use read_cache::{IosReadCache, ReadDecision};
pub use rolling::*;
