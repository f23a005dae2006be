//! The encrypted encounter store: sightings, the device's own keys, imported case lists and
//! exposures, in one SQLite database (bundled SQLite, WAL, `synchronous=FULL`,
//! `secure_delete=ON`) in the data directory.
//!
//! Everything sensitive is sealed with AES-256-GCM under a random key per UTC day, and each day
//! key is sealed ("wrapped") under a key derived from the 32-byte master key (see [`keys`] for
//! the hierarchy and the nonce argument). Only UTC day numbers, row ids and the case lists'
//! keyed content hashes, formats and entry counts are stored in clear. The associated data of
//! every sealed value binds its table, purpose, day and row, so a value copied elsewhere fails
//! to open; such a record is reported (without contents) and skipped, never a crash.
//!
//! | table | rows | sealed under |
//! |---|---|---|
//! | `meta` | `key_check` = HMAC(master, "key-check"): a wrong master key is refused at open | — |
//! | `day_keys(day, wrapped)` | one per UTC day holding data | master-derived wrapping key |
//! | `sightings(id, day, blob)` | one chunk per (write batch, day), `codec` encoding | day key |
//! | `own_keys(day, protocol, blob)` | own Bluezone daily key and GAEN TEK per day | day key |
//! | `case_lists(id, content_hash, format, entries, imported_day, blob)` | imported lists | day key of import |
//! | `exposures(id, day, key_hash, blob)` | match results (JSON) | day key |
//!
//! Retention ([`Store::purge_older_than`]) deletes a day's rows and its day key together.

mod codec;
mod db;
mod error;
pub mod keys;
mod schema;

use std::path::PathBuf;

pub use db::{
    today, CaseListInfo, DayStats, Exposure, Exposures, InitReport, OwnKeys, PurgeReport, ReadOut,
    Store, StoreStats, DB_FILE, DEFAULT_KEEP_DAYS, MAX_CHUNK_SIGHTINGS,
};
pub use error::StoreError;
pub use keys::{KeyLocation, KeySource, MasterKey, KEY_FILE, KEY_LEN, SEAL_OVERHEAD};

/// Default data directory when neither `--data-dir` nor `$STATE_DIRECTORY` is given.
pub const DEFAULT_DATA_DIR: &str = "./bluezoned-data";

/// The data directory: `--data-dir` (or `$BLUEZONED_DATA_DIR`, via clap) if given, else
/// `$STATE_DIRECTORY` (set by systemd for `StateDirectory=`; the first path if it lists
/// several, colon-separated), else `./bluezoned-data`.
pub fn resolve_data_dir(cli: Option<PathBuf>) -> PathBuf {
    resolve_data_dir_with(cli, std::env::var_os("STATE_DIRECTORY"))
}

fn resolve_data_dir_with(cli: Option<PathBuf>, state_dir: Option<std::ffi::OsString>) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    if let Some(p) = cli {
        return p;
    }
    if let Some(s) = state_dir {
        let first = s
            .as_bytes()
            .split(|&b| b == b':')
            .next()
            .unwrap_or_default();
        if !first.is_empty() {
            return PathBuf::from(std::ffi::OsStr::from_bytes(first));
        }
    }
    PathBuf::from(DEFAULT_DATA_DIR)
}

#[cfg(test)]
mod tests;
