//! Case lists as they arrive (CLI import, HTTP upload, key-server poll): detect the format,
//! check it completely, and describe it. Nothing here touches the store.

pub mod compact;

use std::path::{Path, PathBuf};

use anyhow::Context;
use bluezone_protocol::bluezone::f0::{parse_f0, F0Error, F0Limits, F0Parsed};
use bluezone_protocol::gaen::export::{
    parse_export, ExportError, ExportLimits, SignatureStatus, TrustedKey, VerifiedExport,
};
use serde_json::json;

/// A checked case list. Entries that were skipped as malformed are kept beside the valid ones
/// so every summary can name them.
pub enum CaseList {
    BluezoneF0(F0Parsed),
    GaenExport(VerifiedExport),
}

/// Why a case list was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not a case list: expected a Bluezone F0 JSON object or a GAEN export zip")]
    NotACaseList,
    #[error("invalid Bluezone F0 list")]
    F0(#[source] F0Error),
    #[error("invalid GAEN export")]
    Export(#[source] ExportError),
    #[error("GAEN export refused: no signature verifies under a trusted key (pass --trust PEM)")]
    Unverified,
    #[error("expected a {}, got a {}", want.as_str(), got.as_str())]
    WrongFormat { want: Format, got: Format },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Format {
    #[serde(rename = "bluezone-f0")]
    BluezoneF0,
    #[serde(rename = "gaen-export")]
    GaenExport,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::BluezoneF0 => "bluezone-f0",
            Format::GaenExport => "gaen-export",
        }
    }
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "bluezone-f0" => Some(Format::BluezoneF0),
            "gaen-export" => Some(Format::GaenExport),
            _ => None,
        }
    }
}

/// Limits on what one case list may hold.
#[derive(Clone, Copy, Debug, Default)]
pub struct Limits {
    pub f0: F0Limits,
    pub export: ExportLimits,
}

/// A zip starts with a local file header; F0 lists are JSON objects.
pub fn detect(bytes: &[u8]) -> Result<Format, Error> {
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        return Ok(Format::GaenExport);
    }
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'{') {
        return Ok(Format::BluezoneF0);
    }
    Err(Error::NotACaseList)
}

/// Parses and checks a case list. A GAEN file is verified when `trusted` is non-empty.
pub fn parse(bytes: &[u8], trusted: &[TrustedKey], limits: &Limits) -> Result<CaseList, Error> {
    match detect(bytes)? {
        Format::BluezoneF0 => Ok(CaseList::BluezoneF0(
            parse_f0(bytes, &limits.f0).map_err(Error::F0)?,
        )),
        Format::GaenExport => Ok(CaseList::GaenExport(
            parse_export(bytes, trusted, &limits.export).map_err(Error::Export)?,
        )),
    }
}

/// [`parse`], refusing a GAEN export that no trusted key verifies (what importing requires).
pub fn parse_trusted(
    bytes: &[u8],
    trusted: &[TrustedKey],
    limits: &Limits,
) -> Result<CaseList, Error> {
    let list = parse(bytes, trusted, limits)?;
    match &list {
        CaseList::GaenExport(x) if !x.is_verified() => Err(Error::Unverified),
        _ => Ok(list),
    }
}

impl CaseList {
    pub fn format(&self) -> Format {
        match self {
            CaseList::BluezoneF0(_) => Format::BluezoneF0,
            CaseList::GaenExport(_) => Format::GaenExport,
        }
    }

    pub fn entries(&self) -> usize {
        match self {
            CaseList::BluezoneF0(l) => l.list.entries.len(),
            CaseList::GaenExport(e) => e.file.keys.len(),
        }
    }

    /// The `cases inspect` summary.
    pub fn summary(&self) -> serde_json::Value {
        match self {
            CaseList::BluezoneF0(l) => json!({
                "format": "bluezone-f0",
                "entries": l.list.entries.len(),
                "days": l.list.entries.iter().map(|e| e.days() as u64).sum::<u64>(),
                "skipped": l.skipped.iter().map(|s| json!({
                    "index": s.index,
                    "field": s.field,
                    "reason": s.reason,
                })).collect::<Vec<_>>(),
                "skipped_total": l.skipped_total,
            }),
            CaseList::GaenExport(e) => {
                let (sig, id, ver) = match &e.signature {
                    SignatureStatus::Verified {
                        key_id,
                        key_version,
                    } => ("verified", Some(key_id.clone()), Some(key_version.clone())),
                    SignatureStatus::Unverified => {
                        let first = e.file.signature_infos.first();
                        (
                            "unverified",
                            first.map(|i| i.key_id.clone()),
                            first.map(|i| i.key_version.clone()),
                        )
                    }
                };
                json!({
                    "format": "gaen-export",
                    "entries": e.file.keys.len(),
                    "revised_keys": e.file.revised_keys.len(),
                    "region": e.file.region,
                    "start_timestamp": e.file.start_timestamp,
                    "end_timestamp": e.file.end_timestamp,
                    "signature": sig,
                    "key_id": id,
                    "key_version": ver,
                    "skipped": e.skipped.iter().map(|s| json!({
                        "list": s.list,
                        "index": s.index,
                        "reason": s.reason,
                    })).collect::<Vec<_>>(),
                    "skipped_total": e.skipped.len(),
                })
            }
        }
    }
}

/// A `--trust` argument: `PATH` (the key is trusted under any key id and version) or
/// `KEY_ID:VERSION=PATH` (only for files naming that id and version).
pub fn load_trust(arg: &Path) -> anyhow::Result<TrustedKey> {
    let s = arg.to_string_lossy();
    let (id, version, path) = match s.split_once('=') {
        Some((binding, path)) if binding.contains(':') && !Path::new(&*s).exists() => {
            let (id, version) = binding.split_once(':').unwrap_or((binding, ""));
            (id.to_string(), version.to_string(), PathBuf::from(path))
        }
        _ => (
            TrustedKey::ANY.to_string(),
            TrustedKey::ANY.to_string(),
            arg.to_path_buf(),
        ),
    };
    let pem = std::fs::read_to_string(&path)
        .with_context(|| format!("reading trusted key {}", path.display()))?;
    TrustedKey::from_pem(id, version, &pem).with_context(|| {
        format!(
            "trusted key {}: expected a P-256 PUBLIC KEY in PEM",
            path.display()
        )
    })
}

pub fn load_trusts(args: &[PathBuf]) -> anyhow::Result<Vec<TrustedKey>> {
    args.iter().map(|a| load_trust(a)).collect()
}
