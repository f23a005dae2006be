//! Sightings → scan instances → exposure windows (GAEN v2 `ExposureWindow` semantics, reviewed
//! against `KeyExposureEvaluator.java` and `ExposureWindowUtils.java`; see `docs/scoring.md`).
//!
//! Scan instances sit on a fixed grid of `scan_period_s` (the scanner's scan cycles), not on
//! gaps between sightings: with the grid, hearing a case once more can add a scan instance but
//! never move or merge one, so a case's duration never shrinks as sightings are added.

use std::ops::Range;

use super::config::ScoringConfig;
use crate::time::UnixSeconds;

/// One matched reception: time, attenuation (dB), identifier group (distinct rolling IDs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Point {
    pub time: UnixSeconds,
    pub attenuation_db: i32,
    pub id: u32,
}

/// The sightings of one case within one scan period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanInstance {
    /// Start of the scan period (a multiple of `scan_period_s`).
    pub time: UnixSeconds,
    /// Indices into the sorted points.
    pub points: Range<usize>,
    /// round(mean) of the sightings' attenuations (GAEN `typicalAttenuationDb`).
    pub typical_attenuation_db: i32,
    pub min_attenuation_db: i32,
    /// Seconds this instance stands for: min(cap, time since the previous instance), the
    /// first-scan default for the case's first, and 0 when the case was heard in one instance only.
    pub seconds_since_last_scan: i64,
}

/// Groups time-sorted points into scan instances.
pub fn scan_instances(points: &[Point], cfg: &ScoringConfig) -> Vec<ScanInstance> {
    debug_assert!(points.windows(2).all(|w| w[0].time <= w[1].time));
    let period = cfg.scan_period_s.max(1);
    let mut out: Vec<ScanInstance> = Vec::new();
    let mut start = 0;
    while start < points.len() {
        let slot = points[start].time.div_euclid(period);
        let end = start
            + points[start..]
                .iter()
                .take_while(|p| p.time.div_euclid(period) == slot)
                .count();
        let atts = points[start..end].iter().map(|p| p.attenuation_db as i64);
        let n = (end - start) as i64;
        let sum: i64 = atts.clone().sum();
        let time = slot * period;
        let seconds = match out.last() {
            Some(prev) => (time - prev.time).min(cfg.max_seconds_since_last_scan),
            None => cfg.first_scan_seconds,
        };
        out.push(ScanInstance {
            time,
            points: start..end,
            // Round half up, as Java's Math.round on the (non-negative) mean.
            typical_attenuation_db: (sum * 2 + n).div_euclid(2 * n) as i32,
            min_attenuation_db: atts.min().unwrap_or(0) as i32,
            seconds_since_last_scan: seconds,
        });
        start = end;
    }
    // Replay resistance (spec bluezone §5.2): one packet, or one burst within a scan period,
    // adds no duration however often it is repeated.
    if let [only] = out.as_mut_slice() {
        only.seconds_since_last_scan = 0;
    }
    out
}

/// Splits scan instances into exposure windows: a window starts anew once an instance starts
/// `window_max_s` or more after the window did (no split on gaps, as in GAEN).
pub fn windows(instances: &[ScanInstance], cfg: &ScoringConfig) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, s) in instances.iter().enumerate() {
        if s.time - instances[start].time >= cfg.window_max_s {
            out.push(start..i);
            start = i;
        }
    }
    if start < instances.len() {
        out.push(start..instances.len());
    }
    out
}
