//! The compact form of a case list: what matching needs, as fixed-size records, so that `check`
//! and the daemon's matcher never re-inflate a zip or re-parse JSON. Written at import (and by
//! the schema v4 migration from the stored original), sealed beside the original in
//! `case_lists.compact`.
//!
//! Layout (little-endian): `"BZC1"`, format byte (1 = Bluezone F0, 2 = GAEN export), the
//! export's `end_timestamp` (u64, 0 for F0), the record count (u32), then the records:
//!
//! | format | record | bytes |
//! |---|---|---|
//! | F0 | daily key, `time_start` (i64), `time_end` (i64), `max` (u32) | 52 |
//! | F0 revocation | daily key of the list's `revoked` array, 0, 0, `max` = 0 (never a valid entry) | 52 |
//! | GAEN | TEK, rolling start (u32), rolling period (u32), report type (i32), days since onset (i32), flags (u8: 1 = in `revised_keys`, 2 = onset present) | 33 |
//!
//! Only the entries that passed the checks at import are kept (the skipped ones never match).

use std::sync::Arc;

use zeroize::{Zeroize, Zeroizing};

use bluezone_protocol::bluezone::f0::parse_f0_revocations;
use bluezone_protocol::gaen::export::ReportType;
use bluezone_protocol::gaen::Enin;
use bluezone_protocol::matching::gaen::KeyRef;

use super::{CaseList, Format, Limits};

const MAGIC: &[u8; 4] = b"BZC1";
const HEADER: usize = 4 + 1 + 8 + 4;
const F0_RECORD: usize = 52;
const GAEN_RECORD: usize = 33;
const FLAG_REVISED: u8 = 1;
const FLAG_ONSET: u8 = 2;

/// Why a compact form did not decode (a store bug or tampering the seal did not catch).
#[derive(Debug, thiserror::Error)]
#[error("compact case list: {0}")]
pub struct Error(&'static str);

/// One F0 entry.
#[derive(Clone, Copy, Debug)]
pub struct F0Record {
    pub key: [u8; 32],
    pub time_start: i64,
    pub time_end: i64,
    pub max: u32,
    /// The case list (id) it came from.
    pub list: i64,
}

/// One published GAEN key, decoded from its record by [`Records::gaen`].
#[derive(Clone, Copy, Debug)]
pub struct GaenRecord {
    pub rolling_start: u32,
    pub rolling_period: u32,
    pub report_type: i32,
    pub days_since_onset: Option<i32>,
    /// An entry of `revised_keys`.
    pub revised: bool,
    /// The export's `end_timestamp`.
    pub end_timestamp: u64,
    /// The case list (id) it came from; ids grow with import order.
    pub list: i64,
}

/// One GAEN list's records, kept as the opened compact form: decoding them into structs would
/// hold a second, larger copy of a million keys. Shared by the [`Records`] that hold the list
/// (the daemon's next resolution keeps the lists that did not change, without reading them
/// again).
struct GaenBlock {
    /// The whole compact form (header included); zeroed when dropped.
    bytes: Zeroizing<Vec<u8>>,
    list: i64,
    end_timestamp: u64,
}

impl Drop for GaenBlock {
    fn drop(&mut self) {
        // The buffer (33 MB for 1M keys) is wiped with a plain fill, which runs at memory
        // speed; `Zeroizing`'s volatile byte-at-a-time writes cost ~15 ms a `check`.
        // `black_box` keeps the fill from being dropped as a dead store.
        let mut bytes = std::mem::take(&mut *self.bytes);
        let cap = bytes.capacity();
        bytes.clear();
        bytes.resize(cap, 0);
        std::hint::black_box(&mut bytes);
    }
}

/// The records of any number of lists: F0 entries in two contiguous buffers whose key bytes
/// are zeroed once, in one pass each, when dropped; GAEN keys left in their opened compact
/// forms (33 bytes a key), read through [`gaen_key`](Records::gaen_key) and
/// [`gaen`](Records::gaen).
#[derive(Default)]
pub struct Records {
    pub f0: Vec<F0Record>,
    /// Daily keys an F0 list revoked (its `revoked` array), with that list's id.
    pub f0_revoked: Vec<([u8; 32], i64)>,
    gaen: Vec<Arc<GaenBlock>>,
    /// Index (over all lists) of each block's first record.
    gaen_first: Vec<usize>,
    gaen_len: usize,
}

impl Drop for Records {
    fn drop(&mut self) {
        for r in &mut self.f0 {
            r.key.zeroize();
        }
        for (k, _) in &mut self.f0_revoked {
            k.zeroize();
        }
        // GAEN blocks wipe themselves when their last holder drops them.
    }
}

impl Records {
    /// GAEN keys in all lists.
    pub fn gaen_len(&self) -> usize {
        self.gaen_len
    }

    /// The records of the lists for which `keep(list)` holds, in the same order: GAEN blocks
    /// are shared, not copied or read again.
    pub fn retain_lists(&self, keep: impl Fn(i64) -> bool) -> Records {
        let mut out = Records::default();
        // Reserved first: a growing buffer would leave unwiped copies of the keys behind.
        out.f0.reserve_exact(self.f0.len());
        out.f0_revoked.reserve_exact(self.f0_revoked.len());
        out.f0.extend(self.f0.iter().filter(|e| keep(e.list)));
        out.f0_revoked
            .extend(self.f0_revoked.iter().filter(|&&(_, l)| keep(l)));
        for b in self.gaen.iter().filter(|b| keep(b.list)) {
            out.push_gaen(Arc::clone(b));
        }
        out
    }

    fn push_gaen(&mut self, b: Arc<GaenBlock>) {
        let n = (b.bytes.len() - HEADER) / GAEN_RECORD;
        self.gaen_first.push(self.gaen_len);
        self.gaen.push(b);
        self.gaen_len += n;
    }

    /// The block holding GAEN key `i` and the key's record in it.
    #[inline]
    fn gaen_record(&self, i: usize) -> (&GaenBlock, &[u8]) {
        let k = if self.gaen.len() == 1 {
            0
        } else {
            self.gaen_first.partition_point(|&f| f <= i) - 1
        };
        let (b, first) = (&self.gaen[k], self.gaen_first[k]);
        let at = HEADER + (i - first) * GAEN_RECORD;
        (b, &b.bytes[at..at + GAEN_RECORD])
    }

    /// GAEN key `i`'s TEK and rolling start (`i < gaen_len()`).
    #[inline]
    pub fn gaen_key(&self, i: usize) -> (&[u8; 16], u32) {
        let (_, r) = self.gaen_record(i);
        let tek: &[u8; 16] = r[..16].try_into().unwrap_or(&[0; 16]);
        (tek, u32_at(r, 16))
    }

    /// GAEN key `i` as the matcher reads it, where it lies (`i < gaen_len()`).
    #[inline]
    pub fn gaen_ref(&self, i: usize) -> KeyRef<'_> {
        self.gaen_ref_list(i).0
    }

    /// A hint that GAEN key `i` will be read soon (`i < gaen_len()`; see
    /// [`KeySource::prefetch`](bluezone_protocol::matching::gaen::KeySource::prefetch)).
    #[inline]
    pub fn gaen_prefetch(&self, i: usize) {
        // A 33-byte record crosses a cache line boundary half the time: ask for both lines.
        let r = self.gaen_record(i).1;
        bluezone_protocol::matching::prefetch(r.as_ptr());
        bluezone_protocol::matching::prefetch(r[GAEN_RECORD - 1..].as_ptr());
    }

    /// [`gaen_ref`](Self::gaen_ref) and [`gaen_list`](Self::gaen_list) in one lookup.
    #[inline]
    pub fn gaen_ref_list(&self, i: usize) -> (KeyRef<'_>, i64) {
        let (b, r) = self.gaen_record(i);
        (key_ref(r), b.list)
    }

    /// The positions in `picks` whose key passes `keep(key, list)`, in order: one tight pass
    /// (the daemon selects from a million keys each time new sightings arrive).
    pub fn gaen_filter(&self, picks: &[u32], keep: impl Fn(KeyRef<'_>, i64) -> bool) -> Vec<u32> {
        match self.gaen.as_slice() {
            [b] => {
                let body = &b.bytes[HEADER..];
                picks
                    .iter()
                    .copied()
                    .filter(|&p| {
                        let at = p as usize * GAEN_RECORD;
                        body.get(at..at + GAEN_RECORD)
                            .is_some_and(|r| keep(key_ref(r), b.list))
                    })
                    .collect()
            }
            _ => picks
                .iter()
                .copied()
                .filter(|&p| {
                    let (k, list) = self.gaen_ref_list(p as usize);
                    keep(k, list)
                })
                .collect(),
        }
    }

    /// The case list (id) GAEN key `i` came from (`i < gaen_len()`).
    #[inline]
    pub fn gaen_list(&self, i: usize) -> i64 {
        self.gaen_record(i).0.list
    }

    /// The rest of GAEN key `i`'s record (`i < gaen_len()`).
    pub fn gaen(&self, i: usize) -> GaenRecord {
        let (b, r) = self.gaen_record(i);
        let flags = r[32];
        GaenRecord {
            rolling_start: u32_at(r, 16),
            rolling_period: u32_at(r, 20),
            report_type: u32_at(r, 24) as i32,
            days_since_onset: (flags & FLAG_ONSET != 0).then_some(u32_at(r, 28) as i32),
            revised: flags & FLAG_REVISED != 0,
            end_timestamp: b.end_timestamp,
            list: b.list,
        }
    }
}

/// The key bytes some lists published or revoked (see [`Records::keys_of_lists`]), sorted for
/// lookups; zeroed when dropped.
#[derive(Default)]
pub struct ListKeys {
    f0: Zeroizing<Vec<[u8; 32]>>,
    gaen: Zeroizing<Vec<[u8; 16]>>,
    /// One bit per value of a key's first 20 bits, set for the keys above: most keys asked
    /// about (a million, against a day's export) are turned away by one read of 128 KiB,
    /// not by a binary search. Keys are random, so the bits tell nothing worth wiping.
    seen: Vec<u64>,
}

impl ListKeys {
    const BITS: u32 = 20;

    fn slot(key: &[u8]) -> usize {
        (u32::from_be_bytes([0, key[0], key[1], key[2]]) >> (24 - Self::BITS)) as usize
    }

    fn maybe(&self, key: &[u8]) -> bool {
        let i = Self::slot(key);
        self.seen
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Whether the lists published or revoked F0 daily key `key`.
    pub fn has_f0(&self, key: &[u8; 32]) -> bool {
        self.maybe(key) && self.f0.binary_search(key).is_ok()
    }

    /// Whether the lists published (or revoked) GAEN TEK `tek`.
    pub fn has_gaen(&self, tek: &[u8; 16]) -> bool {
        self.maybe(tek) && self.gaen.binary_search(tek).is_ok()
    }

    /// Keys in all (duplicates counted once).
    pub fn len(&self) -> usize {
        self.f0.len() + self.gaen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Records {
    /// The keys the lists `lists` (ids, ascending) hold: their F0 entries' and revocations'
    /// daily keys and their GAEN TEKs (revoked ones included). Only those lists' records are
    /// read.
    pub fn keys_of_lists(&self, lists: &[i64]) -> ListKeys {
        let of = |list: i64| lists.binary_search(&list).is_ok();
        let mut out = ListKeys::default();
        // Reserved first: a growing buffer would leave unwiped copies of the keys behind.
        let f0 = self.f0.iter().filter(|e| of(e.list)).count()
            + self.f0_revoked.iter().filter(|&&(_, l)| of(l)).count();
        let gaen = self.gaen.iter().filter(|b| of(b.list));
        let gaen: usize = gaen.map(|b| (b.bytes.len() - HEADER) / GAEN_RECORD).sum();
        out.f0.reserve_exact(f0);
        out.gaen.reserve_exact(gaen);
        out.f0
            .extend(self.f0.iter().filter(|e| of(e.list)).map(|e| e.key));
        out.f0.extend(
            self.f0_revoked
                .iter()
                .filter(|&&(_, list)| of(list))
                .map(|(k, _)| *k),
        );
        for b in self.gaen.iter().filter(|b| of(b.list)) {
            out.gaen.extend(
                b.bytes[HEADER..]
                    .chunks_exact(GAEN_RECORD)
                    .map(|r| *key_ref(r).tek),
            );
        }
        out.f0.sort_unstable();
        out.f0.dedup();
        out.gaen.sort_unstable();
        out.gaen.dedup();
        out.seen = vec![0; (1 << ListKeys::BITS) / 64];
        let slots = out.f0.iter().map(|k| ListKeys::slot(k));
        for i in slots.chain(out.gaen.iter().map(|k| ListKeys::slot(k))) {
            out.seen[i / 64] |= 1 << (i % 64);
        }
        out
    }
}

/// A GAEN record's key fields, read in place.
#[inline]
fn key_ref(r: &[u8]) -> KeyRef<'_> {
    KeyRef {
        tek: r[..16].try_into().unwrap_or(&[0; 16]),
        rolling_start: Enin(u32_at(r, 16)),
        rolling_period: u32_at(r, 20),
        revoked: u32_at(r, 24) as i32 == ReportType::Revoked.to_i32(),
    }
}

#[inline]
fn u32_at(r: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([r[i], r[i + 1], r[i + 2], r[i + 3]])
}

/// The compact form of a checked list parsed from `original` (an F0 list's revocation array is
/// read from it).
pub fn encode(list: &CaseList, original: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::new());
    match list {
        CaseList::BluezoneF0(l) => {
            let entries = &l.list.entries;
            // The list parsed, so its JSON is well-formed; the array is bounded like the entries.
            let revoked = parse_f0_revocations(original, Limits::default().f0.max_entries)
                .unwrap_or_default();
            let n = entries.len() + revoked.len();
            out.reserve(HEADER + n * F0_RECORD);
            header(&mut out, Format::BluezoneF0, 0, n);
            for e in entries {
                out.extend_from_slice(e.daily_key.as_bytes());
                out.extend_from_slice(&e.time_start.to_le_bytes());
                out.extend_from_slice(&e.time_end.to_le_bytes());
                out.extend_from_slice(&e.max.get().to_le_bytes());
            }
            for k in &revoked {
                out.extend_from_slice(k.as_bytes());
                out.extend_from_slice(&[0u8; 20]);
            }
        }
        CaseList::GaenExport(x) => {
            let f = &x.file;
            let n = f.keys.len() + f.revised_keys.len();
            out.reserve(HEADER + n * GAEN_RECORD);
            header(&mut out, Format::GaenExport, f.end_timestamp, n);
            let all = f.keys.iter().map(|k| (k, false));
            for (k, revised) in all.chain(f.revised_keys.iter().map(|k| (k, true))) {
                out.extend_from_slice(k.tek.as_bytes());
                out.extend_from_slice(&k.rolling_start.to_le_bytes());
                out.extend_from_slice(&k.rolling_period.to_le_bytes());
                out.extend_from_slice(&k.report_type.to_i32().to_le_bytes());
                out.extend_from_slice(&k.days_since_onset.unwrap_or(0).to_le_bytes());
                let mut flags = 0;
                if revised {
                    flags |= FLAG_REVISED;
                }
                if k.days_since_onset.is_some() {
                    flags |= FLAG_ONSET;
                }
                out.push(flags);
            }
        }
    }
    out
}

fn header(out: &mut Vec<u8>, format: Format, end_timestamp: u64, n: usize) {
    out.extend_from_slice(MAGIC);
    out.push(match format {
        Format::BluezoneF0 => 1,
        Format::GaenExport => 2,
    });
    out.extend_from_slice(&end_timestamp.to_le_bytes());
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

/// The format a compact form holds.
pub fn format(bytes: &[u8]) -> Result<Format, Error> {
    if bytes.len() < HEADER || &bytes[..4] != MAGIC {
        return Err(Error("bad header"));
    }
    match bytes[4] {
        1 => Ok(Format::BluezoneF0),
        2 => Ok(Format::GaenExport),
        _ => Err(Error("unknown format byte")),
    }
}

/// Appends the records of list `list` (its opened compact form `bytes`) to `out`. A GAEN
/// list's buffer is kept as it is.
pub fn decode_into(bytes: Zeroizing<Vec<u8>>, list: i64, out: &mut Records) -> Result<(), Error> {
    let format = format(&bytes)?;
    let end_timestamp = u64::from_le_bytes(bytes[5..13].try_into().unwrap_or_default());
    let n = u32::from_le_bytes(bytes[13..17].try_into().unwrap_or_default()) as usize;
    let body = &bytes[HEADER..];
    let size = match format {
        Format::BluezoneF0 => F0_RECORD,
        Format::GaenExport => GAEN_RECORD,
    };
    if body.len() != n.saturating_mul(size) {
        return Err(Error("length does not match the record count"));
    }
    let i64_at = |r: &[u8], i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&r[i..i + 8]);
        i64::from_le_bytes(b)
    };
    match format {
        Format::BluezoneF0 => {
            out.f0.reserve(n);
            for r in body.chunks_exact(F0_RECORD) {
                let mut key = [0u8; 32];
                key.copy_from_slice(&r[..32]);
                if u32_at(r, 48) == 0 {
                    out.f0_revoked.push((key, list));
                    key.zeroize();
                    continue;
                }
                out.f0.push(F0Record {
                    key,
                    time_start: i64_at(r, 32),
                    time_end: i64_at(r, 40),
                    max: u32_at(r, 48),
                    list,
                });
                key.zeroize();
            }
        }
        Format::GaenExport => {
            if n > 0 {
                out.push_gaen(Arc::new(GaenBlock {
                    bytes,
                    list,
                    end_timestamp,
                }));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caselist::parse;

    #[test]
    fn f0_round_trips_valid_entries_only() {
        let a = hex::encode([7u8; 32]);
        let json = format!(
            r#"{{"data":[{{"daily_key":"{a}","time_start":1728000000,"max":144,"time_end":1728086399}},
            {{"daily_key":"zz","time_start":1}}]}}"#
        );
        let list = parse(json.as_bytes(), &[], &Limits::default()).unwrap();
        let c = encode(&list, json.as_bytes());
        assert_eq!(format(&c).unwrap(), Format::BluezoneF0);
        let mut r = Records::default();
        decode_into(c.clone(), 9, &mut r).unwrap();
        assert_eq!(r.f0.len(), 1);
        let e = r.f0[0];
        assert_eq!(
            (e.key, e.time_start, e.time_end, e.max, e.list),
            ([7u8; 32], 1728000000, 1728086399, 144, 9)
        );
        // Truncated or unknown data is refused, not misread.
        assert!(decode_into(Zeroizing::new(c[..c.len() - 1].to_vec()), 9, &mut r).is_err());
        assert!(decode_into(Zeroizing::new(b"BZC1\x07aaaaaaaaaaaa".to_vec()), 9, &mut r).is_err());
        assert!(format(b"PK\x03\x04").is_err());
    }

    /// An F0 list's `revoked` array travels in the compact form (records with `max` 0) and
    /// decodes apart from the entries.
    #[test]
    fn f0_revocations_round_trip() {
        let (a, b) = (hex::encode([7u8; 32]), hex::encode([8u8; 32]));
        let json = format!(
            r#"{{"data":[{{"daily_key":"{a}","time_start":1728000000,"max":144,"time_end":1728086399}}],
            "revoked":["{b}"]}}"#
        );
        let list = parse(json.as_bytes(), &[], &Limits::default()).unwrap();
        let c = encode(&list, json.as_bytes());
        let mut r = Records::default();
        decode_into(c.clone(), 3, &mut r).unwrap();
        assert_eq!(r.f0.len(), 1);
        assert_eq!(r.f0[0].key, [7u8; 32]);
        assert_eq!(r.f0_revoked, vec![([8u8; 32], 3)]);
        // The keys a list holds: its entries' and its revocations'.
        let held = r.keys_of_lists(&[3]);
        assert!(held.has_f0(&[7u8; 32]) && held.has_f0(&[8u8; 32]));
        assert_eq!(held.len(), 2);
        assert!(r.keys_of_lists(&[2, 4]).is_empty());
    }

    /// GAEN records stay in their opened compact forms; read back across two lists, each
    /// key's fields, list and export end are the ones published.
    #[test]
    fn gaen_records_read_across_lists() {
        use bluezone_protocol::gaen::export::{
            write_unsigned_export, ExportFile, ExportKey, ReportType,
        };
        use bluezone_protocol::ids::Tek;
        let export = |end: u64, teks: &[u8]| {
            let file = ExportFile {
                start_timestamp: end - 86400,
                end_timestamp: end,
                region: "VN".into(),
                batch_num: 1,
                batch_size: 1,
                keys: teks
                    .iter()
                    .map(|&t| ExportKey {
                        report_type: ReportType::SelfReport,
                        days_since_onset: Some(-2),
                        ..ExportKey::new(Tek::from_bytes([t; 16]), 2_650_000 + t as u32)
                    })
                    .collect(),
                ..ExportFile::default()
            };
            let zip = write_unsigned_export(&file).unwrap();
            let list = parse(&zip, &[], &Limits::default()).unwrap();
            encode(&list, &zip)
        };
        let mut r = Records::default();
        decode_into(export(1_600_000_000, &[1, 2, 3]), 4, &mut r).unwrap();
        decode_into(export(1_600_086_400, &[]), 5, &mut r).unwrap();
        decode_into(export(1_600_172_800, &[9, 8]), 6, &mut r).unwrap();
        assert_eq!(r.gaen_len(), 5);
        // (The export writer sorts its keys.)
        let got: Vec<(u8, u32, i64, u64)> = (0..5)
            .map(|i| {
                let (tek, start) = r.gaen_key(i);
                let k = r.gaen(i);
                assert_eq!(k.rolling_start, start);
                assert_eq!(k.rolling_period, 144);
                assert_eq!(k.report_type, ReportType::SelfReport.to_i32());
                assert_eq!(k.days_since_onset, Some(-2));
                assert!(!k.revised);
                (tek[0], start - 2_650_000, k.list, k.end_timestamp)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (1, 1, 4, 1_600_000_000),
                (2, 2, 4, 1_600_000_000),
                (3, 3, 4, 1_600_000_000),
                (8, 8, 6, 1_600_172_800),
                (9, 9, 6, 1_600_172_800),
            ]
        );
        // The keys of some lists: only theirs.
        let held = r.keys_of_lists(&[5, 6]);
        assert_eq!(held.len(), 2);
        assert!(held.has_gaen(&[8; 16]) && held.has_gaen(&[9; 16]));
        assert!(!held.has_gaen(&[1; 16]) && !held.has_f0(&[9; 32]));
        assert_eq!(r.keys_of_lists(&[4]).len(), 3);

        // Lists kept around a removed one (and one alone) read as the same lists decoded
        // afresh: every key, its fields and its list.
        let fresh = |lists: &[(u64, &[u8], i64)]| {
            let mut f = Records::default();
            for &(end, teks, id) in lists {
                decode_into(export(end, teks), id, &mut f).unwrap();
            }
            f
        };
        let all = |r: &Records| -> Vec<([u8; 16], u32, i64, u64, i32)> {
            (0..r.gaen_len())
                .map(|i| {
                    let (tek, start) = r.gaen_key(i);
                    let k = r.gaen(i);
                    assert_eq!(r.gaen_list(i), k.list);
                    (*tek, start, k.list, k.end_timestamp, k.report_type)
                })
                .collect()
        };
        let mut three = Records::default();
        decode_into(export(1_600_000_000, &[1, 2, 3]), 4, &mut three).unwrap();
        decode_into(export(1_600_086_400, &[5]), 5, &mut three).unwrap();
        decode_into(export(1_600_172_800, &[9, 8]), 6, &mut three).unwrap();
        let kept = three.retain_lists(|l| l != 5);
        let want = fresh(&[(1_600_000_000, &[1, 2, 3], 4), (1_600_172_800, &[9, 8], 6)]);
        assert_eq!(kept.gaen_len(), 5);
        assert_eq!(all(&kept), all(&want));
        let middle = three.retain_lists(|l| l == 5);
        assert_eq!(all(&middle), all(&fresh(&[(1_600_086_400, &[5], 5)])));
    }
}
