//! Case lists as they arrive (CLI import, HTTP upload, key-server poll): detect the format,
//! check it completely, and describe it. Nothing here touches the store.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bluezone_protocol::bluezone::f0::{parse_f0, F0Limits, F0List};
use bluezone_protocol::gaen::export::{
    parse_export, ExportLimits, SignatureStatus, TrustedKey, VerifiedExport,
};
use serde_json::json;

/// A checked case list.
pub enum CaseList {
    BluezoneF0(F0List),
    GaenExport(VerifiedExport),
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
pub fn detect(bytes: &[u8]) -> Result<Format> {
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        return Ok(Format::GaenExport);
    }
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'{') {
        return Ok(Format::BluezoneF0);
    }
    bail!("not a case list: expected a Bluezone F0 JSON object or a GAEN export zip")
}

/// Parses and checks a case list. A GAEN file is verified when `trusted` is non-empty.
pub fn parse(bytes: &[u8], trusted: &[TrustedKey], limits: &Limits) -> Result<CaseList> {
    match detect(bytes)? {
        Format::BluezoneF0 => Ok(CaseList::BluezoneF0(parse_f0(bytes, &limits.f0)?)),
        Format::GaenExport => Ok(CaseList::GaenExport(parse_export(
            bytes,
            trusted,
            &limits.export,
        )?)),
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
            CaseList::BluezoneF0(l) => l.entries.len(),
            CaseList::GaenExport(e) => e.file.keys.len(),
        }
    }

    /// The `cases inspect` summary.
    pub fn summary(&self) -> serde_json::Value {
        match self {
            CaseList::BluezoneF0(l) => json!({
                "format": "bluezone-f0",
                "entries": l.entries.len(),
                "days": l.entries.iter().map(|e| e.days() as u64).sum::<u64>(),
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
                })
            }
        }
    }
}

/// A `--trust` argument: `PATH` (the key is trusted under any key id and version) or
/// `KEY_ID:VERSION=PATH` (only for files naming that id and version).
pub fn load_trust(arg: &Path) -> Result<TrustedKey> {
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

pub fn load_trusts(args: &[PathBuf]) -> Result<Vec<TrustedKey>> {
    args.iter().map(|a| load_trust(a)).collect()
}
