//! Exposure Notification v1.2 (`docs/gaen.md`).
//!
//! - [`keys`]: ENIN arithmetic, TEK → RPIK/AEMK, RPIs (all 144 of a key in one AES pass), AEM, metadata.
//! - [`export`]: the signed diagnosis-key export zip (`export.bin` + `export.sig`).
//! - [`revision`]: several publications of a key → the effective key set (revisions, REVOKED).

pub mod export;
pub mod keys;
pub mod revision;

pub use keys::*;
