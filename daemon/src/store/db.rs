//! [`Store`]: the SQLite database, its pragmas, and every read and write of sealed rows.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io::Read;
use std::ops::RangeInclusive;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bluezone_protocol::time::utc_day;
use bluezone_protocol::{DailyKey, PeerId, Sighting, Tek};
use rand::{CryptoRng, RngCore};
use rusqlite::{
    params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
};
use zeroize::{Zeroize, Zeroizing};

use super::codec::{decode_chunk, encode_chunk};
use super::error::StoreError;
use super::keys::{sync_dir, Ad, DayKey, DerivedKeys, KeyLocation, KeySource, MasterKey};
use super::schema::{self, APPLICATION_ID, CURRENT_VERSION};

/// File name of the database inside the data directory (`-wal` and `-shm` files sit beside it).
pub const DB_FILE: &str = "store.sqlite3";
/// Default retention: data of days older than this many days before today is purged.
pub const DEFAULT_KEEP_DAYS: u32 = 21;
/// At most this many sightings per sealed chunk (a large import is split, in one transaction).
pub const MAX_CHUNK_SIGHTINGS: usize = 4096;

const PROTO_BLUEZONE: &str = "bluezone";
const PROTO_GAEN: &str = "gaen";
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// The encrypted encounter store. See the [module docs](super) for the layout.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    keys: DerivedKeys,
    key: KeyLocation,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("key_source", &self.key.source)
            .finish_non_exhaustive()
    }
}

/// What [`Store::init`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitReport {
    pub created_dir: bool,
    pub created_key: bool,
    pub created_store: bool,
}

impl InitReport {
    /// True when `init` found everything in place and changed nothing.
    pub fn nothing_changed(&self) -> bool {
        !(self.created_dir || self.created_key || self.created_store)
    }
}

/// Sightings read back for matching.
#[derive(Debug, Default)]
pub struct ReadOut {
    /// In order of day, then of insertion.
    pub sightings: Vec<Sighting>,
    /// Sealed chunks that failed to open or decode (each logged, without contents, and skipped).
    pub corrupt: usize,
}

/// The device's own keys for one UTC day. `Debug` redacts both keys.
#[derive(Clone, Debug)]
pub struct OwnKeys {
    pub day: i64,
    pub daily_key: DailyKey,
    pub tek: Tek,
}

/// An imported case list, without its (sealed) contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseListInfo {
    pub id: i64,
    /// HMAC-SHA256 of the content under a key derived from the master key, hex.
    pub content_hash: String,
    pub format: String,
    pub entries: u64,
    pub imported_day: i64,
}

/// One stored exposure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exposure {
    pub id: i64,
    pub day: i64,
    pub key_hash: String,
    pub json: Vec<u8>,
}

/// All stored exposures.
#[derive(Clone, Debug, Default)]
pub struct Exposures {
    pub exposures: Vec<Exposure>,
    /// Sealed rows that failed to open (logged and skipped).
    pub corrupt: usize,
}

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
}

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

/// The current UTC day from the system clock.
pub fn today() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    utc_day(now)
}

impl Store {
    /// `bluezoned init`: creates the data directory (mode 0700), the master key file (mode 0600,
    /// unless the key comes from `$CREDENTIALS_DIRECTORY`) and the store, whichever is missing.
    /// With everything in place it only checks the key against the store and changes nothing.
    pub fn init(data_dir: &Path) -> Result<(Store, InitReport), StoreError> {
        Self::init_at(data_dir, KeyLocation::from_env(data_dir))
    }

    /// [`Store::init`] with an explicit key location.
    pub fn init_at(data_dir: &Path, key: KeyLocation) -> Result<(Store, InitReport), StoreError> {
        let created_dir = !data_dir.exists();
        if created_dir {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(data_dir)
                .map_err(|source| StoreError::Io {
                    context: "creating data directory",
                    path: data_dir.to_path_buf(),
                    source,
                })?;
            if let Some(parent) = data_dir.parent() {
                sync_dir(parent)?;
            }
        }
        let db = data_dir.join(DB_FILE);
        // A file that is not a store is reported before anything (a key file) is created.
        check_header(&db, true)?;
        let mut created_key = false;
        let master = if key.source == KeySource::File && !key.path.exists() {
            if fs::metadata(&db).map(|m| m.len() > 0).unwrap_or(false) {
                return Err(StoreError::KeyIo {
                    path: key.path.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!(
                            "missing, but store {} exists: refusing to create a new key that \
                             could not open it (restore the key file)",
                            db.display()
                        ),
                    ),
                });
            }
            created_key = true;
            MasterKey::create_file(&key.path)?
        } else {
            MasterKey::read_file(&key.path)?
        };
        let (store, created_store) = Self::open_db(&db, &master, key, true)?;
        Ok((
            store,
            InitReport {
                created_dir,
                created_key,
                created_store,
            },
        ))
    }

    /// Opens the existing store in `data_dir` with the key from `$CREDENTIALS_DIRECTORY` or the
    /// data directory. Never creates anything.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        Self::open_at(data_dir, KeyLocation::from_env(data_dir))
    }

    /// [`Store::open`] with an explicit key location.
    pub fn open_at(data_dir: &Path, key: KeyLocation) -> Result<Store, StoreError> {
        let db = data_dir.join(DB_FILE);
        if !db.exists() {
            return Err(StoreError::NotInitialised {
                what: "store",
                path: db,
            });
        }
        check_header(&db, false)?;
        if key.source == KeySource::File && !key.path.exists() {
            return Err(StoreError::NotInitialised {
                what: "master key file",
                path: key.path,
            });
        }
        let master = MasterKey::read_file(&key.path)?;
        Ok(Self::open_db(&db, &master, key, false)?.0)
    }

    /// Opens (or with `create`, creates) the database file `db` under `master`. Returns the store
    /// and whether it was created. Nothing is written before the key has been checked, and a
    /// file that is not a bluezoned store is never modified.
    pub fn open_db(
        db: &Path,
        master: &MasterKey,
        key: KeyLocation,
        create: bool,
    ) -> Result<(Store, bool), StoreError> {
        let sql = |context| move |e| StoreError::sql(db, context, e);
        check_header(db, create)?;
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let mut conn = Connection::open_with_flags(db, flags).map_err(sql("opening"))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(sql("setting busy timeout"))?;
        let keys = DerivedKeys::new(master);
        let version = schema::user_version(&conn).map_err(sql("reading schema version"))?;
        let created = if version > 0 {
            let app = schema::application_id(&conn).map_err(sql("reading application id"))?;
            if app != APPLICATION_ID {
                return Err(StoreError::NotAStore {
                    path: db.to_path_buf(),
                    reason: format!(
                        "an SQLite database of another application (application_id {app:#x})"
                    ),
                });
            }
            if version > CURRENT_VERSION {
                return Err(StoreError::SchemaTooNew {
                    path: db.to_path_buf(),
                    found: version,
                    supported: CURRENT_VERSION,
                });
            }
            let stored: Option<Vec<u8>> = conn
                .query_row("SELECT value FROM meta WHERE key = 'key_check'", [], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(sql("reading the key check value (meta.key_check)"))?;
            if !stored.is_some_and(|v| keys.check_matches(&v)) {
                return Err(StoreError::WrongKey {
                    path: db.to_path_buf(),
                    key_source: key.describe(),
                });
            }
            configure(db, &conn)?;
            schema::migrate(&mut conn, version, None).map_err(sql("migrating the schema"))?;
            false
        } else {
            let objects: i64 = conn
                .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
                .map_err(sql("reading the schema"))?;
            if objects > 0 {
                return Err(StoreError::NotAStore {
                    path: db.to_path_buf(),
                    reason:
                        "an SQLite database of another application (tables, no bluezoned schema)"
                            .into(),
                });
            }
            if !create {
                return Err(StoreError::NotInitialised {
                    what: "store",
                    path: db.to_path_buf(),
                });
            }
            configure(db, &conn)?;
            let check = keys.check;
            let put_check = move |tx: &Transaction<'_>| {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('key_check', ?1)",
                    [&check[..]],
                )
                .map(|_| ())
            };
            schema::migrate(&mut conn, 0, Some(&put_check)).map_err(sql("creating the schema"))?;
            if let Some(dir) = db.parent() {
                sync_dir(dir)?;
            }
            true
        };
        Ok((
            Store {
                conn,
                path: db.to_path_buf(),
                keys,
                key,
            },
            created,
        ))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn key_source(&self) -> KeySource {
        self.key.source
    }

    /// The master key file in use.
    pub fn key_path(&self) -> &Path {
        &self.key.path
    }

    fn sql(&self, context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |e| StoreError::sql(&self.path, context, e)
    }

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
        let path: &Path = &self.path;
        let sql = |context| move |e| StoreError::sql(path, context, e);
        let keys = &self.keys;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("starting a write transaction"))?;
        let mut id: i64 = tx
            .query_row("SELECT COALESCE(MAX(id), 0) FROM sightings", [], |r| {
                r.get(0)
            })
            .map_err(sql("reading the last sightings chunk id"))?;
        let mut plain = Zeroizing::new(Vec::new());
        {
            let mut insert = tx
                .prepare_cached("INSERT INTO sightings (id, day, blob) VALUES (?1, ?2, ?3)")
                .map_err(sql("preparing sightings insert"))?;
            for (day, list) in &by_day {
                let key = day_key_for_write(&tx, path, keys, *day)?;
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
        }
        plain.zeroize();
        tx.commit().map_err(sql("committing sightings"))
    }

    /// Calls `f(day, sightings)` for each chunk of days `first_day..=last_day` that opens, in
    /// order of day then insertion; returns the number of chunks that did not (each logged
    /// without contents).
    pub fn for_each_chunk(
        &self,
        first_day: i64,
        last_day: i64,
        mut f: impl FnMut(i64, &[Sighting]),
    ) -> Result<usize, StoreError> {
        let sql = self.sql("reading sightings");
        // One read transaction: the day keys and the chunks come from the same snapshot.
        let tx = self.conn.unchecked_transaction().map_err(&sql)?;
        let day_keys = load_day_keys(&tx, &self.keys, first_day, last_day).map_err(&sql)?;
        let mut stmt = tx
            .prepare_cached(
                "SELECT id, day, blob FROM sightings WHERE day BETWEEN ?1 AND ?2 ORDER BY day, id",
            )
            .map_err(&sql)?;
        let mut rows = stmt.query([first_day, last_day]).map_err(&sql)?;
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

    /// The device's own Bluezone daily key and GAEN TEK for `day`: the stored ones, or fresh
    /// random ones (drawn from `rng`) that are stored before they are returned.
    pub fn own_keys_for_day<R: RngCore + CryptoRng>(
        &mut self,
        day: i64,
        rng: &mut R,
    ) -> Result<(DailyKey, Tek), StoreError> {
        self.put_own_keys(day, rng, false)
    }

    /// Replaces the own keys of `day` with fresh random ones (e.g. after a user asks for a new
    /// identity). The old sealed keys are overwritten (`secure_delete`) and the WAL truncated.
    pub fn rotate_own_keys<R: RngCore + CryptoRng>(
        &mut self,
        day: i64,
        rng: &mut R,
    ) -> Result<(DailyKey, Tek), StoreError> {
        let k = self.put_own_keys(day, rng, true)?;
        self.checkpoint_truncate()?;
        Ok(k)
    }

    /// Stores fresh random own keys for `day`, in one transaction with the check for existing
    /// ones (kept unless `replace`).
    fn put_own_keys<R: RngCore + CryptoRng>(
        &mut self,
        day: i64,
        rng: &mut R,
        replace: bool,
    ) -> Result<(DailyKey, Tek), StoreError> {
        let path: &Path = &self.path;
        let keys = &self.keys;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| StoreError::sql(path, "starting a write transaction", e))?;
        if !replace {
            if let Some(k) = read_own_keys(&tx, path, keys, day)? {
                return Ok(k);
            }
        }
        let daily = DailyKey::random(rng);
        let tek = Tek::random(rng);
        write_own_keys(&tx, path, keys, day, &daily, &tek)?;
        tx.commit()
            .map_err(|e| StoreError::sql(path, "committing own keys", e))?;
        Ok((daily, tek))
    }

    /// The own keys stored for days in `days`, ascending. A stored key that fails to open is an
    /// error ([`StoreError::Corrupt`]): it cannot be replaced silently, since peers logged it.
    pub fn own_keys_in_days(&self, days: RangeInclusive<i64>) -> Result<Vec<OwnKeys>, StoreError> {
        let sql = self.sql("reading own keys");
        let tx = self.conn.unchecked_transaction().map_err(&sql)?;
        let list: Vec<i64> = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT DISTINCT day FROM own_keys WHERE day BETWEEN ?1 AND ?2 ORDER BY day",
                )
                .map_err(&sql)?;
            let v = stmt
                .query_map([days.start(), days.end()], |r| r.get(0))
                .map_err(&sql)?
                .collect::<Result<_, _>>()
                .map_err(&sql)?;
            v
        };
        let mut out = Vec::with_capacity(list.len());
        for day in list {
            if let Some((daily_key, tek)) = read_own_keys(&tx, &self.path, &self.keys, day)? {
                out.push(OwnKeys {
                    day,
                    daily_key,
                    tek,
                });
            }
        }
        Ok(out)
    }

    /// Stores a case list (sealed under the day key of today), unless one with the same content
    /// is stored already. Returns its id and whether it was inserted now.
    pub fn insert_case_list(
        &mut self,
        format: &str,
        entries: u64,
        bytes: &[u8],
    ) -> Result<(i64, bool), StoreError> {
        self.insert_case_list_on_day(today(), format, entries, bytes)
    }

    /// [`Store::insert_case_list`] with an explicit import day (tests, replays).
    pub fn insert_case_list_on_day(
        &mut self,
        day: i64,
        format: &str,
        entries: u64,
        bytes: &[u8],
    ) -> Result<(i64, bool), StoreError> {
        let entries = i64::try_from(entries).map_err(|_| StoreError::InvalidInput {
            field: "case list entries",
            problem: format!("{entries} is above {}", i64::MAX),
        })?;
        let hash = self.keys.case_list_hash(bytes);
        let path: &Path = &self.path;
        let sql = |context| move |e| StoreError::sql(path, context, e);
        let keys = &self.keys;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("starting a write transaction"))?;
        let existing: Option<i64> = tx
            .query_row(
                "SELECT id FROM case_lists WHERE content_hash = ?1",
                [&hash],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql("looking up case list"))?;
        if let Some(id) = existing {
            return Ok((id, false));
        }
        let key = day_key_for_write(&tx, path, keys, day)?;
        let blob = key.seal(&Ad::case_list(day, &hash, format, entries), bytes);
        tx.execute(
            "INSERT INTO case_lists (content_hash, format, entries, imported_day, blob) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![hash, format, entries, day, blob],
        )
        .map_err(sql("writing case list"))?;
        let id = tx.last_insert_rowid();
        tx.commit().map_err(sql("committing case list"))?;
        Ok((id, true))
    }

    /// The imported case lists, by id.
    pub fn case_lists(&self) -> Result<Vec<CaseListInfo>, StoreError> {
        let sql = self.sql("listing case lists");
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, content_hash, format, entries, imported_day FROM case_lists ORDER BY id",
            )
            .map_err(&sql)?;
        let v = stmt
            .query_map([], |r| {
                Ok(CaseListInfo {
                    id: r.get(0)?,
                    content_hash: r.get(1)?,
                    format: r.get(2)?,
                    entries: r.get::<_, i64>(3)?.max(0) as u64,
                    imported_day: r.get(4)?,
                })
            })
            .map_err(&sql)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(&sql)?;
        Ok(v)
    }

    /// The content of case list `id`.
    pub fn case_list_bytes(&self, id: i64) -> Result<Vec<u8>, StoreError> {
        let sql = self.sql("reading case list");
        let tx = self.conn.unchecked_transaction().map_err(&sql)?;
        let row: Option<(String, String, i64, i64, Vec<u8>)> = tx
            .query_row(
                "SELECT content_hash, format, entries, imported_day, blob FROM case_lists WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()
            .map_err(&sql)?;
        let Some((hash, format, entries, day, blob)) = row else {
            return Err(StoreError::NotFound {
                path: self.path.clone(),
                table: "case_lists",
                row: format!("id {id}"),
            });
        };
        let corrupt = || StoreError::Corrupt {
            path: self.path.clone(),
            table: "case_lists",
            day,
            row: format!("id {id}"),
        };
        let key = day_key_for_read(&tx, &self.keys, day)
            .map_err(&sql)?
            .ok_or_else(corrupt)?;
        let plain = key
            .open(&Ad::case_list(day, &hash, &format, entries), &blob)
            .ok_or_else(corrupt)?;
        Ok(plain.to_vec())
    }

    /// Stores (or replaces) the exposure for one case key, sealed under the day key of `day`.
    /// Returns true if it is new.
    pub fn upsert_exposure(
        &mut self,
        day: i64,
        case_key_hash: &str,
        json: &[u8],
    ) -> Result<bool, StoreError> {
        let path: &Path = &self.path;
        let sql = |context| move |e| StoreError::sql(path, context, e);
        let keys = &self.keys;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("starting a write transaction"))?;
        let existed = tx
            .query_row(
                "SELECT 1 FROM exposures WHERE key_hash = ?1",
                [case_key_hash],
                |_| Ok(()),
            )
            .optional()
            .map_err(sql("looking up exposure"))?
            .is_some();
        let key = day_key_for_write(&tx, path, keys, day)?;
        let blob = key.seal(&Ad::exposure(day, case_key_hash), json);
        tx.execute(
            "INSERT INTO exposures (day, key_hash, blob) VALUES (?1, ?2, ?3) \
             ON CONFLICT (key_hash) DO UPDATE SET day = excluded.day, blob = excluded.blob",
            params![day, case_key_hash, blob],
        )
        .map_err(sql("writing exposure"))?;
        tx.commit().map_err(sql("committing exposure"))?;
        Ok(!existed)
    }

    /// Every stored exposure, by id; rows that fail to open are counted and skipped.
    pub fn exposures(&self) -> Result<Exposures, StoreError> {
        let sql = self.sql("reading exposures");
        let tx = self.conn.unchecked_transaction().map_err(&sql)?;
        let day_keys = load_day_keys(&tx, &self.keys, i64::MIN, i64::MAX).map_err(&sql)?;
        let mut stmt = tx
            .prepare_cached("SELECT id, day, key_hash, blob FROM exposures ORDER BY id")
            .map_err(&sql)?;
        let mut rows = stmt.query([]).map_err(&sql)?;
        let mut out = Exposures::default();
        while let Some(row) = rows.next().map_err(&sql)? {
            let id: i64 = row.get(0).map_err(&sql)?;
            let day: i64 = row.get(1).map_err(&sql)?;
            let key_hash: String = row.get(2).map_err(&sql)?;
            let blob = row.get_ref(3).map_err(&sql)?.as_blob().ok();
            let plain = match (day_keys.get(&day), blob) {
                (Some(Some(k)), Some(b)) => k.open(&Ad::exposure(day, &key_hash), b),
                _ => None,
            };
            match plain {
                Some(p) => out.exposures.push(Exposure {
                    id,
                    day,
                    key_hash,
                    json: p.to_vec(),
                }),
                None => {
                    out.corrupt += 1;
                    tracing::warn!(store = %self.path.display(), table = "exposures", day, id,
                        "sealed exposure failed to open; skipped");
                }
            }
        }
        Ok(out)
    }

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
        let path: &Path = &self.path;
        let sql = |context| move |e| StoreError::sql(path, context, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("starting a write transaction"))?;
        let del = |table_sql: &str| {
            tx.execute(table_sql, [cutoff])
                .map_err(sql("purging old rows"))
        };
        let report = PurgeReport {
            cutoff_day: cutoff,
            sightings_chunks: del("DELETE FROM sightings WHERE day < ?1")?,
            own_keys: del("DELETE FROM own_keys WHERE day < ?1")?,
            case_lists: del("DELETE FROM case_lists WHERE imported_day < ?1")?,
            exposures: del("DELETE FROM exposures WHERE day < ?1")?,
            day_keys: del("DELETE FROM day_keys WHERE day < ?1")?,
            wal_truncated: false,
        };
        tx.commit().map_err(sql("committing purge"))?;
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

    #[cfg(test)]
    pub(crate) fn conn_for_tests(&self) -> &Connection {
        &self.conn
    }

    /// Limits the database to `pages` pages (SQLite `max_page_count`, this connection only), so
    /// that a full disk can be simulated without root.
    #[doc(hidden)]
    pub fn set_max_page_count(&self, pages: u32) -> Result<(), StoreError> {
        self.conn
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .map_err(self.sql("setting max_page_count"))
    }
}

/// Refuses, before SQLite touches it, a file that does not start with the SQLite header. An empty
/// or missing file is fine (a store not created yet).
fn check_header(db: &Path, create: bool) -> Result<(), StoreError> {
    let not_store = |reason: &str| StoreError::NotAStore {
        path: db.to_path_buf(),
        reason: reason.to_string(),
    };
    let io = |source| StoreError::Io {
        context: "reading",
        path: db.to_path_buf(),
        source,
    };
    let meta = match fs::metadata(db) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return if create {
                Ok(())
            } else {
                Err(StoreError::NotInitialised {
                    what: "store",
                    path: db.to_path_buf(),
                })
            };
        }
        Err(e) => return Err(io(e)),
    };
    if !meta.is_file() {
        return Err(not_store("not a regular file"));
    }
    if meta.len() == 0 {
        return Ok(());
    }
    let mut header = [0u8; 16];
    let mut f = fs::File::open(db).map_err(io)?;
    match f.read_exact(&mut header) {
        Ok(()) if &header == SQLITE_HEADER => Ok(()),
        Ok(()) => Err(not_store("not an SQLite database (no SQLite header)")),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(not_store(
            "not an SQLite database (shorter than an SQLite header)",
        )),
        Err(e) => Err(io(e)),
    }
}

/// Per-connection settings. Runs only after the key check.
fn configure(db: &Path, conn: &Connection) -> Result<(), StoreError> {
    let sql = |context| move |e| StoreError::sql(db, context, e);
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(sql("enabling WAL"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unsupported {
            path: db.to_path_buf(),
            what: format!(
                "WAL journal mode not available (got {mode}); is it on a network file system?"
            ),
        });
    }
    // synchronous=FULL, not NORMAL: in WAL mode NORMAL syncs only at checkpoints, so a commit
    // that has returned can still be lost on power failure (it is safe only against a process
    // crash). FULL fsyncs the WAL at every commit, so when `insert_sightings` returns, the batch
    // is on disk. The cost is one fsync per commit, so callers batch (the scanner flushes
    // its sightings as one batch, e.g. every second). Measured with `cargo bench --bench store`
    // on the 2-core CI VM, whose fsync takes 0.2-3 ms depending on host load: a batch of 100
    // takes 0.2-3 ms with FULL against 0.08 ms with NORMAL, i.e. 33k-460k sightings/s, far above
    // the 1,000/s of a busy entrance; one sighting per commit is bound by fsync (400-2,000/s).
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sql("setting synchronous=FULL"))?;
    // Deleted rows (purge, key rotation) are overwritten with zeros, not just unlinked.
    conn.pragma_update(None, "secure_delete", "ON")
        .map_err(sql("setting secure_delete"))?;
    Ok(())
}

/// The day key of `day` for writing, created (and stored, in the caller's transaction) if absent.
fn day_key_for_write(
    tx: &Transaction<'_>,
    path: &Path,
    keys: &DerivedKeys,
    day: i64,
) -> Result<DayKey, StoreError> {
    let sql = |context| move |e| StoreError::sql(path, context, e);
    let wrapped: Option<Vec<u8>> = tx
        .query_row("SELECT wrapped FROM day_keys WHERE day = ?1", [day], |r| {
            r.get(0)
        })
        .optional()
        .map_err(sql("reading day key"))?;
    match wrapped {
        Some(w) => keys.unwrap_day_key(day, &w).ok_or(StoreError::Corrupt {
            path: path.to_path_buf(),
            table: "day_keys",
            day,
            row: "wrapped day key".into(),
        }),
        None => {
            let (key, wrapped) = keys.new_day_key(day);
            tx.execute(
                "INSERT INTO day_keys (day, wrapped) VALUES (?1, ?2)",
                params![day, wrapped],
            )
            .map_err(sql("writing day key"))?;
            Ok(key)
        }
    }
}

/// The day key of `day`, if stored; `Ok(None)` if missing or failing to open (logged).
fn day_key_for_read(
    conn: &Connection,
    keys: &DerivedKeys,
    day: i64,
) -> rusqlite::Result<Option<DayKey>> {
    let wrapped: Option<Vec<u8>> = conn
        .query_row("SELECT wrapped FROM day_keys WHERE day = ?1", [day], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(wrapped.and_then(|w| {
        let k = keys.unwrap_day_key(day, &w);
        if k.is_none() {
            tracing::warn!(table = "day_keys", day, "wrapped day key failed to open");
        }
        k
    }))
}

/// The day keys of a range: `None` for one that fails to open (logged).
fn load_day_keys(
    conn: &Connection,
    keys: &DerivedKeys,
    first: i64,
    last: i64,
) -> rusqlite::Result<HashMap<i64, Option<DayKey>>> {
    let mut stmt =
        conn.prepare_cached("SELECT day, wrapped FROM day_keys WHERE day BETWEEN ?1 AND ?2")?;
    let mut rows = stmt.query([first, last])?;
    let mut out = HashMap::new();
    while let Some(r) = rows.next()? {
        let day: i64 = r.get(0)?;
        let k = r
            .get_ref(1)?
            .as_blob()
            .ok()
            .and_then(|w| keys.unwrap_day_key(day, w));
        if k.is_none() {
            tracing::warn!(table = "day_keys", day, "wrapped day key failed to open");
        }
        out.insert(day, k);
    }
    Ok(out)
}

fn read_own_keys(
    conn: &Connection,
    path: &Path,
    keys: &DerivedKeys,
    day: i64,
) -> Result<Option<(DailyKey, Tek)>, StoreError> {
    let sql = |e| StoreError::sql(path, "reading own keys", e);
    let rows: Vec<(String, Vec<u8>)> = {
        let mut stmt = conn
            .prepare_cached("SELECT protocol, blob FROM own_keys WHERE day = ?1")
            .map_err(sql)?;
        let v = stmt
            .query_map([day], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(sql)?
            .collect::<Result<_, _>>()
            .map_err(sql)?;
        v
    };
    if rows.is_empty() {
        return Ok(None);
    }
    let corrupt = |row: &str| StoreError::Corrupt {
        path: path.to_path_buf(),
        table: "own_keys",
        day,
        row: row.to_string(),
    };
    let key = day_key_for_read(conn, keys, day)
        .map_err(sql)?
        .ok_or_else(|| corrupt("day key missing or corrupt"))?;
    let open = |proto: &str| -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let blob = rows
            .iter()
            .find(|(p, _)| p == proto)
            .map(|(_, b)| b)
            .ok_or_else(|| corrupt(&format!("protocol {proto} missing")))?;
        key.open(&Ad::own_key(day, proto), blob)
            .ok_or_else(|| corrupt(&format!("protocol {proto}")))
    };
    let daily = open(PROTO_BLUEZONE)?;
    let tek = open(PROTO_GAEN)?;
    let mut d = <[u8; DailyKey::LEN]>::try_from(daily.as_slice())
        .map_err(|_| corrupt("protocol bluezone: wrong length"))?;
    let mut t = <[u8; Tek::LEN]>::try_from(tek.as_slice())
        .map_err(|_| corrupt("protocol gaen: wrong length"))?;
    let out = (DailyKey::from_bytes(d), Tek::from_bytes(t));
    d.zeroize();
    t.zeroize();
    Ok(Some(out))
}

fn write_own_keys(
    tx: &Transaction<'_>,
    path: &Path,
    keys: &DerivedKeys,
    day: i64,
    daily: &DailyKey,
    tek: &Tek,
) -> Result<(), StoreError> {
    let key = day_key_for_write(tx, path, keys, day)?;
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO own_keys (day, protocol, blob) VALUES (?1, ?2, ?3) \
             ON CONFLICT (day, protocol) DO UPDATE SET blob = excluded.blob",
        )
        .map_err(|e| StoreError::sql(path, "preparing own keys write", e))?;
    for (proto, bytes) in [
        (PROTO_BLUEZONE, &daily.as_bytes()[..]),
        (PROTO_GAEN, &tek.as_bytes()[..]),
    ] {
        let blob = key.seal(&Ad::own_key(day, proto), bytes);
        stmt.execute(params![day, proto, blob])
            .map_err(|e| StoreError::sql(path, "writing own keys", e))?;
    }
    Ok(())
}
