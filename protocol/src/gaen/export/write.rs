//! Writing an export: keys sorted by key data, batch 1 of 1, signed over the whole `export.bin`.

use std::io::{Cursor, Write};

use p256::ecdsa::signature::Signer;
use p256::ecdsa::Signature;
use prost::Message;

use super::*;

/// Writes a signed export zip (deflated `export.bin` and `export.sig`, fixed timestamps, so the
/// output is a function of the input).
///
/// Keys and revised keys are sorted by key data. `signature_infos` are written as given, with the
/// signer's own info appended when no entry names its key id and version. `export.sig` holds one
/// signature, carrying the file's `batch_num` and `batch_size`. A key whose fields [`parse_export`]
/// would reject (a rolling period outside 1..=144, a rolling start above `i32::MAX`) is an error
/// naming its index in `file`.
pub fn write_export(file: &ExportFile, signer: &ExportSigner) -> Result<Vec<u8>, ExportError> {
    let mut signature_infos: Vec<proto::SignatureInfo> =
        file.signature_infos.iter().map(info_to_proto).collect();
    let listed = file
        .signature_infos
        .iter()
        .any(|i| i.key_id == signer.key_id && i.key_version == signer.key_version);
    if !listed {
        signature_infos.push(info_to_proto(&signer.signature_info()));
    }
    let bin = export_bin(file, signature_infos)?;
    let sig = sign_detached(&bin, signer, file.batch_num, file.batch_size)?;
    zip_entries(&[(EXPORT_BIN, &bin), (EXPORT_SIG, &sig)])
}

/// Writes an unsigned export zip: `export.bin` (with `signature_infos` as given) and an empty
/// signature list in `export.sig`, written like [`write_export`]. It is what a device hands to a
/// health authority, which checks the keys and signs what it publishes; [`parse_export`] refuses
/// it under trust anchors (no signatures).
pub fn write_unsigned_export(file: &ExportFile) -> Result<Vec<u8>, ExportError> {
    let infos = file.signature_infos.iter().map(info_to_proto).collect();
    let bin = export_bin(file, infos)?;
    let no_signatures = proto::TEKSignatureList::default().encode_to_vec();
    zip_entries(&[(EXPORT_BIN, &bin), (EXPORT_SIG, &no_signatures)])
}

/// `export.bin`: the header and the encoded message.
fn export_bin(
    file: &ExportFile,
    signature_infos: Vec<proto::SignatureInfo>,
) -> Result<Vec<u8>, ExportError> {
    let message = proto::TemporaryExposureKeyExport {
        start_timestamp: Some(file.start_timestamp),
        end_timestamp: Some(file.end_timestamp),
        region: Some(file.region.clone()),
        batch_num: Some(file.batch_num),
        batch_size: Some(file.batch_size),
        signature_infos,
        keys: keys_to_proto("keys", &file.keys)?,
        revised_keys: keys_to_proto("revised_keys", &file.revised_keys)?,
    };
    let mut bin = Vec::with_capacity(EXPORT_HEADER.len() + message.encoded_len());
    bin.extend_from_slice(EXPORT_HEADER);
    bin.extend_from_slice(&message.encode_to_vec());
    Ok(bin)
}

/// A zip of deflated entries with fixed timestamps, so the output is a function of the input
/// (export zips, and signed F0 zips in `bluezone::signed`).
pub fn zip_entries(entries: &[(&'static str, &[u8])]) -> Result<Vec<u8>, ExportError> {
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::default());
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let mut last = EXPORT_BIN;
    for &(name, data) in entries {
        last = name;
        writer
            .start_file(name, options)
            .map_err(|source| ExportError::Write { name, source })?;
        writer.write_all(data).map_err(|e| ExportError::Write {
            name,
            source: ZipError::Io(e),
        })?;
    }
    let out = writer
        .finish()
        .map_err(|source| ExportError::Write { name: last, source })?;
    Ok(out.into_inner())
}

/// A `TEKSignatureList` holding one ECDSA P-256/SHA-256 signature by `signer` over `data`.
pub fn sign_detached(
    data: &[u8],
    signer: &ExportSigner,
    batch_num: i32,
    batch_size: i32,
) -> Result<Vec<u8>, ExportError> {
    let signature: Signature = signer.key.try_sign(data).map_err(ExportError::Sign)?;
    let list = proto::TEKSignatureList {
        signatures: vec![proto::TEKSignature {
            signature_info: Some(info_to_proto(&signer.signature_info())),
            batch_num: Some(batch_num),
            batch_size: Some(batch_size),
            signature: Some(signature.to_der().as_bytes().to_vec()),
        }],
    };
    Ok(list.encode_to_vec())
}

fn info_to_proto(info: &ExportSignatureInfo) -> proto::SignatureInfo {
    let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    proto::SignatureInfo {
        verification_key_version: some(&info.key_version),
        verification_key_id: some(&info.key_id),
        signature_algorithm: some(&info.algorithm),
    }
}

fn keys_to_proto(
    list: &'static str,
    keys: &[ExportKey],
) -> Result<Vec<proto::TemporaryExposureKey>, ExportError> {
    let mut out = keys
        .iter()
        .enumerate()
        .map(|(index, k)| key_to_proto(list, index, k))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_by(|a, b| a.key_data.cmp(&b.key_data));
    Ok(out)
}

fn key_to_proto(
    list: &'static str,
    index: usize,
    k: &ExportKey,
) -> Result<proto::TemporaryExposureKey, ExportError> {
    let rolling_start =
        i32::try_from(k.rolling_start).map_err(|_| ExportError::InvalidKeyField {
            list,
            index,
            field: "rolling_start_interval_number",
            expected: "at most 2147483647",
            got: k.rolling_start.into(),
        })?;
    if !(1..=DEFAULT_ROLLING_PERIOD).contains(&k.rolling_period) {
        return Err(ExportError::InvalidKeyField {
            list,
            index,
            field: "rolling_period",
            expected: "1..=144",
            got: k.rolling_period.into(),
        });
    }
    let rolling_period = i32::try_from(k.rolling_period).unwrap_or(144);
    Ok(proto::TemporaryExposureKey {
        key_data: Some(k.tek.as_bytes().to_vec()),
        transmission_risk_level: k.transmission_risk_level,
        rolling_start_interval_number: Some(rolling_start),
        rolling_period: Some(rolling_period),
        report_type: match k.report_type {
            ReportType::Unknown => None,
            other => Some(other.to_i32()),
        },
        days_since_onset_of_symptoms: k.days_since_onset,
    })
}
