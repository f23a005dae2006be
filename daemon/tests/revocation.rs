//! GAEN revocations from the command line (issue: exposure decisions §4; security M4): a key
//! confirmed in one publication and revoked in a later one produces no exposure, and an exposure
//! already stored for it is withdrawn; both import orders end the same. Also what `check`
//! decides and reports: `scoring.days_since_exposure_threshold` on the day of the run, and the
//! stored exposure's `id` and `state` in `check --json`.

use std::path::Path;

use bluezone_protocol::gaen::export::{
    write_export, ExportFile, ExportKey, ExportSigner, ReportType,
};
use bluezone_protocol::gaen::{self, Enin, Metadata};
use bluezone_protocol::Tek;
use bluezoned::store::{DeliveryState, Store, StoredExposure};
use serde_json::Value;

const DAY0: i64 = 1_596_844_800; // 2020-08-08 00:00 UTC

mod support;
use support::{signer as export_signer, Cli};

fn signer() -> ExportSigner {
    export_signer("310", "v1", 3)
}

fn tek() -> Tek {
    Tek::from_bytes([0x5a; 16])
}

/// An export publishing the key with `report_type`, in `keys` or in `revised_keys`.
fn export(end: u64, report_type: ReportType, revised: bool) -> Vec<u8> {
    let key = ExportKey {
        report_type,
        ..ExportKey::new(tek(), (DAY0 / 600) as u32)
    };
    let (keys, revised_keys) = if revised {
        (vec![], vec![key])
    } else {
        (vec![key], vec![])
    };
    let file = ExportFile {
        start_timestamp: end - 86_400,
        end_timestamp: end,
        region: "VN".into(),
        batch_num: 1,
        batch_size: 1,
        keys,
        revised_keys,
        ..ExportFile::default()
    };
    write_export(&file, &signer()).unwrap()
}

/// A store that heard the key's RPIs for 25 minutes, 1 m away, over three intervals.
fn store_with_contact(dir: &Path, tmp: &Path) {
    Cli::at(dir).init();
    let sched = gaen::key_schedule(&tek(), Enin((DAY0 / 600) as u32), 144, Metadata::v1_0(-20));
    let mut log = String::new();
    for m in 0..25i64 {
        let (enin, rpi, _aem) = sched[60 + (m / 10) as usize];
        log += &format!("{rpi} -60 {}\n", enin.to_unix() + (m % 10) * 60);
    }
    let f = tmp.join("log.tsv");
    std::fs::write(&f, log).unwrap();
    Cli::at(dir).ok(&["log", "import", "--format", "tsv", f.to_str().unwrap()]);
}

fn import(dir: &Path, tmp: &Path, name: &str, bytes: Vec<u8>) {
    let f = tmp.join(name);
    std::fs::write(&f, bytes).unwrap();
    let pem = tmp.join("trust.pem");
    std::fs::write(&pem, signer().public_key_pem().unwrap()).unwrap();
    Cli::at(dir).ok(&[
        "cases",
        "import",
        f.to_str().unwrap(),
        "--trust",
        pem.to_str().unwrap(),
    ]);
}

/// The exposures as stored (rows of every state, withdrawn ones included).
fn stored(dir: &Path) -> Vec<StoredExposure> {
    Store::open(dir).unwrap().exposures().unwrap().exposures
}

fn check(dir: &Path) -> Value {
    Cli::at(dir).json(&["check", "--json"])
}

#[test]
fn confirmed_then_revoked_withdraws_the_exposure() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("d");
    store_with_contact(&dir, t.path());
    import(
        &dir,
        t.path(),
        "a.zip",
        export(DAY0 as u64 + 86_400, ReportType::ConfirmedTest, false),
    );
    let first = check(&dir);
    let e = &first["exposures"][0];
    assert_eq!(e["protocol"], "gaen");
    assert_eq!(e["notify"], true, "{first}");
    let id = e["id"].as_str().expect("an id").to_string();

    import(
        &dir,
        t.path(),
        "b.zip",
        export(DAY0 as u64 + 2 * 86_400, ReportType::Revoked, true),
    );
    let second = check(&dir);
    assert_eq!(second["exposures"].as_array().unwrap().len(), 0, "{second}");
    assert_eq!(second["withdrawn"], 1, "{second}");
    // The stored row is kept, withdrawn with its reason, and no longer notifies.
    let withdrawn = stored(&dir);
    assert_eq!(withdrawn.len(), 1, "{withdrawn:?}");
    assert_eq!(withdrawn[0].id.as_str(), id, "the same row");
    assert_eq!(withdrawn[0].delivery.state, DeliveryState::Withdrawn);
    assert_eq!(
        withdrawn[0].delivery.withdrawn_reason.as_deref(),
        Some("the key was revoked (report type REVOKED)")
    );
    assert!(!withdrawn[0].notifies());
    let reported = serde_json::to_value(&withdrawn[0]).unwrap();
    assert_eq!(reported["state"], "withdrawn", "{reported}");
    assert_eq!(reported["notify"], false, "{reported}");
    // Withdrawn once: a later run has nothing left to withdraw, and nothing comes back.
    let third = check(&dir);
    assert_eq!(third["withdrawn"], 0);
    assert_eq!(third["exposures"].as_array().unwrap().len(), 0);
    let after = stored(&dir);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].delivery.state, DeliveryState::Withdrawn);
    assert_eq!(
        after[0].delivery.withdrawn_reason,
        withdrawn[0].delivery.withdrawn_reason
    );
}

#[test]
fn revoked_then_older_confirmed_ends_the_same() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("d");
    store_with_contact(&dir, t.path());
    import(
        &dir,
        t.path(),
        "b.zip",
        export(DAY0 as u64 + 2 * 86_400, ReportType::Revoked, true),
    );
    assert_eq!(check(&dir)["exposures"].as_array().unwrap().len(), 0);
    import(
        &dir,
        t.path(),
        "a.zip",
        export(DAY0 as u64 + 86_400, ReportType::ConfirmedTest, false),
    );
    let r = check(&dir);
    assert_eq!(r["exposures"].as_array().unwrap().len(), 0, "{r}");
    // The key was revoked before it ever matched: no row was stored, so none to withdraw.
    assert_eq!(r["withdrawn"], 0, "{r}");
    assert!(stored(&dir).is_empty());
}

/// `check --json` reports each exposure as stored, in the shape of `GET /v1/exposures` and the
/// hook: the record plus a stable `id`, `state` and `withdrawn_reason`.
#[test]
fn check_json_reports_the_stored_id_and_state() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("d");
    store_with_contact(&dir, t.path());
    import(
        &dir,
        t.path(),
        "a.zip",
        export(DAY0 as u64 + 86_400, ReportType::ConfirmedTest, false),
    );
    let first = check(&dir);
    let e = &first["exposures"][0];
    let id = e["id"].as_str().expect("an id").to_string();
    assert_eq!(id.len(), 64, "{first}");
    assert_eq!(e["state"], "pending", "{first}");
    assert_eq!(e["withdrawn_reason"], Value::Null, "{first}");
    assert_eq!(e["notify"], true, "{first}");
    // Exactly what the store reports (the API and the hook serialize the same value).
    let stored = bluezoned::store::Store::open(&dir)
        .unwrap()
        .exposures()
        .unwrap();
    assert_eq!(stored.exposures.len(), 1);
    assert_eq!(serde_json::to_value(&stored.exposures[0]).unwrap(), *e);
    // The same id on the next run.
    assert_eq!(check(&dir)["exposures"][0]["id"], id.as_str());
}

/// `scoring.days_since_exposure_threshold` (GAEN `DailySummariesConfig`) is applied on the day
/// `check` runs (the system clock; the contact was in 2020): an exposure older than the
/// threshold is reported but does not notify.
#[test]
fn exposures_older_than_the_threshold_do_not_notify() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("d");
    store_with_contact(&dir, t.path());
    import(
        &dir,
        t.path(),
        "a.zip",
        export(DAY0 as u64 + 86_400, ReportType::ConfirmedTest, false),
    );
    let toml = dir.join("bluezoned.toml");
    std::fs::write(&toml, "[scoring]\ndays_since_exposure_threshold = 14\n").unwrap();
    let old = check(&dir);
    let e = &old["exposures"][0];
    assert_eq!(e["day"], DAY0 / 86_400, "{old}");
    assert!(e["weighted_minutes"].as_f64().unwrap() >= 15.0, "{old}");
    assert_eq!(e["notify"], false, "{old}");
    assert_eq!(e["state"], "not_notifying", "{old}");
    // Without the threshold (0: no limit) the same contact notifies.
    std::fs::remove_file(&toml).unwrap();
    let r = check(&dir);
    assert_eq!(r["exposures"][0]["notify"], true, "{r}");
    assert_eq!(r["exposures"][0]["state"], "pending", "{r}");
}
