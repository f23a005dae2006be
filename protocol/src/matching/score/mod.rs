//! Exposure scoring: GAEN v2's exposure windows and daily summaries, applied to both protocols
//! (`docs/scoring.md` has the model, every key and a worked example).
//!
//! Per case key: matched sightings → [`windows::scan_instances`] (one per scan period, each
//! standing for its `secondsSinceLastScan`) → exposure windows of at most 30 minutes → each
//! window's score = Σ seconds × attenuation-bucket weight of the instance's typical attenuation,
//! × the infectiousness weight (from days since onset) × the report-type weight. Windows add up
//! per UTC day of their start into an [`Exposure`]; a day with enough weighted minutes notifies.
//!
//! Replay resistance (spec bluezone §5.2): a case heard in a single scan instance adds no
//! duration, and a day notifies only if the case was heard under at least `min_distinct_ids`
//! identifiers. A real 15-minute contact always spans two slots (Bluezone) or two RPIs (GAEN); a
//! replayed recording of one ID, however often repeated, stays under one.

pub mod config;
pub mod windows;

use std::collections::{BTreeMap, HashSet};

use super::index::Observation;
use super::Hit;
use crate::gaen::export::ReportType;
use crate::time::{utc_day, UnixSeconds};
pub use config::{
    Infectiousness, InfectiousnessWeights, OnsetMapping, ReportTypeWeights, ScoredReportType,
    ScoringConfig, ScoringConfigError,
};
use windows::Point;

/// What the case list says about one case key (GAEN keys carry both; Bluezone F0 entries
/// neither, see [`CaseInfo::bluezone`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaseInfo {
    pub report_type: ReportType,
    pub days_since_onset: Option<i32>,
}

impl CaseInfo {
    /// The configured defaults for a Bluezone F0 entry.
    pub fn bluezone(cfg: &ScoringConfig) -> CaseInfo {
        CaseInfo {
            report_type: match cfg.bluezone_report_type {
                ScoredReportType::ConfirmedTest => ReportType::ConfirmedTest,
                ScoredReportType::ConfirmedClinicalDiagnosis => ReportType::ConfirmedClinical,
                ScoredReportType::SelfReport => ReportType::SelfReport,
                ScoredReportType::Recursive => ReportType::Recursive,
            },
            days_since_onset: cfg.bluezone_days_since_onset,
        }
    }
}

/// Facts about this receiver and this run, not about the case list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScoreContext {
    /// This adapter's receive correction, dB (`radio.rssi_correction_db`): attenuation is
    /// `tx − (rssi + correction)`.
    pub rssi_correction_db: i32,
    /// The UTC day scoring runs on, for `days_since_exposure_threshold` (`None`: no limit).
    pub today: Option<i64>,
}

/// One exposure window (≤ 30 min of one case key), as reported with its exposure.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExposureWindow {
    /// Start of its first scan instance; its UTC day is the window's day.
    pub start: UnixSeconds,
    pub first_seen: UnixSeconds,
    pub last_seen: UnixSeconds,
    pub scan_instances: usize,
    pub sightings: usize,
    /// Σ `secondsSinceLastScan` per bucket: immediate, near, medium, other.
    pub seconds_by_bucket: [i64; 4],
    pub min_attenuation_db: i32,
    /// round(mean) of the window's scan instances' typical attenuations.
    pub typical_attenuation_db: i32,
    /// Weighted seconds (attenuation × infectiousness × report-type weights).
    pub score: f64,
    /// False when `score` is under `minimum_window_score`: the window does not count.
    pub counted: bool,
}

/// One case key's contact with this device on one UTC day (the day its windows started).
#[derive(Clone, Debug, PartialEq)]
pub struct Exposure {
    /// Which case key (position in the matcher's input).
    pub case: u32,
    pub day: i64,
    pub first_seen: UnixSeconds,
    pub last_seen: UnixSeconds,
    pub sightings: usize,
    pub distinct_ids: usize,
    pub windows: usize,
    /// Σ `secondsSinceLastScan` of the day's windows (unweighted).
    pub duration_s: i64,
    pub min_attenuation_db: i32,
    /// round(mean) attenuation of the day's sightings.
    pub typical_attenuation_db: i32,
    /// Σ counted window scores / 60.
    pub weighted_minutes: f64,
    pub notify: bool,
    /// The report type that was weighed (after `report_type_when_missing`).
    pub report_type: ScoredReportType,
    pub infectiousness: Infectiousness,
    /// Σ over the day's windows.
    pub seconds_by_bucket: [i64; 4],
    pub window_details: Vec<ExposureWindow>,
}

/// Scores the hits of one protocol; `obs` is that protocol's observation table and `cases[i]`
/// describes case `i` (a case beyond the slice counts as report type and onset missing).
/// A revoked case produces no exposure.
pub fn score(
    hits: &[Hit],
    obs: &[Observation],
    cases: &[CaseInfo],
    cfg: &ScoringConfig,
    ctx: &ScoreContext,
) -> Vec<Exposure> {
    // case → points, deduplicated by observation index.
    let mut per_case: BTreeMap<u32, Vec<Point>> = BTreeMap::new();
    let mut seen: HashSet<(u32, u32)> = HashSet::new();
    for h in hits {
        for i in h.obs.clone() {
            if !seen.insert((h.case, i)) {
                continue;
            }
            let Some(o) = obs.get(i as usize) else {
                continue;
            };
            let tx = h
                .tx_power
                .or(o.tx_power)
                .unwrap_or(cfg.bluezone_tx_power_dbm) as i32;
            let attenuation_db = (tx - (o.rssi as i32 + ctx.rssi_correction_db)).max(0);
            per_case.entry(h.case).or_default().push(Point {
                time: o.time,
                attenuation_db,
                id: h.group,
            });
        }
    }
    let mut out = Vec::new();
    for (case, mut points) in per_case {
        let info = cases.get(case as usize).copied().unwrap_or(CaseInfo {
            report_type: ReportType::Unknown,
            days_since_onset: None,
        });
        let Ok(report_type) = ScoredReportType::from_export(info.report_type) else {
            continue; // REVOKED never scores.
        };
        let report_type = report_type.unwrap_or(cfg.report_type_when_missing);
        let infectiousness = cfg.infectiousness(info.days_since_onset);
        points.sort_unstable();
        out.extend(score_case(
            case,
            &points,
            report_type,
            infectiousness,
            cfg,
            ctx,
        ));
    }
    out
}

fn score_case(
    case: u32,
    points: &[Point],
    report_type: ScoredReportType,
    infectiousness: Infectiousness,
    cfg: &ScoringConfig,
    ctx: &ScoreContext,
) -> Vec<Exposure> {
    let case_weight =
        cfg.infectiousness_weight(infectiousness) * cfg.report_type_weight(report_type);
    let instances = windows::scan_instances(points, cfg);
    let mut days: BTreeMap<i64, Vec<(ExposureWindow, std::ops::Range<usize>)>> = BTreeMap::new();
    for w in windows::windows(&instances, cfg) {
        let inst = &instances[w.clone()];
        let pts = inst[0].points.start..inst[inst.len() - 1].points.end;
        let mut seconds_by_bucket = [0i64; 4];
        let mut weighted = 0.0;
        for s in inst {
            let b = cfg.bucket(s.typical_attenuation_db);
            seconds_by_bucket[b] += s.seconds_since_last_scan;
            weighted += s.seconds_since_last_scan as f64 * cfg.attenuation_bucket_weights[b];
        }
        let score = weighted * case_weight;
        let n = inst.len() as i64;
        let typ_sum: i64 = inst.iter().map(|s| s.typical_attenuation_db as i64).sum();
        let window = ExposureWindow {
            start: inst[0].time,
            first_seen: points[pts.start].time,
            last_seen: points[pts.end - 1].time,
            scan_instances: inst.len(),
            sightings: pts.len(),
            seconds_by_bucket,
            min_attenuation_db: inst.iter().map(|s| s.min_attenuation_db).min().unwrap_or(0),
            typical_attenuation_db: (typ_sum * 2 + n).div_euclid(2 * n) as i32,
            score,
            counted: score >= cfg.minimum_window_score,
        };
        days.entry(utc_day(window.start))
            .or_default()
            .push((window, pts));
    }
    days.into_iter()
        .map(|(day, ws)| {
            let day_points: Vec<&Point> = ws.iter().flat_map(|(_, r)| &points[r.clone()]).collect();
            let distinct: HashSet<u32> = day_points.iter().map(|p| p.id).collect();
            let n = day_points.len() as i64;
            let att_sum: i64 = day_points.iter().map(|p| p.attenuation_db as i64).sum();
            let mut seconds_by_bucket = [0i64; 4];
            for (w, _) in &ws {
                for (acc, s) in seconds_by_bucket.iter_mut().zip(w.seconds_by_bucket) {
                    *acc += s;
                }
            }
            let weighted_minutes: f64 = ws
                .iter()
                .filter(|(w, _)| w.counted)
                .map(|(w, _)| w.score)
                .sum::<f64>()
                / 60.0;
            let recent = match (ctx.today, cfg.days_since_exposure_threshold) {
                (Some(today), t) if t > 0 => today - day <= t as i64,
                _ => true,
            };
            Exposure {
                case,
                day,
                first_seen: ws[0].0.first_seen,
                last_seen: ws[ws.len() - 1].0.last_seen,
                sightings: day_points.len(),
                distinct_ids: distinct.len(),
                windows: ws.len(),
                duration_s: seconds_by_bucket.iter().sum(),
                min_attenuation_db: day_points
                    .iter()
                    .map(|p| p.attenuation_db)
                    .min()
                    .unwrap_or(0),
                typical_attenuation_db: (att_sum * 2 + n).div_euclid(2 * n) as i32,
                weighted_minutes,
                notify: weighted_minutes >= cfg.notify_weighted_minutes
                    && distinct.len() >= cfg.min_distinct_ids
                    && recent,
                report_type,
                infectiousness,
                seconds_by_bucket,
                window_details: ws.into_iter().map(|(w, _)| w).collect(),
            }
        })
        .collect()
}
