//! Signed Bluezone F0 lists (`docs/authority.md`, "Signed F0 files").
//!
//! A Bluezone F0 list is plain JSON with no signature of its own: real phones received it over an
//! authenticated push channel. Published on a CDN, a list anyone could place there would make
//! devices notify falsely, so a health authority running bluezoned publishes each F0 list inside a
//! zip beside a detached signature made with the same key and the same `TEKSignatureList` message as
//! its GAEN exports:
//!
//! - `f0.json`: the F0 list, byte for byte what a Bluezone phone parses;
//! - `f0.sig`: a `TEKSignatureList` (GAEN `export.sig` layout) whose signature is ECDSA P-256 over
//!   the exact bytes of `f0.json`.
//!
//! A device accepts the list only if a signature verifies under one of its trust anchors.

use std::io::Cursor;

use crate::bluezone::f0::{parse_f0, F0Error, F0Limits, F0Parsed};
use crate::gaen::export::{
    read_zip_entry, sign_detached, verify_detached, zip_entries, ExportError, ExportLimits,
    ExportSigner, SignatureStatus, TrustedKey,
};

/// The list's entry name inside the zip.
pub const F0_JSON: &str = "f0.json";
/// The detached signature's entry name inside the zip.
pub const F0_SIG: &str = "f0.sig";

/// A signed F0 list as read from a zip, and how far it is to be trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedF0 {
    /// The valid entries, and the entries that were skipped.
    pub parsed: F0Parsed,
    pub signature: SignatureStatus,
}

#[derive(Debug, thiserror::Error)]
pub enum SignedF0Error {
    #[error("signed F0 zip")]
    Container(#[source] ExportError),
    #[error("{F0_JSON}")]
    List(#[source] F0Error),
}

/// True when `bytes` is a zip that holds an [`F0_JSON`] entry (cheap: reads the directory only).
pub fn is_signed_f0(bytes: &[u8]) -> bool {
    zip::ZipArchive::new(Cursor::new(bytes))
        .map(|a| a.index_for_name(F0_JSON).is_some())
        .unwrap_or(false)
}

/// Reads a signed F0 zip. With `trusted` empty the list is parsed and returned as
/// [`SignatureStatus::Unverified`]; otherwise a signature must verify under a trusted key before
/// the JSON is parsed.
pub fn parse_signed_f0(
    zip_bytes: &[u8],
    trusted: &[TrustedKey],
    zip_limits: &ExportLimits,
    f0_limits: &F0Limits,
) -> Result<VerifiedF0, SignedF0Error> {
    let mut archive = zip::ZipArchive::new(Cursor::new(zip_bytes))
        .map_err(|e| SignedF0Error::Container(ExportError::Zip(e)))?;
    let json = read_zip_entry(&mut archive, F0_JSON, zip_limits.max_export_bin_bytes)
        .map_err(SignedF0Error::Container)?;
    let sig = read_zip_entry(&mut archive, F0_SIG, zip_limits.max_export_sig_bytes)
        .map_err(SignedF0Error::Container)?;
    let signature = if trusted.is_empty() {
        SignatureStatus::Unverified
    } else {
        verify_detached(&json, &sig, F0_SIG, trusted, zip_limits)
            .map_err(SignedF0Error::Container)?
    };
    let parsed = parse_f0(&json, f0_limits).map_err(SignedF0Error::List)?;
    Ok(VerifiedF0 { parsed, signature })
}

/// The exact bytes of `f0.json` once a signature over them verifies under one of `trusted`
/// (which must not be empty): what a device stores after fetching a signed list.
pub fn verified_json(
    zip_bytes: &[u8],
    trusted: &[TrustedKey],
    zip_limits: &ExportLimits,
) -> Result<Vec<u8>, SignedF0Error> {
    let mut archive = zip::ZipArchive::new(Cursor::new(zip_bytes))
        .map_err(|e| SignedF0Error::Container(ExportError::Zip(e)))?;
    let json = read_zip_entry(&mut archive, F0_JSON, zip_limits.max_export_bin_bytes)
        .map_err(SignedF0Error::Container)?;
    let sig = read_zip_entry(&mut archive, F0_SIG, zip_limits.max_export_sig_bytes)
        .map_err(SignedF0Error::Container)?;
    verify_detached(&json, &sig, F0_SIG, trusted, zip_limits).map_err(SignedF0Error::Container)?;
    Ok(json)
}

/// Writes `json` (an F0 list as published) and its signature by `signer` into a zip with fixed
/// timestamps, so the output is a function of the input.
pub fn write_signed_f0(json: &[u8], signer: &ExportSigner) -> Result<Vec<u8>, ExportError> {
    let sig = sign_detached(json, signer, 1, 1)?;
    zip_entries(&[(F0_JSON, json), (F0_SIG, &sig)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bluezone::f0::write_f0;
    use crate::bluezone::{F0Entry, F0List, SlotsPerDay};
    use crate::ids::DailyKey;
    use p256::ecdsa::SigningKey;

    fn signer(seed: u8) -> ExportSigner {
        let key = SigningKey::from_slice(&[seed; 32]).expect("valid scalar");
        ExportSigner::new("452", "v1", key)
    }

    fn list() -> F0List {
        F0List {
            entries: vec![F0Entry {
                daily_key: DailyKey::from_bytes([7; 32]),
                time_start: 1_596_844_800,
                time_end: 1_596_844_800 + 86_399,
                max: SlotsPerDay::DEFAULT,
            }],
        }
    }

    #[test]
    fn round_trip_verifies_under_the_signer_and_not_another_key() {
        let json = write_f0(&list());
        let zip = write_signed_f0(json.as_bytes(), &signer(1)).unwrap();
        assert!(is_signed_f0(&zip));
        let lim = ExportLimits::DEFAULT;
        let ok =
            parse_signed_f0(&zip, &[signer(1).trusted_key()], &lim, &F0Limits::default()).unwrap();
        assert_eq!(ok.parsed.list, list());
        assert!(matches!(ok.signature, SignatureStatus::Verified { .. }));
        assert!(
            parse_signed_f0(&zip, &[signer(2).trusted_key()], &lim, &F0Limits::default()).is_err()
        );
    }

    #[test]
    fn a_changed_list_fails_verification() {
        let json = write_f0(&list());
        let zip = write_signed_f0(json.as_bytes(), &signer(1)).unwrap();
        let lim = ExportLimits::DEFAULT;
        assert_eq!(
            verified_json(&zip, &[signer(1).trusted_key()], &lim).unwrap(),
            json.as_bytes()
        );
        assert!(verified_json(&zip, &[signer(2).trusted_key()], &lim).is_err());
        assert!(
            verified_json(&zip, &[], &lim).is_err(),
            "no trust anchor: nothing verifies"
        );
        let sig = sign_detached(json.as_bytes(), &signer(1), 1, 1).unwrap();
        let tampered = json.replace("1596844800", "1596844801");
        assert!(verify_detached(
            tampered.as_bytes(),
            &sig,
            F0_SIG,
            &[signer(1).trusted_key()],
            &ExportLimits::DEFAULT
        )
        .is_err());
    }
}
