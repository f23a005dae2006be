//! Exposures: one row per (protocol, case key, UTC day), holding its [`ExposureRecord`] (what
//! matching found) and its notification state, sealed together under the day key.
//!
//! [`StoredExposure`] is the one shape every output reports — `check --json`, `GET
//! /v1/exposures` and the hook's stdin: the record's fields plus `id`, `state` and
//! `withdrawn_reason` (and `notify: false` once withdrawn).
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

use std::borrow::Cow;
use std::fmt;

use bluezone_protocol::matching::score::{Infectiousness, ScoredReportType};
use bluezone_protocol::matching::ExposureWindow;
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

/// What matching found for one case key on one UTC day: built by `check` from the matcher's
/// exposure, stored as it is, and reported (inside [`StoredExposure`]) by `check --json`, the
/// API and the hook.
///
/// The fields added with GAEN v2 scoring default when absent, so a row stored by an earlier
/// version (schema v1, before report types were weighed) still reads.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExposureRecord {
    /// `bluezone` or `gaen`.
    pub protocol: String,
    /// Lower-case hex of the F0 daily key or the TEK (published material, not a secret of ours).
    pub case_key: String,
    /// UTC day of the exposure (the day its windows started).
    pub day: i64,
    pub first_seen: i64,
    pub last_seen: i64,
    pub sightings: usize,
    pub distinct_ids: usize,
    pub duration_s: i64,
    pub min_attenuation_db: i32,
    pub typical_attenuation_db: i32,
    pub weighted_minutes: f64,
    /// The day's score reached the threshold (as matched; a withdrawn exposure reports false).
    pub notify: bool,
    /// The case list it came from.
    pub case_list: i64,
    /// The report type and infectiousness that were weighed (README "Exposure decisions");
    /// `null` only on rows stored before they were.
    #[serde(default)]
    pub report_type: Option<ScoredReportType>,
    #[serde(default)]
    pub infectiousness: Option<Infectiousness>,
    /// Seconds per attenuation bucket: immediate, near, medium, other.
    #[serde(default)]
    pub seconds_by_bucket: [i64; 4],
    /// The day's exposure windows.
    #[serde(default)]
    pub windows: Vec<ExposureWindow>,
}

impl ExposureRecord {
    /// The row it belongs to.
    pub fn key(&self) -> ExposureKey {
        ExposureKey {
            protocol: self.protocol.clone(),
            case_key: self.case_key.clone(),
            day: self.day,
        }
    }
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

/// One stored exposure. Serializes as what `check --json`, `GET /v1/exposures` and the hook
/// report: the record's fields, `id`, `state` and `withdrawn_reason`, with `notify: false` once
/// withdrawn.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredExposure {
    pub id: ExposureId,
    pub key: ExposureKey,
    pub delivery: Delivery,
    pub record: ExposureRecord,
}

impl StoredExposure {
    /// Whether the person is to be told (`notify` as reported: false once withdrawn).
    pub fn notifies(&self) -> bool {
        self.record.notify && self.delivery.state != DeliveryState::Withdrawn
    }
}

impl Serialize for StoredExposure {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Report<'a> {
            id: &'a ExposureId,
            #[serde(flatten)]
            record: Cow<'a, ExposureRecord>,
            state: DeliveryState,
            withdrawn_reason: Option<&'a str>,
        }
        let record = if self.notifies() == self.record.notify {
            Cow::Borrowed(&self.record)
        } else {
            Cow::Owned(ExposureRecord {
                notify: false,
                ..self.record.clone()
            })
        };
        Report {
            id: &self.id,
            record,
            state: self.delivery.state,
            withdrawn_reason: self.delivery.withdrawn_reason.as_deref(),
        }
        .serialize(s)
    }
}

/// An exposure's identity and notification state, without its record (cheap to read).
#[derive(Clone, Debug, PartialEq)]
pub struct ExposureState {
    pub id: ExposureId,
    pub key: ExposureKey,
    pub delivery: Delivery,
}

/// All stored exposures.
#[derive(Clone, Debug)]
pub struct Exposures<T = StoredExposure> {
    pub exposures: Vec<T>,
    /// Rows that failed to open or decode (logged and skipped).
    pub corrupt: usize,
}

/// One upsert inside the caller's write transaction.
fn upsert_in(
    tx: &rusqlite::Transaction<'_>,
    path: &std::path::Path,
    keys: &DerivedKeys,
    id: ExposureId,
    record: &ExposureRecord,
) -> Result<UpsertOutcome, StoreError> {
    let key = record.key();
    let old = read_row::<serde::de::IgnoredAny>(tx, path, keys, &id)?;
    let (inserted, mut delivery) = match old {
        None => (true, Delivery::new(false)),
        Some((_, env)) => (false, env.delivery),
    };
    if delivery.state == DeliveryState::Withdrawn {
        return Ok(UpsertOutcome {
            id,
            inserted,
            became_pending: false,
            delivery,
        });
    }
    let became_pending = record.notify && delivery.state == DeliveryState::NotNotifying;
    if became_pending {
        delivery = Delivery::new(true);
    }
    let env = Envelope {
        key,
        delivery,
        record,
    };
    write_row(tx, path, keys, &id, env.key.day, &env)?;
    Ok(UpsertOutcome {
        id,
        inserted,
        became_pending,
        delivery: env.delivery,
    })
}

/// What [`Store::upsert_exposure`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpsertOutcome {
    pub id: ExposureId,
    /// The row did not exist before.
    pub inserted: bool,
    /// It became `pending` now (first stored notifying, or crossed the threshold now).
    pub became_pending: bool,
    /// Its notification state after the update.
    pub delivery: Delivery,
}

impl Store {
    /// Stores or updates the exposure of `record` (its row is [`ExposureRecord::key`]).
    /// `record.notify` moves a not-notifying row to `pending`; no state ever goes back, and a
    /// withdrawn row is left as it is.
    pub fn upsert_exposure(
        &mut self,
        record: &ExposureRecord,
    ) -> Result<UpsertOutcome, StoreError> {
        let id = ExposureId(self.keys.exposure_hash(&record.key()));
        self.write_tx(|tx, path, keys| upsert_in(tx, path, keys, id, record))
    }

    /// [`upsert_exposure`](Store::upsert_exposure) for every record of `records`, in one
    /// transaction (one commit, not one per exposure: a `check` that finds a hundred exposures
    /// waited for a hundred syncs). All are stored, or none.
    pub fn upsert_exposures(
        &mut self,
        records: &[ExposureRecord],
    ) -> Result<Vec<UpsertOutcome>, StoreError> {
        let ids: Vec<ExposureId> = records
            .iter()
            .map(|r| ExposureId(self.keys.exposure_hash(&r.key())))
            .collect();
        self.write_tx(|tx, path, keys| {
            records
                .iter()
                .zip(ids)
                .map(|(record, id)| upsert_in(tx, path, keys, id, record))
                .collect()
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
        let targets: Vec<_> = self
            .exposure_states()?
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
                let Some((day, mut env)) = read_row::<ExposureRecord>(tx, path, keys, &e.id)?
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
                read_row::<ExposureRecord>(tx, path, keys, id)?.ok_or_else(|| {
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

    /// Every stored exposure, by row id; rows that fail to open or decode are counted and
    /// skipped.
    pub fn exposures(&self) -> Result<Exposures, StoreError> {
        self.read_exposures(|id, env: Envelope<ExposureRecord>| StoredExposure {
            id,
            key: env.key,
            delivery: env.delivery,
            record: env.record,
        })
    }

    /// Every stored exposure's id, key and notification state, by row id, without decoding
    /// the records.
    pub fn exposure_states(&self) -> Result<Exposures<ExposureState>, StoreError> {
        self.read_exposures(|id, env: Envelope<serde::de::IgnoredAny>| ExposureState {
            id,
            key: env.key,
            delivery: env.delivery,
        })
    }

    fn read_exposures<T: DeserializeOwned, U>(
        &self,
        make: impl Fn(ExposureId, Envelope<T>) -> U,
    ) -> Result<Exposures<U>, StoreError> {
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
                Some(env) => out.exposures.push(make(ExposureId(key_hash), env)),
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
            .and_then(|p| serde_json::from_slice::<ExposureRecord>(&p).ok());
        match opened {
            Some(record) if record.day == day => {
                let key = record.key();
                let notify = record.notify;
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
