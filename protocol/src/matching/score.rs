//! Exposure scoring (`shared/spec/gaen.md` §4, applied to both protocols).
//!
//! A case key's matched sightings are split per UTC day and grouped into exposure windows of at
//! most 30 minutes; a gap longer than `max_gap_s` (a few missed scans) also closes a window.
//! Each sighting after the first in a window contributes the seconds since the previous one
//! (capped at `max_gap_s`) to the bucket of its attenuation (`tx_power − rssi`); the weighted sum
//! per day decides `notify`.
//!
//! Replay resistance (spec bluezone §5.2): a single packet contributes no duration at all, and a
//! day notifies only if the case was heard under at least `min_distinct_ids` identifiers. A real
//! 15-minute contact always spans two slots (Bluezone) or two RPIs (GAEN); a replayed recording of
//! one ID, however often repeated, stays under one.

use std::collections::{BTreeMap, HashSet};

use super::index::Observation;
use super::Hit;
use crate::time::{utc_day, UnixSeconds};

/// Also the `[scoring]` section of the daemon's config file (same names, same defaults).
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoringConfig {
    /// Longest exposure window, seconds.
    pub window_max_s: i64,
    /// Longest gap between sightings that still counts as continuous presence, seconds.
    pub max_gap_s: i64,
    /// Bluezone adverts carry no tx power: the calibrated value to assume, dBm.
    pub bluezone_tx_power_dbm: i8,
    /// Attenuation bucket upper bounds, dB: immediate ≤ [0] < near ≤ [1] < far.
    pub attenuation_thresholds_db: [i32; 2],
    /// Weights of immediate, near, far.
    pub weights: [f64; 3],
    /// A UTC day with at least this many weighted minutes notifies.
    pub notify_weighted_minutes: f64,
    /// A day notifies only if the case was heard under this many distinct identifiers.
    pub min_distinct_ids: usize,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        ScoringConfig {
            window_max_s: 30 * 60,
            max_gap_s: 180,
            bluezone_tx_power_dbm: -15,
            attenuation_thresholds_db: [50, 70],
            weights: [1.0, 0.5, 0.0],
            notify_weighted_minutes: 15.0,
            min_distinct_ids: 2,
        }
    }
}

/// One case key's contact with this device on one UTC day.
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
    pub duration_s: i64,
    pub min_attenuation_db: i32,
    /// Median attenuation of the day's sightings.
    pub typical_attenuation_db: i32,
    pub weighted_minutes: f64,
    pub notify: bool,
}

impl ScoringConfig {
    pub fn weight(&self, attenuation_db: i32) -> f64 {
        let [a, b] = self.attenuation_thresholds_db;
        if attenuation_db <= a {
            self.weights[0]
        } else if attenuation_db <= b {
            self.weights[1]
        } else {
            self.weights[2]
        }
    }
}

/// One matched sighting: time, attenuation, identifier group.
type Point = (i64, i32, u32);

/// Scores the hits of one protocol; `obs` is that protocol's observation table.
pub fn score(hits: &[Hit], obs: &[Observation], cfg: &ScoringConfig) -> Vec<Exposure> {
    // (case, day) → (time, attenuation, group), deduplicated by observation index.
    let mut per_day: BTreeMap<(u32, i64), Vec<Point>> = BTreeMap::new();
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
            let att = (tx - o.rssi as i32).max(0);
            per_day
                .entry((h.case, utc_day(o.time)))
                .or_default()
                .push((o.time, att, h.group));
        }
    }
    per_day
        .into_iter()
        .map(|((case, day), mut v)| {
            v.sort_unstable();
            let mut duration = 0i64;
            let mut weighted_s = 0.0f64;
            let mut windows = 1usize;
            let mut window_start = v[0].0;
            for pair in v.windows(2) {
                let (prev, cur) = (pair[0], pair[1]);
                let gap = cur.0 - prev.0;
                if gap > cfg.max_gap_s || cur.0 - window_start > cfg.window_max_s {
                    windows += 1;
                    window_start = cur.0;
                    continue;
                }
                duration += gap;
                weighted_s += gap as f64 * cfg.weight(cur.1);
            }
            let mut atts: Vec<i32> = v.iter().map(|x| x.1).collect();
            atts.sort_unstable();
            let distinct: HashSet<u32> = v.iter().map(|x| x.2).collect();
            let weighted_minutes = weighted_s / 60.0;
            Exposure {
                case,
                day,
                first_seen: v[0].0,
                last_seen: v[v.len() - 1].0,
                sightings: v.len(),
                distinct_ids: distinct.len(),
                windows,
                duration_s: duration,
                min_attenuation_db: atts[0],
                typical_attenuation_db: atts[atts.len() / 2],
                weighted_minutes,
                notify: weighted_minutes >= cfg.notify_weighted_minutes
                    && distinct.len() >= cfg.min_distinct_ids,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(t: i64, rssi: i8) -> Observation {
        Observation {
            time: t,
            rssi,
            tx_power: None,
            aem: None,
        }
    }

    fn hit(case: u32, group: u32, r: std::ops::Range<u32>) -> Hit {
        Hit {
            case,
            group,
            obs: r,
            tx_power: None,
        }
    }

    #[test]
    fn twenty_minutes_close_notifies() {
        // One sighting a minute for 21 minutes, two IDs, attenuation 45 dB (immediate).
        let obs: Vec<_> = (0..21).map(|m| o(86400 * 10 + m * 60, -60)).collect();
        let hits = [hit(0, 1, 0..10), hit(0, 2, 10..21)];
        let e = score(&hits, &obs, &ScoringConfig::default());
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].duration_s, 20 * 60);
        assert_eq!(e[0].min_attenuation_db, 45);
        assert_eq!(e[0].distinct_ids, 2);
        assert!((e[0].weighted_minutes - 20.0).abs() < 1e-9);
        assert!(e[0].notify);
    }

    #[test]
    fn far_or_short_or_single_id_does_not_notify() {
        let cfg = ScoringConfig::default();
        let obs: Vec<_> = (0..21).map(|m| o(m * 60, -90)).collect(); // 75 dB: far, weight 0
        let e = score(&[hit(0, 1, 0..10), hit(0, 2, 10..21)], &obs, &cfg);
        assert_eq!(e[0].weighted_minutes, 0.0);
        assert!(!e[0].notify);
        let one = [o(100, -40)];
        let e = score(&[hit(3, 1, 0..1)], &one, &cfg);
        assert_eq!(e[0].duration_s, 0);
        assert!(!e[0].notify);
        // 20 minutes under one replayed ID: duration counts but it does not notify.
        let obs: Vec<_> = (0..21).map(|m| o(m * 60, -50)).collect();
        let e = score(&[hit(0, 1, 0..21)], &obs, &cfg);
        assert!(e[0].weighted_minutes >= 15.0);
        assert!(!e[0].notify);
    }

    #[test]
    fn windows_split_on_gaps_and_length_and_days() {
        let cfg = ScoringConfig::default();
        // 40 minutes of sightings each minute → two windows (30-minute cap); the step between
        // windows is not counted.
        let obs: Vec<_> = (0..41).map(|m| o(m * 60, -50)).collect();
        let e = score(&[hit(0, 1, 0..20), hit(0, 2, 20..41)], &obs, &cfg);
        assert_eq!(e[0].windows, 2);
        assert_eq!(e[0].duration_s, 39 * 60);
        // A one-hour gap opens a new window; crossing midnight makes two days.
        let obs = vec![
            o(86400 - 120, -50),
            o(86400 - 60, -50),
            o(86400 + 10, -50),
            o(90000, -50),
        ];
        let e = score(&[hit(0, 1, 0..4)], &obs, &cfg);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].duration_s, 60);
        assert_eq!(e[1].windows, 2);
    }
}
