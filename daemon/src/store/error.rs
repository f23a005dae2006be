//! [`StoreError`]: every way the store can fail. Messages name the file, the table or field and
//! what was expected; none ever carries key material or a decrypted value.

use std::path::PathBuf;

/// An error from the encrypted store. A variant that wraps another error says it in its message
/// and does not also expose it as `source()`, so a cause is printed once.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The master key file could not be read (missing, not a file, I/O error).
    #[error("master key file {path}: {error}")]
    KeyIo {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The master key file grants access to group or others.
    #[error(
        "master key file {path} is accessible by group or others (mode {mode:04o}); expected mode \
         0600 or stricter (fix with `chmod 600 {path}`)"
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    /// The data directory grants access to group or others and belongs to another user, so it
    /// cannot be fixed to 0700.
    #[error(
        "data directory {path} is accessible by group or others (mode {mode:04o}) and is owned by \
         uid {owner}, not by this process (uid {uid}); expected mode 0700 (fix with \
         `chmod 700 {path}` as its owner)"
    )]
    DataDirPermissions {
        path: PathBuf,
        mode: u32,
        owner: u32,
        uid: u32,
    },
    /// The master key file does not hold exactly 32 bytes.
    #[error("master key file {path}: expected exactly 32 bytes, found {found} bytes")]
    KeySize { path: PathBuf, found: u64 },
    /// The master key does not belong to this store (its check value differs). Nothing was
    /// written.
    #[error(
        "store {path}: the master key from {key_source} does not match this store (key check \
         value differs); nothing was written"
    )]
    WrongKey { path: PathBuf, key_source: String },
    /// The file exists but is not an SQLite database. It was not modified.
    #[error("{path} is not a bluezoned store: {reason}; the file was left untouched")]
    NotAStore { path: PathBuf, reason: String },
    /// The wrap ratchet file (schema v5) is missing, unreadable, or holds no key for the
    /// store's wrap epoch. Nothing was written to the store.
    #[error("wrap ratchet file {path}: {problem}; the store was left untouched")]
    Ratchet { path: PathBuf, problem: String },
    /// No store (or no key) yet.
    #[error("{what} {path} does not exist; run `bluezoned init` first")]
    NotInitialised { what: &'static str, path: PathBuf },
    /// The store was written by a newer bluezoned.
    #[error(
        "store {path}: schema version {found} is newer than this bluezoned supports \
         (up to {supported}); upgrade bluezoned"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// The disk (or the database size limit) is full. The write was rolled back: nothing of it
    /// was acknowledged or stored.
    #[error("store {path}: disk full while {context}; the write was rolled back, nothing of it was stored")]
    DiskFull {
        path: PathBuf,
        context: &'static str,
    },
    /// Any other SQLite error.
    #[error("store {path}: {context}: {error}")]
    Sqlite {
        path: PathBuf,
        context: &'static str,
        error: rusqlite::Error,
    },
    /// A file-system operation on the data directory failed.
    #[error("{context} {path}: {error}")]
    Io {
        context: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    /// A sealed record failed authentication (flipped bit, moved to another row or day, or its
    /// day key is missing). Only the location is reported, never the contents.
    #[error("store {path}: sealed {table} record for day {day} ({row}) failed authentication: corrupt, or moved from another row or day")]
    Corrupt {
        path: PathBuf,
        table: &'static str,
        day: i64,
        row: String,
    },
    /// The file system or SQLite build lacks something the store needs (e.g. WAL mode).
    #[error("store {path}: {what}")]
    Unsupported { path: PathBuf, what: String },
    /// A caller-supplied value is out of range.
    #[error("store: {field}: {problem}")]
    InvalidInput {
        field: &'static str,
        problem: String,
    },
    /// No such record.
    #[error("store {path}: no {table} record {row}")]
    NotFound {
        path: PathBuf,
        table: &'static str,
        row: String,
    },
}

impl StoreError {
    /// Maps an SQLite error, turning "disk full" (SQLITE_FULL, also raised when
    /// `max_page_count` is reached) into [`StoreError::DiskFull`] and "not a database" into
    /// [`StoreError::NotAStore`].
    pub(crate) fn sql(path: &std::path::Path, context: &'static str, e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => StoreError::DiskFull {
                path: path.to_path_buf(),
                context,
            },
            Some(ErrorCode::NotADatabase) => StoreError::NotAStore {
                path: path.to_path_buf(),
                reason: "SQLite reports it is not a database".into(),
            },
            _ => StoreError::Sqlite {
                path: path.to_path_buf(),
                context,
                error: e,
            },
        }
    }

    /// True for [`StoreError::DiskFull`].
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::DiskFull { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wrapped I/O or SQLite error is said once in the full chain (`{:#}` prints every
    /// `source()`): the variant's message holds it and `source()` does not repeat it.
    #[test]
    fn a_wrapped_cause_is_printed_once() {
        let io = StoreError::Io {
            context: "syncing directory",
            path: "/d".into(),
            error: std::io::Error::other("disk on fire"),
        };
        let sql = StoreError::sql(
            std::path::Path::new("/d/store.sqlite3"),
            "reading sightings",
            rusqlite::Error::InvalidQuery,
        );
        for e in [io, sql] {
            let shown = e.to_string();
            let chain = format!("{:#}", anyhow::Error::new(e).context("opening the store"));
            assert_eq!(chain, format!("opening the store: {shown}"));
        }
    }
}
