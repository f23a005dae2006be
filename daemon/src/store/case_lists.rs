//! Imported case lists: sealed content and its sealed compact form (`caselist::compact`, what
//! matching reads), with its keyed hash (for de-duplication), format and entry count in clear.

use rusqlite::{params, OptionalExtension};
use zeroize::Zeroizing;

use super::error::StoreError;
use super::keys::{day_key_for_read, day_key_for_write, load_day_keys, Ad, DerivedKeys};
use super::Store;
use crate::caselist::{self, compact, CaseList, Format, Limits};

/// The compact form of a stored original, if it parses (the lists were checked at import; a
/// GAEN export's signature is not checked again here).
fn derive_compact(bytes: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    caselist::parse(bytes, &[], &Limits::default())
        .ok()
        .map(|l| compact::encode(&l, bytes))
}

/// An imported case list, without its (sealed) contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCaseList {
    pub id: i64,
    /// HMAC-SHA256 of the content under a key derived from the master key, hex.
    pub content_hash: String,
    pub format: Format,
    pub entries: u64,
    pub imported_day: i64,
}

impl Store {
    /// Stores a case list imported on UTC day `day` (sealed under that day's key; retention
    /// drops it with that day), unless one with the same content is stored already. Returns
    /// its id and whether it was inserted now. Its compact form is derived by parsing `bytes`
    /// (none if they do not parse); [`Store::insert_parsed_case_list`] reuses a parse.
    pub fn insert_case_list(
        &mut self,
        day: i64,
        format: Format,
        entries: u64,
        bytes: &[u8],
    ) -> Result<(i64, bool), StoreError> {
        let compact = derive_compact(bytes);
        self.insert_case_list_with(
            day,
            format,
            entries,
            bytes,
            compact.as_ref().map(|c| c.as_slice()),
        )
    }

    /// [`Store::insert_case_list`] of a list already parsed from `bytes`.
    pub fn insert_parsed_case_list(
        &mut self,
        day: i64,
        list: &CaseList,
        bytes: &[u8],
    ) -> Result<(i64, bool), StoreError> {
        let compact = compact::encode(list, bytes);
        self.insert_case_list_with(
            day,
            list.format(),
            list.entries() as u64,
            bytes,
            Some(&compact),
        )
    }

    fn insert_case_list_with(
        &mut self,
        day: i64,
        format: Format,
        entries: u64,
        bytes: &[u8],
        compact: Option<&[u8]>,
    ) -> Result<(i64, bool), StoreError> {
        let entries = i64::try_from(entries).map_err(|_| StoreError::InvalidInput {
            field: "case list entries",
            problem: format!("{entries} is above {}", i64::MAX),
        })?;
        let hash = self.keys.case_list_hash(bytes);
        let format = format.as_str();
        self.write_tx(|tx, path, keys| {
            let sql = |context| move |e| StoreError::sql(path, context, e);
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
            let key = day_key_for_write(tx, path, keys, day)?;
            let blob = key.seal(&Ad::case_list(day, &hash, format, entries), bytes);
            let compact =
                compact.map(|c| key.seal(&Ad::case_list_compact(day, &hash, format, entries), c));
            tx.execute(
                "INSERT INTO case_lists (content_hash, format, entries, imported_day, blob, compact) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![hash, format, entries, day, blob, compact],
            )
            .map_err(sql("writing case list"))?;
            Ok((tx.last_insert_rowid(), true))
        })
    }

    /// The (id, content hash) of every stored case list, by id: one small query (no blob is
    /// read), for pollers. Ids alone would not do: a deleted newest list's id is given to the
    /// next list (SQLite takes the highest id + 1).
    pub fn case_list_ids(&self) -> Result<Vec<(i64, String)>, StoreError> {
        let sql = self.sql("listing case lists");
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, content_hash FROM case_lists ORDER BY id")
            .map_err(&sql)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(&sql)?;
        Ok(rows)
    }

    /// The imported case lists, by id.
    pub fn case_lists(&self) -> Result<Vec<StoredCaseList>, StoreError> {
        let sql = self.sql("listing case lists");
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, content_hash, format, entries, imported_day FROM case_lists ORDER BY id",
            )
            .map_err(&sql)?;
        let v = stmt
            .query_map([], |r| {
                let format: String = r.get(2)?;
                let format = Format::parse(&format).ok_or_else(|| {
                    rusqlite::Error::FromSqlConversionFailure(
                        2,
                        rusqlite::types::Type::Text,
                        format!("case_lists.format: expected bluezone-f0 or gaen-export, found {format:?}")
                            .into(),
                    )
                })?;
                Ok(StoredCaseList {
                    id: r.get(0)?,
                    content_hash: r.get(1)?,
                    format,
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
        let plain = self.open_case_list(id, Sealed::Original)?;
        // The original column is NOT NULL: a row always has one.
        Ok(plain.map(|p| p.to_vec()).unwrap_or_default())
    }

    /// The compact form of case list `id` (`None` if its original did not parse when stored).
    pub fn case_list_compact(&self, id: i64) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        self.open_case_list(id, Sealed::Compact)
    }

    /// Opens one sealed column of case list `id` (`None` if that column is NULL).
    fn open_case_list(
        &self,
        id: i64,
        which: Sealed,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let sql = self.sql("reading case list");
        let _map = MapWhileReading::new(&self.conn);
        let tx = self.conn.unchecked_transaction().map_err(&sql)?;
        let query = match which {
            Sealed::Original => {
                "SELECT content_hash, format, entries, imported_day, length(blob) FROM case_lists WHERE id = ?1"
            }
            Sealed::Compact => {
                "SELECT content_hash, format, entries, imported_day, length(compact) FROM case_lists WHERE id = ?1"
            }
        };
        type Row = (String, String, i64, i64, Option<Zeroizing<Vec<u8>>>);
        // The sealed column is read once, through SQLite's incremental blob I/O, straight into the
        // buffer that is then decrypted in place: one copy of a list (33 MB for 1M GAEN keys)
        // in memory, not SQLite's, a `Vec`'s and the plaintext's.
        let column = match which {
            Sealed::Original => "blob",
            Sealed::Compact => "compact",
        };
        let row: Option<Row> = tx
            .query_row(query, [id], |r| {
                let present = r.get_ref(4)?.data_type() != rusqlite::types::Type::Null;
                let blob = if present {
                    let b =
                        tx.blob_open(rusqlite::DatabaseName::Main, "case_lists", column, id, true)?;
                    // The daemon's allocator marks a block this large for huge pages
                    // (`crate::hugepages`) before it is read into.
                    let mut buf = Zeroizing::new(vec![0u8; b.len()]);
                    b.read_at_exact(&mut buf, 0)?;
                    Some(buf)
                } else {
                    None
                };
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, blob))
            })
            .optional()
            .map_err(&sql)?;
        let Some((hash, format, entries, day, blob)) = row else {
            return Err(StoreError::NotFound {
                path: self.path.clone(),
                table: "case_lists",
                row: format!("id {id}"),
            });
        };
        let Some(mut blob) = blob else {
            return Ok(None);
        };
        let corrupt = || StoreError::Corrupt {
            path: self.path.clone(),
            table: "case_lists",
            day,
            row: match which {
                Sealed::Original => format!("id {id}"),
                Sealed::Compact => format!("id {id} (compact form)"),
            },
        };
        let key = day_key_for_read(&tx, &self.keys, day)
            .map_err(&sql)?
            .ok_or_else(corrupt)?;
        let ad = match which {
            Sealed::Original => Ad::case_list(day, &hash, &format, entries),
            Sealed::Compact => Ad::case_list_compact(day, &hash, &format, entries),
        };
        if !key.open_in_place(&ad, &mut blob) {
            return Err(corrupt());
        }
        Ok(Some(blob))
    }
}

/// SQLite's memory-mapped I/O, on for one bulk read of a sealed case list and off again when
/// dropped. Read through `read()`, each 4 KiB page of a 33 MB list costs a system call and a
/// kernel copy (a third of loading a million GAEN keys); mapped, SQLite copies straight from
/// the page cache. The map is dropped right after, so a long-running daemon's resident memory
/// never keeps the database's pages, and writes never go through it (SQLite writes with
/// `write()` either way). A failing pragma only leaves the read unmapped.
struct MapWhileReading<'c>(&'c rusqlite::Connection);

impl<'c> MapWhileReading<'c> {
    /// SQLite caps the map at its compile-time maximum (2 GiB); the file is far smaller.
    const LIMIT: i64 = 1 << 31;

    fn new(conn: &'c rusqlite::Connection) -> Self {
        set_mmap_size(conn, Self::LIMIT);
        MapWhileReading(conn)
    }
}

impl Drop for MapWhileReading<'_> {
    fn drop(&mut self) {
        set_mmap_size(self.0, 0);
    }
}

fn set_mmap_size(conn: &rusqlite::Connection, bytes: i64) {
    // The pragma answers with the new size (a row), so it is run as a query.
    let _ = conn.query_row(&format!("PRAGMA mmap_size = {bytes}"), [], |_| Ok(()));
}

/// The two sealed columns of a case list.
#[derive(Clone, Copy)]
enum Sealed {
    Original,
    Compact,
}

/// Schema v4: derives and seals the compact form of every stored list whose original opens and
/// parses (in the migration's transaction). No row is removed; one that does not parse keeps a
/// NULL compact form, and matching reports it as before.
pub(crate) fn fill_compact(
    tx: &rusqlite::Transaction<'_>,
    path: &std::path::Path,
    keys: &DerivedKeys,
) -> Result<(), StoreError> {
    let sql = |e| StoreError::sql(path, "deriving compact case lists", e);
    let day_keys = load_day_keys(tx, keys, i64::MIN, i64::MAX).map_err(sql)?;
    let rows: Vec<(i64, String, String, i64, i64)> = {
        let mut stmt = tx
            .prepare("SELECT id, content_hash, format, entries, imported_day FROM case_lists")
            .map_err(sql)?;
        let v = stmt
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .map_err(sql)?
            .collect::<Result<_, _>>()
            .map_err(sql)?;
        v
    };
    for (id, hash, format, entries, day) in rows {
        let Some(Some(key)) = day_keys.get(&day) else {
            continue;
        };
        let blob: Vec<u8> = tx
            .query_row("SELECT blob FROM case_lists WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .map_err(sql)?;
        let Some(plain) = key.open(&Ad::case_list(day, &hash, &format, entries), &blob) else {
            continue;
        };
        let Some(c) = derive_compact(&plain) else {
            continue;
        };
        let sealed = key.seal(&Ad::case_list_compact(day, &hash, &format, entries), &c);
        tx.execute(
            "UPDATE case_lists SET compact = ?1 WHERE id = ?2",
            params![sealed, id],
        )
        .map_err(sql)?;
    }
    Ok(())
}
