//! The `[scoring]` configuration: GAEN v2's `DailySummariesConfig` and `DiagnosisKeysDataMapping`
//! under the same names (snake_case), plus the few knobs of our own (`docs/scoring.md`).
//!
//! Names mirror Google's so a health authority can copy its published configuration. Maps keyed by
//! report type or infectiousness accept Google's numbers (`1 = 1.0`) as well as names
//! (`confirmed_test = 1.0`), because published files (e.g. Corona-Warn-App's) use the numbers.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

use crate::gaen::export::ReportType;

/// How infectious the case was on the key's day (GAEN `Infectiousness`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Infectiousness {
    /// 0: the window scores nothing.
    None,
    /// 1
    Standard,
    /// 2
    High,
}

/// The report types that can score (GAEN `ReportType` 1..=4; REVOKED never scores).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoredReportType {
    /// 1
    ConfirmedTest,
    /// 2
    ConfirmedClinicalDiagnosis,
    /// 3
    SelfReport,
    /// 4: off by default, as in Google's client.
    Recursive,
}

impl ScoredReportType {
    /// The scoring view of a published report type: `None` for REVOKED (never scores) and for
    /// values the configuration cannot weigh (0 = unknown, ≥ 6), which take
    /// `report_type_when_missing`.
    pub fn from_export(r: ReportType) -> Result<Option<Self>, Revoked> {
        Ok(match r {
            ReportType::ConfirmedTest => Some(ScoredReportType::ConfirmedTest),
            ReportType::ConfirmedClinical => Some(ScoredReportType::ConfirmedClinicalDiagnosis),
            ReportType::SelfReport => Some(ScoredReportType::SelfReport),
            ReportType::Recursive => Some(ScoredReportType::Recursive),
            ReportType::Revoked => return Err(Revoked),
            ReportType::Unknown | ReportType::Other(_) => None,
        })
    }
}

/// A key published (or revised) as REVOKED: it never produces an exposure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Revoked;

/// `infectiousness_weights` (GAEN keys 1 = standard, 2 = high; NONE always weighs 0).
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InfectiousnessWeights {
    #[serde(alias = "1")]
    pub standard: f64,
    #[serde(alias = "2")]
    pub high: f64,
}

impl Default for InfectiousnessWeights {
    fn default() -> Self {
        InfectiousnessWeights {
            standard: 1.0,
            high: 1.0,
        }
    }
}

/// `report_type_weights` (GAEN keys 1..=4).
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportTypeWeights {
    #[serde(alias = "1")]
    pub confirmed_test: f64,
    #[serde(alias = "2")]
    pub confirmed_clinical_diagnosis: f64,
    #[serde(alias = "3")]
    pub self_report: f64,
    #[serde(alias = "4")]
    pub recursive: f64,
}

impl Default for ReportTypeWeights {
    fn default() -> Self {
        // RECURSIVE (a contact of a case, not a case) is off, as Google's client skips it unless
        // enabled (`ExposureMatchingTracer.java:399-406`).
        ReportTypeWeights {
            confirmed_test: 1.0,
            confirmed_clinical_diagnosis: 1.0,
            self_report: 1.0,
            recursive: 0.0,
        }
    }
}

/// `days_since_onset_to_infectiousness`: days since symptom onset (−14..=14) → infectiousness; a
/// day not listed is [`Infectiousness::None`], as in GAEN.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "BTreeMap<String, Infectiousness>")]
pub struct OnsetMapping(pub BTreeMap<i32, Infectiousness>);

impl Default for OnsetMapping {
    fn default() -> Self {
        // Pre-symptomatic spread starts about 5 days before onset and peaks around it; by day 10
        // most cases no longer transmit. These are our choice, not Google's (its API has no default).
        let m = (-14..=14)
            .filter_map(|d| {
                let i = match d {
                    -2..=2 => Infectiousness::High,
                    -5..=-3 | 3..=10 => Infectiousness::Standard,
                    _ => return None,
                };
                Some((d, i))
            })
            .collect();
        OnsetMapping(m)
    }
}

impl TryFrom<BTreeMap<String, Infectiousness>> for OnsetMapping {
    type Error = String;
    fn try_from(raw: BTreeMap<String, Infectiousness>) -> Result<Self, String> {
        let mut m = BTreeMap::new();
        for (k, v) in raw {
            let d: i32 = k
                .trim()
                .parse()
                .ok()
                .filter(|d| (-14..=14).contains(d))
                .ok_or_else(|| {
                    format!("days since onset: expected an integer from -14 to 14, got {k:?}")
                })?;
            m.insert(d, v);
        }
        Ok(OnsetMapping(m))
    }
}

impl OnsetMapping {
    pub fn infectiousness(&self, days_since_onset: i32) -> Infectiousness {
        self.0
            .get(&days_since_onset)
            .copied()
            .unwrap_or(Infectiousness::None)
    }
}

/// Also the `[scoring]` section of the daemon's config file (same names, same defaults; every key
/// is described in `docs/scoring.md`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoringConfig {
    // DailySummariesConfig
    /// Immediate ≤ [0] < near ≤ [1] < medium ≤ [2] < other, dB of typical attenuation.
    pub attenuation_bucket_threshold_db: [i32; 3],
    /// Weights of immediate, near, medium, other.
    pub attenuation_bucket_weights: [f64; 4],
    pub infectiousness_weights: InfectiousnessWeights,
    pub report_type_weights: ReportTypeWeights,
    /// Windows older than this many days (before the scoring day) do not notify; 0 = no limit.
    pub days_since_exposure_threshold: u32,
    /// A window whose score (weighted seconds) is below this does not count toward its day.
    pub minimum_window_score: f64,

    // DiagnosisKeysDataMapping
    pub days_since_onset_to_infectiousness: OnsetMapping,
    pub infectiousness_when_days_since_onset_missing: Infectiousness,
    /// For keys published with report type 0 (unknown) or a value above 5.
    pub report_type_when_missing: ScoredReportType,

    // Our own: the exposure-window model's timing.
    /// Sightings less than this many seconds after the first of a scan instance belong to it.
    pub scan_period_s: i64,
    /// `secondsSinceLastScan` cap, seconds (GAEN: 5 min).
    pub max_seconds_since_last_scan: i64,
    /// `secondsSinceLastScan` of a case's first scan instance, seconds (GAEN: 2 min).
    pub first_scan_seconds: i64,
    /// A window ends once a scan instance starts this long after the window did, seconds.
    pub window_max_s: i64,

    // Our own: Bluezone and the decision.
    /// Bluezone adverts carry no tx power: the calibrated value to assume, dBm.
    pub bluezone_tx_power_dbm: i8,
    /// Bluezone F0 lists carry no report type…
    pub bluezone_report_type: ScoredReportType,
    /// …and no onset (`None` → `infectiousness_when_days_since_onset_missing`).
    pub bluezone_days_since_onset: Option<i32>,
    /// A UTC day with at least this many weighted minutes notifies.
    pub notify_weighted_minutes: f64,
    /// A day notifies only if the case was heard under this many distinct identifiers.
    pub min_distinct_ids: usize,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        ScoringConfig {
            // In the simulator's path-loss model (40 dB at 1 m, exponent 2.7) 2 m is 48.1 dB and
            // 3 m is 52.9 dB: 50 dB splits them. Only "immediate" weighs, so 3 m apart all day
            // adds nothing while 15 min within 2 m reaches the 15-minute threshold.
            attenuation_bucket_threshold_db: [50, 55, 63],
            attenuation_bucket_weights: [1.0, 0.0, 0.0, 0.0],
            infectiousness_weights: InfectiousnessWeights::default(),
            report_type_weights: ReportTypeWeights::default(),
            days_since_exposure_threshold: 0,
            minimum_window_score: 0.0,
            days_since_onset_to_infectiousness: OnsetMapping::default(),
            infectiousness_when_days_since_onset_missing: Infectiousness::Standard,
            report_type_when_missing: ScoredReportType::ConfirmedTest,
            scan_period_s: 20,
            max_seconds_since_last_scan: 300,
            first_scan_seconds: 120,
            window_max_s: 30 * 60,
            // The mean calibrated tx of real phones in microG's device table is −24.7 dBm; Bluezone
            // phones advertise at Android TX_POWER_LOW, about that.
            bluezone_tx_power_dbm: -25,
            bluezone_report_type: ScoredReportType::ConfirmedTest,
            bluezone_days_since_onset: None,
            notify_weighted_minutes: 15.0,
            min_distinct_ids: 2,
        }
    }
}

/// A `[scoring]` value that deserializes but cannot be used.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ScoringConfigError {
    #[error("scoring.attenuation_bucket_threshold_db: expected three ascending values from 0 to 255 dB, got {0:?}")]
    Thresholds([i32; 3]),
    #[error("scoring.{key}: expected a weight from 0 to 10, got {value}")]
    Weight { key: &'static str, value: f64 },
    #[error("scoring.{key}: expected {expected}, got {value}")]
    Range {
        key: &'static str,
        expected: &'static str,
        value: i64,
    },
}

impl ScoringConfig {
    /// Cross-field checks serde cannot express; each error names its key.
    pub fn validate(&self) -> Result<(), ScoringConfigError> {
        let t = self.attenuation_bucket_threshold_db;
        if !(t[0] <= t[1] && t[1] <= t[2] && t[0] >= 0 && t[2] <= 255) {
            return Err(ScoringConfigError::Thresholds(t));
        }
        let w = &self.attenuation_bucket_weights;
        let weights = [
            ("attenuation_bucket_weights", w[0]),
            ("attenuation_bucket_weights", w[1]),
            ("attenuation_bucket_weights", w[2]),
            ("attenuation_bucket_weights", w[3]),
            (
                "infectiousness_weights.standard",
                self.infectiousness_weights.standard,
            ),
            (
                "infectiousness_weights.high",
                self.infectiousness_weights.high,
            ),
            (
                "report_type_weights.confirmed_test",
                self.report_type_weights.confirmed_test,
            ),
            (
                "report_type_weights.confirmed_clinical_diagnosis",
                self.report_type_weights.confirmed_clinical_diagnosis,
            ),
            (
                "report_type_weights.self_report",
                self.report_type_weights.self_report,
            ),
            (
                "report_type_weights.recursive",
                self.report_type_weights.recursive,
            ),
        ];
        for (key, value) in weights {
            if !(0.0..=10.0).contains(&value) {
                return Err(ScoringConfigError::Weight { key, value });
            }
        }
        let ranges: [(
            &'static str,
            &'static str,
            i64,
            std::ops::RangeInclusive<i64>,
        ); 5] = [
            (
                "scan_period_s",
                "1 to 300 seconds",
                self.scan_period_s,
                1..=300,
            ),
            (
                "max_seconds_since_last_scan",
                "1 to 3600 seconds",
                self.max_seconds_since_last_scan,
                1..=3600,
            ),
            (
                "first_scan_seconds",
                "0 to 3600 seconds",
                self.first_scan_seconds,
                0..=3600,
            ),
            (
                "window_max_s",
                "60 to 86400 seconds",
                self.window_max_s,
                60..=86_400,
            ),
            (
                "bluezone_days_since_onset",
                "-14 to 14",
                self.bluezone_days_since_onset.unwrap_or(0) as i64,
                -14..=14,
            ),
        ];
        for (key, expected, value, r) in ranges {
            if !r.contains(&value) {
                return Err(ScoringConfigError::Range {
                    key,
                    expected,
                    value,
                });
            }
        }
        if !(self.minimum_window_score.is_finite() && self.minimum_window_score >= 0.0) {
            return Err(ScoringConfigError::Weight {
                key: "minimum_window_score",
                value: self.minimum_window_score,
            });
        }
        if !(self.notify_weighted_minutes.is_finite() && self.notify_weighted_minutes >= 0.0) {
            return Err(ScoringConfigError::Weight {
                key: "notify_weighted_minutes",
                value: self.notify_weighted_minutes,
            });
        }
        Ok(())
    }

    pub(crate) fn bucket(&self, typical_attenuation_db: i32) -> usize {
        self.attenuation_bucket_threshold_db
            .iter()
            .position(|&t| typical_attenuation_db <= t)
            .unwrap_or(3)
    }

    pub(crate) fn infectiousness(&self, days_since_onset: Option<i32>) -> Infectiousness {
        match days_since_onset {
            Some(d) => self.days_since_onset_to_infectiousness.infectiousness(d),
            None => self.infectiousness_when_days_since_onset_missing,
        }
    }

    pub(crate) fn infectiousness_weight(&self, i: Infectiousness) -> f64 {
        match i {
            Infectiousness::None => 0.0,
            Infectiousness::Standard => self.infectiousness_weights.standard,
            Infectiousness::High => self.infectiousness_weights.high,
        }
    }

    pub(crate) fn report_type_weight(&self, r: ScoredReportType) -> f64 {
        let w = &self.report_type_weights;
        match r {
            ScoredReportType::ConfirmedTest => w.confirmed_test,
            ScoredReportType::ConfirmedClinicalDiagnosis => w.confirmed_clinical_diagnosis,
            ScoredReportType::SelfReport => w.self_report,
            ScoredReportType::Recursive => w.recursive,
        }
    }
}

/// Accepts Google's number or our name for an enum value in the configuration.
fn number_or_name<'de, D, T>(
    d: D,
    what: &'static str,
    by_number: &[(i64, T)],
    by_name: &[(&str, T)],
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Copy,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(i64),
        Name(String),
    }
    let found = match Raw::deserialize(d)? {
        Raw::Number(n) => by_number.iter().find(|(k, _)| *k == n).map(|(_, v)| *v),
        Raw::Name(s) => by_name.iter().find(|(k, _)| *k == s).map(|(_, v)| *v),
    };
    found.ok_or_else(|| serde::de::Error::custom(format!("expected {what}")))
}

impl<'de> Deserialize<'de> for Infectiousness {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use Infectiousness::*;
        number_or_name(
            d,
            "an infectiousness: 0/\"none\", 1/\"standard\" or 2/\"high\"",
            &[(0, None), (1, Standard), (2, High)],
            &[("none", None), ("standard", Standard), ("high", High)],
        )
    }
}

impl<'de> Deserialize<'de> for ScoredReportType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use ScoredReportType::*;
        number_or_name(
            d,
            "a report type: 1/\"confirmed_test\", 2/\"confirmed_clinical_diagnosis\", \
             3/\"self_report\" or 4/\"recursive\"",
            &[
                (1, ConfirmedTest),
                (2, ConfirmedClinicalDiagnosis),
                (3, SelfReport),
                (4, Recursive),
            ],
            &[
                ("confirmed_test", ConfirmedTest),
                ("confirmed_clinical_diagnosis", ConfirmedClinicalDiagnosis),
                ("self_report", SelfReport),
                ("recursive", Recursive),
            ],
        )
    }
}
