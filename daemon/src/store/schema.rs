//! Versioned schema. `PRAGMA user_version` holds the version; each migration runs in its own
//! transaction together with the version bump, so a store is always at exactly one version.
//! Append migrations, never edit a released one.

use rusqlite::Connection;

/// `PRAGMA application_id`: "BZND". Tells a bluezoned store from any other SQLite file.
pub(crate) const APPLICATION_ID: i32 = 0x425a_4e44;

/// `MIGRATIONS[i]` moves the schema from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 0 → 1. Only `day` columns (UTC day numbers, for retention) and row bookkeeping are in
    // clear; every `blob`/`wrapped` column is `nonce || AES-256-GCM ciphertext || tag`.
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value BLOB NOT NULL
    ) WITHOUT ROWID;
    -- One random data key per UTC day, sealed under the master-derived wrapping key.
    CREATE TABLE day_keys (
        day     INTEGER PRIMARY KEY,
        wrapped BLOB NOT NULL
    );
    -- One sealed chunk per (write batch, day): a compact encoding of its sightings.
    CREATE TABLE sightings (
        id   INTEGER PRIMARY KEY,
        day  INTEGER NOT NULL,
        blob BLOB NOT NULL
    );
    CREATE INDEX sightings_day ON sightings(day, id);
    -- The device's own keys: protocol 'bluezone' (daily key) and 'gaen' (TEK).
    CREATE TABLE own_keys (
        day      INTEGER NOT NULL,
        protocol TEXT NOT NULL,
        blob     BLOB NOT NULL,
        PRIMARY KEY (day, protocol)
    );
    CREATE TABLE case_lists (
        id           INTEGER PRIMARY KEY,
        content_hash TEXT NOT NULL UNIQUE,
        format       TEXT NOT NULL,
        entries      INTEGER NOT NULL,
        imported_day INTEGER NOT NULL,
        blob         BLOB NOT NULL
    );
    CREATE TABLE exposures (
        id       INTEGER PRIMARY KEY,
        day      INTEGER NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        blob     BLOB NOT NULL
    );
    "#,
    // 1 → 2. `exposures.key_hash` becomes an HMAC under a master-derived key and every blob an
    // envelope with the delivery state: both done row by row in Rust in this same transaction
    // (see `exposures::migrate_v1_key_hashes`), since they need the key.
    "",
    // 2 → 3. Sightings per UTC day, kept in the transaction of every insert and purge, so that
    // `/v1/status` and `/metrics` count without decrypting anything (L20). In clear: it
    // reveals no more than the chunks' sizes already do. Filled from the existing chunks by
    // `sightings::fill_day_counts` in the same transaction.
    r#"
    CREATE TABLE day_counts (
        day       INTEGER PRIMARY KEY,
        sightings INTEGER NOT NULL
    );
    "#,
    // 3 → 4. Each case list also holds its compact form (`caselist::compact`: fixed records,
    // what matching needs), sealed under the same day key, so matching never re-parses the
    // original. Derived from the stored originals by `case_lists::fill_compact` in the same
    // transaction; NULL where the original does not parse (matching then reports that list).
    r#"
    ALTER TABLE case_lists ADD COLUMN compact BLOB;
    "#,
    // 4 → 5. Day keys are wrapped under a forward-ratcheting epoch key kept in the
    // `wrap-ratchet` file (L8; `keys` explains it): every day key is re-wrapped and
    // `meta.wrap_epoch` stored by `ratchet::rewrap_all` in this same transaction, the file
    // having been created (and fsynced) before it.
    "",
];

/// The version this build writes.
pub(crate) const CURRENT_VERSION: i64 = MIGRATIONS.len() as i64;

pub(crate) fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

pub(crate) fn application_id(conn: &Connection) -> rusqlite::Result<i32> {
    conn.pragma_query_value(None, "application_id", |r| r.get(0))
}

/// Extra work run inside a migration's transaction, after its SQL: `(new_version, tx)`.
pub(crate) type TxStep<'a> =
    &'a dyn Fn(i64, &rusqlite::Transaction<'_>) -> Result<(), crate::store::StoreError>;

/// Applies the migrations after `from`, each in one transaction with its version bump and
/// `step`. `first_txn_extra` runs inside the first migration's transaction (used by `init` to
/// store the key check value atomically with the schema).
pub(crate) fn migrate(
    conn: &mut Connection,
    path: &std::path::Path,
    from: i64,
    mut first_txn_extra: Option<TxStep<'_>>,
    step: TxStep<'_>,
) -> Result<(), crate::store::StoreError> {
    let sql = |e| crate::store::StoreError::sql(path, "migrating the schema", e);
    for (i, text) in MIGRATIONS.iter().enumerate().skip(from.max(0) as usize) {
        let version = i as i64 + 1;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql)?;
        // Another process opening the same store may have migrated it meanwhile.
        if user_version(&tx).map_err(sql)? >= version {
            continue;
        }
        tx.execute_batch(text).map_err(sql)?;
        if let Some(f) = first_txn_extra.take() {
            f(version, &tx)?;
        }
        step(version, &tx)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(sql)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(sql)?;
        tx.commit().map_err(sql)?;
    }
    Ok(())
}
