//! The Bluezone positive-case ("F0") list (`shared/spec/bluezone.md` §3).
//!
//! ```json
//! {"data":[{"daily_key":"<64 hex>","time_start":1596844800,"max":96,"time_end":1596931199}]}
//! ```
//! Times are unix seconds, `daily_key` is 64 hex characters in either case. `max` defaults to 96
//! when absent. The parser streams the `data` array and stops at the configured entry limit, so a
//! huge upload is refused before it is held in memory.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::rolling::SlotsPerDay;
use crate::ids::DailyKey;
use crate::time::{UnixSeconds, DAY_SECONDS};

/// An entry may cover at most this many days (real lists cover 14–21).
pub const MAX_SPAN_DAYS: i64 = 30;
/// Default limit on entries in one list.
pub const DEFAULT_MAX_ENTRIES: usize = 500_000;

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
        (crate::time::utc_day(self.time_end) - crate::time::utc_day(self.time_start) + 1) as u32
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct F0List {
    pub entries: Vec<F0Entry>,
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
    #[error("F0 entry {index}: field `{field}` {problem}")]
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
    fn from_json(e: serde_json::Error) -> F0Error {
        // Our own checks travel through serde as custom errors carrying a marker prefix, so the
        // typed error can be rebuilt here.
        let msg = e.to_string();
        if let Some(rest) = msg.strip_prefix(TOO_MANY) {
            let limit = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            return F0Error::TooManyEntries { limit };
        }
        if msg.starts_with(NO_DATA) {
            return F0Error::MissingData;
        }
        if let Some(rest) = msg.strip_prefix(ENTRY) {
            // "<index>\u{1f}<field>\u{1f}<problem> at line ..."
            let mut parts = rest.splitn(3, '\u{1f}');
            let index = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            let field = match parts.next() {
                Some("daily_key") => "daily_key",
                Some("time_start") => "time_start",
                Some("time_end") => "time_end",
                Some("max") => "max",
                _ => "entry",
            };
            let problem = parts.next().unwrap_or("");
            let problem = problem
                .rsplit_once(" at line ")
                .map(|(p, _)| p)
                .unwrap_or(problem)
                .to_string();
            return F0Error::Entry {
                index,
                field,
                problem,
            };
        }
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

const TOO_MANY: &str = "\u{1e}too-many ";
const NO_DATA: &str = "\u{1e}no-data";
const ENTRY: &str = "\u{1e}entry ";

fn entry_error<E: de::Error>(index: usize, field: &str, problem: impl fmt::Display) -> E {
    E::custom(format!("{ENTRY}{index}\u{1f}{field}\u{1f}{problem}"))
}

/// Parses an F0 list, checking every entry.
pub fn parse_f0(bytes: &[u8], limits: &F0Limits) -> Result<F0List, F0Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let list = ListSeed { limits }
        .deserialize(&mut de)
        .map_err(F0Error::from_json)?;
    de.end().map_err(F0Error::from_json)?;
    Ok(list)
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

struct ListSeed<'a> {
    limits: &'a F0Limits,
}

impl<'de> DeserializeSeed<'de> for ListSeed<'_> {
    type Value = F0List;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<F0List, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_> {
    type Value = F0List;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with a `data` array")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<F0List, A::Error> {
        let mut list = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "data" {
                list = Some(map.next_value_seed(EntriesSeed {
                    limits: self.limits,
                })?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        list.ok_or_else(|| de::Error::custom(NO_DATA))
    }
}

struct EntriesSeed<'a> {
    limits: &'a F0Limits,
}

impl<'de> DeserializeSeed<'de> for EntriesSeed<'_> {
    type Value = F0List;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<F0List, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for EntriesSeed<'_> {
    type Value = F0List;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of F0 entries")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<F0List, A::Error> {
        let mut entries = Vec::new();
        let mut index = 0usize;
        while let Some(raw) = seq.next_element::<RawEntry>()? {
            if index >= self.limits.max_entries {
                return Err(de::Error::custom(format!(
                    "{TOO_MANY}{} entries",
                    self.limits.max_entries
                )));
            }
            entries.push(raw.check(index)?);
            index += 1;
        }
        Ok(F0List { entries })
    }
}

#[derive(Deserialize)]
struct RawEntry {
    daily_key: Option<serde_json::Value>,
    time_start: Option<serde_json::Value>,
    time_end: Option<serde_json::Value>,
    max: Option<serde_json::Value>,
}

fn as_seconds<E: de::Error>(
    index: usize,
    field: &'static str,
    v: Option<serde_json::Value>,
) -> Result<i64, E> {
    let v = v.ok_or_else(|| entry_error(index, field, "is missing"))?;
    match v.as_i64() {
        Some(n) if n >= 0 => Ok(n),
        _ => Err(entry_error(
            index,
            field,
            format!("must be a non-negative whole number of unix seconds, got {v}"),
        )),
    }
}

impl RawEntry {
    fn check<E: de::Error>(self, index: usize) -> Result<F0Entry, E> {
        let key = match self.daily_key {
            Some(serde_json::Value::String(s)) => {
                DailyKey::from_hex(&s).map_err(|e| entry_error(index, "daily_key", e))?
            }
            Some(_) => return Err(entry_error(index, "daily_key", "must be a hex string")),
            None => return Err(entry_error(index, "daily_key", "is missing")),
        };
        let time_start = as_seconds(index, "time_start", self.time_start)?;
        let time_end = as_seconds(index, "time_end", self.time_end)?;
        if time_end < time_start {
            return Err(entry_error(
                index,
                "time_end",
                format!("({time_end}) is before time_start ({time_start})"),
            ));
        }
        if time_end - time_start >= MAX_SPAN_DAYS * DAY_SECONDS {
            return Err(entry_error(
                index,
                "time_end",
                format!("spans more than {MAX_SPAN_DAYS} days from time_start"),
            ));
        }
        let max = match self.max {
            None => SlotsPerDay::DEFAULT,
            Some(v) => {
                let n = v.as_i64().ok_or_else(|| {
                    entry_error(index, "max", format!("must be a whole number, got {v}"))
                })?;
                SlotsPerDay::new(n).map_err(|e| entry_error(index, "max", e))?
            }
        };
        Ok(F0Entry {
            daily_key: key,
            time_start,
            time_end,
            max,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn one(entry: &str) -> Result<F0List, F0Error> {
        parse_f0(
            format!(r#"{{"data":[{entry}]}}"#).as_bytes(),
            &F0Limits::default(),
        )
    }

    #[test]
    fn parses_spec_example_and_upper_case() {
        let l = one(&format!(
            r#"{{"daily_key":"{}","time_start":1596844800,"max":96,"time_end":1596931199}}"#,
            KEY.to_uppercase()
        ))
        .unwrap();
        assert_eq!(l.entries.len(), 1);
        assert_eq!(l.entries[0].daily_key.to_hex(), KEY);
        assert_eq!(l.entries[0].days(), 1);
        let back = parse_f0(write_f0(&l).as_bytes(), &F0Limits::default()).unwrap();
        assert_eq!(back, l);
    }

    #[test]
    fn precise_errors() {
        let e = one(r#"{"daily_key":"abcd","time_start":1,"time_end":2}"#).unwrap_err();
        assert!(
            matches!(
                e,
                F0Error::Entry {
                    index: 0,
                    field: "daily_key",
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            e.to_string().contains("expected 64 hex characters, got 4"),
            "{e}"
        );
        let e = one(&format!(
            r#"{{"daily_key":"{KEY}","time_start":10,"time_end":5}}"#
        ))
        .unwrap_err();
        assert!(
            matches!(
                e,
                F0Error::Entry {
                    field: "time_end",
                    ..
                }
            ),
            "{e}"
        );
        let e = one(&format!(
            r#"{{"daily_key":"{KEY}","time_start":0,"time_end":5,"max":97}}"#
        ))
        .unwrap_err();
        assert!(matches!(e, F0Error::Entry { field: "max", .. }), "{e}");
        let e = one(&format!(
            r#"{{"daily_key":"{KEY}","time_start":0,"time_end":5,"max":1}}"#
        ))
        .unwrap_err();
        assert!(matches!(e, F0Error::Entry { field: "max", .. }), "{e}");
        let e = one(&format!(
            r#"{{"daily_key":"{KEY}","time_start":0,"time_end":2592000}}"#
        ))
        .unwrap_err();
        assert!(e.to_string().contains("30 days"), "{e}");
        assert!(one(&format!(
            r#"{{"daily_key":"{KEY}","time_start":0,"time_end":2591999}}"#
        ))
        .is_ok());
        let e = parse_f0(b"{\"data\":[", &F0Limits::default()).unwrap_err();
        assert!(matches!(e, F0Error::Json { .. }), "{e}");
        assert_eq!(
            parse_f0(b"{}", &F0Limits::default()).unwrap_err(),
            F0Error::MissingData
        );
    }

    #[test]
    fn entry_limit() {
        let e = format!(r#"{{"daily_key":"{KEY}","time_start":0,"time_end":5}}"#);
        let body = format!(r#"{{"data":[{e},{e},{e}]}}"#);
        let lim = F0Limits { max_entries: 2 };
        assert_eq!(
            parse_f0(body.as_bytes(), &lim).unwrap_err(),
            F0Error::TooManyEntries { limit: 2 }
        );
        assert_eq!(
            parse_f0(body.as_bytes(), &F0Limits { max_entries: 3 })
                .unwrap()
                .entries
                .len(),
            3
        );
    }
}
