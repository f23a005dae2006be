//! Advertisement codecs: exact encoder bytes, spec layouts in every order, every malformed case, and
//! property tests (round trips, no panics on arbitrary input).

use std::collections::HashMap;

use bluezone_protocol::adv::{
    decode_advert, decode_structured, encode_bluezone_android, encode_bluezone_android_no_flags,
    encode_bluezone_ios_foreground, encode_gaen, encode_gaen_no_flags, parse_ad_structures, uuid16,
    AdStructure, AdvError, Advert, StructuredAdvert, APPLE_COMPANY_ID, BLUEZONE_ANDROID_SERVICE,
    BLUEZONE_COMPANY_ID, BLUEZONE_IOS_CHARACTERISTIC, BLUEZONE_IOS_SERVICE, GAEN_SERVICE,
    MAX_LEGACY_ADV_LEN,
};
use bluezone_protocol::{Aem, PeerId, RollingId, Rpi};
use proptest::prelude::*;

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace([' ', '|'], "")).expect("test hex")
}

const ID_HEX: &str = "130CEA6472130C185D8643DF";
const RPI_HEX: &str = "8B2F9C3D4E5F60718293A4B5C6D7E8F9";
const AEM_HEX: &str = "A1B2C3D4";

fn id() -> RollingId {
    RollingId::from_hex(ID_HEX).unwrap()
}
fn rpi() -> Rpi {
    Rpi::from_hex(RPI_HEX).unwrap()
}
fn aem() -> Aem {
    Aem::from_hex(AEM_HEX).unwrap()
}

/// All orderings of `items`.
fn permutations(items: &[Vec<u8>]) -> Vec<Vec<Vec<u8>>> {
    if items.is_empty() {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, first.clone());
            out.push(tail);
        }
    }
    out
}

fn flag_options() -> [Option<Vec<u8>>; 3] {
    [Some(h("02 01 06")), Some(h("02 01 1A")), None]
}

/// Every ordering of `structures` (plus each flags option), also with zero padding to 31 bytes.
fn all_layouts(structures: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for flags in flag_options() {
        let mut items = structures.to_vec();
        items.extend(flags);
        for p in permutations(&items) {
            let adv: Vec<u8> = p.concat();
            assert!(adv.len() <= MAX_LEGACY_ADV_LEN);
            let mut padded = adv.clone();
            padded.resize(MAX_LEGACY_ADV_LEN, 0);
            out.push(adv);
            out.push(padded);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------
// Encoders: exact bytes.

#[test]
fn encode_bluezone_android_exact_bytes() {
    let adv = encode_bluezone_android(&id());
    assert_eq!(
        adv,
        h("02 01 06 | 0F FF B5 22 130CEA6472130C185D8643DF | 03 03 56 4E")
    );
    assert_eq!(adv.len(), 23);
    let bare = encode_bluezone_android_no_flags(&id());
    assert_eq!(
        bare,
        h("0F FF B5 22 130CEA6472130C185D8643DF | 03 03 56 4E")
    );
}

#[test]
fn encode_gaen_exact_bytes() {
    let adv = encode_gaen(&rpi(), &aem());
    assert_eq!(
        adv,
        h("02 01 1A | 03 03 6F FD | 17 16 6F FD 8B2F9C3D4E5F60718293A4B5C6D7E8F9 A1B2C3D4")
    );
    assert_eq!(adv.len(), MAX_LEGACY_ADV_LEN);
    assert_eq!(
        encode_gaen_no_flags(&rpi(), &aem()),
        h("03 03 6F FD | 17 16 6F FD 8B2F9C3D4E5F60718293A4B5C6D7E8F9 A1B2C3D4")
    );
}

#[test]
fn encode_bluezone_ios_foreground_exact_bytes() {
    let adv = encode_bluezone_ios_foreground();
    let mut expected = h("02 01 06 | 09 09");
    expected.extend_from_slice(b"Bluezone");
    // 00004E56-73F5-4BC4-A12F-17D1AD07A667, little-endian on air.
    expected.extend(h("11 07 67A607ADD1172FA1C44BF573564E0000"));
    assert_eq!(adv, expected);
    assert_eq!(adv.len(), MAX_LEGACY_ADV_LEN);
    assert_eq!(
        decode_advert(&adv),
        Ok(Some(Advert::BluezoneIos { overflow: false }))
    );
}

#[test]
fn uuid_constants() {
    assert_eq!(
        BLUEZONE_ANDROID_SERVICE,
        0x00004E56_0000_1000_8000_00805F9B34FB
    );
    assert_eq!(GAEN_SERVICE, 0x0000FD6F_0000_1000_8000_00805F9B34FB);
    assert_eq!(BLUEZONE_IOS_SERVICE, 0x00004E56_73F5_4BC4_A12F_17D1AD07A667);
    assert_eq!(
        BLUEZONE_IOS_CHARACTERISTIC,
        0x00004E56_73F5_4BC4_A12F_17D1AD07A689
    );
    assert_eq!(uuid16(0x180F), 0x0000180F_0000_1000_8000_00805F9B34FB);
    assert_eq!(BLUEZONE_COMPANY_ID, 0x22B5);
    assert_eq!(APPLE_COMPANY_ID, 0x004C);
}

// ---------------------------------------------------------------------------------------------------
// Spec layouts in every order, with flags 0x06, 0x1A or none, with and without zero padding.

#[test]
fn bluezone_android_any_order_any_flags() {
    let structures = [h("0F FF B5 22 130CEA6472130C185D8643DF"), h("03 03 56 4E")];
    let layouts = all_layouts(&structures);
    assert_eq!(layouts.len(), 2 * (6 + 6 + 2));
    for adv in layouts {
        let got = decode_advert(&adv);
        assert_eq!(
            got,
            Ok(Some(Advert::BluezoneAndroid { id: id() })),
            "{}",
            hex::encode(&adv)
        );
    }
    // Incomplete 16-bit list (0x02) works too.
    let adv = h("02 01 06 | 03 02 56 4E | 0F FF B5 22 130CEA6472130C185D8643DF");
    assert_eq!(
        decode_advert(&adv),
        Ok(Some(Advert::BluezoneAndroid { id: id() }))
    );
}

#[test]
fn gaen_any_order_any_flags() {
    let structures = [
        h("03 03 6F FD"),
        h("17 16 6F FD 8B2F9C3D4E5F60718293A4B5C6D7E8F9 A1B2C3D4"),
    ];
    for flags in flag_options() {
        let mut items = structures.to_vec();
        items.extend(flags);
        for p in permutations(&items) {
            let adv = p.concat();
            assert_eq!(
                decode_advert(&adv),
                Ok(Some(Advert::Gaen {
                    rpi: rpi(),
                    aem: aem()
                })),
                "{}",
                hex::encode(&adv)
            );
        }
    }
    // The service-data structure alone is enough; padding after it is fine.
    let mut adv = h("17 16 6F FD 8B2F9C3D4E5F60718293A4B5C6D7E8F9 A1B2C3D4");
    adv.resize(MAX_LEGACY_ADV_LEN, 0);
    assert!(matches!(decode_advert(&adv), Ok(Some(Advert::Gaen { .. }))));
}

#[test]
fn bluezone_manufacturer_data_without_uuid_is_accepted() {
    // iOS receiver rule: 12 bytes for company 0x22B5, no service UUID.
    for adv in all_layouts(&[h("0F FF B5 22 130CEA6472130C185D8643DF")]) {
        assert_eq!(
            decode_advert(&adv),
            Ok(Some(Advert::BluezoneAndroid { id: id() }))
        );
    }
}

#[test]
fn bluezone_ios_uuid_in_either_128_bit_list() {
    for t in ["06", "07"] {
        let s = h(&format!("11 {t} 67A607ADD1172FA1C44BF573564E0000"));
        for adv in all_layouts(&[s, h("09 09 426C75657A6F6E65")]) {
            assert_eq!(
                decode_advert(&adv),
                Ok(Some(Advert::BluezoneIos { overflow: false })),
                "{}",
                hex::encode(&adv)
            );
        }
    }
}

#[test]
fn apple_overflow_bit() {
    let set = h("14 FF 4C 00 01 08000000000000000000000000000000");
    for adv in all_layouts(std::slice::from_ref(&set)) {
        assert_eq!(
            decode_advert(&adv),
            Ok(Some(Advert::BluezoneIos { overflow: true }))
        );
    }
    // Other bits in the bitmap do not matter.
    let others = h("02 01 1A | 14 FF 4C 00 01 FF0000000000000000000000000000AA");
    assert_eq!(
        decode_advert(&others),
        Ok(Some(Advert::BluezoneIos { overflow: true }))
    );
    // Bit not set: another app's overflow UUIDs.
    let clear = h("02 01 1A | 14 FF 4C 00 01 F7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFF");
    assert_eq!(decode_advert(&clear), Ok(None));
    // Not the overflow area at all: an iBeacon, a "nearby info" TLV, an empty Apple payload.
    let ibeacon = h("02 01 06 | 1A FF 4C 00 02 15 FDA50693A4E24FB1AFCFC6EB07647825 2711 0001 C5");
    assert_eq!(decode_advert(&ibeacon), Ok(None));
    assert_eq!(
        decode_advert(&h("02 01 1A | 07 FF 4C 00 10 02 0B 00")),
        Ok(None)
    );
    assert_eq!(decode_advert(&h("03 FF 4C 00")), Ok(None));
    // Overflow area with a truncated bitmap.
    assert_eq!(
        decode_advert(&h("02 01 1A | 07 FF 4C 00 01 08 00 00")),
        Err(AdvError::WrongPayloadLength {
            field: "Apple overflow area (type 0x01 + 16-byte bitmap)",
            expected: 17,
            got: 4,
        })
    );
}

#[test]
fn other_services_are_none() {
    assert_eq!(decode_advert(&[]), Ok(None));
    assert_eq!(decode_advert(&[0; 31]), Ok(None));
    assert_eq!(decode_advert(&h("02 01 06")), Ok(None));
    // Battery service, a name, other manufacturer data, other service data.
    let adv = h("02 01 06 | 03 03 0F 18 | 05 09 41424344 | 05 FF 59 00 AA BB | 04 16 0F 18 64");
    assert_eq!(decode_advert(&adv), Ok(None));
    // Unknown AD types with any content are skipped.
    assert_eq!(decode_advert(&h("04 2A 00 01 02 | 02 0A F4")), Ok(None));
    // A flags structure of unusual length: flags are ignored.
    assert_eq!(decode_advert(&h("01 01 | 03 01 06 00")), Ok(None));
}

// ---------------------------------------------------------------------------------------------------
// Malformed input: each case gives its specific error.

#[test]
fn zero_length_structure() {
    // Mid-buffer, followed by a real structure.
    let adv = h("02 01 06 | 00 | 03 03 56 4E");
    let err = decode_advert(&adv).unwrap_err();
    assert_eq!(err, AdvError::ZeroLength { offset: 3 });
    assert!(err.to_string().contains("offset 3"), "{err}");
    // At the start.
    assert_eq!(
        decode_advert(&h("00 02 01 06")),
        Err(AdvError::ZeroLength { offset: 0 })
    );
    // Zero padding followed by one stray non-zero byte at the very end.
    let mut adv = encode_bluezone_android(&id());
    adv.resize(MAX_LEGACY_ADV_LEN, 0);
    *adv.last_mut().unwrap() = 1;
    assert_eq!(
        decode_advert(&adv),
        Err(AdvError::ZeroLength { offset: 23 })
    );
}

#[test]
fn zero_padding_is_end_of_significant_part() {
    let mut adv = encode_bluezone_android(&id());
    for len in adv.len()..=MAX_LEGACY_ADV_LEN {
        adv.resize(len, 0);
        assert_eq!(
            decode_advert(&adv),
            Ok(Some(Advert::BluezoneAndroid { id: id() }))
        );
    }
    let structures = parse_ad_structures(&adv).unwrap();
    assert_eq!(structures.len(), 3);
    assert_eq!(
        structures[2],
        AdStructure {
            offset: 19,
            ad_type: 0x03,
            data: &[0x56, 0x4E]
        }
    );
}

#[test]
fn length_overrun() {
    let adv = h("02 01 06 | 0F FF B5 22 130CEA64");
    let err = decode_advert(&adv).unwrap_err();
    assert_eq!(
        err,
        AdvError::Overrun {
            offset: 3,
            declared: 15,
            available: 7
        }
    );
    assert!(err.to_string().contains("offset 3"), "{err}");
    // Length byte as the very last byte.
    assert_eq!(
        decode_advert(&h("02 01 06 | 05")),
        Err(AdvError::Overrun {
            offset: 3,
            declared: 5,
            available: 0
        })
    );
}

#[test]
fn too_long() {
    let mut adv = encode_gaen(&rpi(), &aem());
    adv.push(0);
    let err = decode_advert(&adv).unwrap_err();
    assert_eq!(err, AdvError::TooLong { len: 32, max: 31 });
    assert!(err.to_string().contains("31"), "{err}");
    assert_eq!(
        decode_advert(&[0; 64]),
        Err(AdvError::TooLong { len: 64, max: 31 })
    );
}

#[test]
fn bluezone_payload_length() {
    for (payload, got) in [
        ("130CEA6472130C185D8643", 11usize),
        ("130CEA6472130C185D8643DFEE", 13),
        ("", 0),
    ] {
        let len = format!("{:02X}", 3 + got);
        // With the UUID (Android rule), in either order, and without it (iOS receiver rule).
        for adv in [
            h(&format!(
                "02 01 06 | {len} FF B5 22 {payload} | 03 03 56 4E"
            )),
            h(&format!("03 03 56 4E | {len} FF B5 22 {payload}")),
            h(&format!("{len} FF B5 22 {payload}")),
        ] {
            let err = decode_advert(&adv).unwrap_err();
            assert!(
                matches!(
                    err,
                    AdvError::WrongPayloadLength { expected: 12, got: g, .. } if g == got
                ),
                "{err:?}"
            );
            assert!(err.to_string().contains("0x22B5"), "{err}");
        }
    }
}

#[test]
fn gaen_payload_length() {
    for got in [19usize, 21, 0] {
        let mut adv = h("03 03 6F FD");
        adv.push(u8::try_from(3 + got).unwrap());
        adv.extend(h("16 6F FD"));
        adv.resize(adv.len() + got, 0xAB);
        let err = decode_advert(&adv).unwrap_err();
        assert!(
            matches!(err, AdvError::WrongPayloadLength { expected: 20, got: g, .. } if g == got),
            "{err:?}"
        );
        assert!(err.to_string().contains("0xFD6F"), "{err}");
    }
    // 21 bytes with flags no longer fits a legacy advert.
    let mut adv = h("02 01 1A | 03 03 6F FD | 18 16 6F FD");
    adv.extend([0xAB; 21]);
    assert_eq!(
        decode_advert(&adv),
        Err(AdvError::TooLong { len: 32, max: 31 })
    );
}

#[test]
fn duplicates() {
    // Two full Bluezone payloads do not fit in 31 bytes; duplication is detected before length.
    let adv = h("04 FF B5 22 01 | 03 03 56 4E | 04 FF B5 22 02");
    let err = decode_advert(&adv).unwrap_err();
    assert!(
        matches!(err, AdvError::Duplicate { count: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("0x22B5"), "{err}");
    let adv = h("04 16 6F FD 01 | 03 03 6F FD | 04 16 6F FD 02");
    let err = decode_advert(&adv).unwrap_err();
    assert!(
        matches!(err, AdvError::Duplicate { count: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("0xFD6F"), "{err}");
    // Apple overflow twice is ambiguous as well.
    let adv = h("04 FF 4C 00 01 | 04 FF 4C 00 01");
    assert!(matches!(
        decode_advert(&adv),
        Err(AdvError::Duplicate { count: 2, .. })
    ));
    // Structured form with full-length payloads.
    let a = [1u8; 12];
    let b = [2u8; 12];
    let s = StructuredAdvert {
        manufacturer_data: vec![(BLUEZONE_COMPANY_ID, &a[..]), (BLUEZONE_COMPANY_ID, &b[..])],
        services: vec![BLUEZONE_ANDROID_SERVICE],
        ..Default::default()
    };
    assert!(matches!(
        decode_structured(&s),
        Err(AdvError::Duplicate { count: 2, .. })
    ));
    let g = [3u8; 20];
    let s = StructuredAdvert {
        service_data: vec![
            (GAEN_SERVICE, &g[..]),
            (GAEN_SERVICE, &g[..]),
            (GAEN_SERVICE, &g[..]),
        ],
        ..Default::default()
    };
    assert!(matches!(
        decode_structured(&s),
        Err(AdvError::Duplicate { count: 3, .. })
    ));
    // A duplicated UUID list is harmless.
    let adv = h("03 03 56 4E | 0F FF B5 22 130CEA6472130C185D8643DF | 03 02 56 4E");
    assert_eq!(
        decode_advert(&adv),
        Ok(Some(Advert::BluezoneAndroid { id: id() }))
    );
}

#[test]
fn structural_errors() {
    // Manufacturer data too short for a company id.
    assert_eq!(
        decode_advert(&h("02 01 06 | 02 FF B5")),
        Err(AdvError::Truncated {
            offset: 3,
            ad_type: 0xFF,
            field: "manufacturer data",
            min: 2,
            got: 1
        })
    );
    // 16-bit service data too short for its UUID.
    assert!(matches!(
        decode_advert(&h("02 16 6F")),
        Err(AdvError::Truncated {
            offset: 0,
            ad_type: 0x16,
            min: 2,
            got: 1,
            ..
        })
    ));
    // Ragged UUID lists.
    assert_eq!(
        decode_advert(&h("04 03 56 4E 00")),
        Err(AdvError::UuidListLength {
            offset: 0,
            ad_type: 0x03,
            len: 3,
            unit: 2
        })
    );
    assert!(matches!(
        decode_advert(&h("02 01 06 | 05 07 00 01 02 03")),
        Err(AdvError::UuidListLength {
            offset: 3,
            ad_type: 0x07,
            len: 4,
            unit: 16
        })
    ));
    // Bluezone Android UUID without the ID.
    assert_eq!(
        decode_advert(&h("02 01 06 | 03 03 56 4E")),
        Err(AdvError::MissingManufacturerData { company: 0x22B5 })
    );
}

// ---------------------------------------------------------------------------------------------------
// Structured form (what BlueZ / btleplug hand over).

#[test]
fn structured_forms() {
    let idb = id().0;
    let s = StructuredAdvert {
        manufacturer_data: vec![(BLUEZONE_COMPANY_ID, &idb[..])],
        services: vec![BLUEZONE_ANDROID_SERVICE],
        ..Default::default()
    };
    assert_eq!(
        decode_structured(&s),
        Ok(Some(Advert::BluezoneAndroid { id: id() }))
    );

    let mut gaen_data = rpi().0.to_vec();
    gaen_data.extend_from_slice(&aem().0);
    let mdata: HashMap<u16, Vec<u8>> = HashMap::from([(0x0059, vec![1, 2, 3])]);
    let sdata: HashMap<u128, Vec<u8>> = HashMap::from([(GAEN_SERVICE, gaen_data.clone())]);
    let s = from_maps(&mdata, &sdata, &[GAEN_SERVICE]);
    let adv = decode_structured(&s).unwrap().unwrap();
    assert_eq!(
        adv,
        Advert::Gaen {
            rpi: rpi(),
            aem: aem()
        }
    );
    assert_eq!(adv.peer_id(), Some(PeerId::Gaen(rpi())));

    let s = StructuredAdvert {
        services: vec![uuid16(0x180F), BLUEZONE_IOS_SERVICE],
        ..Default::default()
    };
    let adv = decode_structured(&s).unwrap().unwrap();
    assert_eq!(adv, Advert::BluezoneIos { overflow: false });
    assert_eq!(adv.peer_id(), None);

    let mut overflow = vec![0x01, 0x08];
    overflow.extend([0; 15]);
    let s = StructuredAdvert {
        manufacturer_data: vec![(APPLE_COMPANY_ID, &overflow[..])],
        ..Default::default()
    };
    assert_eq!(
        decode_structured(&s),
        Ok(Some(Advert::BluezoneIos { overflow: true }))
    );

    // Same length rules as raw.
    let short = [0u8; 11];
    let s = StructuredAdvert {
        manufacturer_data: vec![(BLUEZONE_COMPANY_ID, &short[..])],
        ..Default::default()
    };
    assert!(matches!(
        decode_structured(&s),
        Err(AdvError::WrongPayloadLength {
            expected: 12,
            got: 11,
            ..
        })
    ));
    let long = [0u8; 21];
    let s = StructuredAdvert {
        service_data: vec![(GAEN_SERVICE, &long[..])],
        ..Default::default()
    };
    assert!(matches!(
        decode_structured(&s),
        Err(AdvError::WrongPayloadLength {
            expected: 20,
            got: 21,
            ..
        })
    ));
    assert_eq!(decode_structured(&StructuredAdvert::default()), Ok(None));
}

#[test]
fn raw_converts_to_structured() {
    let raw = encode_bluezone_android(&id());
    let s = StructuredAdvert::from_raw(&raw).unwrap();
    assert_eq!(s.services, vec![BLUEZONE_ANDROID_SERVICE]);
    assert_eq!(
        s.manufacturer_data,
        vec![(BLUEZONE_COMPANY_ID, &id().0[..])]
    );
    assert!(s.service_data.is_empty());

    // 128-bit service data for the expanded GAEN UUID is the same service data.
    let mut raw = h("15 21");
    raw.extend(GAEN_SERVICE.to_le_bytes());
    raw.extend([7u8; 4]);
    let s = StructuredAdvert::from_raw(&raw).unwrap();
    assert_eq!(s.service_data, vec![(GAEN_SERVICE, &[7u8; 4][..])]);
    assert!(matches!(
        decode_advert(&raw),
        Err(AdvError::WrongPayloadLength {
            expected: 20,
            got: 4,
            ..
        })
    ));

    // 32-bit UUID list expands with the base UUID.
    let raw = h("05 05 56 4E 00 00");
    let s = StructuredAdvert::from_raw(&raw).unwrap();
    assert_eq!(s.services, vec![BLUEZONE_ANDROID_SERVICE]);
}

// ---------------------------------------------------------------------------------------------------
// Properties.

/// A random AD structure that is well-formed on its own, biased towards types the decoder reads.
fn arb_structure() -> impl Strategy<Value = Vec<u8>> {
    let ad_type = prop_oneof![
        Just(0x01u8),
        Just(0x02),
        Just(0x03),
        Just(0x05),
        Just(0x07),
        Just(0x09),
        Just(0x16),
        Just(0x21),
        Just(0xFF),
        any::<u8>(),
    ];
    let data = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..24),
        Just(vec![0xB5, 0x22]),
        Just(vec![0x6F, 0xFD]),
        Just(vec![0x56, 0x4E]),
        Just(vec![0x4C, 0x00, 0x01, 0x08]),
    ];
    (ad_type, data, proptest::collection::vec(any::<u8>(), 0..20)).prop_map(|(t, mut d, tail)| {
        d.extend(tail);
        d.truncate(29);
        let mut s = vec![u8::try_from(d.len() + 1).unwrap_or(30), t];
        s.extend(d);
        s
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn bluezone_round_trip(bytes in any::<[u8; 12]>(), pad in 23usize..=31) {
        let id = RollingId(bytes);
        let want = Ok(Some(Advert::BluezoneAndroid { id }));
        let mut raw = encode_bluezone_android(&id);
        prop_assert_eq!(decode_advert(&raw), want.clone());
        raw.resize(pad, 0);
        prop_assert_eq!(decode_advert(&raw), want.clone());
        prop_assert_eq!(decode_advert(&encode_bluezone_android_no_flags(&id)), want.clone());

        let mdata = HashMap::from([(BLUEZONE_COMPANY_ID, bytes.to_vec())]);
        let sdata = HashMap::new();
        let s = from_maps(&mdata, &sdata, &[BLUEZONE_ANDROID_SERVICE]);
        prop_assert_eq!(decode_structured(&s), want);
    }

    #[test]
    fn gaen_round_trip(r in any::<[u8; 16]>(), a in any::<[u8; 4]>()) {
        let (rpi, aem) = (Rpi(r), Aem(a));
        let want = Ok(Some(Advert::Gaen { rpi, aem }));
        prop_assert_eq!(decode_advert(&encode_gaen(&rpi, &aem)), want.clone());
        prop_assert_eq!(decode_advert(&encode_gaen_no_flags(&rpi, &aem)), want.clone());

        let mut data = r.to_vec();
        data.extend_from_slice(&a);
        let s = StructuredAdvert {
            service_data: vec![(GAEN_SERVICE, &data[..])],
            services: vec![GAEN_SERVICE],
            ..Default::default()
        };
        prop_assert_eq!(decode_structured(&s), want);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let res = decode_advert(&bytes);
        if bytes.len() > MAX_LEGACY_ADV_LEN {
            prop_assert_eq!(res, Err(AdvError::TooLong { len: bytes.len(), max: 31 }));
        } else if let Err(e) = res {
            // Every error renders.
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn structured_looking_bytes_never_panic(
        structures in proptest::collection::vec(arb_structure(), 0..5),
        pad in 0usize..8,
    ) {
        let mut raw = structures.concat();
        raw.resize(raw.len() + pad, 0);
        raw.truncate(MAX_LEGACY_ADV_LEN);
        let res = decode_advert(&raw);
        // Raw decoding is exactly "convert to structured, then decode".
        match StructuredAdvert::from_raw(&raw) {
            Ok(s) => prop_assert_eq!(res, decode_structured(&s)),
            Err(e) => prop_assert_eq!(res, Err(e)),
        }
    }
}

/// A `StructuredAdvert` over map-shaped properties, as a BlueZ scanner gets them from btleplug
/// (`radio/bluez/scan.rs` builds its own from btleplug's `Uuid`-keyed maps the same way).
fn from_maps<'a>(
    manufacturer_data: &'a HashMap<u16, Vec<u8>>,
    service_data: &'a HashMap<u128, Vec<u8>>,
    services: &[u128],
) -> StructuredAdvert<'a> {
    StructuredAdvert {
        manufacturer_data: manufacturer_data
            .iter()
            .map(|(c, d)| (*c, d.as_slice()))
            .collect(),
        service_data: service_data
            .iter()
            .map(|(u, d)| (*u, d.as_slice()))
            .collect(),
        services: services.to_vec(),
    }
}
