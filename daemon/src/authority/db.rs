//! The authority's own SQLite: cases as uploaded (their keys are published material), revocations,
//! publications with the files each listed, and an audit log of who uploaded what (a token id,
//! never the token; a key count, never the keys). Every change and its audit row commit together.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use bluezone_protocol::bluezone::{F0Entry, SlotsPerDay};
use bluezone_protocol::gaen::export::{ExportKey, ReportType};
use bluezone_protocol::ids::{DailyKey, Tek};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::tokens::TokenId;
use super::upload::CaseUpload;

pub type CaseId = i64;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cases (
    id INTEGER PRIMARY KEY,
    content_hash BLOB NOT NULL UNIQUE,
    uploaded_at INTEGER NOT NULL,
    token_id TEXT NOT NULL,
    format TEXT NOT NULL,
    keys INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE TABLE IF NOT EXISTS gaen_keys (
    case_id INTEGER NOT NULL REFERENCES cases(id),
    tek BLOB NOT NULL,
    rolling_start INTEGER NOT NULL,
    rolling_period INTEGER NOT NULL,
    report_type INTEGER NOT NULL,
    days_since_onset INTEGER,
    transmission_risk INTEGER
);
CREATE INDEX IF NOT EXISTS gaen_keys_case ON gaen_keys(case_id);
CREATE TABLE IF NOT EXISTS f0_entries (
    case_id INTEGER NOT NULL REFERENCES cases(id),
    daily_key BLOB NOT NULL,
    time_start INTEGER NOT NULL,
    time_end INTEGER NOT NULL,
    max INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS f0_entries_case ON f0_entries(case_id);
CREATE TABLE IF NOT EXISTS publications (
    id INTEGER PRIMARY KEY,
    window_start INTEGER NOT NULL,
    window_end INTEGER NOT NULL,
    -- What the publication covered: cases up to this id, audit rows (revocations) up to this id.
    last_case INTEGER NOT NULL,
    last_audit INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    publication INTEGER NOT NULL REFERENCES publications(id),
    keys_until INTEGER NOT NULL,
    unlisted_at INTEGER
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    time INTEGER NOT NULL,
    token_id TEXT NOT NULL,
    action TEXT NOT NULL,
    case_id INTEGER NOT NULL,
    keys INTEGER NOT NULL
);
";

pub struct Db {
    conn: Connection,
}

/// What an upload did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stored {
    pub case: CaseId,
    pub keys: usize,
    /// False when the same body had been uploaded before (the earlier case is returned).
    pub created: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revoked {
    Now,
    Already,
    NoSuchCase,
}

/// One published file still listed in `index.txt` (or waiting for its grace period to end).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRow {
    pub path: String,
    pub publication: i64,
    /// Unix seconds when the newest key in the file stops being valid.
    pub keys_until: i64,
    pub unlisted_at: Option<i64>,
}

/// One audit row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRow {
    pub time: i64,
    pub token_id: String,
    pub action: String,
    pub case: CaseId,
    pub keys: usize,
}

/// A point in the upload history: a time and the last case and audit row at it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    pub time: i64,
    pub case: i64,
    pub audit: i64,
}

/// The keys of the cases of one publication window.
#[derive(Debug, Default)]
pub struct WindowKeys {
    pub gaen: Vec<ExportKey>,
    pub f0: Vec<F0Entry>,
    /// GAEN keys of cases published before and revoked in this window.
    pub revoked: Vec<ExportKey>,
    /// F0 entries of cases published before and revoked in this window (their daily keys go
    /// out as the F0 file's revocation list).
    pub revoked_f0: Vec<F0Entry>,
}

impl Db {
    pub fn open(path: &Path) -> Result<Db> {
        let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("setting {} to mode 0600", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .and_then(|_| conn.pragma_update(None, "synchronous", "FULL"))
            .and_then(|_| conn.pragma_update(None, "foreign_keys", "ON"))
            .and_then(|_| conn.execute_batch(SCHEMA))
            .with_context(|| format!("preparing {}", path.display()))?;
        Ok(Db { conn })
    }

    /// Stores a case and its audit row, or returns the case an identical body created before.
    pub fn insert_case(
        &mut self,
        content_hash: &[u8; 32],
        upload: &CaseUpload,
        token: &TokenId,
        now: i64,
    ) -> Result<Stored> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing: Option<(i64, i64)> = tx
            .query_row(
                "SELECT id, keys FROM cases WHERE content_hash = ?1",
                [&content_hash[..]],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((case, keys)) = existing {
            tx.execute(
                "INSERT INTO audit (time, token_id, action, case_id, keys) VALUES (?1, ?2, 'upload-again', ?3, ?4)",
                params![now, token.0, case, keys],
            )?;
            tx.commit()?;
            return Ok(Stored {
                case,
                keys: keys as usize,
                created: false,
            });
        }
        let keys = upload.key_count();
        tx.execute(
            "INSERT INTO cases (content_hash, uploaded_at, token_id, format, keys) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![&content_hash[..], now, token.0, upload.format.as_str(), keys as i64],
        )?;
        let case = tx.last_insert_rowid();
        {
            let mut k = tx.prepare(
                "INSERT INTO gaen_keys (case_id, tek, rolling_start, rolling_period, report_type, days_since_onset, transmission_risk)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for key in &upload.gaen {
                k.execute(params![
                    case,
                    &key.tek.as_bytes()[..],
                    key.rolling_start,
                    key.rolling_period,
                    key.report_type.to_i32(),
                    key.days_since_onset,
                    key.transmission_risk_level,
                ])?;
            }
            let mut f = tx.prepare(
                "INSERT INTO f0_entries (case_id, daily_key, time_start, time_end, max) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for e in &upload.f0 {
                f.execute(params![
                    case,
                    &e.daily_key.as_bytes()[..],
                    e.time_start,
                    e.time_end,
                    e.max.get()
                ])?;
            }
        }
        tx.execute(
            "INSERT INTO audit (time, token_id, action, case_id, keys) VALUES (?1, ?2, 'upload', ?3, ?4)",
            params![now, token.0, case, keys as i64],
        )?;
        tx.commit()?;
        Ok(Stored {
            case,
            keys,
            created: true,
        })
    }

    pub fn revoke(&mut self, case: CaseId, token: &TokenId, now: i64) -> Result<Revoked> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row: Option<(Option<i64>, i64)> = tx
            .query_row(
                "SELECT revoked_at, keys FROM cases WHERE id = ?1",
                [case],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let outcome = match row {
            None => Revoked::NoSuchCase,
            Some((Some(_), _)) => Revoked::Already,
            Some((None, keys)) => {
                tx.execute(
                    "UPDATE cases SET revoked_at = ?1 WHERE id = ?2",
                    params![now, case],
                )?;
                tx.execute(
                    "INSERT INTO audit (time, token_id, action, case_id, keys) VALUES (?1, ?2, 'revoke', ?3, ?4)",
                    params![now, token.0, case, keys],
                )?;
                Revoked::Now
            }
        };
        tx.commit()?;
        Ok(outcome)
    }

    /// Where the last committed publication ended (zeros before the first).
    pub fn last_publication(&self) -> Result<Cursor> {
        Ok(self
            .conn
            .query_row(
                "SELECT window_end, last_case, last_audit FROM publications ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok(Cursor { time: r.get(0)?, case: r.get(1)?, audit: r.get(2)? }),
            )
            .optional()?
            .unwrap_or_default())
    }

    /// What has been uploaded or revoked so far (`time` is the caller's).
    pub fn head(&self, time: i64) -> Result<Cursor> {
        Ok(self.conn.query_row(
            "SELECT (SELECT COALESCE(MAX(id), 0) FROM cases), (SELECT COALESCE(MAX(id), 0) FROM audit)",
            [],
            |r| Ok(Cursor { time, case: r.get(0)?, audit: r.get(1)? }),
        )?)
    }

    /// The keys of the window `(from, to]`: cases stored in it and not revoked, whose keys are
    /// still valid at `not_before`; and the keys of cases published before it and revoked in it.
    /// Windows are bounded by row ids, not times, so an upload in the same second as a
    /// publication is never skipped.
    pub fn window_keys(&self, from: &Cursor, to: &Cursor, not_before: i64) -> Result<WindowKeys> {
        let (start, end) = (from.case, to.case);
        let mut out = WindowKeys::default();
        let enin_floor = not_before.div_euclid(600);
        let mut q = self.conn.prepare(
            "SELECT k.tek, k.rolling_start, k.rolling_period, k.report_type, k.days_since_onset, k.transmission_risk
             FROM gaen_keys k JOIN cases c ON c.id = k.case_id
             WHERE c.id > ?1 AND c.id <= ?2 AND c.revoked_at IS NULL
               AND k.rolling_start + k.rolling_period > ?3",
        )?;
        out.gaen = q
            .query_map(params![start, end, enin_floor], key_row)?
            .collect::<Result<_, _>>()?;
        let mut q = self.conn.prepare(
            "SELECT k.tek, k.rolling_start, k.rolling_period, k.report_type, k.days_since_onset, k.transmission_risk
             FROM gaen_keys k JOIN cases c ON c.id = k.case_id
             WHERE c.id <= ?1 AND c.id IN (
                   SELECT case_id FROM audit WHERE action = 'revoke' AND id > ?2 AND id <= ?3)
               AND k.rolling_start + k.rolling_period > ?4",
        )?;
        out.revoked = q
            .query_map(params![start, from.audit, to.audit, enin_floor], key_row)?
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .map(|k| ExportKey {
                report_type: ReportType::Revoked,
                ..k
            })
            .collect();
        out.f0 = f0_rows(
            &self.conn,
            "SELECT e.daily_key, e.time_start, e.time_end, e.max
             FROM f0_entries e JOIN cases c ON c.id = e.case_id
             WHERE c.id > ?1 AND c.id <= ?2 AND c.revoked_at IS NULL
               AND e.time_end >= ?3",
            params![start, end, not_before],
        )?;
        out.revoked_f0 = f0_rows(
            &self.conn,
            "SELECT e.daily_key, e.time_start, e.time_end, e.max
             FROM f0_entries e JOIN cases c ON c.id = e.case_id
             WHERE c.id <= ?1 AND c.id IN (
                   SELECT case_id FROM audit WHERE action = 'revoke' AND id > ?2 AND id <= ?3)
               AND e.time_end >= ?4",
            params![start, from.audit, to.audit, not_before],
        )?;
        Ok(out)
    }

    /// Files not yet unlisted.
    pub fn listed_files(&self) -> Result<Vec<FileRow>> {
        self.files("WHERE unlisted_at IS NULL")
    }

    /// Files unlisted before `before` (their grace period is over).
    pub fn expired_files(&self, before: i64) -> Result<Vec<FileRow>> {
        let mut q = self.conn.prepare(
            "SELECT path, publication, keys_until, unlisted_at FROM files WHERE unlisted_at < ?1 ORDER BY publication, path",
        )?;
        let rows = q.query_map([before], file_row)?.collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn files(&self, filter: &str) -> Result<Vec<FileRow>> {
        let mut q = self.conn.prepare(&format!(
            "SELECT path, publication, keys_until, unlisted_at FROM files {filter} ORDER BY publication, path"
        ))?;
        let rows = q.query_map([], file_row)?.collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Commits a publication: the window, its new files, the files it unlisted and the files whose
    /// grace period ended (already removed from the output).
    pub fn record_publication(
        &mut self,
        from: &Cursor,
        to: &Cursor,
        new_files: &[FileRow],
        unlisted: &[String],
        removed: &[String],
        now: i64,
    ) -> Result<i64> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO publications (window_start, window_end, last_case, last_audit) VALUES (?1, ?2, ?3, ?4)",
            params![from.time, to.time, to.case, to.audit],
        )?;
        let id = tx.last_insert_rowid();
        for f in new_files {
            tx.execute(
                "INSERT OR REPLACE INTO files (path, publication, keys_until, unlisted_at) VALUES (?1, ?2, ?3, NULL)",
                params![f.path, id, f.keys_until],
            )?;
        }
        for p in unlisted {
            tx.execute(
                "UPDATE files SET unlisted_at = ?1 WHERE path = ?2",
                params![now, p],
            )?;
        }
        for p in removed {
            tx.execute("DELETE FROM files WHERE path = ?1", [p])?;
        }
        tx.commit()?;
        Ok(id)
    }

    pub fn audit(&self) -> Result<Vec<AuditRow>> {
        let mut q = self
            .conn
            .prepare("SELECT time, token_id, action, case_id, keys FROM audit ORDER BY id")?;
        let rows = q
            .query_map([], |r| {
                Ok(AuditRow {
                    time: r.get(0)?,
                    token_id: r.get(1)?,
                    action: r.get(2)?,
                    case: r.get(3)?,
                    keys: r.get::<_, i64>(4)? as usize,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}

fn f0_rows(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<Vec<F0Entry>> {
    let mut q = conn.prepare(sql)?;
    let rows: Vec<F0Entry> = q
        .query_map(params, |r| {
            let key: Vec<u8> = r.get(0)?;
            let max: i64 = r.get(3)?;
            Ok((key, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?, max))
        })?
        .map(|row| {
            let (key, time_start, time_end, max) = row?;
            let daily_key = DailyKey::from_bytes(
                key.as_slice()
                    .try_into()
                    .map_err(|_| bad("f0_entries.daily_key"))?,
            );
            let max = SlotsPerDay::new(max).map_err(|_| bad("f0_entries.max"))?;
            Ok(F0Entry {
                daily_key,
                time_start,
                time_end,
                max,
            })
        })
        .collect::<Result<_, rusqlite::Error>>()?;
    Ok(rows)
}

fn bad(column: &'static str) -> rusqlite::Error {
    rusqlite::Error::InvalidColumnType(0, column.into(), rusqlite::types::Type::Blob)
}

fn key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ExportKey> {
    let tek: Vec<u8> = r.get(0)?;
    let tek: [u8; 16] = tek
        .as_slice()
        .try_into()
        .map_err(|_| bad("gaen_keys.tek"))?;
    Ok(ExportKey {
        tek: Tek::from_bytes(tek),
        rolling_start: r.get(1)?,
        rolling_period: r.get(2)?,
        report_type: ReportType::from_i32(r.get(3)?),
        days_since_onset: r.get(4)?,
        transmission_risk_level: r.get(5)?,
    })
}

fn file_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileRow> {
    Ok(FileRow {
        path: r.get(0)?,
        publication: r.get(1)?,
        keys_until: r.get(2)?,
        unlisted_at: r.get(3)?,
    })
}
