//! GAEN diagnosis-key export files: `docs/gaen.md` §3.
//!
//! A health authority publishes Temporary Exposure Keys as a zip holding two entries, found by name:
//! `export.bin` (the 16-byte header `"EK Export v1    "` followed by a protobuf
//! [`proto::TemporaryExposureKeyExport`]) and `export.sig` (a protobuf [`proto::TEKSignatureList`]).
//! Each signature is ECDSA P-256 / SHA-256, ASN.1 DER, over the **whole** `export.bin`, header
//! included.
//!
//! One file per concern: [`proto`] (the wire messages), [`read`] (unzip, verify, decode),
//! [`write`] (sign and zip), [`trust`] (the keys that sign and verify).
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

use zip::result::ZipError;

use crate::ids::Tek;

pub mod proto;
pub mod read;
pub mod trust;
pub mod write;

pub use read::{parse_export, read_zip_entry, verify_detached};
pub use trust::{ExportSigner, KeyError, TrustedKey};
pub use write::{sign_detached, write_export, write_unsigned_export, zip_entries};

/// Name of the zip entry holding the header and the key export protobuf.
pub const EXPORT_BIN: &str = "export.bin";
/// Name of the zip entry holding the signature list protobuf.
pub const EXPORT_SIG: &str = "export.sig";
/// The 16-byte header that starts `export.bin` (4 trailing spaces).
pub const EXPORT_HEADER: &[u8; 16] = b"EK Export v1    ";
/// `SignatureInfo.signature_algorithm` for ECDSA P-256 with SHA-256 (an empty value is accepted too).
pub const ECDSA_P256_SHA256_OID: &str = "1.2.840.10045.4.3.2";
/// OID of ECDSA with SHA-512, which the export proto also allows (`export.proto:77`): the curve is
/// still P-256, the prehash is SHA-512 (truncated to the curve's size, as ECDSA defines).
pub const ECDSA_P256_SHA512_OID: &str = "1.2.840.10045.4.3.4";
/// An export zip holds `export.bin` and `export.sig` and nothing else; an end-of-central-directory
/// record declaring more entries than this is refused before the directory is read.
pub const MAX_ZIP_ENTRIES: u64 = 4;
/// `rolling_period` when a key does not carry one.
pub const DEFAULT_ROLLING_PERIOD: u32 = 144;

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

/// A key left out of a verified export because it is malformed, as Google's parser skips it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedKey {
    /// `keys` or `revised_keys`.
    pub list: &'static str,
    pub index: usize,
    /// What was wrong (never the key data).
    pub reason: String,
}

impl fmt::Display for SkippedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]: {}", self.list, self.index, self.reason)
    }
}

/// A parsed export and how far it is to be trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedExport {
    pub file: ExportFile,
    pub signature: SignatureStatus,
    /// Malformed keys that were left out of `file` (each list keeps its valid keys).
    pub skipped: Vec<SkippedKey>,
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
// Errors
// ---------------------------------------------------------------------------------------------

/// Why no signature in `export.sig` vouches for `export.bin`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    #[error("export.sig contains no signatures")]
    NoSignatures,
    #[error("no trusted key id matched: export.sig is signed by [{offered}], trusted keys are [{trusted}]")]
    NoTrustedKey { offered: String, trusted: String },
    #[error("signature {index} (key id {key_id:?}, version {key_version:?}) names algorithm {algorithm:?}, expected {ECDSA_P256_SHA256_OID:?} (ECDSA P-256 SHA-256), {ECDSA_P256_SHA512_OID:?} (SHA-512) or empty")]
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
    #[error("zip archive declares {declared} entries, expected export.bin and export.sig only (at most {MAX_ZIP_ENTRIES})")]
    TooManyZipEntries { declared: u64 },
    #[error(
        "zip archive holds an unexpected entry {name:?}: expected only export.bin and export.sig"
    )]
    UnexpectedEntry { name: String },
    #[error("zip archive holds entry {name} more than once")]
    DuplicateEntry { name: String },
    #[error("export.bin holds no valid key: {first}")]
    NoValidKey { first: SkippedKey },
    #[error("not a readable zip archive")]
    Zip(#[source] ZipError),
    #[error("zip entry {name} is missing")]
    MissingEntry { name: &'static str },
    #[error("zip entry {name} cannot be opened")]
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
    #[error("zip entry {name} cannot be decompressed")]
    Read {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("export.bin header: expected \"EK Export v1    \", got \"{got}\" ({len} bytes)")]
    Header { got: String, len: usize },
    #[error("{entry}: invalid {message} protobuf")]
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
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("signing export.bin failed")]
    Sign(#[source] p256::ecdsa::Error),
    #[error("writing zip entry {name} failed")]
    Write {
        name: &'static str,
        #[source]
        source: ZipError,
    },
}

/// At most 64 characters of a string taken from a file, for error messages.
fn clip(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", s.get(..end).unwrap_or_default()),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
