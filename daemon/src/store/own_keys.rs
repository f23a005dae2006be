//! The device's own keys: the Bluezone daily key and the GAEN TEK of each UTC day.

use std::ops::RangeInclusive;
use std::path::Path;

use bluezone_protocol::{DailyKey, Tek};
use rand::{CryptoRng, RngCore};
use rusqlite::{params, Connection, Transaction};
use zeroize::{Zeroize, Zeroizing};

use super::error::StoreError;
use super::keys::{day_key_for_read, day_key_for_write, Ad, DerivedKeys};
use super::Store;

const PROTO_BLUEZONE: &str = "bluezone";
const PROTO_GAEN: &str = "gaen";

/// The device's own keys for one UTC day. `Debug` redacts both keys.
#[derive(Clone, Debug)]
pub struct OwnKeys {
    pub day: i64,
    pub daily_key: DailyKey,
    pub tek: Tek,
}

impl Store {
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
        self.write_tx(|tx, path, keys| {
            if !replace {
                if let Some(k) = read_own_keys(tx, path, keys, day)? {
                    return Ok(k);
                }
            }
            let daily = DailyKey::random(rng);
            let tek = Tek::random(rng);
            write_own_keys(tx, path, keys, day, &daily, &tek)?;
            Ok((daily, tek))
        })
    }

    /// The own keys stored for `day`, if any. Reads only: a command that reports keys (`log
    /// export`) must not create keys for days that had none.
    pub fn own_keys(&self, day: i64) -> Result<Option<OwnKeys>, StoreError> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(self.sql("reading own keys"))?;
        Ok(
            read_own_keys(&tx, &self.path, &self.keys, day)?.map(|(daily_key, tek)| OwnKeys {
                day,
                daily_key,
                tek,
            }),
        )
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
