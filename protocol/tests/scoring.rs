//! GAEN v2 exposure scoring: Google's ExposureWindow semantics as worked examples with
//! hand-computed values, the defaults against the simulator's path-loss model, the configuration
//! as a health authority writes it, and properties.

use bluezone_protocol::gaen::export::ReportType;
use bluezone_protocol::matching::score::windows::{scan_instances, Point};
use bluezone_protocol::matching::score::{
    Infectiousness, ScoredReportType, ScoringConfig, ScoringConfigError,
};
use bluezone_protocol::matching::{score, CaseInfo, Exposure, Hit, Observation, ScoreContext};
use proptest::prelude::*;

const DAY: i64 = 86_400;
/// 2020-08-08 00:00 UTC, a multiple of every scan period used here.
const T0: i64 = 1_596_844_800;

/// A Bluezone-style sighting (no tx power): attenuation = −25 − rssi under the defaults.
fn o(t: i64, attenuation: i32) -> Observation {
    Observation {
        time: t,
        rssi: (-25 - attenuation) as i8,
        tx_power: None,
        aem: None,
    }
}

/// Case `case`, observations `r` heard under identifier `id`.
fn hit(case: u32, id: u32, r: std::ops::Range<u32>) -> Hit {
    Hit {
        case,
        group: id,
        obs: r,
        tx_power: None,
    }
}

/// Every observation of case 0, the first half under ID 1 and the rest under ID 2.
fn two_ids(n: usize) -> Vec<Hit> {
    let h = (n / 2) as u32;
    vec![hit(0, 1, 0..h), hit(0, 2, h..n as u32)]
}

fn confirmed() -> CaseInfo {
    CaseInfo {
        report_type: ReportType::ConfirmedTest,
        days_since_onset: Some(0),
    }
}

fn run(
    obs: &[Observation],
    hits: &[Hit],
    cases: &[CaseInfo],
    cfg: &ScoringConfig,
) -> Vec<Exposure> {
    score(hits, obs, cases, cfg, &ScoreContext::default())
}

/// Weights 1 everywhere, so weighted minutes = minutes.
fn flat() -> ScoringConfig {
    ScoringConfig {
        attenuation_bucket_weights: [1.0; 4],
        ..ScoringConfig::default()
    }
}

fn approx(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn scan_instances_group_by_scan_period_with_mean_and_min() {
    let cfg = ScoringConfig::default(); // scan_period_s = 20
    let p = |t, a| Point {
        time: T0 + t,
        attenuation_db: a,
        id: 1,
    };
    // [0, 20): 40, 43, 50 → typical round(44.33) = 44, min 40. [20, 40): 41, 42 → 41.5 → 42
    // (half up, as Java's Math.round). [40, 60): nothing. 1000: alone.
    let pts = [
        p(0, 40),
        p(5, 43),
        p(19, 50),
        p(20, 42),
        p(39, 41),
        p(1000, 60),
    ];
    let s = scan_instances(&pts, &cfg);
    assert_eq!(s.len(), 3);
    assert_eq!((s[0].time, s[0].points.clone()), (T0, 0..3));
    assert_eq!(
        (s[0].typical_attenuation_db, s[0].min_attenuation_db),
        (44, 40)
    );
    assert_eq!(
        (s[1].typical_attenuation_db, s[1].min_attenuation_db),
        (42, 41)
    );
    // First: the 2-minute default; then time since the previous instance, capped at 5 minutes.
    assert_eq!(s[0].seconds_since_last_scan, 120);
    assert_eq!(s[1].seconds_since_last_scan, 20);
    assert_eq!(s[2].time, T0 + 1000);
    assert_eq!(s[2].seconds_since_last_scan, 300);
}

#[test]
fn seconds_since_last_scan_is_capped_at_five_minutes() {
    // Instances at 0, 60 and 1000 s: 120 (first) + 60 + min(300, 940) = 480 s = 8 minutes.
    let obs = [o(T0, 45), o(T0 + 60, 45), o(T0 + 1000, 45)];
    let e = run(&obs, &two_ids(3), &[confirmed()], &flat());
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].duration_s, 480);
    assert_eq!(e[0].seconds_by_bucket, [480, 0, 0, 0]);
    assert!(approx(e[0].weighted_minutes, 8.0));
    assert_eq!(e[0].windows, 1, "a gap does not split a window");
}

#[test]
fn windows_split_once_thirty_minutes_from_their_start() {
    // One sighting a minute for 45 minutes from 01:00.
    let start = T0 + 3600;
    let obs: Vec<_> = (0..45).map(|m| o(start + m * 60, 45)).collect();
    let e = run(&obs, &two_ids(obs.len()), &[confirmed()], &flat());
    assert_eq!(e.len(), 1);
    let w = &e[0].window_details;
    assert_eq!(w.len(), 2);
    assert_eq!(e[0].windows, 2);
    // Minute 30 is the first with t − start ≥ 30 min: window 1 has minutes 0..=29.
    assert_eq!((w[0].start, w[0].scan_instances), (start, 30));
    assert_eq!((w[1].start, w[1].scan_instances), (start + 1800, 15));
    assert_eq!(w[0].seconds_by_bucket[0], 120 + 29 * 60);
    assert_eq!(w[1].seconds_by_bucket[0], 15 * 60);
    assert_eq!(e[0].duration_s, 120 + 44 * 60);
    assert!(approx(e[0].weighted_minutes, 46.0));
    assert_eq!((e[0].first_seen, e[0].last_seen), (start, start + 44 * 60));
}

#[test]
fn four_buckets_by_typical_attenuation() {
    // Default thresholds 50 / 55 / 63; weights 1, 0.5, 0.25, 0.1 for this test.
    let cfg = ScoringConfig {
        attenuation_bucket_weights: [1.0, 0.5, 0.25, 0.1],
        ..ScoringConfig::default()
    };
    let cases: Vec<(i32, usize, f64)> = vec![
        (0, 0, 1.0),
        (50, 0, 1.0),
        (51, 1, 0.5),
        (55, 1, 0.5),
        (56, 2, 0.25),
        (63, 2, 0.25),
        (64, 3, 0.1),
        (90, 3, 0.1),
    ];
    for (att, bucket, weight) in cases {
        // Two instances 60 s apart: 120 + 60 = 180 s = 3 minutes in one bucket.
        let obs = [o(T0, att), o(T0 + 60, att)];
        let e = run(&obs, &two_ids(2), &[confirmed()], &cfg);
        let mut want = [0; 4];
        want[bucket] = 180;
        assert_eq!(e[0].seconds_by_bucket, want, "attenuation {att}");
        assert!(
            approx(e[0].weighted_minutes, 3.0 * weight),
            "attenuation {att}"
        );
    }
}

#[test]
fn bucket_follows_the_instances_mean_not_each_sighting() {
    // One instance of 48 and 54 dB: typical 51 → near (weight 0 by default), though one
    // sighting alone would be immediate.
    let obs = [o(T0, 48), o(T0 + 5, 54), o(T0 + 60, 54), o(T0 + 65, 48)];
    let e = run(&obs, &two_ids(4), &[confirmed()], &ScoringConfig::default());
    assert_eq!(e[0].seconds_by_bucket, [0, 180, 0, 0]);
    assert_eq!(e[0].weighted_minutes, 0.0);
    assert_eq!(e[0].min_attenuation_db, 48);
    assert_eq!(e[0].typical_attenuation_db, 51);
}

#[test]
fn infectiousness_and_report_type_weights_multiply() {
    let cfg = ScoringConfig {
        attenuation_bucket_weights: [1.0; 4],
        infectiousness_weights: bluezone_protocol::matching::score::InfectiousnessWeights {
            standard: 0.5,
            high: 1.5,
        },
        report_type_weights: bluezone_protocol::matching::score::ReportTypeWeights {
            confirmed_test: 1.0,
            confirmed_clinical_diagnosis: 0.8,
            self_report: 0.6,
            recursive: 0.0,
        },
        ..ScoringConfig::default()
    };
    // Each case: 10 minutes (120 + 8 × 60 s) → 10 base minutes.
    let obs: Vec<_> = (0..9).map(|m| o(T0 + m * 60, 45)).collect();
    let n = obs.len() as u32;
    let info = |report_type, days_since_onset| CaseInfo {
        report_type,
        days_since_onset,
    };
    let table = [
        // (case, expected weighted minutes, infectiousness, report type used)
        (
            info(ReportType::ConfirmedTest, Some(0)),
            15.0,
            Infectiousness::High,
            ScoredReportType::ConfirmedTest,
        ),
        (
            info(ReportType::ConfirmedClinical, Some(-4)),
            4.0,
            Infectiousness::Standard,
            ScoredReportType::ConfirmedClinicalDiagnosis,
        ),
        (
            info(ReportType::SelfReport, Some(2)),
            9.0,
            Infectiousness::High,
            ScoredReportType::SelfReport,
        ),
        // Not listed in the default mapping (−5..=10): infectiousness none.
        (
            info(ReportType::ConfirmedTest, Some(12)),
            0.0,
            Infectiousness::None,
            ScoredReportType::ConfirmedTest,
        ),
        // Missing onset: standard by default.
        (
            info(ReportType::ConfirmedTest, None),
            5.0,
            Infectiousness::Standard,
            ScoredReportType::ConfirmedTest,
        ),
        // RECURSIVE is off by default.
        (
            info(ReportType::Recursive, Some(0)),
            0.0,
            Infectiousness::High,
            ScoredReportType::Recursive,
        ),
        // Unknown report type: report_type_when_missing (confirmed test).
        (
            info(ReportType::Unknown, Some(0)),
            15.0,
            Infectiousness::High,
            ScoredReportType::ConfirmedTest,
        ),
    ];
    for (i, (case, want, inf, rt)) in table.iter().enumerate() {
        let hits = [hit(i as u32, 1, 0..4), hit(i as u32, 2, 4..n)];
        let mut cases = vec![confirmed(); table.len()];
        cases[i] = *case;
        let e = run(&obs, &hits, &cases, &cfg);
        assert_eq!(e.len(), 1, "{case:?}");
        assert!(
            approx(e[0].weighted_minutes, *want),
            "{case:?}: {}",
            e[0].weighted_minutes
        );
        assert_eq!((e[0].infectiousness, e[0].report_type), (*inf, *rt));
        assert_eq!(e[0].duration_s, 600, "weights never change the duration");
    }
}

#[test]
fn revoked_keys_never_score() {
    let obs: Vec<_> = (0..30).map(|m| o(T0 + m * 60, 40)).collect();
    let revoked = CaseInfo {
        report_type: ReportType::Revoked,
        days_since_onset: Some(0),
    };
    assert!(run(&obs, &two_ids(30), &[revoked], &ScoringConfig::default()).is_empty());
}

#[test]
fn a_window_belongs_to_the_day_it_started() {
    // Sightings each minute from 23:50 to 00:10: one window, counted on the first day.
    let midnight = T0 + DAY;
    let obs: Vec<_> = (-10..=10).map(|m| o(midnight + m * 60, 45)).collect();
    let e = run(&obs, &two_ids(obs.len()), &[confirmed()], &flat());
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].day, T0 / DAY);
    assert_eq!(
        (e[0].first_seen, e[0].last_seen),
        (midnight - 600, midnight + 600)
    );
    assert_eq!(e[0].duration_s, 120 + 20 * 60);
    // A window that starts after midnight makes a second day.
    let mut obs = obs;
    obs.push(o(midnight + 3600, 45));
    let e = run(&obs, &two_ids(obs.len()), &[confirmed()], &flat());
    assert_eq!(e.len(), 2);
    assert_eq!(e[1].day, T0 / DAY + 1);
    assert_eq!(e[1].duration_s, 300);
}

#[test]
fn replay_resistance() {
    let cfg = ScoringConfig::default();
    // One packet (or a burst inside one scan period): an exposure, no duration.
    let e = run(
        &[o(T0, 40), o(T0 + 3, 40)],
        &[hit(0, 1, 0..2)],
        &[confirmed()],
        &cfg,
    );
    assert_eq!(e[0].duration_s, 0);
    assert_eq!(e[0].sightings, 2);
    assert!(!e[0].notify);
    // 20 minutes under one identifier: the minutes count, but one ID never notifies.
    let obs: Vec<_> = (0..21).map(|m| o(T0 + m * 60, 40)).collect();
    let e = run(&obs, &[hit(0, 1, 0..21)], &[confirmed()], &cfg);
    assert!(e[0].weighted_minutes >= 15.0);
    assert_eq!(e[0].distinct_ids, 1);
    assert!(!e[0].notify);
    let e = run(&obs, &two_ids(21), &[confirmed()], &cfg);
    assert!(e[0].notify);
}

#[test]
fn minimum_window_score_drops_small_windows() {
    let cfg = ScoringConfig {
        minimum_window_score: 600.0, // 10 weighted minutes
        ..flat()
    };
    // Window 1: 120 + 14 × 60 = 960 s (counts); window 2, an hour later: 300 + 4 × 60 = 540 s.
    let mut obs: Vec<_> = (0..15).map(|m| o(T0 + m * 60, 45)).collect();
    obs.extend((0..5).map(|m| o(T0 + 3600 + m * 60, 45)));
    let e = run(&obs, &two_ids(obs.len()), &[confirmed()], &cfg);
    let w = &e[0].window_details;
    assert_eq!(w.len(), 2);
    assert!(w[0].counted && !w[1].counted);
    assert_eq!(e[0].duration_s, 960 + 540);
    assert!(approx(e[0].weighted_minutes, 16.0));
}

#[test]
fn attenuation_uses_calibrated_tx_and_receiver_correction() {
    let cfg = ScoringConfig::default();
    // GAEN metadata says tx −10; RSSI −60; this receiver reads 6 dB low (correction +6):
    // attenuation = −10 − (−60 + 6) = 44.
    let obs = [
        Observation {
            time: T0,
            rssi: -60,
            tx_power: None,
            aem: None,
        },
        Observation {
            time: T0 + 60,
            rssi: -60,
            tx_power: None,
            aem: None,
        },
    ];
    let hits = [Hit {
        case: 0,
        group: 1,
        obs: 0..2,
        tx_power: Some(-10),
    }];
    let ctx = ScoreContext {
        rssi_correction_db: 6,
        today: None,
    };
    let e = score(&hits, &obs, &[confirmed()], &cfg, &ctx);
    assert_eq!(e[0].min_attenuation_db, 44);
    // Bluezone (no tx): the assumed −25 dBm; never below 0.
    let e = score(&[hit(0, 1, 0..2)], &obs, &[confirmed()], &cfg, &ctx);
    assert_eq!(e[0].min_attenuation_db, 29);
    let loud = [Observation { rssi: 10, ..obs[0] }];
    let e = score(&[hit(0, 1, 0..1)], &loud, &[confirmed()], &cfg, &ctx);
    assert_eq!(e[0].min_attenuation_db, 0);
}

#[test]
fn days_since_exposure_threshold_stops_old_days_notifying() {
    let cfg = ScoringConfig {
        days_since_exposure_threshold: 3,
        ..ScoringConfig::default()
    };
    let obs: Vec<_> = (0..21).map(|m| o(T0 + m * 60, 40)).collect();
    let at = |today| ScoreContext {
        rssi_correction_db: 0,
        today: Some(T0 / DAY + today),
    };
    let e = score(&two_ids(21), &obs, &[confirmed()], &cfg, &at(3));
    assert!(e[0].notify);
    let e = score(&two_ids(21), &obs, &[confirmed()], &cfg, &at(4));
    assert!(!e[0].notify);
}

/// Mean attenuation of the simulator's path-loss model (40 dB at 1 m, exponent 2.7).
fn path_loss(d: f64) -> i32 {
    (40.0 + 27.0 * d.log10()).round() as i32
}

/// A contact at `d` metres for `minutes`, one sighting per 30 s (the daemon's `radio.dedup_s`),
/// the ID rotating every 15 minutes as Bluezone's does.
fn contact(d: f64, minutes: i64) -> Vec<Exposure> {
    let n = minutes * 2 + 1;
    let obs: Vec<_> = (0..n)
        .map(|i| o(T0 + 8 * 3600 + i * 30, path_loss(d)))
        .collect();
    let hits: Vec<Hit> = (0..n as u32)
        .map(|i| hit(0, 1 + i / 30, i..i + 1))
        .collect();
    let bluezone = CaseInfo::bluezone(&ScoringConfig::default());
    run(&obs, &hits, &[bluezone], &ScoringConfig::default())
}

#[test]
fn defaults_separate_two_metres_for_fifteen_minutes_from_three_metres_all_day() {
    assert_eq!((path_loss(2.0), path_loss(3.0)), (48, 53));
    let close = contact(2.0, 15);
    // 120 + 30 × 30 s = 17 weighted minutes.
    assert!(approx(close[0].weighted_minutes, 17.0));
    assert!(close[0].notify);
    // Fifteen hours (08:00 to 23:00) at 3 m: near, weight 0.
    let far = contact(3.0, 15 * 60);
    assert_eq!(far.len(), 1);
    assert_eq!(far[0].duration_s, 120 + 1800 * 30);
    assert_eq!(far[0].weighted_minutes, 0.0);
    assert!(!far[0].notify);
    // Under ten minutes within 2 m does not notify either.
    assert!(!contact(2.0, 9)[0].notify);
}

/// Germany's Corona-Warn-App exposure configuration, transcribed (provenance in the file).
const CWA: &str = include_str!("fixtures/cwa-scoring.toml");

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    scoring: ScoringConfig,
}

#[test]
fn corona_warn_app_configuration_loads() {
    let c: ConfigFile = toml::from_str(CWA).expect("fixture parses");
    let s = c.scoring;
    s.validate().unwrap();
    assert_eq!(s.attenuation_bucket_threshold_db, [30, 50, 70]);
    assert_eq!(s.attenuation_bucket_weights, [1.0; 4]);
    assert_eq!(s.days_since_exposure_threshold, 0);
    assert_eq!(s.minimum_window_score, 0.0);
    assert_eq!(
        (
            s.infectiousness_weights.standard,
            s.infectiousness_weights.high
        ),
        (1.0, 1.0)
    );
    assert_eq!(s.report_type_weights.recursive, 1.0);
    assert_eq!(
        s.days_since_onset_to_infectiousness.infectiousness(1),
        Infectiousness::Standard
    );
    assert_eq!(
        s.days_since_onset_to_infectiousness.infectiousness(2),
        Infectiousness::High
    );
    assert_eq!(
        s.days_since_onset_to_infectiousness.infectiousness(0),
        Infectiousness::None
    );
    assert_eq!(
        s.infectiousness_when_days_since_onset_missing,
        Infectiousness::None
    );
    assert_eq!(s.report_type_when_missing, ScoredReportType::ConfirmedTest);
    // Keys it does not set keep our defaults.
    assert_eq!(s.notify_weighted_minutes, 15.0);
    assert_eq!(s.bluezone_tx_power_dbm, -25);
}

#[test]
fn configuration_by_name_and_errors_naming_the_key() {
    let c: ConfigFile = toml::from_str(
        r#"[scoring]
report_type_weights = { self_report = 0.5 }
days_since_onset_to_infectiousness = { "-3" = "standard", 0 = "high" }
infectiousness_when_days_since_onset_missing = "none"
bluezone_report_type = "confirmed_clinical_diagnosis"
bluezone_days_since_onset = 0
"#,
    )
    .unwrap();
    let s = c.scoring;
    assert_eq!(s.report_type_weights.self_report, 0.5);
    assert_eq!(s.report_type_weights.confirmed_test, 1.0);
    assert_eq!(s.days_since_onset_to_infectiousness.0.len(), 2);
    assert_eq!(
        s.days_since_onset_to_infectiousness.infectiousness(-3),
        Infectiousness::Standard
    );
    let bz = CaseInfo::bluezone(&s);
    assert_eq!(bz.report_type, ReportType::ConfirmedClinical);
    assert_eq!(bz.days_since_onset, Some(0));

    for (toml, needle) in [
        (
            "days_since_onset_to_infectiousness = { 20 = 1 }",
            "-14 to 14",
        ),
        ("report_type_when_missing = 5", "report type"),
        ("infectiousness_weights = { medium = 1.0 }", "medium"),
        ("weights = [1.0, 0.5, 0.0]", "unknown field `weights`"),
        ("attenuation_bucket_weights = [1.0, 0.5, 0.0]", "length"),
    ] {
        let err = toml::from_str::<ConfigFile>(&format!("[scoring]\n{toml}\n"))
            .err()
            .unwrap_or_else(|| panic!("{toml} must not parse"))
            .to_string();
        assert!(err.contains(needle), "{toml}: {err}");
    }
    let bad = ScoringConfig {
        attenuation_bucket_threshold_db: [60, 50, 70],
        ..ScoringConfig::default()
    };
    assert!(matches!(
        bad.validate(),
        Err(ScoringConfigError::Thresholds(_))
    ));
    let bad = ScoringConfig {
        attenuation_bucket_weights: [1.0, -1.0, 0.0, 0.0],
        ..ScoringConfig::default()
    };
    let err = bad.validate().unwrap_err().to_string();
    assert!(
        err.starts_with("scoring.attenuation_bucket_weights"),
        "{err}"
    );
    assert!(ScoringConfig::default().validate().is_ok());
}

/// (seconds from T0, attenuation, identifier)
fn arb_sightings() -> impl Strategy<Value = Vec<(i64, i32, u32)>> {
    prop::collection::vec((0i64..2 * DAY, 0i32..100, 0u32..4), 0..60)
}

fn score_all(s: &[(i64, i32, u32)], cfg: &ScoringConfig) -> Vec<Exposure> {
    let obs: Vec<_> = s.iter().map(|&(t, a, _)| o(T0 + t, a)).collect();
    let hits: Vec<_> = s
        .iter()
        .enumerate()
        .map(|(i, &(_, _, id))| hit(0, id, i as u32..i as u32 + 1))
        .collect();
    run(&obs, &hits, &[confirmed()], cfg)
}

proptest! {
    #[test]
    fn scoring_is_total_and_consistent(s in arb_sightings()) {
        let cfg = ScoringConfig::default();
        let e = score_all(&s, &cfg);
        prop_assert_eq!(e.iter().map(|x| x.sightings).sum::<usize>(), s.len());
        for x in &e {
            prop_assert_eq!(x.duration_s, x.seconds_by_bucket.iter().sum::<i64>());
            prop_assert!(x.weighted_minutes >= 0.0 && x.weighted_minutes.is_finite());
            prop_assert!(x.first_seen <= x.last_seen);
            for w in &x.window_details {
                prop_assert_eq!(w.start.div_euclid(DAY), x.day);
                prop_assert!(w.start <= w.first_seen && w.first_seen <= w.last_seen);
                // Every instance starts less than 30 minutes after its window did.
                prop_assert!(w.last_seen - w.start < cfg.window_max_s + cfg.scan_period_s);
            }
        }
    }

    #[test]
    fn hearing_a_case_again_never_lowers_its_duration(
        s in arb_sightings(),
        extra in (0i64..2 * DAY, 0i32..100, 0u32..4),
    ) {
        let cfg = ScoringConfig::default();
        let total = |s: &[(i64, i32, u32)]| -> i64 { score_all(s, &cfg).iter().map(|x| x.duration_s).sum() };
        let mut more = s.clone();
        more.push(extra);
        prop_assert!(total(&more) >= total(&s));
    }

    #[test]
    fn at_one_attenuation_weighted_minutes_only_grow(
        s in arb_sightings(),
        extra in (0i64..2 * DAY, 0u32..4),
    ) {
        let cfg = ScoringConfig::default();
        let flat: Vec<_> = s.iter().map(|&(t, _, id)| (t, 45, id)).collect();
        let total = |s: &[(i64, i32, u32)]| -> f64 {
            score_all(s, &cfg).iter().map(|x| x.weighted_minutes).sum()
        };
        let mut more = flat.clone();
        more.push((extra.0, 45, extra.1));
        prop_assert!(total(&more) >= total(&flat) - 1e-9);
    }
}

#[test]
fn worked_example_of_docs_scoring_md() {
    let ten = T0 + 10 * 3600;
    let mut log = vec![
        (0, 45, 1),
        (8, 49, 1),
        (60, 46, 1),
        (120, 58, 1),
        (600, 44, 2),
    ];
    log.extend((11..=34).map(|m| (m * 60, 47, 2)));
    let obs: Vec<_> = log.iter().map(|&(t, a, _)| o(ten + t, a)).collect();
    let hits: Vec<_> = log
        .iter()
        .enumerate()
        .map(|(i, &(_, _, id))| hit(0, id, i as u32..i as u32 + 1))
        .collect();
    let cfg = ScoringConfig::default();
    let e = run(&obs, &hits, &[CaseInfo::bluezone(&cfg)], &cfg);
    assert_eq!(e.len(), 1);
    let e = &e[0];
    let w = &e.window_details;
    assert_eq!((w.len(), w[0].start, w[1].start), (2, ten, ten + 1800));
    assert_eq!(w[0].seconds_by_bucket, [1620, 0, 60, 0]);
    assert_eq!((w[0].score, w[1].score), (1620.0, 300.0));
    assert_eq!(e.duration_s, 1980);
    assert_eq!(e.seconds_by_bucket, [1920, 0, 60, 0]);
    assert!(approx(e.weighted_minutes, 32.0));
    assert_eq!((e.distinct_ids, e.min_attenuation_db), (2, 44));
    assert_eq!((e.first_seen, e.last_seen), (ten, ten + 34 * 60));
    assert_eq!(e.infectiousness, Infectiousness::Standard);
    assert!(e.notify);
}
