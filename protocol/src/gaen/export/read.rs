//! Reading an export: unzip within bounds, verify a signature over the whole `export.bin`, then
//! decode the protobuf, keeping the valid keys and naming the skipped ones.

use std::io::{Cursor, Read};

use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::Signature;
use prost::Message;
use sha2::{Digest, Sha256, Sha512};
use zip::result::ZipError;

use super::*;

/// Reads an export zip from memory and checks its signature.
///
/// With `trusted` empty the file is parsed and returned as [`SignatureStatus::Unverified`].
/// Otherwise some signature in `export.sig` must name a trusted `(key id, key version)`, use ECDSA
/// P-256/SHA-256 (algorithm OID `1.2.840.10045.4.3.2` or empty) and verify over the whole
/// `export.bin`; the protobuf is decoded only after that.
pub fn parse_export(
    zip_bytes: &[u8],
    trusted: &[TrustedKey],
    limits: &ExportLimits,
) -> Result<VerifiedExport, ExportError> {
    let declared = check_zip_directory(zip_bytes)?;
    let mut archive = zip::ZipArchive::new(Cursor::new(zip_bytes)).map_err(ExportError::Zip)?;
    check_zip_names(&archive, declared)?;
    let bin = read_entry(&mut archive, EXPORT_BIN, limits.max_export_bin_bytes)?;
    let sig = read_entry(&mut archive, EXPORT_SIG, limits.max_export_sig_bytes)?;

    let body = match bin.strip_prefix(EXPORT_HEADER.as_slice()) {
        Some(body) => body,
        None => {
            let head = bin.get(..EXPORT_HEADER.len()).unwrap_or(&bin);
            return Err(ExportError::Header {
                got: head.escape_ascii().to_string(),
                len: bin.len(),
            });
        }
    };

    let signature = if trusted.is_empty() {
        SignatureStatus::Unverified
    } else {
        verify_detached(&bin, &sig, EXPORT_SIG, trusted, limits)?
    };
    let (file, skipped) = decode_export(body, limits)?;
    Ok(VerifiedExport {
        file,
        signature,
        skipped,
    })
}

/// The entry count the end-of-central-directory record declares, refused when it is more than an
/// export needs: the zip reader would otherwise read (and allocate for) the whole directory first.
fn check_zip_directory(zip_bytes: &[u8]) -> Result<u64, ExportError> {
    const EOCD: &[u8; 4] = b"PK\x05\x06";
    const EOCD_LEN: usize = 22;
    // The record sits at the end, followed by a comment of at most 65535 bytes.
    let from = zip_bytes.len().saturating_sub(EOCD_LEN + u16::MAX as usize);
    let Some(at) = zip_bytes
        .get(from..)
        .and_then(|tail| tail.windows(4).rposition(|w| w == EOCD))
        .map(|i| from + i)
    else {
        // Not a zip: let the zip reader say so in its own words.
        return Ok(0);
    };
    let field = |off: usize| {
        zip_bytes
            .get(at + off..at + off + 2)
            .map_or(0, |b| u64::from(u16::from_le_bytes([b[0], b[1]])))
    };
    // Entries on this disk, and in total (0xFFFF means "see the zip64 record": too many anyway).
    let declared = field(8).max(field(10));
    if declared > MAX_ZIP_ENTRIES {
        return Err(ExportError::TooManyZipEntries { declared });
    }
    Ok(declared)
}

/// Only `export.bin` and `export.sig`, each once. The zip reader indexes entries by name, so a
/// repeated name shows as fewer entries than the directory declared.
fn check_zip_names(
    archive: &zip::ZipArchive<Cursor<&[u8]>>,
    declared: u64,
) -> Result<(), ExportError> {
    for name in archive.file_names() {
        if name != EXPORT_BIN && name != EXPORT_SIG {
            return Err(ExportError::UnexpectedEntry { name: clip(name) });
        }
    }
    if (archive.len() as u64) < declared {
        let mut names: Vec<&str> = archive.file_names().collect();
        names.sort_unstable();
        return Err(ExportError::DuplicateEntry {
            name: names.first().copied().unwrap_or(EXPORT_BIN).to_string(),
        });
    }
    Ok(())
}

/// Reads one named entry of a zip, refusing it (declared or actual size) past `limit` bytes.
pub fn read_zip_entry(
    archive: &mut zip::ZipArchive<Cursor<&[u8]>>,
    name: &'static str,
    limit: u64,
) -> Result<Vec<u8>, ExportError> {
    read_entry(archive, name, limit)
}

fn read_entry(
    archive: &mut zip::ZipArchive<Cursor<&[u8]>>,
    name: &'static str,
    limit: u64,
) -> Result<Vec<u8>, ExportError> {
    let mut entry = match archive.by_name(name) {
        Ok(entry) => entry,
        Err(ZipError::FileNotFound) => return Err(ExportError::MissingEntry { name }),
        Err(source) => return Err(ExportError::Entry { name, source }),
    };
    let declared = entry.size();
    if declared > limit {
        return Err(ExportError::EntryTooLarge {
            name,
            limit,
            declared,
        });
    }
    // The declared size may lie: read at most one byte past the limit, whatever the header says.
    let capacity = usize::try_from(declared.min(1 << 20)).unwrap_or(0);
    let mut out = Vec::with_capacity(capacity);
    (&mut entry)
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|source| ExportError::Read { name, source })?;
    if u64::try_from(out.len()).map_or(true, |n| n > limit) {
        return Err(ExportError::EntryOverrun {
            name,
            limit,
            declared,
        });
    }
    Ok(out)
}

/// Checks a `TEKSignatureList` (`sig`, read from the zip entry `sig_name`) over the whole of
/// `bin`: some signature must name a trusted key, use a supported algorithm and verify. GAEN
/// exports sign `export.bin`; signed F0 lists (`bluezone::signed`) sign `f0.json` the same way.
pub fn verify_detached(
    bin: &[u8],
    sig: &[u8],
    sig_name: &'static str,
    trusted: &[TrustedKey],
    limits: &ExportLimits,
) -> Result<SignatureStatus, ExportError> {
    let [count] = count_fields(sig, [1]);
    if count > limits.max_signatures {
        return Err(ExportError::TooManySignatures {
            entry: sig_name,
            field: "signatures",
            limit: limits.max_signatures,
            got: count,
        });
    }
    let list = proto::TEKSignatureList::decode(sig).map_err(|source| ExportError::Decode {
        entry: sig_name,
        message: "TEKSignatureList",
        source,
    })?;
    if list.signatures.is_empty() {
        return Err(SignatureError::NoSignatures.into());
    }

    // Computed once each, and only when some signature asks for it.
    let sha256 = std::cell::OnceCell::new();
    let sha512 = std::cell::OnceCell::new();
    let mut offered: Vec<String> = Vec::new();
    let mut failure: Option<SignatureError> = None;
    for (index, entry) in list.signatures.iter().enumerate() {
        let info = entry.signature_info.as_ref();
        let key_id = info
            .and_then(|i| i.verification_key_id.as_deref())
            .unwrap_or("");
        let key_version = info
            .and_then(|i| i.verification_key_version.as_deref())
            .unwrap_or("");
        let algorithm = info
            .and_then(|i| i.signature_algorithm.as_deref())
            .unwrap_or("");
        let mut matched = false;
        for key in trusted.iter().filter(|k| k.applies_to(key_id, key_version)) {
            matched = true;
            let digest: Option<&[u8]> = match algorithm {
                "" | ECDSA_P256_SHA256_OID => {
                    Some(sha256.get_or_init(|| Sha256::digest(bin).to_vec()))
                }
                ECDSA_P256_SHA512_OID => Some(sha512.get_or_init(|| Sha512::digest(bin).to_vec())),
                _ => None,
            };
            let fail = match digest {
                None => SignatureError::UnsupportedAlgorithm {
                    index,
                    key_id: clip(key_id),
                    key_version: clip(key_version),
                    algorithm: clip(algorithm),
                },
                Some(digest) => {
                    let der = entry.signature.as_deref().unwrap_or(&[]);
                    match Signature::from_der(der) {
                        Err(_) => SignatureError::Malformed {
                            index,
                            key_id: clip(key_id),
                            key_version: clip(key_version),
                            len: der.len(),
                        },
                        Ok(signature) => {
                            if key.key.verify_prehash(digest, &signature).is_ok() {
                                return Ok(SignatureStatus::Verified {
                                    key_id: key_id.to_string(),
                                    key_version: key_version.to_string(),
                                });
                            }
                            SignatureError::DidNotVerify {
                                index,
                                key_id: clip(key_id),
                                key_version: clip(key_version),
                            }
                        }
                    }
                }
            };
            failure.get_or_insert(fail);
        }
        if !matched && offered.len() < 8 {
            offered.push(describe_key(key_id, key_version));
        }
    }
    Err(failure
        .unwrap_or_else(|| SignatureError::NoTrustedKey {
            offered: offered.join(", "),
            trusted: trusted
                .iter()
                .take(8)
                .map(|k| describe_key(&k.key_id, &k.key_version))
                .collect::<Vec<_>>()
                .join(", "),
        })
        .into())
}

fn describe_key(key_id: &str, key_version: &str) -> String {
    format!("id {:?} version {:?}", clip(key_id), clip(key_version))
}

fn decode_export(
    body: &[u8],
    limits: &ExportLimits,
) -> Result<(ExportFile, Vec<SkippedKey>), ExportError> {
    // Count the repeated fields before decoding: a 2-byte empty key on the wire becomes a ~100-byte
    // struct, so decoding first would let a small file claim a lot of memory.
    let [infos, keys, revised] = count_fields(body, [6, 7, 8]);
    let total = keys.saturating_add(revised);
    if total > limits.max_keys {
        return Err(ExportError::TooManyKeys {
            limit: limits.max_keys,
            got: total,
        });
    }
    if infos > limits.max_signatures {
        return Err(ExportError::TooManySignatures {
            entry: EXPORT_BIN,
            field: "signature_infos",
            limit: limits.max_signatures,
            got: infos,
        });
    }
    let msg =
        proto::TemporaryExposureKeyExport::decode(body).map_err(|source| ExportError::Decode {
            entry: EXPORT_BIN,
            message: "TemporaryExposureKeyExport",
            source,
        })?;
    let proto::TemporaryExposureKeyExport {
        start_timestamp,
        end_timestamp,
        region,
        batch_num,
        batch_size,
        signature_infos,
        keys,
        revised_keys,
    } = msg;
    let mut skipped = Vec::new();
    let keys = keys_from_proto("keys", &keys, &mut skipped);
    let revised_keys = keys_from_proto("revised_keys", &revised_keys, &mut skipped);
    if keys.is_empty() && revised_keys.is_empty() && !skipped.is_empty() {
        let first = skipped.swap_remove(0);
        return Err(ExportError::NoValidKey { first });
    }
    let file = ExportFile {
        start_timestamp: start_timestamp.unwrap_or(0),
        end_timestamp: end_timestamp.unwrap_or(0),
        region: region.unwrap_or_default(),
        batch_num: batch_num.unwrap_or(0),
        batch_size: batch_size.unwrap_or(0),
        signature_infos: signature_infos
            .into_iter()
            .map(|i| ExportSignatureInfo {
                key_id: i.verification_key_id.unwrap_or_default(),
                key_version: i.verification_key_version.unwrap_or_default(),
                algorithm: i.signature_algorithm.unwrap_or_default(),
            })
            .collect(),
        keys,
        revised_keys,
    };
    Ok((file, skipped))
}

/// The valid keys of one list; each malformed one goes to `skipped` (the list's count is bounded
/// by [`ExportLimits::max_keys`] already).
fn keys_from_proto(
    list: &'static str,
    keys: &[proto::TemporaryExposureKey],
    skipped: &mut Vec<SkippedKey>,
) -> Vec<ExportKey> {
    let mut out = Vec::with_capacity(keys.len());
    for (index, k) in keys.iter().enumerate() {
        match key_from_proto(list, index, k) {
            Ok(key) => out.push(key),
            Err(e) => skipped.push(SkippedKey {
                list,
                index,
                reason: e.to_string(),
            }),
        }
    }
    out
}

fn key_from_proto(
    list: &'static str,
    index: usize,
    k: &proto::TemporaryExposureKey,
) -> Result<ExportKey, ExportError> {
    let data = k.key_data.as_deref().unwrap_or(&[]);
    let bytes = <[u8; Tek::LEN]>::try_from(data).map_err(|_| ExportError::KeyDataLength {
        list,
        index,
        got: data.len(),
    })?;
    let start = k
        .rolling_start_interval_number
        .ok_or(ExportError::MissingKeyField {
            list,
            index,
            field: "rolling_start_interval_number",
        })?;
    let rolling_start = u32::try_from(start).map_err(|_| ExportError::InvalidKeyField {
        list,
        index,
        field: "rolling_start_interval_number",
        expected: "a non-negative interval number",
        got: start.into(),
    })?;
    let period = k.rolling_period();
    let rolling_period = u32::try_from(period)
        .ok()
        .filter(|p| (1..=DEFAULT_ROLLING_PERIOD).contains(p))
        .ok_or(ExportError::InvalidKeyField {
            list,
            index,
            field: "rolling_period",
            expected: "1..=144",
            got: period.into(),
        })?;
    Ok(ExportKey {
        tek: Tek::from_bytes(bytes),
        rolling_start,
        rolling_period,
        report_type: k
            .report_type
            .map_or(ReportType::Unknown, ReportType::from_i32),
        transmission_risk_level: k.transmission_risk_level,
        days_since_onset: k.days_since_onset_of_symptoms,
    })
}

/// Counts how often each of `fields` occurs at the top level of a protobuf message, walking the
/// wire format without allocating. Stops quietly at the first malformed byte: the decoder that runs
/// next reports it, and cannot have allocated for more entries than were counted up to there.
fn count_fields<const N: usize>(mut buf: &[u8], fields: [u64; N]) -> [usize; N] {
    let mut counts = [0usize; N];
    let mut group_depth = 0u32;
    while !buf.is_empty() {
        let Some(key) = read_varint(&mut buf) else {
            break;
        };
        if group_depth == 0 {
            for (field, count) in fields.iter().zip(counts.iter_mut()) {
                if *field == key >> 3 {
                    *count = count.saturating_add(1);
                }
            }
        }
        let ok = match key & 7 {
            0 => read_varint(&mut buf).is_some(),
            1 => skip(&mut buf, 8),
            2 => read_varint(&mut buf)
                .and_then(|len| usize::try_from(len).ok())
                .is_some_and(|len| skip(&mut buf, len)),
            3 => {
                group_depth = group_depth.saturating_add(1);
                true
            }
            4 => match group_depth.checked_sub(1) {
                Some(depth) => {
                    group_depth = depth;
                    true
                }
                None => false,
            },
            5 => skip(&mut buf, 4),
            _ => false,
        };
        if !ok {
            break;
        }
    }
    counts
}

fn skip(buf: &mut &[u8], n: usize) -> bool {
    match buf.get(n..) {
        Some(rest) => {
            *buf = rest;
            true
        }
        None => false,
    }
}

fn read_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_counter_walks_the_wire_format() {
        // field 7 (len 0) twice, field 8 once, a group (field 9) holding a field 7, a fixed64 field 1.
        let buf = [
            0x3a, 0x00, 0x3a, 0x00, 0x42, 0x01, 0xff, 0x4b, 0x3a, 0x00, 0x4c, 0x09, 1, 2, 3, 4, 5,
            6, 7, 8,
        ];
        assert_eq!(count_fields(&buf, [7, 8, 1]), [2, 1, 1]);
        // Truncated length: counts up to the break.
        assert_eq!(count_fields(&[0x3a, 0x05, 0x00], [7]), [1]);
        assert_eq!(read_varint(&mut &[0xff; 11][..]), None);
    }
}
