//! GAEN diagnosis-key export files: `shared/spec/gaen.md` §3.
//!
//! A health authority publishes Temporary Exposure Keys as a zip holding two entries, found by name:
//! `export.bin` (the 16-byte header `"EK Export v1    "` followed by a protobuf
//! [`proto::TemporaryExposureKeyExport`]) and `export.sig` (a protobuf [`proto::TEKSignatureList`]).
//! Each signature is ECDSA P-256 / SHA-256, ASN.1 DER, over the **whole** `export.bin`, header
//! included.
//!
//! - [`parse_export`] reads a zip from memory, bounded by [`ExportLimits`] (declared and actual
//!   entry sizes, key and signature counts), checks the signatures against [`TrustedKey`]s, and returns
//!   the domain view [`ExportFile`] with a [`SignatureStatus`].
//! - [`write_export`] produces a signed zip from an [`ExportFile`] and an [`ExportSigner`], keys sorted
//!   by `key_data` as servers do.
//!
//! Nothing here panics on input, and no error message carries key material (key data, signatures,
//! private keys); strings taken from the file (region, key ids) are shown escaped and clipped.

use std::fmt;
use std::io::{Cursor, Read, Write};

use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use prost::Message;
use sha2::{Digest, Sha256};
use zip::result::ZipError;

use crate::ids::Tek;

/// Name of the zip entry holding the header and the key export protobuf.
pub const EXPORT_BIN: &str = "export.bin";
/// Name of the zip entry holding the signature list protobuf.
pub const EXPORT_SIG: &str = "export.sig";
/// The 16-byte header that starts `export.bin` (4 trailing spaces).
pub const EXPORT_HEADER: &[u8; 16] = b"EK Export v1    ";
/// `SignatureInfo.signature_algorithm` for ECDSA P-256 with SHA-256 (an empty value is accepted too).
pub const ECDSA_P256_SHA256_OID: &str = "1.2.840.10045.4.3.2";
/// `rolling_period` when a key does not carry one.
pub const DEFAULT_ROLLING_PERIOD: u32 = 144;

/// The protobuf messages of the export format, hand-written for `prost` (spec §3).
///
/// Every field is proto2 `optional`, hence `Option`. Unknown fields are skipped by `prost`, so old
/// files whose `SignatureInfo` still carries the reserved fields 1 and 2 decode fine.
pub mod proto {
    use std::fmt;

    /// The protobuf after the 16-byte header of `export.bin`.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct TemporaryExposureKeyExport {
        /// Unix seconds.
        #[prost(fixed64, optional, tag = "1")]
        pub start_timestamp: Option<u64>,
        /// Unix seconds.
        #[prost(fixed64, optional, tag = "2")]
        pub end_timestamp: Option<u64>,
        #[prost(string, optional, tag = "3")]
        pub region: Option<String>,
        #[prost(int32, optional, tag = "4")]
        pub batch_num: Option<i32>,
        #[prost(int32, optional, tag = "5")]
        pub batch_size: Option<i32>,
        #[prost(message, repeated, tag = "6")]
        pub signature_infos: Vec<SignatureInfo>,
        #[prost(message, repeated, tag = "7")]
        pub keys: Vec<TemporaryExposureKey>,
        #[prost(message, repeated, tag = "8")]
        pub revised_keys: Vec<TemporaryExposureKey>,
    }

    /// Which key signed the file. Fields 1 and 2 are reserved (old files still carry field 2).
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct SignatureInfo {
        #[prost(string, optional, tag = "3")]
        pub verification_key_version: Option<String>,
        #[prost(string, optional, tag = "4")]
        pub verification_key_id: Option<String>,
        /// OID; `"1.2.840.10045.4.3.2"` = ECDSA P-256 with SHA-256.
        #[prost(string, optional, tag = "5")]
        pub signature_algorithm: Option<String>,
    }

    /// One published key. `Debug` does not print `key_data`.
    #[derive(Clone, PartialEq, ::prost::Message)]
    #[prost(skip_debug)]
    pub struct TemporaryExposureKey {
        /// 16 bytes.
        #[prost(bytes = "vec", optional, tag = "1")]
        pub key_data: Option<Vec<u8>>,
        /// Deprecated, still present in many files.
        #[prost(int32, optional, tag = "2")]
        pub transmission_risk_level: Option<i32>,
        #[prost(int32, optional, tag = "3")]
        pub rolling_start_interval_number: Option<i32>,
        #[prost(int32, optional, tag = "4", default = "144")]
        pub rolling_period: Option<i32>,
        /// The `ReportType` enum; enums and `int32` share the varint wire encoding.
        #[prost(int32, optional, tag = "5")]
        pub report_type: Option<i32>,
        /// Zigzag (`sint32`).
        #[prost(sint32, optional, tag = "6")]
        pub days_since_onset_of_symptoms: Option<i32>,
    }

    impl fmt::Debug for TemporaryExposureKey {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("TemporaryExposureKey")
                .field(
                    "key_data",
                    &self
                        .key_data
                        .as_ref()
                        .map(|d| format!("<redacted {} bytes>", d.len())),
                )
                .field("transmission_risk_level", &self.transmission_risk_level)
                .field(
                    "rolling_start_interval_number",
                    &self.rolling_start_interval_number,
                )
                .field("rolling_period", &self.rolling_period)
                .field("report_type", &self.report_type)
                .field(
                    "days_since_onset_of_symptoms",
                    &self.days_since_onset_of_symptoms,
                )
                .finish()
        }
    }

    /// The whole of `export.sig`.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct TEKSignatureList {
        #[prost(message, repeated, tag = "1")]
        pub signatures: Vec<TEKSignature>,
    }

    /// One signature over `export.bin`.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct TEKSignature {
        #[prost(message, optional, tag = "1")]
        pub signature_info: Option<SignatureInfo>,
        #[prost(int32, optional, tag = "2")]
        pub batch_num: Option<i32>,
        #[prost(int32, optional, tag = "3")]
        pub batch_size: Option<i32>,
        /// ASN.1 DER ECDSA signature.
        #[prost(bytes = "vec", optional, tag = "4")]
        pub signature: Option<Vec<u8>>,
    }
}

// ---------------------------------------------------------------------------------------------
// Domain types
// ---------------------------------------------------------------------------------------------

/// Why a key was published (`TemporaryExposureKey.report_type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReportType {
    /// 0, also used when the field is absent.
    #[default]
    Unknown,
    /// 1
    ConfirmedTest,
    /// 2
    ConfirmedClinical,
    /// 3
    SelfReport,
    /// 4
    Recursive,
    /// 5: the key was published before and is withdrawn.
    Revoked,
    /// Any other value, kept as is. Values 0..=5 always map to the named variants.
    Other(i32),
}

impl ReportType {
    pub fn from_i32(v: i32) -> Self {
        match v {
            0 => ReportType::Unknown,
            1 => ReportType::ConfirmedTest,
            2 => ReportType::ConfirmedClinical,
            3 => ReportType::SelfReport,
            4 => ReportType::Recursive,
            5 => ReportType::Revoked,
            other => ReportType::Other(other),
        }
    }

    pub fn to_i32(self) -> i32 {
        match self {
            ReportType::Unknown => 0,
            ReportType::ConfirmedTest => 1,
            ReportType::ConfirmedClinical => 2,
            ReportType::SelfReport => 3,
            ReportType::Recursive => 4,
            ReportType::Revoked => 5,
            ReportType::Other(v) => v,
        }
    }
}

impl From<i32> for ReportType {
    fn from(v: i32) -> Self {
        ReportType::from_i32(v)
    }
}

/// One diagnosis key of an export file. `Debug` redacts the key (see [`Tek`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportKey {
    pub tek: Tek,
    /// ENIN of the key's first interval.
    pub rolling_start: u32,
    /// Number of 10-minute intervals the key was valid for, 1..=144 ([`DEFAULT_ROLLING_PERIOD`] when
    /// absent from the file).
    pub rolling_period: u32,
    pub report_type: ReportType,
    /// Deprecated field, kept when present.
    pub transmission_risk_level: Option<i32>,
    pub days_since_onset: Option<i32>,
}

impl ExportKey {
    /// A key valid for a whole day, report type unknown, no optional fields.
    pub fn new(tek: Tek, rolling_start: u32) -> Self {
        ExportKey {
            tek,
            rolling_start,
            rolling_period: DEFAULT_ROLLING_PERIOD,
            report_type: ReportType::Unknown,
            transmission_risk_level: None,
            days_since_onset: None,
        }
    }
}

/// A `SignatureInfo` as listed in `export.bin` (absent strings are empty).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExportSignatureInfo {
    pub key_id: String,
    pub key_version: String,
    /// OID of the signature algorithm, normally [`ECDSA_P256_SHA256_OID`].
    pub algorithm: String,
}

/// The content of `export.bin`. Absent header fields read as 0 or "".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportFile {
    /// Unix seconds.
    pub start_timestamp: u64,
    /// Unix seconds.
    pub end_timestamp: u64,
    pub region: String,
    pub batch_num: i32,
    pub batch_size: i32,
    pub signature_infos: Vec<ExportSignatureInfo>,
    /// In file order; servers sort by key data and pad with fake keys, so assume no order.
    pub keys: Vec<ExportKey>,
    pub revised_keys: Vec<ExportKey>,
}

/// Outcome of the signature check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignatureStatus {
    /// No trusted keys were given, so no signature was checked.
    Unverified,
    /// A signature from this trusted key verified over the whole `export.bin`.
    Verified { key_id: String, key_version: String },
}

/// A parsed export and how far it is to be trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedExport {
    pub file: ExportFile,
    pub signature: SignatureStatus,
}

impl VerifiedExport {
    pub fn is_verified(&self) -> bool {
        matches!(self.signature, SignatureStatus::Verified { .. })
    }
}

/// Bounds on what [`parse_export`] will read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportLimits {
    /// Largest uncompressed `export.bin`, declared or actual (default 64 MiB).
    pub max_export_bin_bytes: u64,
    /// Largest uncompressed `export.sig`, declared or actual (default 1 MiB).
    pub max_export_sig_bytes: u64,
    /// Most `keys` + `revised_keys` (default 1,000,000).
    pub max_keys: usize,
    /// Most signatures in `export.sig`, and most `signature_infos` in `export.bin` (default 100).
    pub max_signatures: usize,
}

impl ExportLimits {
    pub const DEFAULT: ExportLimits = ExportLimits {
        max_export_bin_bytes: 64 << 20,
        max_export_sig_bytes: 1 << 20,
        max_keys: 1_000_000,
        max_signatures: 100,
    };
}

impl Default for ExportLimits {
    fn default() -> Self {
        ExportLimits::DEFAULT
    }
}

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

/// A public key trusted to sign exports, by `(verification_key_id, verification_key_version)`.
#[derive(Clone, PartialEq, Eq)]
pub struct TrustedKey {
    pub key_id: String,
    pub key_version: String,
    pub key: VerifyingKey,
}

impl TrustedKey {
    /// A `key_id` or `key_version` of `"*"` trusts the key whatever id or version a file names
    /// (for operators who hold one authority's key without its id); the signature must still
    /// verify under it.
    pub const ANY: &'static str = "*";

    fn applies_to(&self, key_id: &str, key_version: &str) -> bool {
        (self.key_id == Self::ANY || self.key_id == key_id)
            && (self.key_version == Self::ANY || self.key_version == key_version)
    }

    pub fn new(
        key_id: impl Into<String>,
        key_version: impl Into<String>,
        key: VerifyingKey,
    ) -> Self {
        TrustedKey {
            key_id: key_id.into(),
            key_version: key_version.into(),
            key,
        }
    }

    /// From a PEM `-----BEGIN PUBLIC KEY-----` (SubjectPublicKeyInfo) block for a P-256 key.
    pub fn from_pem(
        key_id: impl Into<String>,
        key_version: impl Into<String>,
        pem: &str,
    ) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_public_key_pem(pem.trim()).map_err(KeyError::PublicKeyPem)?;
        Ok(TrustedKey::new(key_id, key_version, key))
    }

    /// From DER SubjectPublicKeyInfo bytes for a P-256 key.
    pub fn from_der(
        key_id: impl Into<String>,
        key_version: impl Into<String>,
        der: &[u8],
    ) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_public_key_der(der).map_err(KeyError::PublicKeyDer)?;
        Ok(TrustedKey::new(key_id, key_version, key))
    }

    /// From base64 of the DER SubjectPublicKeyInfo (as key servers publish it: the PEM body without
    /// its armor). Whitespace is ignored, padding is optional, the URL-safe alphabet is accepted.
    pub fn from_base64(
        key_id: impl Into<String>,
        key_version: impl Into<String>,
        base64: &str,
    ) -> Result<Self, KeyError> {
        let der = decode_base64(base64)?;
        TrustedKey::from_der(key_id, key_version, &der)
    }

    /// The key as a PEM SubjectPublicKeyInfo block.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .map_err(KeyError::PublicKeyEncode)
    }
}

impl fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustedKey")
            .field("key_id", &self.key_id)
            .field("key_version", &self.key_version)
            .finish_non_exhaustive()
    }
}

/// The key a server signs exports with. `Debug` prints only the id and version.
#[derive(Clone)]
pub struct ExportSigner {
    pub key_id: String,
    pub key_version: String,
    pub key: SigningKey,
}

impl ExportSigner {
    pub fn new(key_id: impl Into<String>, key_version: impl Into<String>, key: SigningKey) -> Self {
        ExportSigner {
            key_id: key_id.into(),
            key_version: key_version.into(),
            key,
        }
    }

    /// From a PEM `-----BEGIN PRIVATE KEY-----` (PKCS#8) block for a P-256 key.
    pub fn from_pkcs8_pem(
        key_id: impl Into<String>,
        key_version: impl Into<String>,
        pem: &str,
    ) -> Result<Self, KeyError> {
        let key = SigningKey::from_pkcs8_pem(pem.trim()).map_err(KeyError::PrivateKeyPem)?;
        Ok(ExportSigner::new(key_id, key_version, key))
    }

    /// The private key as PKCS#8 PEM (zeroized on drop). Keep it out of logs.
    pub fn to_pkcs8_pem(&self) -> Result<zeroize::Zeroizing<String>, KeyError> {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(KeyError::PrivateKeyEncode)
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        *self.key.verifying_key()
    }

    /// The public key as a PEM SubjectPublicKeyInfo block, for verifiers.
    pub fn public_key_pem(&self) -> Result<String, KeyError> {
        self.verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(KeyError::PublicKeyEncode)
    }

    /// The matching [`TrustedKey`] (same id and version).
    pub fn trusted_key(&self) -> TrustedKey {
        TrustedKey::new(
            self.key_id.clone(),
            self.key_version.clone(),
            self.verifying_key(),
        )
    }

    /// The `SignatureInfo` that [`write_export`] lists for this signer.
    pub fn signature_info(&self) -> ExportSignatureInfo {
        ExportSignatureInfo {
            key_id: self.key_id.clone(),
            key_version: self.key_version.clone(),
            algorithm: ECDSA_P256_SHA256_OID.to_owned(),
        }
    }
}

impl fmt::Debug for ExportSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportSigner")
            .field("key_id", &self.key_id)
            .field("key_version", &self.key_version)
            .field("key", &"<redacted>")
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// A key that could not be read or written. Messages never include key bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("public key is not a PEM SubjectPublicKeyInfo of a P-256 key: {0}")]
    PublicKeyPem(#[source] p256::pkcs8::spki::Error),
    #[error("public key is not a DER SubjectPublicKeyInfo of a P-256 key: {0}")]
    PublicKeyDer(#[source] p256::pkcs8::spki::Error),
    #[error("public key base64: invalid character at position {position}")]
    Base64Character { position: usize },
    #[error("public key base64: data after the '=' padding at position {position}")]
    Base64AfterPadding { position: usize },
    #[error("public key base64: {symbols} symbols is not a valid length (a multiple of 4 leaves 0, 2 or 3 over, not 1)")]
    Base64Length { symbols: usize },
    #[error("private key is not a PEM PKCS#8 P-256 key: {0}")]
    PrivateKeyPem(#[source] p256::pkcs8::Error),
    #[error("encoding the private key as PKCS#8 PEM failed: {0}")]
    PrivateKeyEncode(#[source] p256::pkcs8::Error),
    #[error("encoding the public key as PEM failed: {0}")]
    PublicKeyEncode(#[source] p256::pkcs8::spki::Error),
}

/// Why no signature in `export.sig` vouches for `export.bin`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    #[error("export.sig contains no signatures")]
    NoSignatures,
    #[error("no trusted key id matched: export.sig is signed by [{offered}], trusted keys are [{trusted}]")]
    NoTrustedKey { offered: String, trusted: String },
    #[error("signature {index} (key id {key_id:?}, version {key_version:?}) names algorithm {algorithm:?}, expected {ECDSA_P256_SHA256_OID:?} (ECDSA P-256 SHA-256) or empty")]
    UnsupportedAlgorithm {
        index: usize,
        key_id: String,
        key_version: String,
        algorithm: String,
    },
    #[error("signature {index} (key id {key_id:?}, version {key_version:?}) is not an ASN.1 DER ECDSA P-256 signature ({len} bytes)")]
    Malformed {
        index: usize,
        key_id: String,
        key_version: String,
        len: usize,
    },
    #[error("signature {index} (key id {key_id:?}, version {key_version:?}) did not verify over export.bin")]
    DidNotVerify {
        index: usize,
        key_id: String,
        key_version: String,
    },
}

/// Anything wrong with an export file, or with writing one. Every message names the entry, field or
/// limit at fault; none carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    #[error("not a readable zip archive: {0}")]
    Zip(#[source] ZipError),
    #[error("zip entry {name} is missing")]
    MissingEntry { name: &'static str },
    #[error("zip entry {name} cannot be opened: {source}")]
    Entry {
        name: &'static str,
        #[source]
        source: ZipError,
    },
    #[error("zip entry {name} declares {declared} uncompressed bytes, over its size limit of {limit} bytes")]
    EntryTooLarge {
        name: &'static str,
        limit: u64,
        declared: u64,
    },
    #[error("zip entry {name} decompresses to more than its size limit of {limit} bytes (it declares {declared})")]
    EntryOverrun {
        name: &'static str,
        limit: u64,
        declared: u64,
    },
    #[error("zip entry {name} cannot be decompressed: {source}")]
    Read {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("export.bin header: expected \"EK Export v1    \", got \"{got}\" ({len} bytes)")]
    Header { got: String, len: usize },
    #[error("{entry}: invalid {message} protobuf: {source}")]
    Decode {
        entry: &'static str,
        message: &'static str,
        #[source]
        source: prost::DecodeError,
    },
    #[error("export.bin holds at least {got} keys and revised keys, over the limit of {limit}")]
    TooManyKeys { limit: usize, got: usize },
    #[error("{entry} holds at least {got} {field}, over the limit of {limit}")]
    TooManySignatures {
        entry: &'static str,
        field: &'static str,
        limit: usize,
        got: usize,
    },
    #[error("{list}[{index}].key_data: expected 16 bytes, got {got}")]
    KeyDataLength {
        list: &'static str,
        index: usize,
        got: usize,
    },
    #[error("{list}[{index}].{field} is missing")]
    MissingKeyField {
        list: &'static str,
        index: usize,
        field: &'static str,
    },
    #[error("{list}[{index}].{field}: expected {expected}, got {got}")]
    InvalidKeyField {
        list: &'static str,
        index: usize,
        field: &'static str,
        expected: &'static str,
        got: i64,
    },
    #[error("signature check failed: {0}")]
    Signature(#[from] SignatureError),
    #[error("signing export.bin failed: {0}")]
    Sign(#[source] p256::ecdsa::Error),
    #[error("writing zip entry {name} failed: {source}")]
    Write {
        name: &'static str,
        #[source]
        source: ZipError,
    },
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

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
    let mut archive = zip::ZipArchive::new(Cursor::new(zip_bytes)).map_err(ExportError::Zip)?;
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
        verify_signatures(&bin, &sig, trusted, limits)?
    };
    let file = decode_export(body, limits)?;
    Ok(VerifiedExport { file, signature })
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

fn verify_signatures(
    bin: &[u8],
    sig: &[u8],
    trusted: &[TrustedKey],
    limits: &ExportLimits,
) -> Result<SignatureStatus, ExportError> {
    let [count] = count_fields(sig, [1]);
    if count > limits.max_signatures {
        return Err(ExportError::TooManySignatures {
            entry: EXPORT_SIG,
            field: "signatures",
            limit: limits.max_signatures,
            got: count,
        });
    }
    let list = proto::TEKSignatureList::decode(sig).map_err(|source| ExportError::Decode {
        entry: EXPORT_SIG,
        message: "TEKSignatureList",
        source,
    })?;
    if list.signatures.is_empty() {
        return Err(SignatureError::NoSignatures.into());
    }

    let digest = Sha256::digest(bin);
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
            let fail = if !(algorithm.is_empty() || algorithm == ECDSA_P256_SHA256_OID) {
                SignatureError::UnsupportedAlgorithm {
                    index,
                    key_id: clip(key_id),
                    key_version: clip(key_version),
                    algorithm: clip(algorithm),
                }
            } else {
                let der = entry.signature.as_deref().unwrap_or(&[]);
                match Signature::from_der(der) {
                    Err(_) => SignatureError::Malformed {
                        index,
                        key_id: clip(key_id),
                        key_version: clip(key_version),
                        len: der.len(),
                    },
                    Ok(signature) => {
                        if key.key.verify_prehash(&digest, &signature).is_ok() {
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

/// At most 64 characters of a string taken from a file, for error messages.
fn clip(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", s.get(..end).unwrap_or_default()),
        None => s.to_owned(),
    }
}

fn decode_export(body: &[u8], limits: &ExportLimits) -> Result<ExportFile, ExportError> {
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
    Ok(ExportFile {
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
        keys: keys_from_proto("keys", &keys)?,
        revised_keys: keys_from_proto("revised_keys", &revised_keys)?,
    })
}

fn keys_from_proto(
    list: &'static str,
    keys: &[proto::TemporaryExposureKey],
) -> Result<Vec<ExportKey>, ExportError> {
    keys.iter()
        .enumerate()
        .map(|(index, k)| key_from_proto(list, index, k))
        .collect()
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

fn decode_base64(text: &str) -> Result<Vec<u8>, KeyError> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0u32;
    let mut symbols = 0usize;
    let mut padded = false;
    for (position, c) in text.chars().enumerate() {
        if c.is_ascii_whitespace() {
            continue;
        }
        if c == '=' {
            padded = true;
            continue;
        }
        if padded {
            return Err(KeyError::Base64AfterPadding { position });
        }
        let value = match c {
            'A'..='Z' => u32::from(c) - u32::from('A'),
            'a'..='z' => u32::from(c) - u32::from('a') + 26,
            '0'..='9' => u32::from(c) - u32::from('0') + 52,
            '+' | '-' => 62,
            '/' | '_' => 63,
            _ => return Err(KeyError::Base64Character { position }),
        };
        symbols += 1;
        acc = (acc << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if symbols % 4 == 1 {
        return Err(KeyError::Base64Length { symbols });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

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
    let signature: Signature = signer.key.try_sign(&bin).map_err(ExportError::Sign)?;
    let list = proto::TEKSignatureList {
        signatures: vec![proto::TEKSignature {
            signature_info: Some(info_to_proto(&signer.signature_info())),
            batch_num: Some(file.batch_num),
            batch_size: Some(file.batch_size),
            signature: Some(signature.to_der().as_bytes().to_vec()),
        }],
    };
    let sig = list.encode_to_vec();
    zip_entries(&[(EXPORT_BIN, &bin), (EXPORT_SIG, &sig)])
}

/// Writes an unsigned export zip: `export.bin` (with `signature_infos` as given) and an empty
/// signature list in `export.sig`, written like [`write_export`]. It is what a device hands to a
/// health authority, which checks the keys and signs what it publishes; [`parse_export`] refuses
/// it until signed (no signatures).
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

/// Deflated entries with fixed timestamps, so the output is a function of the input.
fn zip_entries(entries: &[(&'static str, &Vec<u8>)]) -> Result<Vec<u8>, ExportError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decoder_matches_known_values() {
        assert_eq!(decode_base64("").unwrap(), b"");
        assert_eq!(decode_base64("Zg==").unwrap(), b"f");
        assert_eq!(decode_base64("Zm8").unwrap(), b"fo");
        assert_eq!(decode_base64("Zm9v").unwrap(), b"foo");
        assert_eq!(decode_base64("Zm9v\nYmFy").unwrap(), b"foobar");
        assert_eq!(decode_base64("-_8=").unwrap(), [0xfb, 0xff]);
        assert!(matches!(
            decode_base64("Zm9vY"),
            Err(KeyError::Base64Length { symbols: 5 })
        ));
        assert!(matches!(
            decode_base64("Zg=x"),
            Err(KeyError::Base64AfterPadding { position: 3 })
        ));
        assert!(matches!(
            decode_base64("Z*=="),
            Err(KeyError::Base64Character { position: 1 })
        ));
    }

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

    #[test]
    fn errors_are_send_and_sync() {
        fn check<T: Send + Sync + std::error::Error + 'static>() {}
        check::<ExportError>();
        check::<KeyError>();
        check::<SignatureError>();
    }

    #[test]
    fn clip_bounds_strings() {
        assert_eq!(clip("abc"), "abc");
        let long = "é".repeat(100);
        assert_eq!(clip(&long).chars().count(), 65);
    }
}
