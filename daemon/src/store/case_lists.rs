//! Imported case lists: sealed content, with its keyed hash (for de-duplication), format and
//! entry count in clear.

use rusqlite::{params, OptionalExtension};

use super::error::StoreError;
use super::keys::{day_key_for_read, day_key_for_write, Ad};
use super::Store;
use crate::caselist::Format;

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
    /// its id and whether it was inserted now.
    pub fn insert_case_list(
        &mut self,
        day: i64,
        format: Format,
        entries: u64,
        bytes: &[u8],
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
            tx.execute(
                "INSERT INTO case_lists (content_hash, format, entries, imported_day, blob) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![hash, format, entries, day, blob],
            )
            .map_err(sql("writing case list"))?;
            Ok((tx.last_insert_rowid(), true))
        })
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
}
