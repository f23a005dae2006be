//! BLE advertisement codecs for both protocols.
//!
//! - Bluezone v3: `docs/bluezone.md` §1 (air interface: Android manufacturer-data advert,
//!   iOS service-UUID / overflow-area advert, receiving rules).
//! - GAEN v1.2: `docs/gaen.md` §2 (service data for `0xFD6F`: RPI + AEM).
//!
//! Two inputs, one set of rules:
//!
//! - raw legacy advertising data (≤ 31 bytes, as an HCI LE Advertising Report carries it) goes through
//!   [`parse_ad_structures`] and then [`StructuredAdvert::from_ad_structures`];
//! - what a BLE stack (BlueZ, btleplug) hands over is already a [`StructuredAdvert`]: manufacturer data by
//!   company id, service data by 128-bit UUID, a list of 128-bit service UUIDs.
//!
//! [`decode_structured`] holds every receiving rule; [`decode_advert`] is "parse, convert, then
//! [`decode_structured`]". Nothing here panics on any input: all byte access is checked and every
//! problem is a typed [`AdvError`].
//!
//! 128-bit UUIDs are `u128` values whose hex digits read like the canonical string form
//! (`0x0000FD6F_0000_1000_8000_00805F9B34FB`); on air they are little-endian.

use crate::ids::{Aem, PeerId, RollingId, Rpi};

/// Maximum length of legacy advertising (or scan response) data.
pub const MAX_LEGACY_ADV_LEN: usize = 31;

/// The Bluetooth base UUID `00000000-0000-1000-8000-00805F9B34FB`.
pub const BLUETOOTH_BASE_UUID: u128 = 0x0000_0000_0000_1000_8000_0080_5F9B_34FB;

/// Expands a 16-bit SIG-style UUID with the Bluetooth base UUID: `0000xxxx-0000-1000-8000-00805F9B34FB`.
pub const fn uuid16(short: u16) -> u128 {
    ((short as u128) << 96) | BLUETOOTH_BASE_UUID
}

/// Expands a 32-bit UUID with the Bluetooth base UUID: `xxxxxxxx-0000-1000-8000-00805F9B34FB`.
pub const fn uuid32(short: u32) -> u128 {
    ((short as u128) << 96) | BLUETOOTH_BASE_UUID
}

/// Canonical lower-case string form, e.g. `00004e56-0000-1000-8000-00805f9b34fb` (as BlueZ D-Bus wants it).
pub fn uuid_string(uuid: u128) -> String {
    let h = format!("{uuid:032x}");
    // `h` is always 32 ASCII hex digits, so these ranges exist; `get` keeps it panic-free anyway.
    let part = |r: std::ops::Range<usize>| h.get(r).unwrap_or_default();
    format!(
        "{}-{}-{}-{}-{}",
        part(0..8),
        part(8..12),
        part(12..16),
        part(16..20),
        part(20..32)
    )
}

/// 16-bit Bluezone Android service UUID `0x4E56`.
pub const BLUEZONE_ANDROID_SERVICE_16: u16 = 0x4E56;
/// Bluezone Android service UUID `00004E56-0000-1000-8000-00805F9B34FB`.
pub const BLUEZONE_ANDROID_SERVICE: u128 = uuid16(BLUEZONE_ANDROID_SERVICE_16);
/// Bluezone iOS service UUID `00004E56-73F5-4BC4-A12F-17D1AD07A667` (advert + GATT primary service).
pub const BLUEZONE_IOS_SERVICE: u128 = 0x0000_4E56_73F5_4BC4_A12F_17D1_AD07_A667;
/// Bluezone iOS characteristic `00004E56-73F5-4BC4-A12F-17D1AD07A689`: readable, value = 12-byte ID.
pub const BLUEZONE_IOS_CHARACTERISTIC: u128 = 0x0000_4E56_73F5_4BC4_A12F_17D1_AD07_A689;
/// Company id under which Bluezone broadcasts its rolling ID (`B5 22` on air). Not SIG-assigned.
pub const BLUEZONE_COMPANY_ID: u16 = 0x22B5;
/// Apple's company id (overflow area of backgrounded iOS apps).
pub const APPLE_COMPANY_ID: u16 = 0x004C;
/// 16-bit GAEN service UUID `0xFD6F`.
pub const GAEN_SERVICE_16: u16 = 0xFD6F;
/// GAEN service UUID `0000FD6F-0000-1000-8000-00805F9B34FB`.
pub const GAEN_SERVICE: u128 = uuid16(GAEN_SERVICE_16);

/// Local name in Bluezone iOS foreground adverts.
pub const BLUEZONE_LOCAL_NAME: &str = "Bluezone";
/// Length of a Bluezone manufacturer-data payload (after the company id): one rolling ID.
pub const BLUEZONE_PAYLOAD_LEN: usize = RollingId::LEN;
/// Length of GAEN service data (after the UUID): RPI (16) + AEM (4).
pub const GAEN_PAYLOAD_LEN: usize = Rpi::LEN + Aem::LEN;
/// Apple overflow area: first payload byte after the company id.
pub const APPLE_OVERFLOW_TYPE: u8 = 0x01;
/// Apple overflow area: length of the bitmap following [`APPLE_OVERFLOW_TYPE`].
pub const APPLE_OVERFLOW_BITMAP_LEN: usize = 16;
/// Bluezone's bit in the overflow bitmap: byte 0, this mask.
pub const BLUEZONE_OVERFLOW_MASK: u8 = 0x08;

/// AD type codes (Bluetooth Assigned Numbers, "Common Data Types") used here.
pub mod ad_type {
    pub const FLAGS: u8 = 0x01;
    pub const INCOMPLETE_UUID16: u8 = 0x02;
    pub const COMPLETE_UUID16: u8 = 0x03;
    pub const INCOMPLETE_UUID32: u8 = 0x04;
    pub const COMPLETE_UUID32: u8 = 0x05;
    pub const INCOMPLETE_UUID128: u8 = 0x06;
    pub const COMPLETE_UUID128: u8 = 0x07;
    pub const SHORT_LOCAL_NAME: u8 = 0x08;
    pub const COMPLETE_LOCAL_NAME: u8 = 0x09;
    pub const SERVICE_DATA_UUID16: u8 = 0x16;
    pub const SERVICE_DATA_UUID32: u8 = 0x20;
    pub const SERVICE_DATA_UUID128: u8 = 0x21;
    pub const MANUFACTURER_DATA: u8 = 0xFF;
}

const FIELD_BLUEZONE: &str = "Bluezone manufacturer data (company 0x22B5)";
const FIELD_GAEN: &str = "GAEN service data (UUID 0xFD6F)";
const FIELD_APPLE: &str = "Apple manufacturer data (company 0x004C)";
const FIELD_APPLE_OVERFLOW: &str = "Apple overflow area (type 0x01 + 16-byte bitmap)";

/// Everything that can be wrong with an advert. Offsets are byte offsets into the raw advertising
/// data (of the structure's length byte); errors found on the structured form carry no offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdvError {
    /// Legacy advertising data holds at most 31 bytes.
    #[error("advertising data is {len} bytes; legacy advertising data holds at most {max}")]
    TooLong { len: usize, max: usize },
    /// A zero length byte followed by something other than zero padding.
    #[error(
        "zero-length AD structure at offset {offset} is followed by non-zero bytes \
         (only zero padding may follow the significant part)"
    )]
    ZeroLength { offset: usize },
    /// A structure whose length byte runs past the end of the buffer.
    #[error(
        "AD structure at offset {offset} declares length {declared} \
         but only {available} bytes follow the length byte"
    )]
    Overrun {
        offset: usize,
        declared: usize,
        available: usize,
    },
    /// A structure too short to hold its fixed header (company id, service UUID).
    #[error(
        "AD structure at offset {offset} (type {ad_type:#04x}): {field} needs at least {min} \
         data bytes, got {got}"
    )]
    Truncated {
        offset: usize,
        ad_type: u8,
        field: &'static str,
        min: usize,
        got: usize,
    },
    /// A UUID list whose length is not a whole number of UUIDs.
    #[error(
        "AD structure at offset {offset} (type {ad_type:#04x}): UUID list of {len} bytes \
         is not a multiple of {unit}"
    )]
    UuidListLength {
        offset: usize,
        ad_type: u8,
        len: usize,
        unit: usize,
    },
    /// A payload this crate interprets has the wrong length.
    #[error("{field}: expected {expected} bytes, got {got}")]
    WrongPayloadLength {
        field: &'static str,
        expected: usize,
        got: usize,
    },
    /// A structure this crate interprets appears more than once (ambiguous).
    #[error("{field} appears {count} times; expected at most once")]
    Duplicate { field: &'static str, count: usize },
    /// The Bluezone Android service UUID without the manufacturer data carrying the ID.
    #[error(
        "advert lists the Bluezone Android service UUID 0x4E56 but has no manufacturer data \
         for company {company:#06x}"
    )]
    MissingManufacturerData { company: u16 },
}

/// One AD structure of raw advertising data: `len, type, data[len - 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdStructure<'a> {
    /// Offset of the length byte in the raw buffer.
    pub offset: usize,
    pub ad_type: u8,
    pub data: &'a [u8],
}

/// Splits raw legacy advertising data into AD structures.
///
/// Zero padding is accepted: a zero length byte followed only by zeros up to the end marks the end of
/// the significant part (Core spec Vol 3 Part C §11). A zero length byte followed by anything else is
/// [`AdvError::ZeroLength`].
pub fn parse_ad_structures(bytes: &[u8]) -> Result<Vec<AdStructure<'_>>, AdvError> {
    if bytes.len() > MAX_LEGACY_ADV_LEN {
        return Err(AdvError::TooLong {
            len: bytes.len(),
            max: MAX_LEGACY_ADV_LEN,
        });
    }
    let mut out = Vec::new();
    let mut offset = 0usize;
    while let Some((&len, rest)) = bytes.get(offset..).and_then(<[u8]>::split_first) {
        if len == 0 {
            if rest.iter().all(|&b| b == 0) {
                break;
            }
            return Err(AdvError::ZeroLength { offset });
        }
        let declared = usize::from(len);
        // `declared >= 1`, so `split_first` only fails when the slice is out of range.
        let Some((&ad_type, data)) = rest.get(..declared).and_then(<[u8]>::split_first) else {
            return Err(AdvError::Overrun {
                offset,
                declared,
                available: rest.len(),
            });
        };
        out.push(AdStructure {
            offset,
            ad_type,
            data,
        });
        offset = offset.saturating_add(1).saturating_add(declared);
    }
    Ok(out)
}

/// An advert as a BLE stack reports it (BlueZ `Device1` properties, btleplug `PeripheralProperties`),
/// borrowing the payload bytes. 16-bit and 32-bit UUIDs are expanded with [`uuid16`] / [`uuid32`].
///
/// Lists rather than maps so that the raw form can express duplicates; order never matters. Building
/// one from btleplug:
///
/// ```ignore
/// let adv = StructuredAdvert {
///     manufacturer_data: p.manufacturer_data.iter().map(|(c, d)| (*c, d.as_slice())).collect(),
///     service_data: p.service_data.iter().map(|(u, d)| (u.as_u128(), d.as_slice())).collect(),
///     services: p.services.iter().map(|u| u.as_u128()).collect(),
/// };
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StructuredAdvert<'a> {
    /// `(company id, payload after the company id)`.
    pub manufacturer_data: Vec<(u16, &'a [u8])>,
    /// `(service UUID, payload after the UUID)`.
    pub service_data: Vec<(u128, &'a [u8])>,
    /// Advertised service UUIDs (complete and incomplete lists alike).
    pub services: Vec<u128>,
}

impl<'a> StructuredAdvert<'a> {
    /// Parses raw legacy advertising data ([`parse_ad_structures`] + [`Self::from_ad_structures`]).
    pub fn from_raw(bytes: &'a [u8]) -> Result<Self, AdvError> {
        Self::from_ad_structures(&parse_ad_structures(bytes)?)
    }

    /// Collects the structures that carry services, service data and manufacturer data; flags, names
    /// and everything else are ignored.
    pub fn from_ad_structures(structures: &[AdStructure<'a>]) -> Result<Self, AdvError> {
        let mut adv = StructuredAdvert::default();
        for s in structures {
            match s.ad_type {
                ad_type::INCOMPLETE_UUID16 | ad_type::COMPLETE_UUID16 => {
                    let list = exact_chunks::<2>(s)?;
                    adv.services
                        .extend(list.map(|c| uuid16(u16::from_le_bytes(c))));
                }
                ad_type::INCOMPLETE_UUID32 | ad_type::COMPLETE_UUID32 => {
                    let list = exact_chunks::<4>(s)?;
                    adv.services
                        .extend(list.map(|c| uuid32(u32::from_le_bytes(c))));
                }
                ad_type::INCOMPLETE_UUID128 | ad_type::COMPLETE_UUID128 => {
                    let list = exact_chunks::<16>(s)?;
                    adv.services.extend(list.map(u128::from_le_bytes));
                }
                ad_type::SERVICE_DATA_UUID16 => {
                    let (u, d) = split_header::<2>(s, "16-bit service data")?;
                    adv.service_data.push((uuid16(u16::from_le_bytes(u)), d));
                }
                ad_type::SERVICE_DATA_UUID32 => {
                    let (u, d) = split_header::<4>(s, "32-bit service data")?;
                    adv.service_data.push((uuid32(u32::from_le_bytes(u)), d));
                }
                ad_type::SERVICE_DATA_UUID128 => {
                    let (u, d) = split_header::<16>(s, "128-bit service data")?;
                    adv.service_data.push((u128::from_le_bytes(u), d));
                }
                ad_type::MANUFACTURER_DATA => {
                    let (c, d) = split_header::<2>(s, "manufacturer data")?;
                    adv.manufacturer_data.push((u16::from_le_bytes(c), d));
                }
                _ => {}
            }
        }
        Ok(adv)
    }
}

/// Splits a UUID list into `N`-byte little-endian UUIDs, rejecting a ragged tail.
fn exact_chunks<'s, const N: usize>(
    s: &AdStructure<'s>,
) -> Result<impl Iterator<Item = [u8; N]> + 's, AdvError> {
    let chunks = s.data.chunks_exact(N);
    if !chunks.remainder().is_empty() {
        return Err(AdvError::UuidListLength {
            offset: s.offset,
            ad_type: s.ad_type,
            len: s.data.len(),
            unit: N,
        });
    }
    Ok(chunks.filter_map(|c| <[u8; N]>::try_from(c).ok()))
}

/// Splits an `N`-byte header (company id, service UUID) off a structure's data.
fn split_header<'s, const N: usize>(
    s: &AdStructure<'s>,
    field: &'static str,
) -> Result<([u8; N], &'s [u8]), AdvError> {
    s.data
        .split_first_chunk::<N>()
        .map(|(h, rest)| (*h, rest))
        .ok_or(AdvError::Truncated {
            offset: s.offset,
            ad_type: s.ad_type,
            field,
            min: N,
            got: s.data.len(),
        })
}

/// A recognised advert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Advert {
    /// Bluezone Android (or anything carrying a 12-byte payload for company 0x22B5): the ID is on air.
    BluezoneAndroid { id: RollingId },
    /// Bluezone iOS: service UUID in clear (foreground) or the overflow-area bit (`overflow: true`,
    /// background). No ID on air: connect and read [`BLUEZONE_IOS_CHARACTERISTIC`].
    BluezoneIos { overflow: bool },
    /// Exposure Notification: RPI + encrypted metadata.
    Gaen { rpi: Rpi, aem: Aem },
}

impl Advert {
    /// The identifier heard on air, if the advert carries one (iOS Bluezone needs a GATT read).
    pub fn peer_id(&self) -> Option<PeerId> {
        match self {
            Advert::BluezoneAndroid { id } => Some(PeerId::Bluezone(*id)),
            Advert::Gaen { rpi, .. } => Some(PeerId::Gaen(*rpi)),
            Advert::BluezoneIos { .. } => None,
        }
    }
}

/// Decodes raw legacy advertising data (≤ 31 bytes, zero padding allowed).
///
/// `Ok(None)` for well-formed adverts of other services. Same rules as [`decode_structured`].
pub fn decode_advert(bytes: &[u8]) -> Result<Option<Advert>, AdvError> {
    decode_structured(&StructuredAdvert::from_raw(bytes)?)
}

/// The at most one payload for `key`; two or more is [`AdvError::Duplicate`].
fn unique<'a, K: PartialEq>(
    entries: &[(K, &'a [u8])],
    key: &K,
    field: &'static str,
) -> Result<Option<&'a [u8]>, AdvError> {
    let mut found = entries.iter().filter(|(k, _)| k == key).map(|(_, d)| *d);
    let first = found.next();
    let more = found.count();
    if more > 0 {
        return Err(AdvError::Duplicate {
            field,
            count: more.saturating_add(1),
        });
    }
    Ok(first)
}

/// Decodes an advert in structured form. All receiving rules live here:
///
/// - Bluezone: manufacturer data for [`BLUEZONE_COMPANY_ID`] must be exactly 12 bytes and is the ID —
///   whether or not UUID `0x4E56` is listed (iOS receivers accept it without). UUID `0x4E56` without
///   that manufacturer data is [`AdvError::MissingManufacturerData`].
/// - GAEN: service data for [`GAEN_SERVICE`] must be exactly 20 bytes: RPI (16) then AEM (4).
/// - Bluezone iOS: [`BLUEZONE_IOS_SERVICE`] in the service list, or Apple manufacturer data starting with
///   `0x01` followed by a 16-byte bitmap whose byte 0 has bit `0x08` set.
/// - Each of these payloads may appear at most once ([`AdvError::Duplicate`]).
///
/// Every interpreted payload is validated before anything is returned, so a malformed part is an error
/// even when another part is valid. If several protocols match, an advert with an ID on air wins:
/// Bluezone Android, then GAEN, then Bluezone iOS.
pub fn decode_structured(adv: &StructuredAdvert<'_>) -> Result<Option<Advert>, AdvError> {
    let bluezone = unique(&adv.manufacturer_data, &BLUEZONE_COMPANY_ID, FIELD_BLUEZONE)?
        .map(|p| {
            RollingId::try_from(p).map_err(|_| AdvError::WrongPayloadLength {
                field: FIELD_BLUEZONE,
                expected: BLUEZONE_PAYLOAD_LEN,
                got: p.len(),
            })
        })
        .transpose()?;
    if bluezone.is_none() && adv.services.contains(&BLUEZONE_ANDROID_SERVICE) {
        return Err(AdvError::MissingManufacturerData {
            company: BLUEZONE_COMPANY_ID,
        });
    }

    let gaen = unique(&adv.service_data, &GAEN_SERVICE, FIELD_GAEN)?
        .map(|p| {
            let wrong = || AdvError::WrongPayloadLength {
                field: FIELD_GAEN,
                expected: GAEN_PAYLOAD_LEN,
                got: p.len(),
            };
            let (rpi, aem) = p.split_first_chunk::<{ Rpi::LEN }>().ok_or_else(wrong)?;
            let aem = <[u8; Aem::LEN]>::try_from(aem).map_err(|_| wrong())?;
            Ok::<_, AdvError>(Advert::Gaen {
                rpi: Rpi(*rpi),
                aem: Aem(aem),
            })
        })
        .transpose()?;

    let overflow = match unique(&adv.manufacturer_data, &APPLE_COMPANY_ID, FIELD_APPLE)? {
        Some([APPLE_OVERFLOW_TYPE, bitmap @ ..]) => {
            let Some(&first) = bitmap
                .first()
                .filter(|_| bitmap.len() >= APPLE_OVERFLOW_BITMAP_LEN)
            else {
                return Err(AdvError::WrongPayloadLength {
                    field: FIELD_APPLE_OVERFLOW,
                    expected: 1 + APPLE_OVERFLOW_BITMAP_LEN,
                    got: 1 + bitmap.len(),
                });
            };
            first & BLUEZONE_OVERFLOW_MASK != 0
        }
        _ => false,
    };

    Ok(if let Some(id) = bluezone {
        Some(Advert::BluezoneAndroid { id })
    } else if gaen.is_some() {
        gaen
    } else if adv.services.contains(&BLUEZONE_IOS_SERVICE) {
        Some(Advert::BluezoneIos { overflow: false })
    } else if overflow {
        Some(Advert::BluezoneIos { overflow: true })
    } else {
        None
    })
}

const FLAGS_BLUEZONE: u8 = 0x06;
const FLAGS_GAEN: u8 = 0x1A;

/// Bluezone Android advert without the flags structure (BlueZ adds flags itself), 20 bytes:
/// `0F FF B5 22 <12-byte ID> | 03 03 56 4E`.
pub fn encode_bluezone_android_no_flags(id: &RollingId) -> Vec<u8> {
    let mut out = Vec::with_capacity(20);
    let [c0, c1] = BLUEZONE_COMPANY_ID.to_le_bytes();
    out.extend_from_slice(&[
        (3 + BLUEZONE_PAYLOAD_LEN) as u8,
        ad_type::MANUFACTURER_DATA,
        c0,
        c1,
    ]);
    out.extend_from_slice(&id.0);
    let [u0, u1] = BLUEZONE_ANDROID_SERVICE_16.to_le_bytes();
    out.extend_from_slice(&[3, ad_type::COMPLETE_UUID16, u0, u1]);
    out
}

/// Bluezone Android advert as real phones send it, 23 bytes:
/// `02 01 06 | 0F FF B5 22 <12-byte ID> | 03 03 56 4E`.
pub fn encode_bluezone_android(id: &RollingId) -> Vec<u8> {
    let mut out = Vec::with_capacity(23);
    out.extend_from_slice(&[2, ad_type::FLAGS, FLAGS_BLUEZONE]);
    out.extend_from_slice(&encode_bluezone_android_no_flags(id));
    out
}

/// GAEN advert without the flags structure, 28 bytes: `03 03 6F FD | 17 16 6F FD <RPI:16> <AEM:4>`.
pub fn encode_gaen_no_flags(rpi: &Rpi, aem: &Aem) -> Vec<u8> {
    let mut out = Vec::with_capacity(28);
    let [u0, u1] = GAEN_SERVICE_16.to_le_bytes();
    out.extend_from_slice(&[3, ad_type::COMPLETE_UUID16, u0, u1]);
    out.extend_from_slice(&[
        (3 + GAEN_PAYLOAD_LEN) as u8,
        ad_type::SERVICE_DATA_UUID16,
        u0,
        u1,
    ]);
    out.extend_from_slice(&rpi.0);
    out.extend_from_slice(&aem.0);
    out
}

/// GAEN advert, 31 bytes: `02 01 1A | 03 03 6F FD | 17 16 6F FD <RPI:16> <AEM:4>`.
pub fn encode_gaen(rpi: &Rpi, aem: &Aem) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAX_LEGACY_ADV_LEN);
    out.extend_from_slice(&[2, ad_type::FLAGS, FLAGS_GAEN]);
    out.extend_from_slice(&encode_gaen_no_flags(rpi, aem));
    out
}

/// Bluezone iOS foreground advert, exactly 31 bytes:
/// `02 01 06 | 09 09 "Bluezone" | 11 07 <iOS service UUID, little-endian>`.
/// It carries no ID: peers connect and read [`BLUEZONE_IOS_CHARACTERISTIC`].
pub fn encode_bluezone_ios_foreground() -> Vec<u8> {
    let mut out = Vec::with_capacity(MAX_LEGACY_ADV_LEN);
    out.extend_from_slice(&[2, ad_type::FLAGS, FLAGS_BLUEZONE]);
    out.extend_from_slice(&[
        (1 + BLUEZONE_LOCAL_NAME.len()) as u8,
        ad_type::COMPLETE_LOCAL_NAME,
    ]);
    out.extend_from_slice(BLUEZONE_LOCAL_NAME.as_bytes());
    out.extend_from_slice(&[17, ad_type::COMPLETE_UUID128]);
    out.extend_from_slice(&BLUEZONE_IOS_SERVICE.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_constants() {
        assert_eq!(
            uuid_string(BLUEZONE_ANDROID_SERVICE),
            "00004e56-0000-1000-8000-00805f9b34fb"
        );
        assert_eq!(
            uuid_string(BLUEZONE_IOS_SERVICE),
            "00004e56-73f5-4bc4-a12f-17d1ad07a667"
        );
        assert_eq!(
            uuid_string(BLUEZONE_IOS_CHARACTERISTIC),
            "00004e56-73f5-4bc4-a12f-17d1ad07a689"
        );
        assert_eq!(
            uuid_string(GAEN_SERVICE),
            "0000fd6f-0000-1000-8000-00805f9b34fb"
        );
    }

    #[test]
    fn ios_foreground_fits() {
        let adv = encode_bluezone_ios_foreground();
        assert_eq!(adv.len(), MAX_LEGACY_ADV_LEN);
        assert_eq!(
            decode_advert(&adv),
            Ok(Some(Advert::BluezoneIos { overflow: false }))
        );
    }
}
