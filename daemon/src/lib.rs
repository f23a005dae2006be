//! bluezoned: a Bluetooth proximity contact-logging daemon, wire-compatible with Bluezone v3 and
//! Google/Apple Exposure Notification v1.2 phones.
//!
//! - [`cli`] / [`cmd`]: the command line; `cmd` holds one file per command family.
//! - [`logging`]: tracing setup (text or JSON, `RUST_LOG`).
//!
//! The protocol logic (derivations, codecs, file formats) lives in the sans-I/O
//! `bluezone-protocol` crate; this crate owns the clock, the files and the radio.

pub mod cli;
pub mod cmd;
pub mod logging;
