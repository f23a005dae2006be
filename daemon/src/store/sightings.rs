//! Sightings: sealed chunks, one per (write batch, UTC day), in the `codec` encoding.

use std::collections::BTreeMap;

use bluezone_protocol::time::utc_day;
use bluezone_protocol::Sighting;
use rusqlite::params;
use zeroize::{Zeroize, Zeroizing};

use super::codec::{decode_chunk, encode_chunk};
use super::error::StoreError;
use super::keys::{day_key_for_write, load_day_keys, Ad};
use super::Store;

/// At most this many sightings per sealed chunk (a large import is split, in one transaction).
pub const MAX_CHUNK_SIGHTINGS: usize = 4096;

/// Sightings read back for matching.
#[derive(Debug, Default)]
pub struct ReadOut {
    /// In order of day, then of insertion.
    pub sightings: Vec<Sighting>,
    /// Sealed chunks that failed to open or decode (each logged, without contents, and skipped).
    pub corrupt: usize,
}

impl Store {
    /// Stores a batch durably: one transaction (one sealed chunk per UTC day in the batch, split
    /// every [`MAX_CHUNK_SIGHTINGS`]), committed with an fsync of the WAL. When this returns
    /// `Ok` the whole batch is on disk; on any error (e.g. [`StoreError::DiskFull`]) none of it
    /// is.
    pub fn insert_sightings(&mut self, batch: &[Sighting]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut by_day: BTreeMap<i64, Vec<Sighting>> = BTreeMap::new();
        for s in batch {
            by_day.entry(utc_day(s.time)).or_default().push(*s);
        }
        self.write_tx(|tx, path, keys| {
            let sql = |context| move |e| StoreError::sql(path, context, e);
            let mut id: i64 = tx
                .prepare_cached("SELECT COALESCE(MAX(id), 0) FROM sightings")
                .and_then(|mut s| s.query_row([], |r| r.get(0)))
                .map_err(sql("reading the last sightings chunk id"))?;
            let mut plain = Zeroizing::new(Vec::new());
            let mut insert = tx
                .prepare_cached("INSERT INTO sightings (id, day, blob) VALUES (?1, ?2, ?3)")
                .map_err(sql("preparing sightings insert"))?;
            let mut count = tx
                .prepare_cached(ADD_DAY_COUNT)
                .map_err(sql("preparing day count update"))?;
            for (day, list) in &by_day {
                count
                    .execute(params![day, list.len() as i64])
                    .map_err(sql("updating day counts"))?;
                let key = day_key_for_write(tx, path, keys, *day)?;
                for chunk in list.chunks(MAX_CHUNK_SIGHTINGS) {
                    id = id.checked_add(1).ok_or(StoreError::InvalidInput {
                        field: "sightings.id",
                        problem: "chunk ids exhausted".into(),
                    })?;
                    plain.zeroize();
                    encode_chunk(*day, chunk, &mut plain);
                    let blob = key.seal(&Ad::sightings(*day, id), &plain);
                    insert
                        .execute(params![id, day, blob])
                        .map_err(sql("writing sightings"))?;
                }
            }
            Ok(())
        })
    }

    /// Calls `f(day, sightings)` for each chunk of days `first_day..=last_day` that opens, in
    /// order of day then insertion; returns the number of chunks that did not (each logged
    /// without contents).
    pub fn for_each_chunk(
        &self,
        first_day: i64,
        last_day: i64,
        f: impl FnMut(i64, &[Sighting]),
    ) -> Result<usize, StoreError> {
        self.for_each_chunk_after(first_day, last_day, i64::MIN, f)
    }

    /// Every sighting in chunks with id above `mark` (see [`Store::sightings_mark`]).
    pub fn sightings_after(&self, mark: i64) -> Result<ReadOut, StoreError> {
        let mut sightings = Vec::new();
        let corrupt = self.for_each_chunk_after(i64::MIN, i64::MAX, mark, |_, s| {
            sightings.extend_from_slice(s);
        })?;
        Ok(ReadOut { sightings, corrupt })
    }

    fn for_each_chunk_after(
        &self,
        first_day: i64,
        last_day: i64,
        after_id: i64,
        mut f: impl FnMut(i64, &[Sighting]),
    ) -> Result<usize, StoreError> {
        let sql = self.sql("reading sightings");
        // One read transaction: the day keys and the chunks come from the same snapshot.
        let tx = self.conn.unchecked_transaction().map_err(&sql)?;
        let day_keys = load_day_keys(&tx, &self.keys, first_day, last_day).map_err(&sql)?;
        let mut stmt = tx
            .prepare_cached(
                "SELECT id, day, blob FROM sightings WHERE day BETWEEN ?1 AND ?2 AND id > ?3 \
                 ORDER BY day, id",
            )
            .map_err(&sql)?;
        let mut rows = stmt.query([first_day, last_day, after_id]).map_err(&sql)?;
        let mut plain = Zeroizing::new(Vec::new());
        let mut scratch: Vec<Sighting> = Vec::new();
        let mut corrupt = 0;
        while let Some(row) = rows.next().map_err(&sql)? {
            let id: i64 = row.get(0).map_err(&sql)?;
            let day: i64 = row.get(1).map_err(&sql)?;
            let blob = row.get_ref(2).map_err(&sql)?.as_blob().ok();
            scratch.clear();
            let ok = match (day_keys.get(&day), blob) {
                (Some(Some(key)), Some(blob)) => {
                    key.open_into(&Ad::sightings(day, id), blob, &mut plain)
                        && decode_chunk(day, &plain, &mut scratch).is_ok()
                }
                _ => false,
            };
            plain.zeroize();
            if ok {
                f(day, &scratch);
            } else {
                corrupt += 1;
                tracing::warn!(
                    store = %self.path.display(),
                    table = "sightings",
                    day,
                    chunk = id,
                    "sealed chunk failed to open (corrupt, moved from another row or day, or its \
                     day key is missing); skipped"
                );
            }
        }
        Ok(corrupt)
    }

    /// Every sighting of UTC days `first_day..=last_day`, decrypted, for matching.
    pub fn sightings_in_days(&self, first_day: i64, last_day: i64) -> Result<ReadOut, StoreError> {
        let mut sightings = Vec::new();
        let corrupt = self.for_each_chunk(first_day, last_day, |_, s| {
            sightings.extend_from_slice(s);
        })?;
        Ok(ReadOut { sightings, corrupt })
    }

    /// The highest sightings chunk id (0 when there is none): chunks written later have higher
    /// ids, so an incremental matcher remembers this mark and later reads what is above it.
    pub fn sightings_mark(&self) -> Result<i64, StoreError> {
        let sql = self.sql("reading the sightings mark");
        self.conn
            .prepare_cached("SELECT COALESCE(MAX(id), 0) FROM sightings")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(&sql)
    }

    /// The UTC days holding sightings, ascending.
    pub fn sighting_days(&self) -> Result<Vec<i64>, StoreError> {
        let sql = self.sql("listing sighting days");
        let mut stmt = self
            .conn
            .prepare_cached("SELECT DISTINCT day FROM sightings ORDER BY day")
            .map_err(&sql)?;
        let days = stmt
            .query_map([], |r| r.get(0))
            .map_err(&sql)?
            .collect::<Result<Vec<i64>, _>>()
            .map_err(&sql)?;
        Ok(days)
    }
}

const ADD_DAY_COUNT: &str = "INSERT INTO day_counts (day, sightings) VALUES (?1, ?2) \
     ON CONFLICT (day) DO UPDATE SET sightings = sightings + excluded.sightings";

/// Schema v3: counts the sightings of every chunk that opens (once, in the migration's
/// transaction). A chunk that does not open counts zero, as `stats` would.
pub(crate) fn fill_day_counts(
    tx: &rusqlite::Transaction<'_>,
    path: &std::path::Path,
    keys: &super::keys::DerivedKeys,
) -> Result<(), StoreError> {
    let sql = |e| StoreError::sql(path, "filling day counts", e);
    let day_keys = load_day_keys(tx, keys, i64::MIN, i64::MAX).map_err(sql)?;
    let mut per_day: BTreeMap<i64, i64> = BTreeMap::new();
    {
        let mut stmt = tx
            .prepare("SELECT id, day, blob FROM sightings")
            .map_err(sql)?;
        let mut rows = stmt.query([]).map_err(sql)?;
        let mut plain = Zeroizing::new(Vec::new());
        let mut scratch = Vec::new();
        while let Some(row) = rows.next().map_err(sql)? {
            let id: i64 = row.get(0).map_err(sql)?;
            let day: i64 = row.get(1).map_err(sql)?;
            let blob = row.get_ref(2).map_err(sql)?.as_blob().ok();
            scratch.clear();
            if let (Some(Some(key)), Some(blob)) = (day_keys.get(&day), blob) {
                if key.open_into(&Ad::sightings(day, id), blob, &mut plain)
                    && decode_chunk(day, &plain, &mut scratch).is_ok()
                {
                    *per_day.entry(day).or_default() += scratch.len() as i64;
                }
            }
            plain.zeroize();
        }
    }
    for (day, n) in per_day {
        tx.execute(ADD_DAY_COUNT, params![day, n]).map_err(sql)?;
    }
    Ok(())
}
