//! Opening a store file safely: the data directory, the master key, the SQLite header check,
//! the key check, per-connection settings and schema migrations. Nothing is written before the
//! key has been checked, and a file that is not a bluezoned store is never modified.

use std::cell::RefCell;
use std::fmt;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior};

use super::error::StoreError;
use super::keys::DerivedKeys;
use super::master_key::{sync_dir, KeyLocation, KeySource, MasterKey};
use super::ratchet::{self, Ratchet, RATCHET_VERSION};
use super::schema::{self, APPLICATION_ID, CURRENT_VERSION};

/// File name of the database inside the data directory (`-wal` and `-shm` files sit beside it).
pub const DB_FILE: &str = "store.sqlite3";

const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// The encrypted encounter store. See the [module docs](super) for the layout.
pub struct Store {
    pub(super) conn: Connection,
    pub(super) path: PathBuf,
    pub(super) keys: DerivedKeys,
    pub(super) key: KeyLocation,
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
                    error: source,
                })?;
            if let Some(parent) = data_dir.parent() {
                sync_dir(parent)?;
            }
        }
        secure_data_dir(data_dir)?;
        let db = data_dir.join(DB_FILE);
        // A file that is not a store is reported before anything (a key file) is created.
        check_header(&db, true)?;
        let mut created_key = false;
        let master = if key.source == KeySource::File && !key.path.exists() {
            if fs::metadata(&db).map(|m| m.len() > 0).unwrap_or(false) {
                return Err(StoreError::KeyIo {
                    path: key.path.clone(),
                    error: std::io::Error::new(
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
            MasterKey::read_location(&key)?
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
        secure_data_dir(data_dir)?;
        if key.source == KeySource::File && !key.path.exists() {
            return Err(StoreError::NotInitialised {
                what: "master key file",
                path: key.path,
            });
        }
        let master = MasterKey::read_location(&key)?;
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
            // Created here 0600 rather than by SQLite (0644 less the umask); SQLite then gives
            // the -wal and -shm files the database file's mode.
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(db)
            {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(source) => {
                    return Err(StoreError::Io {
                        context: "creating",
                        path: db.to_path_buf(),
                        error: source,
                    })
                }
            }
        }
        restrict_store_files(db)?;
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
            // From v5 the ratchet file must fit the store (checked before anything is written);
            // before, the v5 migration creates it and re-wraps under it.
            if version >= RATCHET_VERSION {
                install_ratchet(&mut conn, db, &keys, master, None)?;
            }
            let created = RefCell::new(None);
            schema::migrate(&mut conn, db, version, None, &|v, tx| {
                migration_step(db, &keys, master, &created, v, tx)
            })?;
            if version < RATCHET_VERSION {
                install_ratchet(&mut conn, db, &keys, master, created.into_inner())?;
            }
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
            let put_check = move |_: i64, tx: &Transaction<'_>| {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('key_check', ?1)",
                    [&check[..]],
                )
                .map(|_| ())
                .map_err(sql("storing the key check value"))
            };
            let created = RefCell::new(None);
            schema::migrate(&mut conn, db, 0, Some(&put_check), &|v, tx| {
                migration_step(db, &keys, master, &created, v, tx)
            })?;
            install_ratchet(&mut conn, db, &keys, master, created.into_inner())?;
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

    pub(super) fn sql(&self, context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |e| StoreError::sql(&self.path, context, e)
    }

    /// Runs `f` in one `IMMEDIATE` write transaction (taken at once, so two writers never
    /// deadlock upgrading a read lock), committed if `f` returns `Ok`, rolled back otherwise.
    pub(super) fn write_tx<T>(
        &mut self,
        f: impl FnOnce(&Transaction<'_>, &Path, &DerivedKeys) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let Store {
            conn, path, keys, ..
        } = self;
        let path: &Path = path;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| StoreError::sql(path, "starting a write transaction", e))?;
        let out = f(&tx, path, keys)?;
        tx.commit()
            .map_err(|e| StoreError::sql(path, "committing", e))?;
        Ok(out)
    }

    #[cfg(test)]
    pub(crate) fn conn_for_tests(&self) -> &Connection {
        &self.conn
    }

    /// SQLite's `PRAGMA data_version`: changes whenever another connection (e.g. `cases import`
    /// in another process) commits to this database; writes through this connection leave it
    /// unchanged. A cheap "did anyone else write?" check for pollers.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        self.conn
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(self.sql("reading data_version"))
    }

    /// Makes this connection the only one that may use the database from now on (SQLite
    /// `locking_mode=EXCLUSIVE`): its file locks are taken once and kept, so transactions no
    /// longer lock and unlock the files. Other processes (`cases import`, `keys export`) then
    /// get "database is locked": only for stores nothing else opens, like the simulated
    /// devices of `demo`. Takes effect at the next transaction.
    pub fn set_exclusive_locking(&self) -> Result<(), StoreError> {
        self.conn
            .pragma_update(None, "locking_mode", "EXCLUSIVE")
            .map_err(self.sql("setting locking_mode"))
    }

    /// Caps this connection's page cache at about `kib` KiB (SQLite `cache_size`, default about
    /// 2 MiB). Only memory changes: pages beyond it are read again from the file system's cache.
    /// Simulations running thousands of stores in one process use a small one.
    pub fn set_cache_kib(&self, kib: u32) -> Result<(), StoreError> {
        self.conn
            .pragma_update(None, "cache_size", -i64::from(kib.max(1)))
            .map_err(self.sql("setting cache_size"))
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
        error: source,
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

/// The part of a migration that needs the keys (runs in the migration's transaction).
fn migration_step(
    db: &Path,
    keys: &DerivedKeys,
    master: &MasterKey,
    created: &RefCell<Option<Ratchet>>,
    new_version: i64,
    tx: &Transaction<'_>,
) -> Result<(), StoreError> {
    match new_version {
        RATCHET_VERSION => {
            // Under this migration's write lock, with the store still at v4 (re-checked by
            // `schema::migrate`): nothing committed uses a file found here, which an
            // interrupted migration left, so it is replaced.
            let r = Ratchet::create(&ratchet::ratchet_path(db), master)?;
            let wrap = keys.epoch_wrap(r.epoch(), r.key());
            ratchet::rewrap_all(tx, db, keys, &wrap, r.epoch())?;
            *created.borrow_mut() = Some(r);
            Ok(())
        }
        2 => super::exposures::migrate_v1_key_hashes(tx, db, keys),
        3 => super::sightings::fill_day_counts(tx, db, keys),
        4 => super::case_lists::fill_compact(tx, db, keys),
        _ => Ok(()),
    }
}

/// Makes the ratchet current: `created` by this open's v5 migration, or else read from the file
/// at the store's epoch, under the write lock (so that tidying the file never races a step of
/// another process). Writes nothing to the database.
fn install_ratchet(
    conn: &mut Connection,
    db: &Path,
    keys: &DerivedKeys,
    master: &MasterKey,
    created: Option<Ratchet>,
) -> Result<(), StoreError> {
    if let Some(r) = created {
        keys.install(r);
        return Ok(());
    }
    let sql = |context| move |e| StoreError::sql(db, context, e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("starting a transaction"))?;
    let epoch = ratchet::db_epoch(&tx, db)?;
    let r = Ratchet::load(&ratchet::ratchet_path(db), master, epoch)?;
    tx.commit().map_err(sql("ending a transaction"))?;
    keys.install(r);
    Ok(())
}

/// Makes the data directory 0700 (a pre-existing directory keeps whatever mode it was made
/// with, e.g. 0755 from `mkdir` or `StateDirectoryMode=`). Refused, with the fix, if it grants
/// access to others and belongs to another user.
fn secure_data_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::MetadataExt;
    let io = |context, source| StoreError::Io {
        context,
        path: dir.to_path_buf(),
        error: source,
    };
    let meta = fs::metadata(dir).map_err(|e| io("reading data directory", e))?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if meta.uid() != uid && uid != 0 {
        return Err(StoreError::DataDirPermissions {
            path: dir.to_path_buf(),
            mode,
            owner: meta.uid(),
            uid,
        });
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| io("setting mode 0700 on data directory", e))?;
    tracing::warn!(dir = %dir.display(), old_mode = format!("{mode:04o}"),
        "data directory was accessible by group or others; set to 0700");
    Ok(())
}

/// Sets the database, `-wal` and `-shm` files that exist to 0600 (files of an older version, or
/// created under a looser umask, are fixed on every open).
fn restrict_store_files(db: &Path) -> Result<(), StoreError> {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        let p = PathBuf::from(p);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o077 != 0 => {
                fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).map_err(|source| {
                    StoreError::Io {
                        context: "setting mode 0600 on",
                        path: p.clone(),
                        error: source,
                    }
                })?;
            }
            _ => {}
        }
    }
    Ok(())
}
