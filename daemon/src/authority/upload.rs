//! What a health official uploads for one case, parsed into keys.
//!
//! Accepted bodies, detected by content (the `Content-Type` is not trusted):
//! - a Bluezone F0 JSON list, as a device's `keys export --format bluezone-f0` writes it;
//! - a signed F0 zip (`bluezone::signed`), signature not required;
//! - a GAEN export zip, signed or not (`keys export --format gaen-zip`): the official's token is
//!   the authentication, and the authority signs what it publishes;
//! - the reference key server's publish JSON: `temporaryExposureKeys` (base64 `key`,
//!   `rollingStartNumber`, `rollingPeriod`, `transmissionRisk`), optional `symptomOnsetInterval`
//!   and `reportType` (`confirmed`, `likely`, `self_report`).
//!
//! A key that is malformed is skipped and named; an upload with no valid key is refused.

use base64::Engine;
use bluezone_protocol::bluezone::f0::{parse_f0, F0Error, F0Limits, F0Parsed};
use bluezone_protocol::bluezone::signed::{is_signed_f0, parse_signed_f0, SignedF0Error};
use bluezone_protocol::bluezone::F0Entry;
use bluezone_protocol::gaen::export::{
    parse_export, ExportError, ExportKey, ExportLimits, ReportType, DEFAULT_ROLLING_PERIOD,
};
use bluezone_protocol::gaen::TEK_ROLLING_PERIOD;
use bluezone_protocol::ids::Tek;
use serde::Deserialize;

/// The body's format, as recorded for the case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadFormat {
    BluezoneF0,
    SignedF0,
    GaenExport,
    PublishJson,
}

impl UploadFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            UploadFormat::BluezoneF0 => "bluezone-f0",
            UploadFormat::SignedF0 => "bluezone-f0-signed",
            UploadFormat::GaenExport => "gaen-export",
            UploadFormat::PublishJson => "publish-json",
        }
    }
}

/// One case's keys. `Debug` of the keys redacts them.
#[derive(Clone, Debug)]
pub struct CaseUpload {
    pub format: UploadFormat,
    pub gaen: Vec<ExportKey>,
    pub f0: Vec<F0Entry>,
    /// Keys that were skipped, each naming its index and what was wrong.
    pub skipped: Vec<String>,
}

impl CaseUpload {
    pub fn key_count(&self) -> usize {
        self.gaen.len() + self.f0.len()
    }
}

/// Why an upload was refused. A wrapped parser error is said in the message only, not also
/// exposed as `source()`, so an error chain prints each cause once (as in `store::error`).
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the body is neither a Bluezone F0 list, a GAEN export zip, a signed F0 zip nor publish JSON")]
    NotRecognised,
    #[error("Bluezone F0 list: {0}")]
    F0(F0Error),
    #[error("signed F0 zip: {0}")]
    SignedF0(SignedF0Error),
    #[error("GAEN export: {0}")]
    Export(ExportError),
    #[error("publish JSON: {0}")]
    PublishJson(String),
    #[error("the upload holds no valid key{}", skipped_suffix(.0))]
    NoValidKey(Vec<String>),
    #[error("the upload holds {got} keys; at most {limit} are accepted in one case")]
    TooManyKeys { limit: usize, got: usize },
}

fn skipped_suffix(skipped: &[String]) -> String {
    if skipped.is_empty() {
        String::new()
    } else {
        format!(
            " ({})",
            skipped
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        )
    }
}

/// Parses an upload. `max_keys` bounds the keys of one case.
pub fn parse_upload(body: &[u8], max_keys: usize) -> Result<CaseUpload, UploadError> {
    let limits = ExportLimits {
        max_keys,
        ..ExportLimits::DEFAULT
    };
    let f0_limits = F0Limits {
        max_entries: max_keys,
    };
    let upload = if body.starts_with(b"PK\x03\x04") {
        if is_signed_f0(body) {
            let v =
                parse_signed_f0(body, &[], &limits, &f0_limits).map_err(UploadError::SignedF0)?;
            f0_case(UploadFormat::SignedF0, v.parsed)
        } else {
            let v = parse_export(body, &[], &limits).map_err(UploadError::Export)?;
            let mut gaen = v.file.keys;
            gaen.extend(v.file.revised_keys);
            let skipped = v.skipped.iter().map(|s| s.to_string()).collect();
            gaen_case(UploadFormat::GaenExport, gaen, skipped)
        }
    } else {
        let probe: Probe = serde_json::from_slice(body).map_err(|_| UploadError::NotRecognised)?;
        if probe.temporary_exposure_keys.is_some() {
            parse_publish_json(body)?
        } else if probe.data.is_some() {
            let parsed = parse_f0(body, &f0_limits).map_err(UploadError::F0)?;
            f0_case(UploadFormat::BluezoneF0, parsed)
        } else {
            return Err(UploadError::NotRecognised);
        }
    };
    if upload.key_count() > max_keys {
        return Err(UploadError::TooManyKeys {
            limit: max_keys,
            got: upload.key_count(),
        });
    }
    if upload.key_count() == 0 {
        return Err(UploadError::NoValidKey(upload.skipped));
    }
    Ok(upload)
}

fn f0_case(format: UploadFormat, parsed: F0Parsed) -> CaseUpload {
    let mut skipped: Vec<String> = parsed.skipped.iter().map(|s| s.to_string()).collect();
    if parsed.skipped_total > skipped.len() {
        skipped.push(format!(
            "and {} more entries",
            parsed.skipped_total - skipped.len()
        ));
    }
    CaseUpload {
        format,
        gaen: Vec::new(),
        f0: parsed.list.entries,
        skipped,
    }
}

/// Keys revoked by the uploader are dropped: an official uploads cases, and withdraws them with
/// `POST /v1/cases/ID/revoke`.
fn gaen_case(format: UploadFormat, keys: Vec<ExportKey>, mut skipped: Vec<String>) -> CaseUpload {
    let mut gaen = Vec::with_capacity(keys.len());
    for (i, k) in keys.into_iter().enumerate() {
        if k.report_type == ReportType::Revoked {
            skipped.push(format!(
                "key {i}: report type REVOKED (revoke a case through its id instead)"
            ));
        } else {
            gaen.push(k);
        }
    }
    CaseUpload {
        format,
        gaen,
        f0: Vec::new(),
        skipped,
    }
}

/// Only the top-level field names, to tell the JSON formats apart without building values.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    temporary_exposure_keys: Option<serde::de::IgnoredAny>,
    data: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PublishRequest {
    temporary_exposure_keys: Vec<PublishKey>,
    #[serde(default)]
    symptom_onset_interval: Option<i64>,
    #[serde(default)]
    report_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PublishKey {
    key: String,
    rolling_start_number: i64,
    #[serde(default)]
    rolling_period: Option<i64>,
    #[serde(default)]
    transmission_risk: Option<i32>,
}

fn parse_publish_json(body: &[u8]) -> Result<CaseUpload, UploadError> {
    let req: PublishRequest =
        serde_json::from_slice(body).map_err(|e| UploadError::PublishJson(e.to_string()))?;
    let report_type = match req.report_type.as_deref() {
        None | Some("confirmed") => ReportType::ConfirmedTest,
        Some("likely") => ReportType::ConfirmedClinical,
        Some("self_report") | Some("user-report") => ReportType::SelfReport,
        Some(other) => {
            return Err(UploadError::PublishJson(format!(
                "reportType: expected confirmed, likely or self_report, got {:?}",
                other.chars().take(32).collect::<String>()
            )))
        }
    };
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (i, k) in req.temporary_exposure_keys.iter().enumerate() {
        match publish_key(k, report_type, req.symptom_onset_interval) {
            Ok(key) => keys.push(key),
            Err(why) => skipped.push(format!("temporaryExposureKeys[{i}]: {why}")),
        }
    }
    Ok(gaen_case(UploadFormat::PublishJson, keys, skipped))
}

fn publish_key(
    k: &PublishKey,
    report_type: ReportType,
    onset: Option<i64>,
) -> Result<ExportKey, String> {
    let raw = zeroize::Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(k.key.trim())
            .map_err(|_| "key: expected base64".to_string())?,
    );
    let bytes: [u8; 16] = raw
        .as_slice()
        .try_into()
        .map_err(|_| format!("key: expected 16 bytes, got {}", raw.len()))?;
    let rolling_start = u32::try_from(k.rolling_start_number)
        .ok()
        .filter(|s| *s <= i32::MAX as u32)
        .ok_or_else(|| {
            format!(
                "rollingStartNumber: expected 0..=2147483647, got {}",
                k.rolling_start_number
            )
        })?;
    let period = k.rolling_period.unwrap_or(DEFAULT_ROLLING_PERIOD as i64);
    if !(1..=TEK_ROLLING_PERIOD as i64).contains(&period) {
        return Err(format!("rollingPeriod: expected 1..=144, got {period}"));
    }
    if let Some(r) = k.transmission_risk {
        if !(0..=8).contains(&r) {
            return Err(format!("transmissionRisk: expected 0..=8, got {r}"));
        }
    }
    // Days between the key's day and symptom onset, as the reference server derives it, bounded
    // to the range the export format allows (±14).
    let days_since_onset = onset.map(|o| {
        let d = (k.rolling_start_number - o).div_euclid(TEK_ROLLING_PERIOD as i64);
        d.clamp(-14, 14) as i32
    });
    Ok(ExportKey {
        tek: Tek::from_bytes(bytes),
        rolling_start,
        rolling_period: period as u32,
        report_type,
        transmission_risk_level: k.transmission_risk,
        days_since_onset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(b: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    #[test]
    fn publish_json_keeps_valid_keys_and_names_bad_ones() {
        let body = serde_json::json!({
            "temporaryExposureKeys": [
                {"key": b64(&[1; 16]), "rollingStartNumber": 2_650_000, "rollingPeriod": 144, "transmissionRisk": 0},
                {"key": b64(&[2; 15]), "rollingStartNumber": 2_650_144},
                {"key": b64(&[3; 16]), "rollingStartNumber": 2_650_288, "rollingPeriod": 145},
            ],
            "symptomOnsetInterval": 2_650_144,
            "healthAuthorityID": "vn.gov.moh",
        });
        let up = parse_upload(body.to_string().as_bytes(), 100).unwrap();
        assert_eq!(up.format, UploadFormat::PublishJson);
        assert_eq!(up.gaen.len(), 1);
        assert_eq!(up.gaen[0].days_since_onset, Some(-1));
        assert_eq!(up.gaen[0].report_type, ReportType::ConfirmedTest);
        assert_eq!(up.skipped.len(), 2);
        assert!(up.skipped[0].contains("[1]") && up.skipped[0].contains("16 bytes"));
        assert!(up.skipped[1].contains("rollingPeriod"));
    }

    #[test]
    fn refuses_what_is_not_a_case() {
        assert!(matches!(
            parse_upload(b"hello", 10),
            Err(UploadError::NotRecognised)
        ));
        assert!(matches!(
            parse_upload(b"{\"x\":1}", 10),
            Err(UploadError::NotRecognised)
        ));
        assert!(matches!(
            parse_upload(b"PK\x03\x04trunc", 10),
            Err(UploadError::Export(_))
        ));
        let none =
            serde_json::json!({"temporaryExposureKeys": [{"key": "!!", "rollingStartNumber": 1}]});
        assert!(
            matches!(parse_upload(none.to_string().as_bytes(), 10), Err(UploadError::NoValidKey(s)) if s.len() == 1)
        );
        let many = serde_json::json!({"temporaryExposureKeys": (0..3).map(|i| serde_json::json!({"key": b64(&[i; 16]), "rollingStartNumber": 1})).collect::<Vec<_>>()});
        assert!(matches!(
            parse_upload(many.to_string().as_bytes(), 2),
            Err(UploadError::TooManyKeys { limit: 2, got: 3 })
        ));
    }
}
