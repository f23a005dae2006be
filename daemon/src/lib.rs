//! bluezoned: a Bluetooth proximity contact-logging daemon, wire-compatible with Bluezone v3 and
//! Google/Apple Exposure Notification v1.2 phones.
//!
//! - [`cli`] / [`cmd`]: the command line; `cmd` holds one file per command family.
//! - [`caselist`]: case lists as they arrive — format detection, checks, summaries.
//! - [`check`]: the matching pipeline (store → index → matchers → scoring → exposures).
//! - [`clock`]: the only source of time (system clock, or tokio's virtual clock in simulation).
//! - [`radio`]: the `Radio` trait and its backends: BlueZ, and `radio::sim` (the simulated world,
//!   its scanner, and the phones and scenes of `run --radio sim`, `demo` and tests). In
//!   `radio::sim`: `space` (positions, mobility, propagation), `device` (device kinds and what
//!   they put on air), `medium` (the shared world, device handles, ground truth), `frame` (the
//!   air at one instant, with a spatial grid), `scanner` (`SimRadio`), `phones` (scenes).
//! - [`config`]: TOML file + environment + flags, validated at startup.
//! - [`service`]: the service loop — advertiser, radio, logger, maintenance.
//! - [`keyexport`]: the files a person who tests positive hands to the health authority.
//! - [`systemd`]: readiness and watchdog notifications.
//! - [`ingest`]: the one path by which a case list enters the store (CLI, API, poller, demo).
//! - [`api`]: the HTTP API for health officials and the owner.
//! - [`authority`]: the health authority's side: officials' uploads, signed publications.
//! - [`poll`]: fetching signed key files from a GAEN-style key server.
//! - [`logfile`]: the contact-log files of `log import|export` (Bluezone trace, TSV).
//! - [`logging`]: tracing setup (text or JSON, `RUST_LOG`).
//! - [`store`]: the encrypted encounter store (SQLite + AES-256-GCM, per-day keys, retention).
//!
//! The protocol logic (derivations, codecs, file formats) lives in the sans-I/O
//! `bluezone-protocol` crate; this crate owns the clock, the files and the radio.

pub mod api;
pub mod authority;
pub mod caselist;
pub mod check;
pub mod cli;
pub mod clock;
pub mod cmd;
pub mod config;
pub mod ingest;
pub mod keyexport;
pub mod logfile;
pub mod logging;
pub mod poll;
pub mod radio;
pub mod service;
pub mod store;
pub mod systemd;

/// An error and its causes on one line ("reading FILE: entry 3: field X: expected Y"). Library
/// errors often repeat their source's text in their own message; a cause already said is skipped.
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        if out.contains(&msg) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&msg);
    }
    out
}
