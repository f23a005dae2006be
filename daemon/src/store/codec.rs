//! Compact plaintext encoding of one sightings chunk (all sightings of one write batch and one
//! UTC day). The day itself is not encoded: it is the row's clear `day` column, bound into the
//! chunk's associated data.
//!
//! ```text
//! chunk  = version (u8 = 2) || count (u32 LE) || record* || zero bytes up to the size class
//!          (version 1, written before L8's padding: no padding; still decoded)
//! record = tag (u8: bit 0 = GAEN RPI, bit 1 = tx power present, bit 2 = AEM present,
//!                    other bits 0)
//!          || id (12 bytes Bluezone, 16 bytes GAEN)
//!          || seconds since 00:00 UTC of the day (u24 LE, < 86400)
//!          || rssi (i8) || [tx power (i8)] || [GAEN associated encrypted metadata (4 bytes)]
//! ```
//! A Bluezone sighting takes 17 bytes.
//!
//! # Padding (L8)
//!
//! The sealed blob's length would give the batch's sighting count exactly (`5 + 17n + 28` for
//! Bluezone). Version 2 pads the plaintext with zeros to its **size class**: the next power of
//! two, at least [`MIN_CLASS`] bytes, so the length only tells the count to within a factor of
//! two. Cost: the chunk bytes grow by at most 2× and about 1.44× on average (for counts spread
//! evenly on a log scale), plus at most [`MIN_CLASS`] for tiny batches; a finer scheme (a
//! multiple of 64 bytes, Padmé) would cost less but leave the count readable to within a few
//! sightings, which is what the finding is about. The per-day totals are in clear anyway
//! (`day_counts`): what padding hides is the count of each write batch within the day.

use bluezone_protocol::time::{utc_day, DAY_SECONDS};
use bluezone_protocol::{Aem, PeerId, RollingId, Rpi, Sighting};

const VERSION: u8 = 2;
/// The unpadded format written before padding (decoded only).
const VERSION_UNPADDED: u8 = 1;
/// Smallest size class of a chunk's plaintext: a handful of sightings all look alike.
pub(crate) const MIN_CLASS: usize = 64;
const TAG_GAEN: u8 = 0x01;
const TAG_TX: u8 = 0x02;
const TAG_AEM: u8 = 0x04;
const HEADER_LEN: usize = 5;
/// Largest encoded record.
pub(crate) const MAX_RECORD_LEN: usize = 1 + Rpi::LEN + 3 + 1 + 1 + Aem::LEN;

/// The padded length of a plaintext of `len` bytes.
pub(crate) fn size_class(len: usize) -> usize {
    len.max(MIN_CLASS).next_power_of_two()
}

/// Appends the encoding of `sightings`, which must all lie in UTC day `day`, padded with zeros
/// to its size class.
pub(crate) fn encode_chunk(day: i64, sightings: &[Sighting], out: &mut Vec<u8>) {
    let start = out.len();
    encode_records(VERSION, day, sightings, out);
    let len = out.len() - start;
    out.resize(start + size_class(len), 0);
}

/// The version 1 encoding (unpadded), as written before padding: for tests of old stores.
#[cfg(test)]
pub(crate) fn encode_chunk_unpadded(day: i64, sightings: &[Sighting], out: &mut Vec<u8>) {
    encode_records(VERSION_UNPADDED, day, sightings, out);
}

fn encode_records(version: u8, day: i64, sightings: &[Sighting], out: &mut Vec<u8>) {
    out.reserve(size_class(HEADER_LEN + sightings.len() * MAX_RECORD_LEN));
    out.push(version);
    out.extend_from_slice(&(sightings.len() as u32).to_le_bytes());
    for s in sightings {
        debug_assert_eq!(utc_day(s.time), day);
        let secs = (s.time - day * DAY_SECONDS) as u32;
        let mut tag = 0;
        if matches!(s.peer, PeerId::Gaen(_)) {
            tag |= TAG_GAEN;
        }
        if s.tx_power.is_some() {
            tag |= TAG_TX;
        }
        if s.aem.is_some() {
            tag |= TAG_AEM;
        }
        out.push(tag);
        out.extend_from_slice(s.peer.as_slice());
        out.extend_from_slice(&secs.to_le_bytes()[..3]);
        out.push(s.rssi as u8);
        if let Some(tx) = s.tx_power {
            out.push(tx as u8);
        }
        if let Some(aem) = s.aem {
            out.extend_from_slice(&aem.0);
        }
    }
}

/// Why a chunk could not be decoded (only after it authenticated, i.e. written by a different
/// encoder version, or a bug).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DecodeError;

/// Appends the sightings of a chunk of UTC day `day` to `out`. On error `out` is left as it was.
pub(crate) fn decode_chunk(
    day: i64,
    bytes: &[u8],
    out: &mut Vec<Sighting>,
) -> Result<(), DecodeError> {
    let start = out.len();
    let r = decode_inner(day, bytes, out);
    if r.is_err() {
        out.truncate(start);
    }
    r
}

fn decode_inner(day: i64, bytes: &[u8], out: &mut Vec<Sighting>) -> Result<(), DecodeError> {
    let (header, mut rest) = bytes.split_at_checked(HEADER_LEN).ok_or(DecodeError)?;
    let padded = match header[0] {
        VERSION => true,
        VERSION_UNPADDED => false,
        _ => return Err(DecodeError),
    };
    let count = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
    // Every record takes at least 17 bytes: a count the bytes cannot hold is corrupt (and must
    // not drive a huge allocation).
    if count > rest.len() / 17 {
        return Err(DecodeError);
    }
    let midnight = day.checked_mul(DAY_SECONDS).ok_or(DecodeError)?;
    out.reserve(count);
    for _ in 0..count {
        let (&tag, r) = rest.split_first().ok_or(DecodeError)?;
        if tag & !(TAG_GAEN | TAG_TX | TAG_AEM) != 0 {
            return Err(DecodeError);
        }
        let id_len = if tag & TAG_GAEN != 0 {
            Rpi::LEN
        } else {
            RollingId::LEN
        };
        let tx_len = usize::from(tag & TAG_TX != 0);
        let aem_len = if tag & TAG_AEM != 0 { Aem::LEN } else { 0 };
        let (rec, r) = r
            .split_at_checked(id_len + 4 + tx_len + aem_len)
            .ok_or(DecodeError)?;
        rest = r;
        let (id, tail) = rec.split_at(id_len);
        let peer = if tag & TAG_GAEN != 0 {
            PeerId::Gaen(Rpi::try_from(id).map_err(|_| DecodeError)?)
        } else {
            PeerId::Bluezone(RollingId::try_from(id).map_err(|_| DecodeError)?)
        };
        let secs = i64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], 0]));
        if secs >= DAY_SECONDS {
            return Err(DecodeError);
        }
        let (fixed, optional) = tail.split_at(4);
        let (tx, aem) = optional.split_at(tx_len);
        out.push(Sighting {
            peer,
            time: midnight + secs,
            rssi: fixed[3] as i8,
            tx_power: tx.first().map(|&b| b as i8),
            aem: match aem {
                [] => None,
                a => Some(Aem::try_from(a).map_err(|_| DecodeError)?),
            },
        });
    }
    // Version 2: only the zero padding of the size class may follow; version 1: nothing.
    let ok = if padded {
        bytes.len() == size_class(bytes.len() - rest.len()) && rest.iter().all(|&b| b == 0)
    } else {
        rest.is_empty()
    };
    if ok {
        Ok(())
    } else {
        Err(DecodeError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn peer() -> impl Strategy<Value = PeerId> {
        prop_oneof![
            any::<[u8; 12]>().prop_map(|b| PeerId::Bluezone(RollingId(b))),
            any::<[u8; 16]>().prop_map(|b| PeerId::Gaen(Rpi(b))),
        ]
    }

    fn sightings(day: i64) -> impl Strategy<Value = Vec<Sighting>> {
        prop::collection::vec(
            (
                peer(),
                0..DAY_SECONDS,
                any::<i8>(),
                any::<Option<i8>>(),
                any::<Option<[u8; 4]>>(),
            )
                .prop_map(move |(peer, secs, rssi, tx_power, aem)| Sighting {
                    peer,
                    time: day * DAY_SECONDS + secs,
                    rssi,
                    tx_power,
                    aem: aem.map(Aem),
                }),
            0..50,
        )
    }

    proptest! {
        #[test]
        fn roundtrip((day, v) in (-30_000i64..100_000).prop_flat_map(|d| (Just(d), sightings(d)))) {
            let mut buf = Vec::new();
            encode_chunk(day, &v, &mut buf);
            let mut out = Vec::new();
            prop_assert_eq!(decode_chunk(day, &buf, &mut out), Ok(()));
            prop_assert_eq!(out, v);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let mut out = vec![];
            let r = decode_chunk(19000, &bytes, &mut out);
            if r.is_err() { prop_assert!(out.is_empty()); }
        }
    }

    #[test]
    fn bluezone_record_is_17_bytes() {
        let s = Sighting {
            peer: PeerId::Bluezone(RollingId([1; 12])),
            time: 86_399,
            rssi: -70,
            tx_power: None,
            aem: None,
        };
        // Version 1 (unpadded, as written before L8's padding): still decoded.
        let mut buf = Vec::new();
        encode_records(VERSION_UNPADDED, 0, &[s, s], &mut buf);
        assert_eq!(buf.len(), HEADER_LEN + 2 * 17);
        let mut out = vec![];
        decode_chunk(0, &buf, &mut out).unwrap();
        assert_eq!(out, vec![s, s]);
        // Truncated or trailing bytes: refused.
        assert_eq!(
            decode_chunk(0, &buf[..buf.len() - 1], &mut out),
            Err(DecodeError)
        );
        buf.push(0);
        assert_eq!(decode_chunk(0, &buf, &mut out), Err(DecodeError));
        assert_eq!(out.len(), 2);
    }

    /// Version 2 pads to the size class: counts within one class give equal lengths, the next
    /// class doubles; padding must be zeros and exactly to the class.
    #[test]
    fn chunks_are_padded_to_size_classes() {
        let s = |i: u8| Sighting {
            peer: PeerId::Bluezone(RollingId([i; 12])),
            time: 100 + i64::from(i),
            rssi: -70,
            tx_power: None,
            aem: None,
        };
        let enc = |n: u8| {
            let v: Vec<Sighting> = (0..n).map(s).collect();
            let mut buf = Vec::new();
            encode_chunk(0, &v, &mut buf);
            let mut out = vec![];
            decode_chunk(0, &buf, &mut out).unwrap();
            assert_eq!(out, v);
            buf
        };
        assert_eq!(enc(0).len(), MIN_CLASS);
        assert_eq!(enc(1).len(), MIN_CLASS);
        assert_eq!(enc(3).len(), MIN_CLASS); // 5 + 51 bytes
        assert_eq!(enc(4).len(), 128); // 5 + 68
        assert_eq!(enc(8).len(), 256); // 5 + 136: 8..=14 share a class
        assert_eq!(enc(14).len(), 256);
        assert_eq!(enc(15).len(), 512);
        let mut buf = enc(4);
        let mut out = vec![];
        *buf.last_mut().unwrap() = 1;
        assert_eq!(decode_chunk(0, &buf, &mut out), Err(DecodeError));
        buf.pop();
        assert_eq!(decode_chunk(0, &buf, &mut out), Err(DecodeError));
        assert!(out.is_empty());
    }
}
