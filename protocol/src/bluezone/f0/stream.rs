//! The F0 list read as a stream: serde visitors take the `data` array one entry at a time into
//! typed fields (a value of the wrong shape, however large, is skipped without being held), and
//! each entry is checked as a phone would (key, time window, `max`) or skipped with the reason.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::{
    F0Entry, F0Error, F0Limits, F0Parsed, SkippedEntry, EARLIEST_TIME, LATEST_TIME,
    MAX_REPORTED_SKIPS,
};
use crate::bluezone::rolling::SlotsPerDay;
use crate::ids::DailyKey;

/// Reads the list object; a refusal of the list as a whole (no `data`, too many entries) is
/// left in `refusal` for [`super::parse_f0`], typed.
pub(super) struct ListSeed<'a> {
    limits: &'a F0Limits,
    refusal: &'a Cell<Option<F0Error>>,
}

impl<'a> ListSeed<'a> {
    pub(super) fn new(limits: &'a F0Limits, refusal: &'a Cell<Option<F0Error>>) -> Self {
        ListSeed { limits, refusal }
    }
}

/// Stops the reading for a reason kept in `cell`.
fn refuse<E: de::Error>(cell: &Cell<Option<F0Error>>, why: F0Error) -> E {
    let msg = why.to_string();
    cell.set(Some(why));
    E::custom(msg)
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
                    refusal: self.refusal,
                })?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        list.ok_or_else(|| refuse(self.refusal, F0Error::MissingData))
    }
}

struct EntriesSeed<'a> {
    limits: &'a F0Limits,
    refusal: &'a Cell<Option<F0Error>>,
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
                return Err(refuse(
                    self.refusal,
                    F0Error::TooManyEntries {
                        limit: self.limits.max_entries,
                    },
                ));
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
