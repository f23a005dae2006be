//! Exposures: one row per (protocol, case key, UTC day), holding the caller's typed record and
//! its notification state, sealed together under the day key.
//!
//! # Delivery state
//!
//! ```text
//! not_notifying ──(notify becomes true)──▶ pending ──(hook exited 0)──▶ delivered
//!        │                                    │                            │
//!        └───────────── withdraw ─────────────┴──────── withdraw ──────────┘
//!                                             ▼
//!                  withdrawn (+ a withdrawal event due if it had been delivered)
//! ```
//!
//! A state never goes back: a later match that scores lower does not un-notify. A withdrawn row
//! is kept (with its reason) and later matches do not revive it. The state, the retry counter
//! and the next attempt time are sealed with the record, so a file holder learns none of them
//! and they survive a restart. Delivery is at-least-once: the hook gets the stable
//! [`ExposureId`] to de-duplicate.

use std::fmt;

use rusqlite::{params, OptionalExtension, Transaction};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::StoreError;
use super::keys::{day_key_for_read, day_key_for_write, load_day_keys, Ad, DerivedKeys};
use super::Store;

/// What identifies an exposure row: the same case key on the same day is the same exposure,
/// updated as more sightings match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExposureKey {
    /// `bluezone` or `gaen`.
    pub protocol: String,
    /// Lower-case hex of the published case key (F0 daily key or TEK).
    pub case_key: String,
    /// UTC day of the exposure.
    pub day: i64,
}

/// Stable id of an exposure: lower-case hex of its keyed row hash (HMAC under a key derived from
/// the master key, so it reveals nothing about the case key). Handed to the hook so that it can
/// de-duplicate an at-least-once delivery.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExposureId(String);

impl ExposureId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ExposureId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where an exposure stands with respect to notifying the person.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Below the threshold: nothing to deliver.
    NotNotifying,
    /// Notifying; the hook has not yet exited 0 for it.
    Pending,
    /// The hook exited 0 for it.
    Delivered,
    /// Withdrawn (e.g. its key was revoked); kept with the reason, never deleted.
    Withdrawn,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::NotNotifying => "not_notifying",
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Withdrawn => "withdrawn",
        }
    }
}

/// What the hook is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationEvent {
    /// A new notifying exposure.
    Exposure,
    /// A delivered exposure was withdrawn.
    Withdrawal,
}

/// The notification bookkeeping of one exposure (sealed with it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub state: DeliveryState,
    pub withdrawn_reason: Option<String>,
    /// A withdrawal event is owed to the hook (the exposure had been delivered).
    pub withdrawal_due: bool,
    /// Failed attempts at the event now due.
    pub attempts: u32,
    /// Unix seconds before which the due event is not retried.
    pub next_attempt: i64,
}

impl Delivery {
    fn new(notify: bool) -> Self {
        Delivery {
            state: if notify {
                DeliveryState::Pending
            } else {
                DeliveryState::NotNotifying
            },
            withdrawn_reason: None,
            withdrawal_due: false,
            attempts: 0,
            next_attempt: 0,
        }
    }

    /// The event the hook owes for this exposure, if any.
    pub fn due(&self) -> Option<NotificationEvent> {
        match self.state {
            DeliveryState::Pending => Some(NotificationEvent::Exposure),
            DeliveryState::Withdrawn if self.withdrawal_due => Some(NotificationEvent::Withdrawal),
            _ => None,
        }
    }
}

/// The sealed content of an exposure row.
#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    key: ExposureKey,
    delivery: Delivery,
    record: T,
}

/// One stored exposure.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredExposure<T> {
    pub id: ExposureId,
    pub key: ExposureKey,
    pub delivery: Delivery,
    pub record: T,
}

impl<T: Serialize> StoredExposure<T> {
    /// The record as JSON with `id`, `state` and `withdrawn_reason` added, and `notify: false`
    /// once withdrawn: what `check --json`, the API and the hook report.
    pub fn report_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.record).unwrap_or(serde_json::Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.insert("id".into(), self.id.as_str().into());
            o.insert("state".into(), self.delivery.state.as_str().into());
            o.insert(
                "withdrawn_reason".into(),
                self.delivery.withdrawn_reason.clone().into(),
            );
            if self.delivery.state == DeliveryState::Withdrawn {
                o.insert("notify".into(), false.into());
            }
        }
        v
    }
}

/// All stored exposures.
#[derive(Clone, Debug)]
pub struct Exposures<T> {
    pub exposures: Vec<StoredExposure<T>>,
    /// Rows that failed to open or decode (logged and skipped).
    pub corrupt: usize,
}

/// What [`Store::upsert_exposure`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpsertOutcome {
    pub id: ExposureId,
    /// The row did not exist before.
    pub inserted: bool,
    /// It became `pending` now (first stored notifying, or crossed the threshold now).
    pub became_pending: bool,
    pub state: DeliveryState,
}

impl Store {
    /// Stores or updates the exposure `key` with `record`. `notify` moves a not-notifying row
    /// to `pending`; no state ever goes back, and a withdrawn row is left as it is.
    pub fn upsert_exposure<T: Serialize>(
        &mut self,
        key: &ExposureKey,
        notify: bool,
        record: &T,
    ) -> Result<UpsertOutcome, StoreError> {
        let id = ExposureId(self.keys.exposure_hash(key));
        self.write_tx(|tx, path, keys| {
            let old = read_row::<serde::de::IgnoredAny>(tx, path, keys, &id)?;
            let (inserted, mut delivery) = match old {
                None => (true, Delivery::new(false)),
                Some((_, env)) => (false, env.delivery),
            };
            if delivery.state == DeliveryState::Withdrawn {
                return Ok(UpsertOutcome {
                    id: id.clone(),
                    inserted,
                    became_pending: false,
                    state: delivery.state,
                });
            }
            let became_pending = notify && delivery.state == DeliveryState::NotNotifying;
            if became_pending {
                delivery = Delivery::new(true);
            }
            let state = delivery.state;
            let env = Envelope {
                key: key.clone(),
                delivery,
                record,
            };
            write_row(tx, path, keys, &id, key.day, &env)?;
            Ok(UpsertOutcome {
                id: id.clone(),
                inserted,
                became_pending,
                state,
            })
        })
    }

    /// Withdraws every exposure of one case key (all days): kept as `withdrawn` with `reason`,
    /// never deleted; one that had been delivered owes the hook a withdrawal event. Returns the
    /// number of rows withdrawn now.
    pub fn withdraw_exposure(
        &mut self,
        protocol: &str,
        case_key: &str,
        reason: &str,
    ) -> Result<usize, StoreError> {
        let rows = self.exposures::<serde_json::Value>()?;
        let targets: Vec<_> = rows
            .exposures
            .into_iter()
            .filter(|e| {
                e.key.protocol == protocol
                    && e.key.case_key.eq_ignore_ascii_case(case_key)
                    && e.delivery.state != DeliveryState::Withdrawn
            })
            .collect();
        self.write_tx(|tx, path, keys| {
            let mut n = 0;
            for e in &targets {
                // Re-read inside the transaction: the notify task may have delivered it since.
                let Some((day, mut env)) = read_row::<serde_json::Value>(tx, path, keys, &e.id)?
                else {
                    continue;
                };
                if env.delivery.state == DeliveryState::Withdrawn {
                    continue;
                }
                env.delivery = Delivery {
                    withdrawal_due: env.delivery.state == DeliveryState::Delivered,
                    state: DeliveryState::Withdrawn,
                    withdrawn_reason: Some(reason.to_string()),
                    attempts: 0,
                    next_attempt: 0,
                };
                write_row(tx, path, keys, &e.id, day, &env)?;
                n += 1;
            }
            Ok(n)
        })
    }

    /// The hook exited 0 for `event` of exposure `id`.
    pub fn mark_delivered(
        &mut self,
        id: &ExposureId,
        event: NotificationEvent,
    ) -> Result<(), StoreError> {
        self.update_delivery(id, |d| match event {
            NotificationEvent::Exposure => match d.state {
                DeliveryState::Pending => {
                    d.state = DeliveryState::Delivered;
                    d.attempts = 0;
                }
                // Withdrawn while the hook ran: the person was told, so they are owed the
                // withdrawal too.
                DeliveryState::Withdrawn => d.withdrawal_due = true,
                _ => {}
            },
            NotificationEvent::Withdrawal => {
                d.withdrawal_due = false;
                d.attempts = 0;
            }
        })
    }

    /// The hook failed for the event now due: counts the attempt and defers the next one to
    /// `now + backoff_s(attempts)` (unix seconds), which it returns.
    pub fn mark_failed(
        &mut self,
        id: &ExposureId,
        now: i64,
        backoff_s: impl FnOnce(u32) -> i64,
    ) -> Result<i64, StoreError> {
        let mut at = now;
        self.update_delivery(id, |d| {
            d.attempts = d.attempts.saturating_add(1);
            d.next_attempt = now.saturating_add(backoff_s(d.attempts));
            at = d.next_attempt;
        })?;
        Ok(at)
    }

    fn update_delivery(
        &mut self,
        id: &ExposureId,
        f: impl FnOnce(&mut Delivery),
    ) -> Result<(), StoreError> {
        self.write_tx(|tx, path, keys| {
            let (day, mut env) =
                read_row::<serde_json::Value>(tx, path, keys, id)?.ok_or_else(|| {
                    StoreError::NotFound {
                        path: path.to_path_buf(),
                        table: "exposures",
                        row: format!("id {id}"),
                    }
                })?;
            f(&mut env.delivery);
            write_row(tx, path, keys, id, day, &env)
        })
    }

    /// Every stored exposure, by row id; rows that fail to open or to decode as `T` are counted
    /// and skipped.
    pub fn exposures<T: DeserializeOwned>(&self) -> Result<Exposures<T>, StoreError> {
        let sql = self.sql("reading exposures");
        let tx = self.conn.unchecked_transaction().map_err(&sql)?;
        let day_keys = load_day_keys(&tx, &self.keys, i64::MIN, i64::MAX).map_err(&sql)?;
        let mut stmt = tx
            .prepare_cached("SELECT id, day, key_hash, blob FROM exposures ORDER BY id")
            .map_err(&sql)?;
        let mut rows = stmt.query([]).map_err(&sql)?;
        let mut out = Exposures {
            exposures: Vec::new(),
            corrupt: 0,
        };
        while let Some(row) = rows.next().map_err(&sql)? {
            let rowid: i64 = row.get(0).map_err(&sql)?;
            let day: i64 = row.get(1).map_err(&sql)?;
            let key_hash: String = row.get(2).map_err(&sql)?;
            let blob = row.get_ref(3).map_err(&sql)?.as_blob().ok();
            let env = match (day_keys.get(&day), blob) {
                (Some(Some(k)), Some(b)) => k
                    .open(&Ad::exposure(day, &key_hash), b)
                    .and_then(|p| serde_json::from_slice::<Envelope<T>>(&p).ok()),
                _ => None,
            };
            match env {
                Some(env) => out.exposures.push(StoredExposure {
                    id: ExposureId(key_hash),
                    key: env.key,
                    delivery: env.delivery,
                    record: env.record,
                }),
                None => {
                    out.corrupt += 1;
                    tracing::warn!(store = %self.path.display(), table = "exposures", day, id = rowid,
                        "sealed exposure failed to open or decode; skipped");
                }
            }
        }
        Ok(out)
    }
}

/// The exposure row `id` (its day and sealed content), if present and readable.
fn read_row<T: DeserializeOwned>(
    tx: &Transaction<'_>,
    path: &std::path::Path,
    keys: &DerivedKeys,
    id: &ExposureId,
) -> Result<Option<(i64, Envelope<T>)>, StoreError> {
    let sql = |e| StoreError::sql(path, "reading exposure", e);
    let row: Option<(i64, Vec<u8>)> = tx
        .query_row(
            "SELECT day, blob FROM exposures WHERE key_hash = ?1",
            [id.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(sql)?;
    let Some((day, blob)) = row else {
        return Ok(None);
    };
    let corrupt = || StoreError::Corrupt {
        path: path.to_path_buf(),
        table: "exposures",
        day,
        row: format!("id {id}"),
    };
    let key = day_key_for_read(tx, keys, day)
        .map_err(sql)?
        .ok_or_else(corrupt)?;
    let plain = key
        .open(&Ad::exposure(day, id.as_str()), &blob)
        .ok_or_else(corrupt)?;
    let env = serde_json::from_slice(&plain).map_err(|_| corrupt())?;
    Ok(Some((day, env)))
}

fn write_row<T: Serialize>(
    tx: &Transaction<'_>,
    path: &std::path::Path,
    keys: &DerivedKeys,
    id: &ExposureId,
    day: i64,
    env: &Envelope<T>,
) -> Result<(), StoreError> {
    let plain =
        zeroize::Zeroizing::new(
            serde_json::to_vec(env).map_err(|e| StoreError::InvalidInput {
                field: "exposure record",
                problem: format!("cannot be encoded as JSON: {e}"),
            })?,
        );
    let key = day_key_for_write(tx, path, keys, day)?;
    let blob = key.seal(&Ad::exposure(day, id.as_str()), &plain);
    tx.execute(
        "INSERT INTO exposures (day, key_hash, blob) VALUES (?1, ?2, ?3) \
         ON CONFLICT (key_hash) DO UPDATE SET day = excluded.day, blob = excluded.blob",
        params![day, id.as_str(), blob],
    )
    .map_err(|e| StoreError::sql(path, "writing exposure", e))?;
    Ok(())
}

/// Schema v1 → v2 (H2): v1 keyed rows by plain SHA-256 of `protocol || case_key || day` (public
/// values, so a file holder could test every published key) and sealed the bare report JSON.
/// Every row is re-keyed with the HMAC and re-sealed as an envelope. A notifying row becomes
/// `pending` (v1 kept no delivery state, and a lost notification is worse than a repeated one:
/// the hook de-duplicates by id from now on). A row that does not open keeps its place (it was
/// unreadable before too) under an HMAC of its old hash, so no plain hash is left.
pub(crate) fn migrate_v1_key_hashes(
    tx: &Transaction<'_>,
    path: &std::path::Path,
    keys: &DerivedKeys,
) -> Result<(), StoreError> {
    let sql = |e| StoreError::sql(path, "migrating exposures to keyed hashes", e);
    let rows: Vec<(i64, i64, String, Vec<u8>)> = {
        let mut stmt = tx
            .prepare("SELECT id, day, key_hash, blob FROM exposures ORDER BY id")
            .map_err(sql)?;
        let v = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .map_err(sql)?
            .collect::<Result<_, _>>()
            .map_err(sql)?;
        v
    };
    for (rowid, day, old_hash, blob) in rows {
        let opened = day_key_for_read(tx, keys, day)
            .map_err(sql)?
            .and_then(|k| k.open(&Ad::exposure(day, &old_hash), &blob))
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(&p).ok());
        let key = opened.as_ref().and_then(|v| {
            Some(ExposureKey {
                protocol: v.get("protocol")?.as_str()?.to_string(),
                case_key: v.get("case_key")?.as_str()?.to_string(),
                day: v.get("day")?.as_i64()?,
            })
        });
        match (opened, key) {
            (Some(record), Some(key)) if key.day == day => {
                let notify = record.get("notify").and_then(|n| n.as_bool()) == Some(true);
                let id = ExposureId(keys.exposure_hash(&key));
                let env = Envelope {
                    key,
                    delivery: Delivery::new(notify),
                    record,
                };
                let plain = zeroize::Zeroizing::new(serde_json::to_vec(&env).map_err(|e| {
                    StoreError::InvalidInput {
                        field: "exposure record",
                        problem: format!("cannot be encoded as JSON: {e}"),
                    }
                })?);
                let blob = day_key_for_write(tx, path, keys, day)?
                    .seal(&Ad::exposure(day, id.as_str()), &plain);
                tx.execute(
                    "UPDATE exposures SET key_hash = ?1, blob = ?2 WHERE id = ?3",
                    params![id.as_str(), blob, rowid],
                )
                .map_err(sql)?;
            }
            _ => {
                tracing::warn!(store = %path.display(), table = "exposures", day, id = rowid,
                    "exposure failed to open during migration; kept, re-keyed, still unreadable");
                let new_hash = keys.exposure_hash(&ExposureKey {
                    protocol: "unreadable".into(),
                    case_key: old_hash,
                    day,
                });
                tx.execute(
                    "UPDATE exposures SET key_hash = ?1 WHERE id = ?2",
                    params![new_hash, rowid],
                )
                .map_err(sql)?;
            }
        }
    }
    Ok(())
}
