//! Counts for `status` and `/metrics`.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::Path;

use bluezone_protocol::PeerId;

use super::error::StoreError;
use super::keys::KeySource;
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

impl Store {
    /// Counts for `status` (decrypts every chunk; never returns an identifier or a key).
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
