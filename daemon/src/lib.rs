//! bluezoned: a Bluetooth proximity contact-logging daemon, wire-compatible with Bluezone v3 and
//! Google/Apple Exposure Notification v1.2 phones.
//!
//! - [`cli`] / [`cmd`]: the command line; `cmd` holds one file per command family. Every command
//!   reads the same [`config`] as `run`.
//! - [`config`]: TOML file < environment < flags (clap `env`), validated at startup.
//! - [`clock`]: the only source of time (system clock, or tokio's virtual clock in simulation).
//! - [`radio`]: the `Radio` trait (it reports `Sighting`s) and its backends: `radio::bluez`, and
//!   `radio::sim` (`space`: positions, mobility, propagation; `device`: device kinds and what
//!   they put on air; `medium`: the shared world, device handles, ground truth; `frame`: the air
//!   at one instant, with a spatial grid; `scanner`: its `Radio`; `phones`: the phones and
//!   scenes of `run --radio sim`, `demo` and tests).
//! - [`service`]: the service loop — advertiser, radio, logger, maintenance, notifications, all
//!   in one `supervisor` (the first task to end on its own stops the rest and is named).
//! - [`caselist`]: case lists as they arrive — format detection, checks, typed errors, summaries;
//!   `caselist::compact` is the sealed fixed-record form matching reads.
//! - [`ingest`]: the one path by which a case list enters the store (CLI, API, poller, demo).
//! - [`check`]: the matching pipeline (store → index → matchers → scoring → exposures), and
//!   `check::incremental` for the daemon's matching of new lists and new sightings.
//! - [`api`]: the HTTP API for health officials and the owner (`listen`: transport and
//!   connection limits; `auth`; `routes`; `metrics`).
//! - [`poll`]: fetching signed key files from a GAEN-style key server (`remote`: the server, its
//!   URL, TLS and path rules; `state`: what survives a restart).
//! - [`authority`]: the health authority's side: officials' uploads, signed publications.
//! - [`keyexport`]: the files a person who tests positive hands to the health authority.
//! - [`logfile`]: the contact-log files of `log import|export` (Bluezone trace, TSV).
//! - [`store`]: the encrypted encounter store (SQLite + AES-256-GCM): `open` (opening safely,
//!   migrations), `master_key` (the key file), `keys` (derived keys, day keys, sealing), one file
//!   per table (`sightings`, `own_keys`, `case_lists`, `exposures`), `retention`, `stats`.
//! - [`systemd`]: readiness and watchdog notifications.
//! - [`hugepages`]: the process's allocator (large blocks marked for transparent huge pages).
//! - [`logging`]: tracing setup (text or JSON, `RUST_LOG`).
//!
//! The protocol logic (derivations, codecs, file formats, what to broadcast when, de-duplication,
//! the iOS read cache, matching) lives in the sans-I/O `bluezone-protocol` crate; this crate owns
//! the clock, the files, the network and the radio.

pub mod api;
pub mod authority;
pub mod caselist;
pub mod check;
pub mod cli;
pub mod clock;
pub mod cmd;
pub mod config;
pub mod hugepages;
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
