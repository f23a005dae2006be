//! The forward-ratcheting wrap key (schema v5, finding L8): the epoch key file `wrap-ratchet`
//! in the data directory, the epoch step (`K_{e+1} = HMAC(K_e, "next")`, every day key re-wrapped
//! in one transaction) and its crash recovery. The design and the crash argument are in
//! [`super::keys`]'s header.
//!
//! File layout (fixed size, 0600): two slots, at byte 0 and byte 4096, each either all zeros
//! (empty) or `seal(file key, epoch (u64 BE) ‖ K_epoch)` (68 bytes). The file key is
//! HMAC(master, "wrap-ratchet-file"), so the file alone is useless. A step only ever writes the
//! slot that the store does not currently need, in place, then fsyncs.

use std::fmt;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::KeyInit;
use aes_gcm::Aes256Gcm;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::error::StoreError;
use super::keys::{self, Ad, DerivedKeys, SEAL_OVERHEAD};
use super::master_key::{sync_dir, MasterKey, KEY_LEN};

/// File name of the wrap ratchet, beside the database.
pub const RATCHET_FILE: &str = "wrap-ratchet";
/// The schema version from which day keys are wrapped under the ratchet.
pub(crate) const RATCHET_VERSION: i64 = 5;

const SLOT_PLAIN: usize = 8 + KEY_LEN;
pub(crate) const SLOT_LEN: usize = SLOT_PLAIN + SEAL_OVERHEAD;
/// Slots sit in different 4 KiB blocks, so a torn write of one cannot touch the other.
pub(crate) const SLOT_STRIDE: u64 = 4096;
const SLOTS: usize = 2;
const FILE_LEN: u64 = SLOT_STRIDE + SLOT_LEN as u64;
/// Most epochs derived forward at open (a ratchet file restored from a backup older than the
/// store); a store steps about once a day, so this is centuries.
const MAX_FORWARD: u64 = 1 << 20;

type HmacSha256 = Hmac<Sha256>;

/// The ratchet file next to database `db`.
pub(crate) fn ratchet_path(db: &Path) -> PathBuf {
    db.parent().unwrap_or(Path::new("")).join(RATCHET_FILE)
}

/// The current epoch and its key, and which slot of the file holds them. `Debug` is redacted.
pub(crate) struct Ratchet {
    path: PathBuf,
    file_key: Aes256Gcm,
    epoch: u64,
    key: Zeroizing<[u8; KEY_LEN]>,
    slot: usize,
}

impl fmt::Debug for Ratchet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ratchet")
            .field("path", &self.path)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

fn file_key(master: &MasterKey) -> Aes256Gcm {
    Aes256Gcm::new(master.derive("wrap-ratchet-file").as_ref().into())
}

fn slot_ad() -> Ad {
    Ad::new("wrap-ratchet", "slot", 0, &[])
}

/// `K_{e+1} = HMAC-SHA256(K_e, "bluezoned/v1/wrap-ratchet-next")`: one-way.
fn next_key(k: &[u8; KEY_LEN]) -> Zeroizing<[u8; KEY_LEN]> {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(k)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(b"bluezoned/v1/wrap-ratchet-next");
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

fn ratchet_err(path: &Path, problem: impl Into<String>) -> StoreError {
    StoreError::Ratchet {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

impl Ratchet {
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    pub(crate) fn key(&self) -> &[u8; KEY_LEN] {
        &self.key
    }

    /// A new ratchet at epoch 0 with a random key, for a store being created or migrated to v5
    /// (no committed data depends on a file found there, which an interrupted migration left:
    /// it is replaced). Created 0600 with `O_EXCL`, fsynced with its directory.
    pub(crate) fn create(path: &Path, master: &MasterKey) -> Result<Ratchet, StoreError> {
        let io = |context, error| StoreError::Io {
            context,
            path: path.to_path_buf(),
            error,
        };
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("replacing an unused wrap ratchet file", e)),
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        OsRng.fill_bytes(key.as_mut());
        let r = Ratchet {
            path: path.to_path_buf(),
            file_key: file_key(master),
            epoch: 0,
            key,
            slot: 0,
        };
        let mut buf = Zeroizing::new(vec![0u8; FILE_LEN as usize]);
        buf[..SLOT_LEN].copy_from_slice(&r.sealed_slot());
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| io("creating wrap ratchet file", e))?;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(|e| io("setting mode 0600 on wrap ratchet file", e))?;
        file.write_all_at(&buf, 0)
            .and_then(|()| file.sync_all())
            .map_err(|e| io("writing wrap ratchet file", e))?;
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        Ok(r)
    }

    /// Loads the ratchet for a store at epoch `db_epoch`: the slot of that epoch, or one of an
    /// older epoch derived forward (a ratchet file restored from an older backup). Then leaves
    /// the file holding that epoch only (the other slot zeroed): this completes a step that a
    /// crash interrupted.
    pub(crate) fn load(
        path: &Path,
        master: &MasterKey,
        db_epoch: u64,
    ) -> Result<Ratchet, StoreError> {
        Self::load_with(path, file_key(master), db_epoch, true)
    }

    /// [`Ratchet::load`] with the file key; only with `tidy` is the file written (the caller
    /// then holds the store's write lock, so no step of another process is under way).
    pub(crate) fn load_with(
        path: &Path,
        fk: Aes256Gcm,
        db_epoch: u64,
        tidy: bool,
    ) -> Result<Ratchet, StoreError> {
        let mut file =
            match fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ratchet_err(
                    path,
                    "missing: this store's day keys are wrapped under it, so the store cannot be \
                     read without it (restore it from the same backup as the store)",
                )),
                Err(e) => return Err(ratchet_err(path, format!("cannot open: {e}"))),
            };
        let meta = file
            .metadata()
            .map_err(|e| ratchet_err(path, format!("cannot read: {e}")))?;
        let mode = meta.permissions().mode() & 0o7777;
        if !meta.is_file() {
            return Err(ratchet_err(path, "not a regular file"));
        }
        if mode & 0o077 != 0 {
            return Err(ratchet_err(
                path,
                format!(
                    "accessible by group or others (mode {mode:04o}); expected 0600 (fix with \
                     `chmod 600 {}`)",
                    path.display()
                ),
            ));
        }
        if meta.len() != FILE_LEN {
            return Err(ratchet_err(
                path,
                format!("expected {FILE_LEN} bytes, found {}", meta.len()),
            ));
        }
        let mut buf = Zeroizing::new(Vec::with_capacity(FILE_LEN as usize));
        file.read_to_end(&mut buf)
            .map_err(|e| ratchet_err(path, format!("cannot read: {e}")))?;
        let mut found: Vec<(usize, u64, Zeroizing<[u8; KEY_LEN]>)> = Vec::new();
        for slot in 0..SLOTS {
            let at = slot * SLOT_STRIDE as usize;
            let Some(sealed) = buf.get(at..at + SLOT_LEN) else {
                continue;
            };
            let Some(plain) = keys::open(&fk, &slot_ad(), sealed) else {
                continue;
            };
            if plain.len() != SLOT_PLAIN {
                continue;
            }
            let mut epoch = [0u8; 8];
            epoch.copy_from_slice(&plain[..8]);
            let mut key = Zeroizing::new([0u8; KEY_LEN]);
            key.copy_from_slice(&plain[8..]);
            found.push((slot, u64::from_be_bytes(epoch), key));
        }
        let empty_slots: Vec<usize> = (0..SLOTS)
            .filter(|s| {
                let at = s * SLOT_STRIDE as usize;
                buf.get(at..at + SLOT_LEN)
                    .is_some_and(|b| b.iter().all(|&b| b == 0))
            })
            .collect();
        if let Some(i) = found.iter().position(|(_, e, _)| *e == db_epoch) {
            let (slot, epoch, key) = found.swap_remove(i);
            let r = Ratchet {
                path: path.to_path_buf(),
                file_key: fk,
                epoch,
                key,
                slot,
            };
            // The other slot: a next epoch whose commit never happened, or the previous one
            // whose erasure a crash interrupted (or garbage of a torn write). Erase it.
            if tidy && !empty_slots.contains(&r.other()) {
                r.write_slot(r.other(), false)?;
            }
            return Ok(r);
        }
        let Some((slot, epoch, key)) = found
            .into_iter()
            .filter(|(_, e, _)| *e < db_epoch)
            .max_by_key(|(_, e, _)| *e)
        else {
            return Err(ratchet_err(
                path,
                format!(
                    "holds no key for the store's wrap epoch {db_epoch} or an earlier one: the \
                     store is older than the ratchet file (a store restored from a backup older \
                     than this file cannot be read, by design), or the file is corrupt or \
                     sealed under another master key"
                ),
            ));
        };
        if db_epoch - epoch > MAX_FORWARD {
            return Err(ratchet_err(
                path,
                format!("at epoch {epoch}, too far behind the store's wrap epoch {db_epoch}"),
            ));
        }
        let mut key = key;
        for _ in epoch..db_epoch {
            key = next_key(&key);
        }
        tracing::warn!(file = %path.display(), from = epoch, to = db_epoch,
            "wrap ratchet file was behind the store (restored from an older copy?); derived forward");
        // With `tidy`, the derived key goes into the other slot and then the source is zeroed.
        // Without, the file is left as it is and `slot` stays the source's, so that a step
        // writes into the other slot and never over the only key the store's epoch derives from.
        let r = Ratchet {
            path: path.to_path_buf(),
            file_key: fk,
            epoch: db_epoch,
            key,
            slot: if tidy { 1 - slot } else { slot },
        };
        if tidy {
            r.write_slot(r.slot, true)?;
            r.write_slot(r.other(), false)?;
        }
        Ok(r)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn file_key(&self) -> &Aes256Gcm {
        &self.file_key
    }

    fn other(&self) -> usize {
        1 - self.slot
    }

    fn sealed_slot(&self) -> Vec<u8> {
        let mut plain = Zeroizing::new([0u8; SLOT_PLAIN]);
        plain[..8].copy_from_slice(&self.epoch.to_be_bytes());
        plain[8..].copy_from_slice(self.key.as_ref());
        keys::seal(&self.file_key, &slot_ad(), plain.as_ref())
    }

    /// Writes this epoch (`fill`) or zeros into `slot`, in place, and fsyncs the file.
    fn write_slot(&self, slot: usize, fill: bool) -> Result<(), StoreError> {
        let bytes = if fill {
            self.sealed_slot()
        } else {
            vec![0u8; SLOT_LEN]
        };
        fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.path)
            .and_then(|f| {
                f.write_all_at(&bytes, slot as u64 * SLOT_STRIDE)?;
                f.sync_all()
            })
            .map_err(|error| StoreError::Io {
                context: "writing wrap ratchet file",
                path: self.path.clone(),
                error,
            })
    }

    /// Step 1: the next epoch, written (fsynced) into the slot the store does not use.
    fn prepare_next(&self) -> Result<Ratchet, StoreError> {
        let next = Ratchet {
            path: self.path.clone(),
            file_key: self.file_key.clone(),
            epoch: self.epoch + 1,
            key: next_key(&self.key),
            slot: self.other(),
        };
        next.write_slot(next.slot, true)?;
        Ok(next)
    }
}

/// The store's wrap epoch (`meta.wrap_epoch`, schema v5).
pub(crate) fn db_epoch(conn: &Connection, db: &Path) -> Result<u64, StoreError> {
    // Cached: runs before every day-key lookup.
    let v: Option<i64> = conn
        .prepare_cached("SELECT value FROM meta WHERE key = 'wrap_epoch'")
        .and_then(|mut st| st.query_row([], |r| r.get(0)).optional())
        .map_err(|e| StoreError::sql(db, "reading the wrap epoch (meta.wrap_epoch)", e))?;
    v.and_then(|v| u64::try_from(v).ok())
        .ok_or_else(|| StoreError::Corrupt {
            path: db.to_path_buf(),
            table: "meta",
            day: 0,
            row: "wrap_epoch missing or negative".into(),
        })
}

/// Re-wraps every day key under `to` and records `epoch`, in `tx`. A day key that does not open
/// (already unreadable) is left as it is and logged: no row is dropped.
pub(crate) fn rewrap_all(
    tx: &Transaction<'_>,
    db: &Path,
    keys: &DerivedKeys,
    to: &Aes256Gcm,
    epoch: u64,
) -> Result<(), StoreError> {
    let sql = |context| move |e| StoreError::sql(db, context, e);
    let rows: Vec<(i64, Vec<u8>)> = {
        let mut st = tx
            .prepare("SELECT day, wrapped FROM day_keys")
            .map_err(sql("reading day keys"))?;
        let v = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(sql("reading day keys"))?
            .collect::<Result<_, _>>()
            .map_err(sql("reading day keys"))?;
        v
    };
    for (day, wrapped) in rows {
        match keys.rewrap_day_key(to, day, &wrapped) {
            Some(w) => {
                tx.execute(
                    "UPDATE day_keys SET wrapped = ?2 WHERE day = ?1",
                    params![day, w],
                )
                .map_err(sql("re-wrapping day keys"))?;
            }
            None => {
                tracing::warn!(
                    table = "day_keys",
                    day,
                    "wrapped day key failed to open; left as is"
                )
            }
        }
    }
    tx.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('wrap_epoch', ?1)",
        [epoch as i64],
    )
    .map_err(sql("storing the wrap epoch"))?;
    Ok(())
}

/// Where the test hook stops an epoch step, as a `kill -9` would.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CrashPoint {
    /// After the next epoch is in the file and the day keys are re-wrapped, before the commit.
    BeforeCommit,
    /// After the commit, before the old epoch's slot is erased.
    AfterCommit,
}

#[cfg(test)]
thread_local! {
    pub(crate) static CRASH_AT: std::cell::Cell<Option<CrashPoint>> = const { std::cell::Cell::new(None) };
}

#[cfg(test)]
fn crash_hook(point: CrashPoint, db: &Path) -> Result<(), StoreError> {
    if CRASH_AT.with(|c| c.get()) == Some(point) {
        return Err(StoreError::Unsupported {
            path: db.to_path_buf(),
            what: format!("simulated crash at {point:?} (test hook)"),
        });
    }
    Ok(())
}

#[cfg(not(test))]
#[inline]
fn crash_hook(_: CrashPoint, _: &Path) -> Result<(), StoreError> {
    Ok(())
}

/// An epoch step prepared inside a transaction, made current by [`finish_step`] after commit.
pub(crate) struct Step {
    next: Ratchet,
}

/// Steps 1 and 2 of an epoch step, inside the caller's write transaction (so no other process
/// steps or tidies the file meanwhile): `K_{e+1}` into the free slot (fsynced), every day key
/// re-wrapped under it and `meta.wrap_epoch = e + 1`.
pub(crate) fn step_in_tx(
    tx: &Transaction<'_>,
    db: &Path,
    keys: &DerivedKeys,
) -> Result<Step, StoreError> {
    // Another process may have stepped since we last looked.
    keys.sync(tx, db, false)?;
    let next = match keys.wrap().ratchet.as_ref() {
        Some(r) => r.prepare_next()?,
        None => unreachable!("the ratchet is installed when the store opens"),
    };
    let wrap = keys.epoch_wrap(next.epoch, &next.key);
    rewrap_all(tx, db, keys, &wrap, next.epoch)?;
    crash_hook(CrashPoint::BeforeCommit, db)?;
    Ok(Step { next })
}

/// Step 3, after the commit: the new epoch becomes current, then, under the write lock again
/// (so that a step another process made meanwhile is never undone), the old slot is zeroed in
/// place.
pub(crate) fn finish_step(
    conn: &mut Connection,
    db: &Path,
    keys: &DerivedKeys,
    step: Step,
) -> Result<(), StoreError> {
    crash_hook(CrashPoint::AfterCommit, db)?;
    keys.install(step.next);
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| StoreError::sql(db, "starting a write transaction", e))?;
    keys.sync(&tx, db, true)?;
    tx.commit()
        .map_err(|e| StoreError::sql(db, "committing", e))
}

impl super::Store {
    /// Advances the wrap epoch now: every retained day key is re-wrapped under the next epoch
    /// key and the previous epoch key is erased from the ratchet file. [`Store::purge_older_than`]
    /// does this whenever it deletes a day key. Returns the new epoch.
    ///
    /// [`Store::purge_older_than`]: super::Store::purge_older_than
    pub fn advance_wrap_epoch(&mut self) -> Result<u64, StoreError> {
        let step = self.write_tx(step_in_tx)?;
        let super::Store {
            conn, path, keys, ..
        } = self;
        finish_step(conn, path, keys, step)?;
        Ok(self.wrap_epoch())
    }

    /// Turns this store back into what schema v4 wrote (day keys wrapped under the master-derived
    /// key, no `meta.wrap_epoch`, `user_version` 4) and deletes its ratchet file, so that tests
    /// can check the migration of older stores.
    #[doc(hidden)]
    pub fn downgrade_to_v4_for_tests(mut self) -> Result<(), StoreError> {
        let super::Store {
            conn, path, keys, ..
        } = &mut self;
        let path: &Path = path;
        let tx = conn
            .transaction()
            .map_err(|e| StoreError::sql(path, "downgrading", e))?;
        let legacy = keys.legacy_wrap();
        rewrap_all(&tx, path, keys, &legacy, 0)?;
        tx.execute_batch("DELETE FROM meta WHERE key = 'wrap_epoch'; PRAGMA user_version = 4;")
            .map_err(|e| StoreError::sql(path, "downgrading", e))?;
        tx.commit()
            .map_err(|e| StoreError::sql(path, "downgrading", e))?;
        let file = ratchet_path(path);
        fs::remove_file(&file).map_err(|error| StoreError::Io {
            context: "removing",
            path: file.clone(),
            error,
        })
    }

    /// The current wrap epoch.
    pub fn wrap_epoch(&self) -> u64 {
        self.keys.wrap_epoch().unwrap_or_default()
    }
}
