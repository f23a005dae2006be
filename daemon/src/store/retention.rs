//! Retention: old days' rows and their day keys are deleted together, then the WAL is
//! truncated so old page images leave the disk too.

use super::error::StoreError;
use super::Store;

/// Default retention: data of days older than this many days before today is purged.
pub const DEFAULT_KEEP_DAYS: u32 = 21;

/// What [`Store::purge_older_than`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Rows of days before this one were removed.
    pub cutoff_day: i64,
    pub day_keys: usize,
    pub sightings_chunks: usize,
    pub own_keys: usize,
    pub case_lists: usize,
    pub exposures: usize,
    /// False if another connection kept the WAL from being checkpointed and truncated; the old
    /// pages then stay in the `-wal` file until the next purge.
    pub wal_truncated: bool,
    /// The wrap epoch after the purge: advanced (every retained day key re-wrapped, the old
    /// epoch key erased from `wrap-ratchet`) whenever a day key was deleted.
    pub wrap_epoch: u64,
}

impl Store {
    /// Retention: deletes every row of days before `today - keep_days` (sightings, own keys,
    /// case lists by import day, exposures) and those days' keys, in one transaction. With
    /// `secure_delete` on, SQLite overwrites the freed cells and pages with zeros; the WAL is
    /// then checkpointed into the database and truncated to zero bytes, so the old page images
    /// leave the `-wal` file too.
    pub fn purge_older_than(
        &mut self,
        today: i64,
        keep_days: u32,
    ) -> Result<PurgeReport, StoreError> {
        let cutoff = today.saturating_sub(i64::from(keep_days));
        let (mut report, step) = self.write_tx(|tx, path, keys| {
            let del = |table_sql: &str| {
                tx.execute(table_sql, [cutoff])
                    .map_err(|e| StoreError::sql(path, "purging old rows", e))
            };
            // Counters go with their rows (not reported: they are not data).
            del("DELETE FROM day_counts WHERE day < ?1")?;
            let report = PurgeReport {
                cutoff_day: cutoff,
                sightings_chunks: del("DELETE FROM sightings WHERE day < ?1")?,
                own_keys: del("DELETE FROM own_keys WHERE day < ?1")?,
                case_lists: del("DELETE FROM case_lists WHERE imported_day < ?1")?,
                exposures: del("DELETE FROM exposures WHERE day < ?1")?,
                day_keys: del("DELETE FROM day_keys WHERE day < ?1")?,
                wal_truncated: false,
                wrap_epoch: keys.wrap_epoch().unwrap_or_default(),
            };
            // A deleted day key may survive outside SQLite wrapped under this epoch's key:
            // step the ratchet in the same transaction, so that key is gone once this returns.
            let step = if report.day_keys > 0 {
                Some(super::ratchet::step_in_tx(tx, path, keys)?)
            } else {
                None
            };
            Ok((report, step))
        })?;
        if let Some(step) = step {
            let Store {
                conn, path, keys, ..
            } = self;
            super::ratchet::finish_step(conn, path, keys, step)?;
            report.wrap_epoch = keys.wrap_epoch().unwrap_or_default();
        }
        let wal_truncated = self.checkpoint_truncate()?;
        tracing::info!(
            cutoff_day = cutoff,
            day_keys = report.day_keys,
            chunks = report.sightings_chunks,
            "purged data older than the retention period"
        );
        Ok(PurgeReport {
            wal_truncated,
            ..report
        })
    }

    /// `PRAGMA wal_checkpoint(TRUNCATE)`; false if another connection kept it from completing.
    pub fn checkpoint_truncate(&self) -> Result<bool, StoreError> {
        let (busy, log, done): (i64, i64, i64) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(self.sql("checkpointing the WAL"))?;
        let complete = busy == 0 && log == done;
        if !complete {
            tracing::warn!(store = %self.path.display(),
                "WAL checkpoint blocked by another connection; old pages stay in the -wal file until the next checkpoint");
        }
        Ok(complete)
    }
}
