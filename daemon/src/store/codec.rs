//! Compact plaintext encoding of one sightings chunk (all sightings of one write batch and one
//! UTC day). The day itself is not encoded: it is the row's clear `day` column, bound into the
//! chunk's associated data.
//!
//! ```text
//! chunk  = version (u8 = 1) || count (u32 LE) || record*
//! record = tag (u8: bit 0 = GAEN RPI, bit 1 = tx power present, bit 2 = AEM present,
//!                    other bits 0)
//!          || id (12 bytes Bluezone, 16 bytes GAEN)
//!          || seconds since 00:00 UTC of the day (u24 LE, < 86400)
//!          || rssi (i8) || [tx power (i8)] || [GAEN associated encrypted metadata (4 bytes)]
//! ```
//! A Bluezone sighting takes 17 bytes.

use bluezone_protocol::time::{utc_day, DAY_SECONDS};
use bluezone_protocol::{Aem, PeerId, RollingId, Rpi, Sighting};

const VERSION: u8 = 1;
const TAG_GAEN: u8 = 0x01;
const TAG_TX: u8 = 0x02;
const TAG_AEM: u8 = 0x04;
const HEADER_LEN: usize = 5;
/// Largest encoded record.
pub(crate) const MAX_RECORD_LEN: usize = 1 + Rpi::LEN + 3 + 1 + 1 + Aem::LEN;

/// Appends the encoding of `sightings`, which must all lie in UTC day `day`.
pub(crate) fn encode_chunk(day: i64, sightings: &[Sighting], out: &mut Vec<u8>) {
    out.reserve(HEADER_LEN + sightings.len() * MAX_RECORD_LEN);
    out.push(VERSION);
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
    if header[0] != VERSION {
        return Err(DecodeError);
    }
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
    if rest.is_empty() {
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
        let mut buf = Vec::new();
        encode_chunk(0, &[s, s], &mut buf);
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
}
