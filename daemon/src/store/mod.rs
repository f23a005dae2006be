//! The encrypted encounter store: sightings, the device's own keys, imported case lists and
//! exposures, in one SQLite database (bundled SQLite, WAL, `synchronous=FULL`,
//! `secure_delete=ON`) in the data directory.
//!
//! Everything sensitive is sealed with AES-256-GCM under a random key per UTC day, and each day
//! key is sealed ("wrapped") under a key derived from the 32-byte master key and the current
//! epoch key of the forward ratchet in `wrap-ratchet` (see [`keys`] for the hierarchy, the
//! ratchet's crash argument and the nonce argument). The associated data of every sealed value binds its
//! table, purpose, day and row, so a value copied elsewhere fails to open; such a record is
//! reported (without contents) and skipped, never a crash.
//!
//! | table | rows | sealed under |
//! |---|---|---|
//! | `meta` | `key_check` = HMAC(master, "key-check"): a wrong master key is refused at open | — |
//! | `day_keys(day, wrapped)` | one per UTC day holding data | wrapping key of the epoch |
//! | `sightings(id, day, blob)` | one chunk per (write batch, day), `codec` encoding | day key |
//! | `own_keys(day, protocol, blob)` | own Bluezone daily key and GAEN TEK per day | day key |
//! | `case_lists(id, content_hash, format, entries, imported_day, blob)` | imported lists | day key of import |
//! | `exposures(id, day, key_hash, blob)` | typed match record + delivery state (JSON) | day key |
//! | `day_counts(day, sightings)` | sightings per day, for counts without decryption | — (clear) |
//!
//! Files: [`open`](Store::open) (opening safely, migrations), `master_key` (the key file),
//! [`keys`] (derived keys, day keys, sealing), `sightings`, `own_keys`,
//! `case_lists`, `exposures` (with the notification state machine), `retention`, `stats`.
//! Every method that depends on the date takes the UTC day from its caller (the daemon's
//! clock); the store never reads the system clock.
//!
//! # What the store file reveals without the key
//!
//! Audit of every column stored in clear (schema v3). Someone holding `store.sqlite3` (and its
//! `-wal`) but not the master key learns exactly:
//!
//! - **Sightings per UTC day** (`day_counts`, schema v3): kept so that status and metrics
//!   never decrypt; the chunks' sizes already gave this away to within a few percent.
//! - **UTC day numbers** (`day_keys.day`, `sightings.day`, `own_keys.day`, `exposures.day`,
//!   `case_lists.imported_day`): on which days the daemon logged, held keys, imported lists
//!   and recorded exposures. Needed in clear so that retention can delete by day.
//! - **Row counts and row ids**: sightings chunks per day (one per write batch, so roughly how
//!   long the daemon ran that day), the number of exposure rows per day (how many case keys
//!   matched, including those below the threshold; not whether any notified: the delivery
//!   state is sealed), the number of case lists.
//! - **Blob sizes**: a sightings chunk is padded to a size class (a power of two of plaintext
//!   bytes, at least 64; `codec`), so its size tells the batch's number of sightings only to
//!   within a factor of two (chunks written before the padding, codec version 1, still show it
//!   exactly until purged); exposure and own-key blobs have near-constant sizes.
//! - **Case lists' format and entry count** (`case_lists.format`, `.entries`) and their
//!   **keyed content hash** (`content_hash`, HMAC under a master-derived key: two stores
//!   cannot be compared, and a published list cannot be tested against it without the key).
//!   Published lists are public, and entry counts of the lists a region publishes are
//!   public too, so this mostly tells which day's list was imported.
//! - **Exposure row ids** (`exposures.key_hash`): HMAC under a master-derived key of
//!   (protocol, case key, day) since schema v2. Schema v1 used plain SHA-256 of those public
//!   values, so anyone could test every published key and learn which case was met (H2);
//!   opening a v1 store re-keys every row in the migration, in one transaction.
//! - `meta.key_check` (an HMAC, reveals nothing about the key), the schema version and
//!   `meta.wrap_epoch` (schema v5: how many times a purge deleted a day key, i.e. roughly how
//!   many days the store has been purging).
//!
//! It learns no identifier heard or sent, no key, no case list content, no exposure detail, no
//! notification state, no RSSI and no time finer than the UTC day.
//!
//! # Retention residue
//!
//! [`Store::purge_older_than`] deletes a day's rows and its day key in one transaction;
//! `secure_delete` zeroes the freed cells and the WAL is checkpointed and truncated. The daemon
//! purges hourly. What can remain: (1) copies of the file made while the data was retained
//! (backups, snapshots of the file system) — their day keys were wrapped under the master key,
//! so whoever has both can read them; (2) blocks the file system or an SSD's flash translation
//! layer did not overwrite in place (SQLite rewrites pages, the device may keep old copies);
//! (3) if another connection held the WAL open during the purge, old page images stay in the
//! `-wal` file until the next checkpoint ([`PurgeReport::wal_truncated`] says so). Since schema
//! v5 such residue of a **wrapped day key** is useless once purge has stepped the wrap ratchet
//! (it does so whenever it deletes a day key): the epoch key that wrapped it is gone from
//! `wrap-ratchet` and cannot be computed from the current one, so the master key no longer
//! opens it. What remains: a copy of the store taken together with its ratchet file (a backup
//! of the whole data directory), and an old block of `wrap-ratchet` itself kept by a
//! copy-on-write file system or an SSD. Full-disk encryption and not backing up the data
//! directory cover those.

mod case_lists;
mod codec;
mod error;
mod exposures;
pub mod keys;
mod master_key;
mod open;
mod own_keys;
mod ratchet;
mod retention;
mod schema;
mod sightings;
mod stats;

use std::path::PathBuf;

pub use case_lists::StoredCaseList;
pub use error::StoreError;
pub use exposures::{
    Delivery, DeliveryState, ExposureId, ExposureKey, ExposureRecord, ExposureState, Exposures,
    NotificationEvent, StoredExposure, UpsertOutcome,
};
pub use keys::SEAL_OVERHEAD;
pub use master_key::{KeyLocation, KeySource, MasterKey, KEY_FILE, KEY_LEN};
pub use open::{InitReport, Store, DB_FILE};
pub use own_keys::OwnKeys;
pub use ratchet::RATCHET_FILE;
pub use retention::{PurgeReport, DEFAULT_KEEP_DAYS};
pub use sightings::{ReadOut, MAX_CHUNK_SIGHTINGS};
pub use stats::{DayStats, StoreCounts, StoreStats};

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
