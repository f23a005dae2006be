//! GAEN export files (`docs/gaen.md` §3): the published samples, tampering, truncation, zip
//! bombs, write → parse round trips, and no panics on arbitrary input.

use std::io::{Cursor, Read, Write};
use std::sync::OnceLock;

use bluezone_protocol::gaen::export::{
    parse_export, proto, write_export, ExportError, ExportFile, ExportKey, ExportLimits,
    ExportSignatureInfo, ExportSigner, ReportType, SignatureError, SignatureStatus, TrustedKey,
    ECDSA_P256_SHA256_OID, ECDSA_P256_SHA512_OID, EXPORT_HEADER,
};
use bluezone_protocol::Tek;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use proptest::prelude::*;
use prost::Message;

mod support;
const TWO_KEYS: &str = "google-server-example-2keys";
const MANY_KEYS: &str = "google-internals-sample-140keys";

fn read(name: &str) -> Vec<u8> {
    support::read_testdata(&format!("gaen/{name}"))
}

fn sample_zip(sample: &str) -> Vec<u8> {
    read(&format!("{sample}.zip"))
}

fn sample_pem(sample: &str) -> String {
    String::from_utf8(read(&format!("{sample}.pub.pem"))).unwrap()
}

fn key_two() -> TrustedKey {
    TrustedKey::from_pem("some_id", "1", &sample_pem(TWO_KEYS)).unwrap()
}

fn key_many() -> TrustedKey {
    TrustedKey::from_pem("310", "v1", &sample_pem(MANY_KEYS)).unwrap()
}

fn limits() -> ExportLimits {
    ExportLimits::default()
}

/// `(export.bin, export.sig)` of a zip, read with the zip crate directly.
fn entries(zip_bytes: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut archive = zip::ZipArchive::new(Cursor::new(zip_bytes)).unwrap();
    let mut get = |name: &str| {
        let mut out = Vec::new();
        archive
            .by_name(name)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    };
    (get("export.bin"), get("export.sig"))
}

fn make_zip(files: &[(&str, &[u8])], method: zip::CompressionMethod) -> Vec<u8> {
    let options = zip::write::SimpleFileOptions::default().compression_method(method);
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data) in files {
        w.start_file(*name, options).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn stored_zip(bin: &[u8], sig: &[u8]) -> Vec<u8> {
    make_zip(
        &[("export.bin", bin), ("export.sig", sig)],
        zip::CompressionMethod::Stored,
    )
}

fn new_signer(seed: u8, key_id: &str, key_version: &str) -> ExportSigner {
    let mut bytes = [seed; 32];
    bytes[0] = 1; // keep the scalar well below the group order and non-zero
    ExportSigner::new(key_id, key_version, SigningKey::from_slice(&bytes).unwrap())
}

fn tek(hex: &str) -> Tek {
    Tek::from_hex(hex).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The published samples
// ---------------------------------------------------------------------------------------------

#[test]
fn two_key_sample_verifies_and_matches_the_spec() {
    let parsed = parse_export(&sample_zip(TWO_KEYS), &[key_two()], &limits()).unwrap();
    assert_eq!(
        parsed.signature,
        SignatureStatus::Verified {
            key_id: "some_id".into(),
            key_version: "1".into()
        }
    );
    let file = &parsed.file;
    assert_eq!(file.region, "US");
    assert_eq!(file.start_timestamp, 1_590_159_600);
    assert_eq!(file.end_timestamp, 1_590_246_000);
    assert_eq!((file.batch_num, file.batch_size), (1, 1));
    assert_eq!(
        file.signature_infos,
        vec![ExportSignatureInfo {
            key_id: "some_id".into(),
            key_version: "1".into(),
            algorithm: ECDSA_P256_SHA256_OID.into(),
        }]
    );
    assert!(file.revised_keys.is_empty());
    let expected = vec![
        ExportKey {
            transmission_risk_level: Some(8),
            rolling_period: 1,
            ..ExportKey::new(tek("172fc480e598490c34177604339b1543"), 2_649_980)
        },
        ExportKey {
            transmission_risk_level: Some(1),
            rolling_period: 114,
            ..ExportKey::new(tek("2b63053ac483238de176169e861f3dcd"), 2_649_866)
        },
    ];
    assert_eq!(file.keys, expected);
    assert!(file
        .keys
        .iter()
        .all(|k| k.report_type == ReportType::Unknown && k.days_since_onset.is_none()));
}

#[test]
fn many_key_sample_verifies_and_has_140_keys() {
    let parsed = parse_export(&sample_zip(MANY_KEYS), &[key_many()], &limits()).unwrap();
    assert_eq!(
        parsed.signature,
        SignatureStatus::Verified {
            key_id: "310".into(),
            key_version: "v1".into()
        }
    );
    assert_eq!(parsed.file.keys.len(), 140);
    assert_eq!(parsed.file.region, "US");
    assert!(parsed
        .file
        .keys
        .iter()
        .all(|k| (1..=144).contains(&k.rolling_period)));
}

#[test]
fn both_trusted_keys_at_once_pick_the_right_one() {
    let trusted = [key_two(), key_many()];
    for (sample, id) in [(TWO_KEYS, "some_id"), (MANY_KEYS, "310")] {
        let parsed = parse_export(&sample_zip(sample), &trusted, &limits()).unwrap();
        assert!(
            matches!(&parsed.signature, SignatureStatus::Verified { key_id, .. } if key_id == id)
        );
    }
}

#[test]
fn samples_fail_with_each_others_key() {
    // The other sample's key under its own id: no trusted key id matches.
    for (sample, other) in [(TWO_KEYS, key_many()), (MANY_KEYS, key_two())] {
        let err = parse_export(&sample_zip(sample), &[other], &limits()).unwrap_err();
        assert!(
            matches!(
                err,
                ExportError::Signature(SignatureError::NoTrustedKey { .. })
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("no trusted key id matched"), "{msg}");
    }
    // The other sample's key under this sample's id and version: the signature does not verify.
    let cases = [
        (TWO_KEYS, "some_id", "1", MANY_KEYS),
        (MANY_KEYS, "310", "v1", TWO_KEYS),
    ];
    for (sample, id, version, other) in cases {
        let wrong = TrustedKey::from_pem(id, version, &sample_pem(other)).unwrap();
        let err = parse_export(&sample_zip(sample), &[wrong], &limits()).unwrap_err();
        assert!(
            matches!(
                err,
                ExportError::Signature(SignatureError::DidNotVerify { .. })
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("did not verify"), "{msg}");
        assert!(msg.contains(id), "{msg}");
    }
}

#[test]
fn no_trusted_keys_means_unverified() {
    for sample in [TWO_KEYS, MANY_KEYS] {
        let parsed = parse_export(&sample_zip(sample), &[], &limits()).unwrap();
        assert_eq!(parsed.signature, SignatureStatus::Unverified);
        assert!(!parsed.is_verified());
    }
}

#[test]
fn trusted_key_pem_round_trips_and_bad_pem_is_typed() {
    let pem = sample_pem(TWO_KEYS);
    assert_eq!(key_two().to_pem().unwrap().trim(), pem.trim());

    let dbg = format!("{:?}", key_two());
    assert!(dbg.contains("some_id") && dbg.contains('1'), "{dbg}");

    assert!(matches!(
        TrustedKey::from_pem(
            "a",
            "b",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"
        ),
        Err(bluezone_protocol::gaen::export::KeyError::PublicKeyPem(_))
    ));
    assert!(ExportSigner::from_pkcs8_pem("a", "b", &pem).is_err());
}

// ---------------------------------------------------------------------------------------------
// Tampering and truncation
// ---------------------------------------------------------------------------------------------

/// Sanity check for the helpers: re-zipping an untouched sample still verifies.
#[test]
fn rezipped_sample_still_verifies() {
    for (sample, key) in [(TWO_KEYS, key_two()), (MANY_KEYS, key_many())] {
        let (bin, sig) = entries(&sample_zip(sample));
        let parsed = parse_export(&stored_zip(&bin, &sig), &[key], &limits()).unwrap();
        assert!(parsed.is_verified());
    }
}

fn flip_every_byte(sample: &str, key: TrustedKey, masks: &[u8]) {
    let (bin, sig) = entries(&sample_zip(sample));
    let trusted = [key];
    for position in 0..bin.len() {
        for &mask in masks {
            let mut tampered = bin.clone();
            tampered[position] ^= mask;
            let zip = stored_zip(&tampered, &sig);
            let result = parse_export(&zip, &trusted, &limits());
            assert!(
                result.is_err(),
                "{sample}: byte {position} ^ {mask:#04x} still verified"
            );
            // Without trust it may parse or fail, but must not panic.
            if let Ok(parsed) = parse_export(&zip, &[], &limits()) {
                assert_eq!(parsed.signature, SignatureStatus::Unverified);
            }
        }
    }
}

#[test]
fn flipped_byte_anywhere_in_two_key_export_bin_fails() {
    flip_every_byte(TWO_KEYS, key_two(), &[0x01, 0x80, 0xff]);
}

#[test]
fn flipped_byte_anywhere_in_many_key_export_bin_fails() {
    flip_every_byte(MANY_KEYS, key_many(), &[0xff]);
}

#[test]
fn tampered_export_sig_only_verifies_with_the_original_signature() {
    let (bin, sig) = entries(&sample_zip(TWO_KEYS));
    for position in 0..sig.len() {
        let mut tampered = sig.clone();
        tampered[position] ^= 0x01;
        let result = parse_export(&stored_zip(&bin, &tampered), &[key_two()], &limits());
        // A flip in the OID text or a batch number may leave the signature intact; anything that
        // still verifies must have kept the key id and signature bytes.
        if let Ok(parsed) = result {
            assert!(parsed.is_verified());
            let list = proto::TEKSignatureList::decode(tampered.as_slice()).unwrap();
            let orig = proto::TEKSignatureList::decode(sig.as_slice()).unwrap();
            assert_eq!(list.signatures[0].signature, orig.signatures[0].signature);
        }
    }
}

#[test]
fn every_truncated_zip_is_an_error() {
    for (sample, key) in [(TWO_KEYS, key_two()), (MANY_KEYS, key_many())] {
        let zip = sample_zip(sample);
        let trusted = [key];
        for len in 0..zip.len() {
            let prefix = &zip[..len];
            assert!(
                parse_export(prefix, &trusted, &limits()).is_err(),
                "{sample}: prefix of {len} bytes verified"
            );
            assert!(
                parse_export(prefix, &[], &limits()).is_err(),
                "{sample}: prefix of {len} bytes parsed"
            );
        }
        assert!(parse_export(&zip, &trusted, &limits()).is_ok());
    }
}

#[test]
fn missing_entries_are_named() {
    let (bin, sig) = entries(&sample_zip(TWO_KEYS));
    let only_bin = make_zip(&[("export.bin", &bin)], zip::CompressionMethod::Deflated);
    let err = parse_export(&only_bin, &[], &limits()).unwrap_err();
    assert!(matches!(
        err,
        ExportError::MissingEntry { name: "export.sig" }
    ));
    assert!(err.to_string().contains("export.sig"), "{err}");

    let only_sig = make_zip(&[("export.sig", &sig)], zip::CompressionMethod::Deflated);
    let err = parse_export(&only_sig, &[key_two()], &limits()).unwrap_err();
    assert!(matches!(
        err,
        ExportError::MissingEntry { name: "export.bin" }
    ));
    assert!(err.to_string().contains("export.bin"), "{err}");

    // Names must match exactly.
    let renamed = make_zip(
        &[("dir/export.bin", &bin), ("export.sig", &sig)],
        zip::CompressionMethod::Stored,
    );
    assert!(matches!(
        parse_export(&renamed, &[], &limits()),
        Err(ExportError::UnexpectedEntry { name }) if name == "dir/export.bin"
    ));

    let err = parse_export(b"not a zip", &[], &limits()).unwrap_err();
    assert!(matches!(err, ExportError::Zip(_)), "{err:?}");
    assert!(err.to_string().contains("zip"), "{err}");
}

#[test]
fn bad_header_is_rejected() {
    let (bin, sig) = entries(&sample_zip(TWO_KEYS));
    let mut bad = bin.clone();
    bad[12] = b'!';
    for trusted in [vec![], vec![key_two()]] {
        let err = parse_export(&stored_zip(&bad, &sig), &trusted, &limits()).unwrap_err();
        assert!(matches!(err, ExportError::Header { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("EK Export v1    ") && msg.contains("EK Export v1!"),
            "{msg}"
        );
    }
    let err = parse_export(&stored_zip(b"EK Ex", &sig), &[], &limits()).unwrap_err();
    assert!(err.to_string().contains("5 bytes"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Limits and zip bombs
// ---------------------------------------------------------------------------------------------

const BOMB_SIZE: usize = 100 << 20;

/// A zip whose export.bin is 100 MiB: the header then zeros, deflated (~0.5 MB).
fn bomb() -> &'static [u8] {
    static BOMB: OnceLock<Vec<u8>> = OnceLock::new();
    BOMB.get_or_init(|| {
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .compression_level(Some(1));
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        w.start_file("export.bin", options).unwrap();
        w.write_all(EXPORT_HEADER).unwrap();
        let chunk = vec![0u8; 1 << 20];
        let mut written = EXPORT_HEADER.len();
        while written < BOMB_SIZE {
            let n = (BOMB_SIZE - written).min(chunk.len());
            w.write_all(&chunk[..n]).unwrap();
            written += n;
        }
        w.start_file("export.sig", options).unwrap();
        w.write_all(b"").unwrap();
        w.finish().unwrap().into_inner()
    })
}

fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize
}

fn u16_at(b: &[u8], at: usize) -> usize {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap()) as usize
}

/// Rewrites the uncompressed size of entry `name` in both the central directory and the local
/// header: a zip that lies about its size.
fn with_declared_size(zip: &[u8], name: &str, size: u32) -> Vec<u8> {
    let mut out = zip.to_vec();
    let eocd = zip.len() - 22;
    assert_eq!(&zip[eocd..eocd + 4], b"PK\x05\x06");
    let count = u16_at(zip, eocd + 10);
    let mut at = u32_at(zip, eocd + 16);
    for _ in 0..count {
        assert_eq!(&zip[at..at + 4], b"PK\x01\x02");
        let name_len = u16_at(zip, at + 28);
        let extra_len = u16_at(zip, at + 30);
        let comment_len = u16_at(zip, at + 32);
        let local = u32_at(zip, at + 42);
        if &zip[at + 46..at + 46 + name_len] == name.as_bytes() {
            out[at + 24..at + 28].copy_from_slice(&size.to_le_bytes());
            assert_eq!(&zip[local..local + 4], b"PK\x03\x04");
            out[local + 22..local + 26].copy_from_slice(&size.to_le_bytes());
        }
        at += 46 + name_len + extra_len + comment_len;
    }
    out
}

#[test]
fn zip_bomb_over_the_declared_size_limit_is_rejected() {
    // Default limit (64 MiB) and a small one.
    let small = ExportLimits {
        max_export_bin_bytes: 1 << 20,
        ..limits()
    };
    for (limits, limit) in [(limits(), 64u64 << 20), (small, 1 << 20)] {
        let err = parse_export(bomb(), &[], &limits).unwrap_err();
        assert!(
            matches!(err, ExportError::EntryTooLarge { name: "export.bin", declared, .. } if declared == BOMB_SIZE as u64),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("export.bin") && msg.contains(&format!("size limit of {limit} bytes")),
            "{msg}"
        );
    }
}

#[test]
fn zip_bomb_lying_about_its_size_is_cut_at_the_limit() {
    let liar = with_declared_size(bomb(), "export.bin", 200);
    let small = ExportLimits {
        max_export_bin_bytes: 1 << 20,
        ..limits()
    };
    let err = parse_export(&liar, &[], &small).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            ExportError::EntryOverrun {
                name: "export.bin",
                limit: 1_048_576,
                declared: 200
            }
        ),
        "{err:?}"
    );
    assert!(
        msg.contains("export.bin") && msg.contains("size limit of 1048576 bytes"),
        "{msg}"
    );
}

#[test]
fn export_sig_size_is_bounded() {
    let (bin, sig) = entries(&sample_zip(TWO_KEYS));
    let tight = ExportLimits {
        max_export_sig_bytes: 64,
        ..limits()
    };
    let err = parse_export(&stored_zip(&bin, &sig), &[key_two()], &tight).unwrap_err();
    assert!(
        matches!(
            err,
            ExportError::EntryTooLarge {
                name: "export.sig",
                limit: 64,
                declared: 115
            }
        ),
        "{err:?}"
    );
    let liar = with_declared_size(&stored_zip(&bin, &sig), "export.sig", 10);
    let err = parse_export(&liar, &[key_two()], &tight).unwrap_err();
    assert!(
        matches!(
            err,
            ExportError::EntryOverrun {
                name: "export.sig",
                ..
            }
        ) || matches!(
            err,
            ExportError::Read {
                name: "export.sig",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn key_count_is_bounded() {
    let one = ExportLimits {
        max_keys: 1,
        ..limits()
    };
    let err = parse_export(&sample_zip(TWO_KEYS), &[key_two()], &one).unwrap_err();
    assert!(
        matches!(err, ExportError::TooManyKeys { limit: 1, got: 2 }),
        "{err:?}"
    );
    assert!(err.to_string().contains("limit of 1"), "{err}");
    let exact = ExportLimits {
        max_keys: 140,
        ..limits()
    };
    assert!(parse_export(&sample_zip(MANY_KEYS), &[key_many()], &exact).is_ok());

    // 200,000 empty keys (2 bytes each on the wire) are refused before any is decoded.
    let mut bin = EXPORT_HEADER.to_vec();
    for _ in 0..200_000 {
        bin.extend_from_slice(&[0x3a, 0x00]);
    }
    let few = ExportLimits {
        max_keys: 1000,
        ..limits()
    };
    let err = parse_export(&stored_zip(&bin, b""), &[], &few).unwrap_err();
    assert!(
        matches!(
            err,
            ExportError::TooManyKeys {
                limit: 1000,
                got: 200_000
            }
        ),
        "{err:?}"
    );
}

#[test]
fn signature_count_is_bounded() {
    let (bin, sig) = entries(&sample_zip(TWO_KEYS));
    let mut many = Vec::new();
    for _ in 0..101 {
        many.extend_from_slice(&sig);
    }
    let err = parse_export(&stored_zip(&bin, &many), &[key_two()], &limits()).unwrap_err();
    assert!(
        matches!(
            err,
            ExportError::TooManySignatures {
                entry: "export.sig",
                limit: 100,
                got: 101,
                ..
            }
        ),
        "{err:?}"
    );
    // 100 copies of the same signature are fine.
    let hundred = &many[..sig.len() * 100];
    assert!(parse_export(&stored_zip(&bin, hundred), &[key_two()], &limits()).is_ok());
}

// ---------------------------------------------------------------------------------------------
// Hand-built files
// ---------------------------------------------------------------------------------------------

fn signed_zip(bin: &[u8], signer: &ExportSigner, algorithm: Option<&str>) -> Vec<u8> {
    let signature: Signature = signer.key.sign(bin);
    let list = proto::TEKSignatureList {
        signatures: vec![proto::TEKSignature {
            signature_info: Some(proto::SignatureInfo {
                verification_key_version: Some(signer.key_version.clone()),
                verification_key_id: Some(signer.key_id.clone()),
                signature_algorithm: algorithm.map(str::to_owned),
            }),
            batch_num: Some(1),
            batch_size: Some(1),
            signature: Some(signature.to_der().as_bytes().to_vec()),
        }],
    };
    stored_zip(bin, &list.encode_to_vec())
}

fn export_bin(message: &proto::TemporaryExposureKeyExport) -> Vec<u8> {
    let mut bin = EXPORT_HEADER.to_vec();
    bin.extend_from_slice(&message.encode_to_vec());
    bin
}

fn proto_key(
    data: Vec<u8>,
    start: Option<i32>,
    period: Option<i32>,
) -> proto::TemporaryExposureKey {
    proto::TemporaryExposureKey {
        key_data: Some(data),
        transmission_risk_level: None,
        rolling_start_interval_number: start,
        rolling_period: period,
        report_type: None,
        days_since_onset_of_symptoms: None,
    }
}

#[test]
fn signature_info_with_reserved_field_2_parses() {
    // Old servers still wrote field 1 (app bundle id) and field 2 (android package).
    let mut raw_info = Vec::new();
    raw_info.extend_from_slice(&[0x0a, 0x03]);
    raw_info.extend_from_slice(b"app");
    raw_info.extend_from_slice(&[0x12, 0x0f]);
    raw_info.extend_from_slice(b"com.example.app");
    raw_info.extend_from_slice(&[0x1a, 0x01, b'1', 0x22, 0x04]);
    raw_info.extend_from_slice(b"test");
    raw_info.push(0x2a);
    raw_info.push(ECDSA_P256_SHA256_OID.len() as u8);
    raw_info.extend_from_slice(ECDSA_P256_SHA256_OID.as_bytes());
    let info = proto::SignatureInfo::decode(raw_info.as_slice()).unwrap();
    assert_eq!(info.verification_key_id.as_deref(), Some("test"));
    assert_eq!(info.verification_key_version.as_deref(), Some("1"));
    assert_eq!(
        info.signature_algorithm.as_deref(),
        Some(ECDSA_P256_SHA256_OID)
    );

    // The same SignatureInfo inside a whole signed file.
    let signer = new_signer(3, "test", "1");
    let message = proto::TemporaryExposureKeyExport {
        region: Some("DE".into()),
        keys: vec![proto_key(vec![7; 16], Some(2_650_000), None)],
        ..Default::default()
    };
    let mut bin = export_bin(&message);
    bin.push(0x32); // field 6, length-delimited
    bin.push(raw_info.len() as u8);
    bin.extend_from_slice(&raw_info);
    let signature: Signature = signer.key.sign(&bin);
    let mut sig = Vec::new();
    let mut tek_sig = vec![0x0a, raw_info.len() as u8];
    tek_sig.extend_from_slice(&raw_info);
    let der = signature.to_der();
    tek_sig.push(0x22);
    tek_sig.push(der.as_bytes().len() as u8);
    tek_sig.extend_from_slice(der.as_bytes());
    sig.push(0x0a);
    sig.push(tek_sig.len() as u8);
    sig.extend_from_slice(&tek_sig);

    let parsed = parse_export(&stored_zip(&bin, &sig), &[signer.trusted_key()], &limits()).unwrap();
    assert!(parsed.is_verified());
    assert_eq!(
        parsed.file.signature_infos,
        vec![ExportSignatureInfo {
            key_id: "test".into(),
            key_version: "1".into(),
            algorithm: ECDSA_P256_SHA256_OID.into(),
        }]
    );
    // An absent rolling_period reads as 144.
    assert_eq!(parsed.file.keys[0].rolling_period, 144);
    assert_eq!(parsed.file.keys[0].rolling_start, 2_650_000);
}

/// `…4.3.4` is ECDSA P-256 over a SHA-512 prehash: it verifies only under that label.
#[test]
fn sha512_signatures_verify() {
    use p256::ecdsa::signature::hazmat::PrehashSigner;
    use sha2::{Digest, Sha512};
    let signer = new_signer(9, "k", "v");
    let message = proto::TemporaryExposureKeyExport {
        keys: vec![proto_key(vec![7; 16], Some(2_650_000), None)],
        ..Default::default()
    };
    let bin = export_bin(&message);
    let signature: Signature = signer.key.sign_prehash(&Sha512::digest(&bin)).unwrap();
    let zip_with = |algorithm: &str| {
        let list = proto::TEKSignatureList {
            signatures: vec![proto::TEKSignature {
                signature_info: Some(proto::SignatureInfo {
                    verification_key_version: Some("v".into()),
                    verification_key_id: Some("k".into()),
                    signature_algorithm: Some(algorithm.into()),
                }),
                batch_num: Some(1),
                batch_size: Some(1),
                signature: Some(signature.to_der().as_bytes().to_vec()),
            }],
        };
        stored_zip(&bin, &list.encode_to_vec())
    };
    let parsed = parse_export(
        &zip_with(ECDSA_P256_SHA512_OID),
        &[signer.trusted_key()],
        &limits(),
    )
    .unwrap();
    assert!(parsed.is_verified());
    assert_eq!(parsed.file.keys.len(), 1);
    let err = parse_export(
        &zip_with(ECDSA_P256_SHA256_OID),
        &[signer.trusted_key()],
        &limits(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ExportError::Signature(SignatureError::DidNotVerify { .. })
        ),
        "{err:?}"
    );
}

#[test]
fn algorithm_oid_must_be_ecdsa_p256_sha256_or_empty() {
    let signer = new_signer(4, "k", "v");
    let bin = export_bin(&proto::TemporaryExposureKeyExport::default());
    for ok in [None, Some(""), Some(ECDSA_P256_SHA256_OID)] {
        let parsed = parse_export(
            &signed_zip(&bin, &signer, ok),
            &[signer.trusted_key()],
            &limits(),
        );
        assert!(parsed.unwrap().is_verified(), "{ok:?}");
    }
    let err = parse_export(
        &signed_zip(&bin, &signer, Some("1.2.840.10045.4.3.3")),
        &[signer.trusted_key()],
        &limits(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ExportError::Signature(SignatureError::UnsupportedAlgorithm { .. })
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("1.2.840.10045.4.3.3"), "{err}");
}

#[test]
fn empty_or_malformed_signatures_are_named() {
    let signer = new_signer(5, "k", "v");
    let bin = export_bin(&proto::TemporaryExposureKeyExport::default());
    let err = parse_export(&stored_zip(&bin, b""), &[signer.trusted_key()], &limits()).unwrap_err();
    assert!(
        matches!(err, ExportError::Signature(SignatureError::NoSignatures)),
        "{err:?}"
    );

    let list = proto::TEKSignatureList {
        signatures: vec![proto::TEKSignature {
            signature_info: Some(proto::SignatureInfo {
                verification_key_version: Some("v".into()),
                verification_key_id: Some("k".into()),
                signature_algorithm: None,
            }),
            signature: Some(vec![0x30, 0x02, 0x01]),
            ..Default::default()
        }],
    };
    let err = parse_export(
        &stored_zip(&bin, &list.encode_to_vec()),
        &[signer.trusted_key()],
        &limits(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ExportError::Signature(SignatureError::Malformed { .. })
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("DER"), "{err}");

    let err = parse_export(
        &stored_zip(&bin, &[0xff, 0xff]),
        &[signer.trusted_key()],
        &limits(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ExportError::Decode {
                entry: "export.sig",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn bad_keys_are_skipped_and_named_by_index_without_key_material() {
    let signer = new_signer(6, "k", "v");
    let secret = vec![0xab; 15];
    let cases: Vec<(proto::TemporaryExposureKey, &str)> = vec![
        (
            proto_key(secret.clone(), Some(1), None),
            "keys[1].key_data: expected 16 bytes, got 15",
        ),
        (
            proto_key(vec![0xab; 16], None, None),
            "keys[1].rolling_start_interval_number is missing",
        ),
        (
            proto_key(vec![0xab; 16], Some(-5), None),
            "keys[1].rolling_start_interval_number: expected a non-negative interval number, got -5",
        ),
        (
            proto_key(vec![0xab; 16], Some(1), Some(0)),
            "keys[1].rolling_period: expected 1..=144, got 0",
        ),
        (
            proto_key(vec![0xab; 16], Some(1), Some(145)),
            "keys[1].rolling_period: expected 1..=144, got 145",
        ),
    ];
    for (bad, expected) in cases {
        // The bad key sits between two good ones; the good ones are kept, as Google's parser
        // keeps them.
        let message = proto::TemporaryExposureKeyExport {
            keys: vec![
                proto_key(vec![1; 16], Some(1), Some(144)),
                bad,
                proto_key(vec![2; 16], Some(1), Some(144)),
            ],
            revised_keys: vec![proto_key(vec![3; 16], Some(1), Some(144))],
            ..Default::default()
        };
        let zip = signed_zip(&export_bin(&message), &signer, None);
        for trusted in [vec![], vec![signer.trusted_key()]] {
            let parsed = parse_export(&zip, &trusted, &limits()).unwrap();
            assert_eq!(parsed.is_verified(), !trusted.is_empty());
            assert_eq!(parsed.file.keys.len(), 2);
            assert_eq!(parsed.file.keys[1].tek, Tek::from_bytes([2; 16]));
            assert_eq!(parsed.file.revised_keys.len(), 1);
            assert_eq!(parsed.skipped.len(), 1);
            let skip = &parsed.skipped[0];
            assert_eq!((skip.list, skip.index), ("keys", 1));
            let msg = skip.to_string();
            assert!(msg.contains(expected), "{msg}");
            assert!(
                !msg.contains("abab") && !format!("{skip:?}").contains("abab"),
                "{msg}"
            );
        }
    }
    // A bad revised key is named as such; a file with no valid key at all is refused.
    let message = proto::TemporaryExposureKeyExport {
        revised_keys: vec![proto_key(vec![], Some(1), None)],
        ..Default::default()
    };
    let err = parse_export(
        &signed_zip(&export_bin(&message), &signer, None),
        &[signer.trusted_key()],
        &limits(),
    )
    .unwrap_err();
    assert!(matches!(err, ExportError::NoValidKey { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("revised_keys[0].key_data: expected 16 bytes, got 0"),
        "{err}"
    );
}

/// An export zip is `export.bin` and `export.sig`, once each.
#[test]
fn unexpected_duplicate_or_too_many_zip_entries_are_refused() {
    let (bin, sig) = entries(&sample_zip(TWO_KEYS));
    let stored = zip::CompressionMethod::Stored;
    let extra = make_zip(
        &[
            ("export.bin", &bin),
            ("export.sig", &sig),
            ("notes.txt", b"hi"),
        ],
        stored,
    );
    let err = parse_export(&extra, &[key_two()], &limits()).unwrap_err();
    assert!(
        matches!(&err, ExportError::UnexpectedEntry { name } if name == "notes.txt"),
        "{err:?}"
    );

    // The writer refuses a repeated name, so write another name and rename it in both headers.
    let mut dup = make_zip(
        &[
            ("export.bin", &bin),
            ("export.sig", &sig),
            ("export.biX", &bin),
        ],
        stored,
    );
    let mut renamed = 0;
    for i in 0..dup.len() - 10 {
        if &dup[i..i + 10] == b"export.biX" {
            dup[i + 9] = b'n';
            renamed += 1;
        }
    }
    assert_eq!(renamed, 2, "local header and central directory");
    let err = parse_export(&dup, &[key_two()], &limits()).unwrap_err();
    assert!(
        matches!(
            &err,
            ExportError::DuplicateEntry { .. } | ExportError::Zip(_)
        ),
        "{err:?}"
    );

    // The end-of-central-directory record declares 60000 entries: refused before reading them.
    let mut many = sample_zip(TWO_KEYS);
    let eocd = many.windows(4).rposition(|w| w == b"PK\x05\x06").unwrap();
    many[eocd + 8..eocd + 10].copy_from_slice(&60000u16.to_le_bytes());
    many[eocd + 10..eocd + 12].copy_from_slice(&60000u16.to_le_bytes());
    let err = parse_export(&many, &[key_two()], &limits()).unwrap_err();
    assert!(
        matches!(err, ExportError::TooManyZipEntries { declared: 60000 }),
        "{err:?}"
    );
}

#[test]
fn report_types_map_both_ways() {
    for v in -3..10 {
        assert_eq!(ReportType::from_i32(v).to_i32(), v);
    }
    assert_eq!(ReportType::from_i32(1), ReportType::ConfirmedTest);
    assert_eq!(ReportType::from_i32(5), ReportType::Revoked);
    assert_eq!(ReportType::from_i32(9), ReportType::Other(9));
}

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

#[test]
fn writer_output_is_signed_sorted_and_deterministic() {
    let signer = new_signer(9, "writer", "v7");
    let file = ExportFile {
        start_timestamp: 1_700_000_000,
        end_timestamp: 1_700_086_400,
        region: "VN".into(),
        batch_num: 1,
        batch_size: 1,
        signature_infos: vec![],
        keys: vec![
            ExportKey {
                report_type: ReportType::ConfirmedTest,
                days_since_onset: Some(-2),
                ..ExportKey::new(Tek::from_bytes([0xee; 16]), 2_833_344)
            },
            ExportKey::new(Tek::from_bytes([0x11; 16]), 2_833_200),
        ],
        revised_keys: vec![ExportKey {
            report_type: ReportType::Revoked,
            ..ExportKey::new(Tek::from_bytes([0x22; 16]), 2_833_056)
        }],
    };
    let zip = write_export(&file, &signer).unwrap();
    assert_eq!(zip, write_export(&file, &signer).unwrap());

    let parsed = parse_export(&zip, &[signer.trusted_key()], &limits()).unwrap();
    assert_eq!(
        parsed.signature,
        SignatureStatus::Verified {
            key_id: "writer".into(),
            key_version: "v7".into()
        }
    );
    let mut expected = file.clone();
    expected.keys.reverse();
    expected.signature_infos = vec![signer.signature_info()];
    assert_eq!(parsed.file, expected);

    // Entries are deflated, and export.bin starts with the header.
    let mut archive = zip::ZipArchive::new(Cursor::new(zip.as_slice())).unwrap();
    assert_eq!(
        archive.by_name("export.bin").unwrap().compression(),
        zip::CompressionMethod::Deflated
    );
    let (bin, _) = entries(&zip);
    assert!(bin.starts_with(b"EK Export v1    "));

    // A stranger's key fails.
    let other = new_signer(10, "writer", "v7");
    assert!(parse_export(&zip, &[other.trusted_key()], &limits()).is_err());
}

#[test]
fn writer_rejects_keys_the_reader_would_reject() {
    let signer = new_signer(11, "w", "1");
    for (key, expected) in [
        (
            ExportKey {
                rolling_period: 0,
                ..ExportKey::new(Tek::from_bytes([1; 16]), 1)
            },
            "keys[1].rolling_period: expected 1..=144, got 0",
        ),
        (
            ExportKey::new(Tek::from_bytes([1; 16]), u32::MAX),
            "keys[1].rolling_start_interval_number",
        ),
    ] {
        let file = ExportFile {
            keys: vec![ExportKey::new(Tek::from_bytes([2; 16]), 1), key],
            ..Default::default()
        };
        let err = write_export(&file, &signer).unwrap_err();
        assert!(err.to_string().contains(expected), "{err}");
    }
}

#[test]
fn signer_keys_round_trip_through_pem() {
    let signer = new_signer(12, "pem", "2");
    let private = signer.to_pkcs8_pem().unwrap();
    let again = ExportSigner::from_pkcs8_pem("pem", "2", &private).unwrap();
    assert_eq!(again.verifying_key(), signer.verifying_key());
    let public = signer.public_key_pem().unwrap();
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"));
    let trusted = TrustedKey::from_pem("pem", "2", &public).unwrap();
    assert_eq!(trusted, signer.trusted_key());

    let dbg = format!("{signer:?}");
    assert!(dbg.contains("pem") && dbg.contains("redacted"), "{dbg}");
    let secret_hex = hex::encode(signer.key.to_bytes());
    assert!(!dbg.contains(&secret_hex));
}

#[test]
fn debug_output_redacts_keys() {
    let parsed = parse_export(&sample_zip(TWO_KEYS), &[key_two()], &limits()).unwrap();
    let dbg = format!("{parsed:?}");
    assert!(
        !dbg.contains("172fc480") && !dbg.contains("2b63053a"),
        "{dbg}"
    );
    let key = proto_key(vec![0x17, 0x2f, 0xc4, 0x80], Some(1), None);
    assert!(!format!("{key:?}").contains("23, 47"));
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

fn arb_key() -> impl Strategy<Value = ExportKey> {
    (
        any::<[u8; 16]>(),
        0..=i32::MAX as u32,
        1u32..=144,
        any::<i32>(),
        proptest::option::of(any::<i32>()),
        proptest::option::of(any::<i32>()),
    )
        .prop_map(|(data, start, period, report, risk, onset)| ExportKey {
            tek: Tek::from_bytes(data),
            rolling_start: start,
            rolling_period: period,
            report_type: ReportType::from_i32(report),
            transmission_risk_level: risk,
            days_since_onset: onset,
        })
}

fn arb_info() -> impl Strategy<Value = ExportSignatureInfo> {
    ("[a-z0-9]{0,6}", "[a-z0-9]{0,3}", "[0-9.]{0,20}").prop_map(
        |(key_id, key_version, algorithm)| ExportSignatureInfo {
            key_id,
            key_version,
            algorithm,
        },
    )
}

fn arb_file() -> impl Strategy<Value = ExportFile> {
    (
        any::<u64>(),
        any::<u64>(),
        ".{0,8}",
        any::<i32>(),
        any::<i32>(),
        proptest::collection::vec(arb_info(), 0..3),
        proptest::collection::vec(arb_key(), 0..40),
        proptest::collection::vec(arb_key(), 0..5),
    )
        .prop_map(
            |(start, end, region, batch_num, batch_size, infos, keys, revised)| ExportFile {
                start_timestamp: start,
                end_timestamp: end,
                region,
                batch_num,
                batch_size,
                signature_infos: infos,
                keys,
                revised_keys: revised,
            },
        )
}

fn arb_signer() -> impl Strategy<Value = ExportSigner> {
    (any::<[u8; 32]>(), "[a-z0-9_]{1,8}", "[a-z0-9]{0,3}").prop_filter_map(
        "scalar out of range",
        |(bytes, id, version)| {
            SigningKey::from_slice(&bytes)
                .ok()
                .map(|key| ExportSigner::new(id, version, key))
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn write_then_parse_round_trips(file in arb_file(), signer in arb_signer()) {
        let zip = write_export(&file, &signer).unwrap();
        let parsed = parse_export(&zip, &[signer.trusted_key()], &ExportLimits::default()).unwrap();
        prop_assert_eq!(
            &parsed.signature,
            &SignatureStatus::Verified { key_id: signer.key_id.clone(), key_version: signer.key_version.clone() }
        );
        let mut expected = file.clone();
        expected.keys.sort_by(|a, b| a.tek.as_bytes().cmp(b.tek.as_bytes()));
        expected.revised_keys.sort_by(|a, b| a.tek.as_bytes().cmp(b.tek.as_bytes()));
        if !file.signature_infos.iter().any(|i| i.key_id == signer.key_id && i.key_version == signer.key_version) {
            expected.signature_infos.push(signer.signature_info());
        }
        prop_assert_eq!(&parsed.file, &expected);
        // And unverified parsing sees the same file.
        let unverified = parse_export(&zip, &[], &ExportLimits::default()).unwrap();
        prop_assert_eq!(unverified.file, expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = parse_export(&bytes, &[], &ExportLimits::default());
        let _ = parse_export(&bytes, &[key_two()], &ExportLimits::default());
    }

    #[test]
    fn arbitrary_entries_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        sig in proptest::collection::vec(any::<u8>(), 0..256),
        with_header in any::<bool>(),
    ) {
        let mut bin = if with_header { EXPORT_HEADER.to_vec() } else { Vec::new() };
        bin.extend_from_slice(&body);
        let zip = stored_zip(&bin, &sig);
        let _ = parse_export(&zip, &[], &ExportLimits::default());
        prop_assert!(parse_export(&zip, &[key_two()], &ExportLimits::default()).is_err());
    }

    #[test]
    fn mutated_sample_zips_never_panic_and_only_verify_unchanged(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        many in any::<bool>(),
    ) {
        let (sample, key) = if many { (MANY_KEYS, key_many()) } else { (TWO_KEYS, key_two()) };
        let original = sample_zip(sample);
        let mut zip = original.clone();
        for (index, byte) in &edits {
            let i = index.index(zip.len());
            zip[i] = *byte;
        }
        let _ = parse_export(&zip, &[], &ExportLimits::default());
        if let Ok(parsed) = parse_export(&zip, std::slice::from_ref(&key), &ExportLimits::default()) {
            let reference = parse_export(&original, &[key], &ExportLimits::default()).unwrap();
            prop_assert_eq!(parsed, reference);
        }
    }
}

fn extreme_i32() -> impl Strategy<Value = i32> {
    prop_oneof![
        any::<i32>(),
        prop::sample::select(vec![
            i32::MIN,
            -1,
            0,
            1,
            143,
            144,
            145,
            i32::MAX - 144,
            i32::MAX - 143,
            i32::MAX,
        ]),
        0..=144,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Security L1: any `rolling_start_interval_number` and `rolling_period` either gives a key
    /// with exactly those values (start ≥ 0, period 1..=144) whose validity, RPI schedule and
    /// matching never wrap, or skips the key with an error naming the field; other keys stay.
    #[test]
    fn extreme_rolling_values_are_kept_exactly_or_refused_by_name(
        start in extreme_i32(),
        period in proptest::option::of(extreme_i32()),
    ) {
        use bluezone_protocol::gaen::{key_schedule, Enin, Metadata};
        use bluezone_protocol::matching::gaen::{match_keys, GaenKey};
        use bluezone_protocol::matching::{MatchConfig, ObservationIndex};
        use bluezone_protocol::{PeerId, Sighting};
        let signer = new_signer(9, "k", "v");
        let message = proto::TemporaryExposureKeyExport {
            keys: vec![
                proto_key(vec![1; 16], Some(2_650_000), Some(144)),
                proto_key(vec![9; 16], Some(start), period),
            ],
            ..Default::default()
        };
        let zip = signed_zip(&export_bin(&message), &signer, None);
        let parsed = parse_export(&zip, &[signer.trusted_key()], &limits()).unwrap();
        prop_assert!(parsed.is_verified());
        let p = period.unwrap_or(144);
        if start >= 0 && (1..=144).contains(&p) {
            prop_assert!(parsed.skipped.is_empty());
            prop_assert_eq!(parsed.file.keys.len(), 2);
            let k = parsed.file.keys.iter().find(|k| k.tek == Tek::from_bytes([9; 16])).unwrap();
            prop_assert_eq!((k.rolling_start, k.rolling_period), (start as u32, p as u32));
            let g = GaenKey::from(k);
            let (first, last) = g.validity();
            prop_assert!(first < start as i64 * 600 && last >= (start as i64 + p as i64) * 600 - 1);
            let sched = key_schedule(&g.tek, g.rolling_start, g.rolling_period, Metadata::v1_0(0));
            prop_assert_eq!(sched.len(), p as usize);
            for (j, (enin, _, _)) in sched.iter().enumerate() {
                prop_assert_eq!(enin.0 as i64, start as i64 + j as i64, "no wrap");
            }
            // The key's last RPI, heard in its interval, is found.
            let (enin, rpi, aem) = sched[sched.len() - 1];
            prop_assert_eq!(Enin::from_unix(enin.to_unix()), enin);
            let s = Sighting {
                peer: PeerId::Gaen(rpi),
                time: enin.to_unix() + 7,
                rssi: -60,
                tx_power: None,
                aem: Some(aem),
            };
            let index = ObservationIndex::build(std::slice::from_ref(&s), 1);
            let (hits, _) = match_keys(&[g][..], &index, &MatchConfig::default());
            prop_assert!(!hits.is_empty());
        } else {
            prop_assert_eq!(parsed.file.keys.len(), 1, "the good key is kept");
            prop_assert_eq!(parsed.skipped.len(), 1);
            let skip = &parsed.skipped[0];
            prop_assert_eq!((skip.list, skip.index), ("keys", 1));
            let msg = skip.to_string();
            let field = if start < 0 { "rolling_start_interval_number" } else { "rolling_period" };
            prop_assert!(msg.contains(field), "{}", msg);
            let got = if start < 0 { start } else { p };
            prop_assert!(msg.contains(&got.to_string()), "{}", msg);
        }
    }
}
