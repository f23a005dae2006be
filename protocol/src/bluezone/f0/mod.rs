//! The Bluezone positive-case ("F0") list (`docs/bluezone.md` §3).
//!
//! ```json
//! {"data":[{"daily_key":"<64 hex>","time_start":1596844800,"max":96,"time_end":1596931199}]}
//! ```
//! Accepted as real phones accept it: times are unix seconds as JSON integers or as floats with a
//! zero fraction (iOS decodes them as `TimeInterval`), `daily_key` is 64 hex characters in either
//! case, `max` defaults to 96. An entry may span any number of days: real phones walk to
//! `time_end` with no limit, and bounding the work is the matcher's job.
//!
//! One malformed entry does not lose the rest: it is skipped and reported ([`SkippedEntry`]), as a
//! phone would ignore it. A list where no entry is valid is refused.
//!
//! The parser streams the `data` array into typed fields (never a `serde_json::Value`): a value of
//! the wrong shape, however large, is skipped without being held, and the entry limit stops a
//! huge upload before it is held in memory.
//!
//! - here: the list, its limits and errors, [`parse_f0`] and the writers;
//! - `stream`: the streaming reader (serde visitors over the `data` array) and each entry's
//!   checks (key, time window, `max`).

mod stream;
#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::fmt;

use serde::de::DeserializeSeed;
use serde::Deserialize;

use super::rolling::SlotsPerDay;
use crate::ids::DailyKey;
use crate::time::UnixSeconds;
use stream::ListSeed;

/// Default limit on entries in one list.
pub const DEFAULT_MAX_ENTRIES: usize = 500_000;
/// Earliest accepted entry time: 2000-01-01T00:00:00Z. Bluezone started in 2020; the window only
/// keeps absurd times (and the arithmetic on them) out.
pub const EARLIEST_TIME: UnixSeconds = 946_684_800;
/// Latest accepted entry time: 2100-12-31T23:59:59Z.
pub const LATEST_TIME: UnixSeconds = 4_133_980_799;
/// At most this many skipped entries are described one by one; the rest are only counted, so a
/// list of half a million bad entries does not become half a million messages.
pub const MAX_REPORTED_SKIPS: usize = 1000;

/// One published daily key and the time span it covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct F0Entry {
    /// The key for the UTC day containing `time_start`; later days follow the hash chain.
    pub daily_key: DailyKey,
    pub time_start: UnixSeconds,
    /// Inclusive.
    pub time_end: UnixSeconds,
    pub max: SlotsPerDay,
}

impl F0Entry {
    /// Number of UTC days touched by `[time_start, time_end]`.
    pub fn days(&self) -> u32 {
        let days = crate::time::utc_day(self.time_end) - crate::time::utc_day(self.time_start);
        u32::try_from(days.saturating_add(1)).unwrap_or(0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct F0List {
    pub entries: Vec<F0Entry>,
}

/// An entry left out of a list, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedEntry {
    /// Position in the `data` array, from 0.
    pub index: usize,
    /// The offending field (`entry` when the entry itself is not an object).
    pub field: &'static str,
    pub reason: String,
}

impl fmt::Display for SkippedEntry {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "entry {}: field `{}` {}",
            self.index, self.field, self.reason
        )
    }
}

/// A parsed list: the valid entries, and the entries that were skipped.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct F0Parsed {
    pub list: F0List,
    /// The first [`MAX_REPORTED_SKIPS`] skipped entries.
    pub skipped: Vec<SkippedEntry>,
    /// All skipped entries, including those not described in `skipped`.
    pub skipped_total: usize,
}

#[derive(Clone, Copy, Debug)]
pub struct F0Limits {
    pub max_entries: usize,
}

impl Default for F0Limits {
    fn default() -> Self {
        F0Limits {
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum F0Error {
    #[error("F0 JSON is malformed at line {line}, column {column}: {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    /// No entry was valid; this names the first.
    #[error("F0 entry {index}: field `{field}` {problem} (no entry of the list is valid)")]
    Entry {
        index: usize,
        field: &'static str,
        problem: String,
    },
    #[error("F0 list has more than {limit} entries (the configured limit)")]
    TooManyEntries { limit: usize },
    #[error("F0 JSON has no `data` array")]
    MissingData,
}

impl F0Error {
    /// A JSON syntax or shape error, with serde's position split out of its message.
    fn from_json(e: serde_json::Error) -> F0Error {
        let msg = e.to_string();
        F0Error::Json {
            line: e.line(),
            column: e.column(),
            message: msg
                .rsplit_once(" at line ")
                .map(|(p, _)| p.to_string())
                .unwrap_or(msg),
        }
    }
}

/// Parses an F0 list: the valid entries and the skipped ones. Refused when the JSON is malformed,
/// has no `data` array, exceeds the entry limit, or when entries exist but none is valid.
pub fn parse_f0(bytes: &[u8], limits: &F0Limits) -> Result<F0Parsed, F0Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    // The reader's own refusals (no `data`, too many entries) stay typed: serde carries only
    // that the reading stopped, and the reason is taken from here.
    let refusal = Cell::new(None);
    let parsed = ListSeed::new(limits, &refusal)
        .deserialize(&mut de)
        .map_err(|e| refusal.take().unwrap_or_else(|| F0Error::from_json(e)))?;
    de.end().map_err(F0Error::from_json)?;
    if let (true, Some(first)) = (parsed.list.entries.is_empty(), parsed.skipped.first()) {
        return Err(F0Error::Entry {
            index: first.index,
            field: first.field,
            problem: first.reason.clone(),
        });
    }
    Ok(parsed)
}

/// Writes an F0 list in the published layout (lower-case hex).
pub fn write_f0(list: &F0List) -> String {
    let data: Vec<serde_json::Value> = list
        .entries
        .iter()
        .map(|e| {
            serde_json::json!({
                "daily_key": e.daily_key.to_hex(),
                "time_start": e.time_start,
                "max": e.max.get(),
                "time_end": e.time_end,
            })
        })
        .collect();
    serde_json::json!({ "data": data }).to_string()
}

/// Writes an F0 list carrying a revocation list: `"revoked"` names the daily keys of entries an
/// authority withdrew after publishing them (`docs/authority.md`, "Revoking an F0 case"). Bluezone
/// phones ignore the field; bluezoned devices withdraw the exposures matched from those keys. With
/// no revocation the output is [`write_f0`]'s.
pub fn write_f0_with_revocations(list: &F0List, revoked: &[DailyKey]) -> String {
    if revoked.is_empty() {
        return write_f0(list);
    }
    let mut v: serde_json::Value = serde_json::from_str(&write_f0(list)).expect("our own JSON");
    v["revoked"] = revoked.iter().map(|k| k.to_hex()).collect();
    v.to_string()
}

/// The revocation list of an F0 list (`"revoked"`: daily keys as 64 hex characters), or an empty
/// list when there is none. The `data` array is skipped without being held. A malformed key is
/// skipped, as a malformed entry is; at most `max` keys are read.
pub fn parse_f0_revocations(bytes: &[u8], max: usize) -> Result<Vec<DailyKey>, F0Error> {
    #[derive(Deserialize)]
    struct Revocations {
        #[serde(default)]
        revoked: Option<Vec<serde_json::Value>>,
    }
    let r: Revocations = serde_json::from_slice(bytes).map_err(F0Error::from_json)?;
    Ok(r.revoked
        .unwrap_or_default()
        .iter()
        .take(max)
        .filter_map(|v| v.as_str().and_then(|s| DailyKey::from_hex(s).ok()))
        .collect())
}
