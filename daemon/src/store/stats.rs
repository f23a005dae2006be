//! Counts for `status` and `/metrics`.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::Path;

use bluezone_protocol::PeerId;

use super::error::StoreError;
use super::master_key::KeySource;
use super::schema;
use super::Store;

/// Per-day counts for `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DayStats {
    pub day: i64,
    pub sightings: usize,
    pub distinct_ids: usize,
}

/// Store statistics (counts only, never a key or an identifier).
#[derive(Clone, Debug)]
pub struct StoreStats {
    pub days: Vec<DayStats>,
    pub sightings: usize,
    pub distinct_ids: usize,
    pub corrupt_chunks: usize,
    /// Database plus `-wal` file, bytes.
    pub store_bytes: u64,
    /// Oldest UTC day holding any data (every sealed row has a day key).
    pub oldest_day: Option<i64>,
    pub key_source: KeySource,
    pub own_key_days: usize,
    pub case_lists: usize,
    pub exposures: usize,
    pub schema_version: i64,
}

/// Counts that need no decryption (L20): for `/v1/status` and `/metrics`, which must not
/// decrypt the store per request. Sightings come from the `day_counts` table, kept in the
/// transaction of every insert and purge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreCounts {
    /// `(day, sightings)`, ascending.
    pub days: Vec<(i64, u64)>,
    pub sightings: u64,
    pub case_lists: usize,
    /// Exposure rows, notifying or not (the delivery state is sealed).
    pub exposures: usize,
    pub own_key_days: usize,
    pub oldest_day: Option<i64>,
    /// Database plus `-wal` file, bytes.
    pub store_bytes: u64,
}

impl Store {
    /// [`StoreCounts`]: reads counters and row counts only, never opens a sealed value.
    pub fn counts(&self) -> Result<StoreCounts, StoreError> {
        let sql = self.sql("reading counts");
        let tx = self.conn.unchecked_transaction().map_err(&sql)?;
        let days: Vec<(i64, u64)> = {
            let mut stmt = tx
                .prepare_cached("SELECT day, sightings FROM day_counts ORDER BY day")
                .map_err(&sql)?;
            let v = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64)))
                .map_err(&sql)?
                .collect::<Result<_, _>>()
                .map_err(&sql)?;
            v
        };
        let count = |q: &str| -> Result<usize, StoreError> {
            tx.query_row(q, [], |r| r.get::<_, i64>(0))
                .map(|n| n.max(0) as usize)
                .map_err(&sql)
        };
        let oldest_day: Option<i64> = tx
            .query_row("SELECT MIN(day) FROM day_keys", [], |r| r.get(0))
            .map_err(&sql)?;
        Ok(StoreCounts {
            sightings: days.iter().map(|d| d.1).sum(),
            days,
            case_lists: count("SELECT COUNT(*) FROM case_lists")?,
            exposures: count("SELECT COUNT(*) FROM exposures")?,
            own_key_days: count("SELECT COUNT(DISTINCT day) FROM own_keys")?,
            oldest_day,
            store_bytes: self.file_bytes(),
        })
    }

    fn file_bytes(&self) -> u64 {
        let file_len = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        file_len(&self.path) + file_len(Path::new(&wal))
    }

    /// Counts for the `status` command, including distinct identifiers (decrypts every chunk:
    /// for the key holder's explicit request, not per API request; see [`Store::counts`];
    /// never returns an identifier or a key).
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let mut per_day: BTreeMap<i64, (usize, HashSet<PeerId>)> = BTreeMap::new();
        let mut all: HashSet<PeerId> = HashSet::new();
        let corrupt_chunks = self.for_each_chunk(i64::MIN, i64::MAX, |day, s| {
            let e = per_day.entry(day).or_default();
            e.0 += s.len();
            for x in s {
                e.1.insert(x.peer);
                all.insert(x.peer);
            }
        })?;
        let sql = self.sql("reading statistics");
        let count = |q: &str| -> Result<i64, StoreError> {
            self.conn.query_row(q, [], |r| r.get(0)).map_err(&sql)
        };
        let oldest_day: Option<i64> = self
            .conn
            .query_row("SELECT MIN(day) FROM day_keys", [], |r| r.get(0))
            .map_err(&sql)?;
        let file_len = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        let days: Vec<DayStats> = per_day
            .into_iter()
            .map(|(day, (sightings, ids))| DayStats {
                day,
                sightings,
                distinct_ids: ids.len(),
            })
            .collect();
        Ok(StoreStats {
            sightings: days.iter().map(|d| d.sightings).sum(),
            distinct_ids: all.len(),
            days,
            corrupt_chunks,
            store_bytes: file_len(&self.path) + file_len(Path::new(&wal)),
            oldest_day,
            key_source: self.key.source,
            own_key_days: count("SELECT COUNT(DISTINCT day) FROM own_keys")? as usize,
            case_lists: count("SELECT COUNT(*) FROM case_lists")? as usize,
            exposures: count("SELECT COUNT(*) FROM exposures")? as usize,
            schema_version: schema::user_version(&self.conn).map_err(&sql)?,
        })
    }
}
