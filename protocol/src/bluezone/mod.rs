//! Bluezone v3 (`shared/spec/bluezone.md`).
//!
//! - [`rolling`]: the daily-key chain, the sub-key chain, 12-byte IDs, slot arithmetic.
//! - [`f0`]: the positive-case (F0) JSON list.
//! - [`signed`]: an F0 list signed by a health authority for publication (our format).

pub mod f0;
pub mod rolling;
pub mod signed;

pub use f0::{F0Entry, F0List};
pub use rolling::*;
