//! Key revisions across publications (issue 10 §4, security review M4).

use bluezone_protocol::gaen::export::{ExportFile, ExportKey, ReportType};
use bluezone_protocol::gaen::revision::{revise, Publication, PublishedKey, Revised};
use bluezone_protocol::Tek;

fn key(
    b: u8,
    report_type: ReportType,
    end_timestamp: u64,
    import_order: u64,
    revised: bool,
) -> PublishedKey {
    PublishedKey {
        tek: Tek::from_bytes([b; 16]),
        rolling_start: 2_650_000,
        rolling_period: 144,
        report_type,
        days_since_onset: Some(0),
        publication: Publication {
            end_timestamp,
            import_order,
            revised,
        },
    }
}

fn teks(v: &[PublishedKey]) -> Vec<(u8, ReportType)> {
    v.iter()
        .map(|k| (k.tek.as_bytes()[0], k.report_type))
        .collect()
}

#[test]
fn confirmed_then_revoked_and_revoked_then_older_confirmed_end_the_same() {
    let confirmed = key(1, ReportType::ConfirmedTest, 100, 0, false);
    let revoked = key(1, ReportType::Revoked, 200, 1, true);
    let a = revise([confirmed.clone(), revoked.clone()]);
    // The other import order: the revoking export arrives first, the older confirmed one after.
    let confirmed_later = key(1, ReportType::ConfirmedTest, 100, 1, false);
    let revoked_first = key(1, ReportType::Revoked, 200, 0, true);
    let b = revise([revoked_first, confirmed_later]);
    assert!(a.keys.is_empty() && b.keys.is_empty());
    assert_eq!(teks(&a.revoked), vec![(1, ReportType::Revoked)]);
    assert_eq!(teks(&a.revoked), teks(&b.revoked));
    // The result does not depend on the order the input is given in either.
    assert_eq!(revise([revoked, confirmed]), a);
}

#[test]
fn revoked_is_final_even_against_a_later_publication() {
    let r = revise([
        key(1, ReportType::Revoked, 100, 0, false),
        key(1, ReportType::ConfirmedTest, 300, 1, false),
    ]);
    assert!(r.keys.is_empty());
    assert_eq!(teks(&r.revoked), vec![(1, ReportType::Revoked)]);
}

#[test]
fn the_latest_publication_wins_by_end_timestamp_then_import_order() {
    // Self-report later confirmed by a test: the confirmation wins in either import order.
    for (first, second) in [(0, 1), (1, 0)] {
        let r = revise([
            key(1, ReportType::SelfReport, 100, first, false),
            key(1, ReportType::ConfirmedTest, 200, second, true),
        ]);
        assert_eq!(teks(&r.keys), vec![(1, ReportType::ConfirmedTest)]);
        assert!(r.revoked.is_empty());
    }
    // Same end_timestamp: the later import wins.
    let r = revise([
        key(2, ReportType::ConfirmedClinical, 100, 5, false),
        key(2, ReportType::SelfReport, 100, 4, false),
    ]);
    assert_eq!(teks(&r.keys), vec![(2, ReportType::ConfirmedClinical)]);
    // Within one export, revised_keys revise keys.
    let r = revise([
        key(3, ReportType::ConfirmedTest, 100, 0, true),
        key(3, ReportType::SelfReport, 100, 0, false),
    ]);
    assert_eq!(teks(&r.keys), vec![(3, ReportType::ConfirmedTest)]);
}

#[test]
fn keys_are_identified_by_tek_and_rolling_start() {
    let mut other_day = key(1, ReportType::Revoked, 200, 1, true);
    other_day.rolling_start += 144;
    let r = revise([
        key(1, ReportType::ConfirmedTest, 100, 0, false),
        other_day,
        key(2, ReportType::ConfirmedTest, 100, 0, false),
    ]);
    assert_eq!(
        teks(&r.keys),
        vec![
            (1, ReportType::ConfirmedTest),
            (2, ReportType::ConfirmedTest)
        ]
    );
    assert_eq!(r.revoked.len(), 1);
    assert_eq!(r.revoked[0].rolling_start, 2_650_144);
}

#[test]
fn export_files_feed_revise_directly() {
    let k = |b, report_type| ExportKey {
        report_type,
        days_since_onset: Some(-1),
        ..ExportKey::new(Tek::from_bytes([b; 16]), 2_650_000)
    };
    let older = ExportFile {
        end_timestamp: 100,
        keys: vec![
            k(1, ReportType::ConfirmedTest),
            k(2, ReportType::ConfirmedTest),
        ],
        ..ExportFile::default()
    };
    let newer = ExportFile {
        end_timestamp: 200,
        keys: vec![k(3, ReportType::Revoked)],
        revised_keys: vec![k(1, ReportType::Revoked)],
        ..ExportFile::default()
    };
    let published: Vec<_> = [&newer, &older]
        .iter()
        .enumerate()
        .flat_map(|(i, f)| PublishedKey::all_of(f, i as u64))
        .collect();
    let Revised { keys, revoked } = revise(published);
    assert_eq!(teks(&keys), vec![(2, ReportType::ConfirmedTest)]);
    assert_eq!(keys[0].days_since_onset, Some(-1));
    assert_eq!(keys[0].publication.end_timestamp, 100);
    assert_eq!(
        teks(&revoked),
        vec![(1, ReportType::Revoked), (3, ReportType::Revoked)]
    );
}
