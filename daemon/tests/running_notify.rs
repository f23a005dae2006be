//! Issue 10 §1 in a running daemon: a contact that is still going on when the case list arrives is
//! first stored below the threshold (no notification), then crosses it as the daemon keeps
//! logging, and the hook runs exactly once, with the exposure's stable id.
//!
//! The whole service (simulated radio, advertiser, logger, matching, notification task) runs on
//! tokio's paused clock, so an hour of contact takes seconds. The hook is a real `sh` process:
//! while the test waits for it, it waits on tokio's blocking pool, which holds the virtual clock
//! still (tokio does not auto-advance while a blocking task runs), so the hook's real run time is
//! never measured in virtual time. Deadlines are generous and only a failing run reaches them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bluezone_protocol::bluezone::f0::write_f0;
use bluezone_protocol::bluezone::{F0Entry, F0List, SlotsPerDay};
use bluezone_protocol::time::utc_day;
use bluezoned::clock::{SharedClock, VirtualClock};
use bluezoned::config::{Config, Protocol};
use bluezoned::ingest::{self, Ingest};
use bluezoned::radio::sim::phones::{add_phone, phone_daily_key};
use bluezoned::radio::sim::{DeviceModel, DeviceSpec, Medium, MediumConfig, Mobility, ScanConfig};
use bluezoned::service::{self, Shared};
use bluezoned::store::{DeliveryState, Store, StoredExposure};
use tokio_util::sync::CancellationToken;

/// Monday 2026-11-23 09:00 UTC: on a 15-minute slot edge, so the first 7 minutes of contact
/// carry a single Bluezone ID.
const T0: i64 = 20_780 * 86_400 + 9 * 3600;
/// The case's phone: its Bluezone daily keys derive from this seed.
const CASE_SEED: u64 = 4242;
/// Real time a failing run waits for the hook before giving up.
const REAL_PATIENCE: Duration = Duration::from_secs(60);

/// The hook's output: one line per event (its JSON on stdin, then a newline).
fn hook_lines(out: &Path) -> Vec<serde_json::Value> {
    match std::fs::read_to_string(out) {
        Ok(text) => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect(),
        Err(_) => Vec::new(),
    }
}

async fn bluezone_exposures(shared: &Arc<Shared>) -> Vec<StoredExposure> {
    shared
        .with_store(|s| s.exposures())
        .await
        .expect("store task")
        .expect("reading exposures")
        .exposures
        .into_iter()
        .filter(|e| e.record.protocol == "bluezone")
        .collect()
}

/// Waits in real time without letting the virtual clock run (a blocking task inhibits tokio's
/// auto-advance), so that a hook process can finish.
async fn real_pause() {
    tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(20)))
        .await
        .expect("sleeper");
}

#[tokio::test(start_paused = true)]
async fn a_contact_crossing_the_threshold_in_a_running_daemon_notifies_exactly_once() {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let out: PathBuf = tmp.path().join("hook.out");
    let clock: SharedClock = Arc::new(VirtualClock::new(T0));
    let medium = Medium::new(
        MediumConfig {
            seed: 7,
            ..MediumConfig::default()
        },
        clock.clone(),
    );
    let me = medium.add_device(DeviceSpec::new(
        "this device",
        DeviceModel::Bluezoned {
            bluezone: true,
            gaen: false,
        },
        Mobility::Fixed {
            x: 0.0,
            y: 0.0,
            room: 0,
        },
    ));
    // The case sits 1 m away for the whole test.
    add_phone(
        &medium,
        "the case (Bluezone Android)",
        DeviceModel::BluezoneAndroid,
        CASE_SEED,
        Mobility::Fixed {
            x: 1.0,
            y: 0.0,
            room: 0,
        },
    );

    let mut config = Config::default();
    config.radio.protocols = vec![Protocol::Bluezone];
    config.hook.command = Some(format!(
        "cat >> '{}' && echo >> '{}'",
        out.display(),
        out.display()
    ));
    // Virtual seconds: far beyond anything the test lets pass while the hook runs.
    config.hook.timeout_s = 86_400;
    let threshold = config.scoring.notify_weighted_minutes;
    let (store, _) = Store::init(&tmp.path().join("data")).expect("store");
    let shared = Shared::new(store, config.clone(), clock.clone());
    let radio = me
        .radio(
            clock.clone(),
            ScanConfig {
                interval: Duration::from_millis(config.radio.scan_interval_ms),
                window: Duration::from_millis(config.radio.scan_window_ms),
                ..ScanConfig::default()
            },
        )
        .expect("simulated radio");
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(service::run(
        shared.clone(),
        Box::new(radio),
        shutdown.clone(),
    ));

    // 7 minutes of contact, then the case list arrives (as `cases import` writes it: straight
    // into the store, which the daemon polls).
    tokio::time::sleep(Duration::from_secs(7 * 60)).await;
    let day = utc_day(T0);
    let list = F0List {
        entries: vec![F0Entry {
            daily_key: phone_daily_key(CASE_SEED, day),
            time_start: day * 86_400,
            time_end: day * 86_400 + 86_399,
            max: SlotsPerDay::DEFAULT,
        }],
    };
    let accepted = Ingest::new(Vec::new(), config.cases.max_bytes)
        .accept(write_f0(&list).into_bytes(), None)
        .expect("a valid F0 list");
    // Through a second connection, as the `cases import` process would: the daemon learns of it
    // by polling the store (`PRAGMA data_version`), not from a wake-up inside this process.
    // Inline on the runtime's thread, so virtual time stands still meanwhile.
    let mut importer = Store::open(&tmp.path().join("data")).expect("a second connection");
    ingest::store(&mut importer, &accepted, day).expect("storing the case list");
    drop(importer);

    // The daemon matches it within its poll: a short contact, stored as not notifying.
    let mut first = None;
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some(e) = bluezone_exposures(&shared).await.pop() {
            first = Some(e);
            break;
        }
    }
    let first = first.expect("the running daemon matched the imported list within 2 minutes");
    assert!(!first.record.notify, "{first:?}");
    assert!(first.record.weighted_minutes < threshold, "{first:?}");
    assert_eq!(first.delivery.state, DeliveryState::NotNotifying);
    assert!(hook_lines(&out).is_empty(), "nothing to tell yet");

    // The contact goes on; the daemon re-matches what it logs and the exposure crosses the
    // threshold: pending, then delivered once the hook has run.
    let mut crossed = None;
    while clock.now() < T0 + 3 * 3600 {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let now = bluezone_exposures(&shared).await;
        assert_eq!(now.len(), 1, "one exposure, updated in place: {now:?}");
        if now[0].record.notify {
            crossed = Some(now[0].clone());
            break;
        }
    }
    let crossed = crossed.expect("the contact crossed the threshold within 3 hours");
    assert_eq!(crossed.id, first.id, "the same exposure, with the same id");
    assert!(crossed.record.weighted_minutes >= threshold, "{crossed:?}");

    let deadline = Instant::now() + REAL_PATIENCE;
    while hook_lines(&out).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the hook did not run within {REAL_PATIENCE:?}"
        );
        real_pause().await;
    }
    let deadline = Instant::now() + REAL_PATIENCE;
    loop {
        let e = bluezone_exposures(&shared).await;
        if e[0].delivery.state == DeliveryState::Delivered {
            break;
        }
        assert!(Instant::now() < deadline, "not marked delivered: {e:?}");
        real_pause().await;
    }

    // An hour more of contact: more re-matches, a larger exposure, and no second run.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let last = bluezone_exposures(&shared).await;
    assert_eq!(last.len(), 1, "{last:?}");
    assert_eq!(last[0].id, first.id);
    assert_eq!(last[0].delivery.state, DeliveryState::Delivered);
    assert!(
        last[0].record.duration_s > crossed.record.duration_s,
        "the contact went on being logged and matched: {last:?} vs {crossed:?}"
    );
    shutdown.cancel();
    daemon
        .await
        .expect("daemon task")
        .expect("the daemon stopped cleanly");
    let lines = hook_lines(&out);
    assert_eq!(lines.len(), 1, "the hook ran exactly once: {lines:?}");
    assert_eq!(lines[0]["id"], first.id.as_str(), "{}", lines[0]);
    assert_eq!(lines[0]["event"], "exposure", "{}", lines[0]);
    assert_eq!(lines[0]["notify"], true, "{}", lines[0]);
    assert_eq!(lines[0]["protocol"], "bluezone", "{}", lines[0]);
}
