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

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::rolling::SlotsPerDay;
use crate::ids::DailyKey;
use crate::time::UnixSeconds;

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
    fn from_json(e: serde_json::Error) -> F0Error {
        // Our own refusals travel through serde as custom errors carrying a marker prefix, so
        // the typed error can be rebuilt here.
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

/// Parses an F0 list: the valid entries and the skipped ones. Refused when the JSON is malformed,
/// has no `data` array, exceeds the entry limit, or when entries exist but none is valid.
pub fn parse_f0(bytes: &[u8], limits: &F0Limits) -> Result<F0Parsed, F0Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = ListSeed { limits }
        .deserialize(&mut de)
        .map_err(F0Error::from_json)?;
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

struct ListSeed<'a> {
    limits: &'a F0Limits,
}

impl<'de> DeserializeSeed<'de> for ListSeed<'_> {
    type Value = F0Parsed;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<F0Parsed, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_> {
    type Value = F0Parsed;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with a `data` array")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<F0Parsed, A::Error> {
        let mut list = None;
        while let Some(key) = map.next_key::<Field>()? {
            if key == Field::Data {
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
    type Value = F0Parsed;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<F0Parsed, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for EntriesSeed<'_> {
    type Value = F0Parsed;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of F0 entries")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<F0Parsed, A::Error> {
        let mut out = F0Parsed::default();
        let mut index = 0usize;
        while let Some(raw) = seq.next_element::<RawEntry>()? {
            if index >= self.limits.max_entries {
                return Err(de::Error::custom(format!(
                    "{TOO_MANY}{} entries",
                    self.limits.max_entries
                )));
            }
            match raw.check(index) {
                Ok(entry) => out.list.entries.push(entry),
                Err(skip) => {
                    out.skipped_total += 1;
                    if out.skipped.len() < MAX_REPORTED_SKIPS {
                        out.skipped.push(skip);
                    }
                }
            }
            index += 1;
        }
        Ok(out)
    }
}

/// A key of the list or of an entry, recognised without allocating (a key may be huge).
#[derive(PartialEq, Eq)]
enum Field {
    Data,
    DailyKey,
    TimeStart,
    TimeEnd,
    Max,
    Other,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Field, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
                Ok(match v {
                    "data" => Field::Data,
                    "daily_key" => Field::DailyKey,
                    "time_start" => Field::TimeStart,
                    "time_end" => Field::TimeEnd,
                    "max" => Field::Max,
                    _ => Field::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

/// A field's value as far as an F0 entry cares: anything else is only named, never held.
#[derive(Debug)]
enum Scalar {
    Str(String),
    Int(i128),
    Float(f64),
    Other(&'static str),
}

/// No field of an entry is longer than this (a key is 64 hex characters).
const MAX_STRING: usize = 128;

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(if v.len() > MAX_STRING {
                    Scalar::Other("a string longer than 128 characters")
                } else {
                    Scalar::Str(v.to_owned())
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Scalar, E> {
                Ok(Scalar::Other("a boolean"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar::Other("null"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other("an array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other("an object"))
            }
        }
        d.deserialize_any(V)
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Scalar::Str(s) => write!(f, "{s:?}"),
            Scalar::Int(n) => write!(f, "{n}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Other(kind) => f.write_str(kind),
        }
    }
}

impl Scalar {
    /// A whole number: an integer, or a float with a zero fraction.
    fn whole(&self) -> Option<i64> {
        match *self {
            Scalar::Int(n) => i64::try_from(n).ok(),
            // The bounds keep the cast exact; callers bound the value far tighter anyway.
            Scalar::Float(x) if x.fract() == 0.0 && x.abs() < 9.0e15 => Some(x as i64),
            _ => None,
        }
    }
}

/// An entry as it arrived; `Bad` when it was not even an object.
enum RawEntry {
    Fields {
        daily_key: Option<Scalar>,
        time_start: Option<Scalar>,
        time_end: Option<Scalar>,
        max: Option<Scalar>,
    },
    Bad(&'static str),
}

impl<'de> Deserialize<'de> for RawEntry {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<RawEntry, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an F0 entry")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEntry, A::Error> {
                let (mut daily_key, mut time_start, mut time_end, mut max) =
                    (None, None, None, None);
                while let Some(key) = map.next_key::<Field>()? {
                    let slot = match key {
                        Field::DailyKey => &mut daily_key,
                        Field::TimeStart => &mut time_start,
                        Field::TimeEnd => &mut time_end,
                        Field::Max => &mut max,
                        Field::Data | Field::Other => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value::<Scalar>()?);
                }
                Ok(RawEntry::Fields {
                    daily_key,
                    time_start,
                    time_end,
                    max,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawEntry, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(RawEntry::Bad("an array"))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<RawEntry, E> {
                Ok(RawEntry::Bad("a string"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawEntry, E> {
                Ok(RawEntry::Bad("a number"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawEntry, E> {
                Ok(RawEntry::Bad("a number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawEntry, E> {
                Ok(RawEntry::Bad("a number"))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawEntry, E> {
                Ok(RawEntry::Bad("a boolean"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<RawEntry, E> {
                Ok(RawEntry::Bad("null"))
            }
        }
        d.deserialize_any(V)
    }
}

fn seconds(index: usize, field: &'static str, v: Option<Scalar>) -> Result<i64, SkippedEntry> {
    let skip = |reason: String| SkippedEntry {
        index,
        field,
        reason,
    };
    let v = v.ok_or_else(|| skip("is missing".into()))?;
    let t = v
        .whole()
        .ok_or_else(|| skip(format!("must be a whole number of unix seconds, got {v}")))?;
    if !(EARLIEST_TIME..=LATEST_TIME).contains(&t) {
        return Err(skip(format!(
            "must be between {EARLIEST_TIME} (2000-01-01) and {LATEST_TIME} (2100-12-31), got {t}"
        )));
    }
    Ok(t)
}

impl RawEntry {
    fn check(self, index: usize) -> Result<F0Entry, SkippedEntry> {
        let skip = |field: &'static str, reason: String| SkippedEntry {
            index,
            field,
            reason,
        };
        let (daily_key, time_start, time_end, max) = match self {
            RawEntry::Fields {
                daily_key,
                time_start,
                time_end,
                max,
            } => (daily_key, time_start, time_end, max),
            RawEntry::Bad(kind) => {
                return Err(skip("entry", format!("must be an object, got {kind}")))
            }
        };
        let key = match daily_key {
            Some(Scalar::Str(s)) => {
                DailyKey::from_hex(&s).map_err(|e| skip("daily_key", e.to_string()))?
            }
            Some(other) => {
                return Err(skip(
                    "daily_key",
                    format!("must be a hex string, got {other}"),
                ))
            }
            None => return Err(skip("daily_key", "is missing".into())),
        };
        let time_start = seconds(index, "time_start", time_start)?;
        let time_end = seconds(index, "time_end", time_end)?;
        if time_end < time_start {
            return Err(skip(
                "time_end",
                format!("({time_end}) is before time_start ({time_start})"),
            ));
        }
        let max = match max {
            None => SlotsPerDay::DEFAULT,
            Some(v) => {
                let n = v
                    .whole()
                    .ok_or_else(|| skip("max", format!("must be a whole number, got {v}")))?;
                SlotsPerDay::new(n).map_err(|e| skip("max", e.to_string()))?
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

    /// The work an entry costs is bounded by the retained log, not by its span (issue 10 §3):
    /// an entry starting a year ago derives exactly the sub-keys of one starting at the oldest
    /// retained day, and its only extra cost is the daily-key hash chain, walked once, one hash
    /// per day (the chain cannot be skipped: day n's key is SHA256ⁿ of the published one).
    #[test]
    fn a_year_long_entry_costs_the_retention_periods_sub_keys_and_one_linear_chain_walk() {
        use crate::bluezone::rolling::NEXT_DAY_HASHES;
        use crate::bluezone::SlotsPerDay;
        use crate::matching::bluezone::match_f0;
        use crate::matching::{MatchConfig, ObservationIndex};
        use crate::{PeerId, Sighting};

        const TODAY: i64 = 20_000;
        const RETAINED: i64 = 21;
        const YEAR: i64 = 365;
        let year_key = DailyKey::from_bytes([0x3c; 32]);
        // Both entries publish the same chain: the retention-long one starts where the year-long
        // one is on the oldest retained day.
        let retained_key = year_key.advance((YEAR - (RETAINED - 1)) as u32);
        let day0 = TODAY - (RETAINED - 1);
        // The log: one sighting of the case's slot-10 ID on each retained day.
        let sightings: Vec<Sighting> = (0..RETAINED)
            .map(|d| Sighting {
                peer: PeerId::Bluezone(retained_key.advance(d as u32).id(10)),
                time: (day0 + d) * 86_400 + 10 * 900 + 30,
                rssi: -60,
                tx_power: None,
                aem: None,
            })
            .collect();
        let index = ObservationIndex::build(&sightings, 5);
        let entry = |key: &DailyKey, days: i64| F0Entry {
            daily_key: key.clone(),
            time_start: (TODAY - (days - 1)) * 86_400,
            time_end: TODAY * 86_400 + 86_399,
            max: SlotsPerDay::DEFAULT,
        };
        let year = entry(&year_key, YEAR + 1);
        let retained = entry(&retained_key, RETAINED);
        // One worker thread, so that the per-thread hash count sees all of the walk.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let measure = |entries: &[F0Entry]| {
            pool.install(|| {
                NEXT_DAY_HASHES.with(|n| n.set(0));
                let (hits, stats) = match_f0(entries, &index, &MatchConfig::default());
                (
                    hits.len(),
                    stats.ids_derived,
                    NEXT_DAY_HASHES.with(|n| n.get()),
                )
            })
        };
        let (year_hits, year_ids, year_hashes) = measure(std::slice::from_ref(&year));
        let (kept_hits, kept_ids, kept_hashes) = measure(std::slice::from_ref(&retained));
        assert_eq!(year_hits, RETAINED as usize, "every retained day matched");
        assert_eq!(kept_hits, year_hits);
        // Sub-key work: equal, and only for the retained days (96 a day; the newest day stops
        // at the newest sighting's slot, 10, plus the legacy layout's slot 15 within the skew).
        assert_eq!(year_ids, kept_ids);
        assert!(
            kept_ids <= (RETAINED as u64) * 96,
            "{kept_ids} sub-keys for {RETAINED} days"
        );
        // The chain: one hash per day walked, from time_start to the newest sighting's day, once.
        assert_eq!(year_hashes, YEAR as u64);
        assert_eq!(kept_hashes, (RETAINED - 1) as u64);
        // Two entries cost the sum: nothing is walked again per matched day or per entry.
        let (both_hits, both_ids, both_hashes) = measure(&[year.clone(), retained.clone()]);
        assert_eq!(both_hits, 2 * year_hits);
        assert_eq!(both_ids, year_ids + kept_ids);
        assert_eq!(both_hashes, year_hashes + kept_hashes);
    }

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const T0: i64 = 1596844800;

    fn one(entry: &str) -> Result<F0Parsed, F0Error> {
        parse_f0(
            format!(r#"{{"data":[{entry}]}}"#).as_bytes(),
            &F0Limits::default(),
        )
    }

    fn good(start: &str, end: &str) -> String {
        format!(r#"{{"daily_key":"{KEY}","time_start":{start},"time_end":{end}}}"#)
    }

    #[test]
    fn parses_spec_example_and_upper_case() {
        let l = one(&format!(
            r#"{{"daily_key":"{}","time_start":1596844800,"max":96,"time_end":1596931199}}"#,
            KEY.to_uppercase()
        ))
        .unwrap();
        assert!(l.skipped.is_empty());
        let l = l.list;
        assert_eq!(l.entries.len(), 1);
        assert_eq!(l.entries[0].daily_key.to_hex(), KEY);
        assert_eq!(l.entries[0].days(), 1);
        let back = parse_f0(write_f0(&l).as_bytes(), &F0Limits::default()).unwrap();
        assert_eq!(back.list, l);
    }

    #[test]
    fn real_phone_lists_are_accepted() {
        // 36.5 days, as the only public reconstruction of a real push.
        let l = one(&good("1596844800", &(T0 + 36 * 86400 + 43200).to_string())).unwrap();
        assert_eq!(l.list.entries[0].days(), 37);
        // iOS writes times as doubles.
        let l = one(&good("1596844800.0", "1.5969312e9")).unwrap();
        assert_eq!(l.list.entries[0].time_start, T0);
        assert_eq!(l.list.entries[0].time_end, 1_596_931_200);
        assert_eq!(
            l.list.entries[0].max,
            SlotsPerDay::DEFAULT,
            "missing max is 96"
        );
        let e = one(&good("1596844800.5", "1596931199")).unwrap_err();
        assert!(
            matches!(
                e,
                F0Error::Entry {
                    field: "time_start",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("1596844800.5"), "{e}");
    }

    #[test]
    fn one_bad_entry_does_not_lose_the_rest() {
        let body = format!(
            r#"{{"data":[{},{{"daily_key":"zz","time_start":{T0},"time_end":{T0}}},{},7,{}]}}"#,
            good("1596844800", "1596844900"),
            good("1.5", "1596844900"),
            good("1596844800", "1596844999"),
        );
        let p = parse_f0(body.as_bytes(), &F0Limits::default()).unwrap();
        assert_eq!(p.list.entries.len(), 2);
        assert_eq!(p.skipped_total, 3);
        let got: Vec<(usize, &str)> = p.skipped.iter().map(|s| (s.index, s.field)).collect();
        assert_eq!(got, [(1, "daily_key"), (2, "time_start"), (3, "entry")]);
    }

    #[test]
    fn times_outside_the_window_are_skipped() {
        for t in [
            "0",
            "-1",
            "946684799",
            "4133980800",
            "9223372036854775807",
            "1e300",
        ] {
            let body = format!(
                r#"{{"data":[{},{}]}}"#,
                good(t, "1596844900"),
                good("1596844800", "1596844900")
            );
            let p = parse_f0(body.as_bytes(), &F0Limits::default()).unwrap();
            assert_eq!(p.list.entries.len(), 1, "{t}");
            assert_eq!(p.skipped[0].field, "time_start", "{t}");
        }
        assert!(one(&good("946684800", "4133980799")).is_ok());
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
        let e = one(&good("1596844810", "1596844805")).unwrap_err();
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
            r#"{{"daily_key":"{KEY}","time_start":{T0},"time_end":{T0},"max":97}}"#
        ))
        .unwrap_err();
        assert!(matches!(e, F0Error::Entry { field: "max", .. }), "{e}");
        let e = one(&format!(
            r#"{{"daily_key":"{KEY}","time_start":{T0},"time_end":{T0},"max":[1]}}"#
        ))
        .unwrap_err();
        assert!(matches!(e, F0Error::Entry { field: "max", .. }), "{e}");
        let e = parse_f0(b"{\"data\":[", &F0Limits::default()).unwrap_err();
        assert!(matches!(e, F0Error::Json { .. }), "{e}");
        assert_eq!(
            parse_f0(b"{}", &F0Limits::default()).unwrap_err(),
            F0Error::MissingData
        );
        assert!(parse_f0(br#"{"data":[]}"#, &F0Limits::default())
            .unwrap()
            .list
            .entries
            .is_empty());
    }

    #[test]
    fn skipped_descriptions_are_bounded() {
        let bad = r#"{"daily_key":"x"}"#;
        let mut body = format!(r#"{{"data":[{}"#, good("1596844800", "1596844900"));
        for _ in 0..MAX_REPORTED_SKIPS + 5 {
            body.push(',');
            body.push_str(bad);
        }
        body.push_str("]}");
        let p = parse_f0(body.as_bytes(), &F0Limits::default()).unwrap();
        assert_eq!(p.skipped.len(), MAX_REPORTED_SKIPS);
        assert_eq!(p.skipped_total, MAX_REPORTED_SKIPS + 5);
    }

    #[test]
    fn entry_limit() {
        let e = good("1596844800", "1596844805");
        let body = format!(r#"{{"data":[{e},{e},{e}]}}"#);
        let lim = F0Limits { max_entries: 2 };
        assert_eq!(
            parse_f0(body.as_bytes(), &lim).unwrap_err(),
            F0Error::TooManyEntries { limit: 2 }
        );
        assert_eq!(
            parse_f0(body.as_bytes(), &F0Limits { max_entries: 3 })
                .unwrap()
                .list
                .entries
                .len(),
            3
        );
    }

    #[test]
    fn revocations_round_trip_and_plain_lists_have_none() {
        let list = F0List {
            entries: vec![F0Entry {
                daily_key: DailyKey::from_bytes([1; 32]),
                time_start: 1_596_844_800,
                time_end: 1_596_931_199,
                max: SlotsPerDay::DEFAULT,
            }],
        };
        let revoked = [DailyKey::from_bytes([2; 32]), DailyKey::from_bytes([3; 32])];
        let json = write_f0_with_revocations(&list, &revoked);
        assert_eq!(parse_f0_revocations(json.as_bytes(), 10).unwrap(), revoked);
        assert_eq!(
            parse_f0_revocations(json.as_bytes(), 1).unwrap(),
            revoked[..1]
        );
        // Bluezone's parser reads the entries and ignores the field.
        let parsed = parse_f0(json.as_bytes(), &F0Limits::default()).unwrap();
        assert_eq!(parsed.list, list);
        // Only revocations: an empty `data` array is a valid list.
        let only = write_f0_with_revocations(&F0List::default(), &revoked[..1]);
        assert!(parse_f0(only.as_bytes(), &F0Limits::default())
            .unwrap()
            .list
            .entries
            .is_empty());
        assert_eq!(
            parse_f0_revocations(only.as_bytes(), 10).unwrap(),
            revoked[..1]
        );
        let plain = write_f0(&list);
        assert_eq!(write_f0_with_revocations(&list, &[]), plain);
        assert!(parse_f0_revocations(plain.as_bytes(), 10)
            .unwrap()
            .is_empty());
        // A malformed key is skipped, the others kept.
        let bad = format!(
            "{{\"data\":[],\"revoked\":[\"zz\",7,\"{}\"]}}",
            revoked[0].to_hex()
        );
        assert_eq!(
            parse_f0_revocations(bad.as_bytes(), 10).unwrap(),
            revoked[..1]
        );
    }
}
