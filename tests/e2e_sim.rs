//! End-to-end tests of the daemon on the simulated radio, in virtual time: the service loop,
//! store, matcher and scoring together, as `bluezoned run` composes them.

use std::sync::Arc;
use std::time::Duration;

use bluezone_protocol::adv::encode_bluezone_android;
use bluezone_protocol::bluezone::f0::write_f0;
use bluezone_protocol::bluezone::SlotsPerDay;
use bluezone_protocol::gaen::export::ExportSigner;
use bluezone_protocol::gaen::{self, Enin, Rpik};
use bluezone_protocol::time::utc_day;
use bluezone_protocol::{PeerId, RollingId};
use bluezoned::caselist::{self, Limits};
use bluezoned::check::{run_check, CheckReport};
use bluezoned::clock::{SharedClock, VirtualClock};
use bluezoned::config::Config;
use bluezoned::keyexport;
use bluezoned::radio::sim::{
    DeviceHandle, DeviceModel, DeviceSpec, Medium, MediumConfig, Mobility, ScanConfig,
};
use bluezoned::service::{self, Shared};
use bluezoned::store::Store;
use tokio_util::sync::CancellationToken;

/// Tuesday 2026-11-24 09:00 UTC.
const START: i64 = 1_795_507_200 + 9 * 3600;

struct Device {
    handle: DeviceHandle,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

fn config() -> Config {
    let mut c = Config::default();
    c.store.flush_interval_ms = 10_000;
    c
}

fn start_device(
    medium: &Medium,
    name: &str,
    mobility: Mobility,
    clock: SharedClock,
    cfg: Config,
) -> Device {
    let dir = tempfile::tempdir().unwrap();
    let handle = medium.add_device(DeviceSpec::new(
        name,
        DeviceModel::Bluezoned {
            bluezone: true,
            gaen: true,
        },
        mobility,
    ));
    let (store, _) = Store::init(dir.path()).unwrap();
    run_device(handle, store, clock, cfg, dir)
}

fn run_device(
    handle: DeviceHandle,
    store: Store,
    clock: SharedClock,
    cfg: Config,
    dir: tempfile::TempDir,
) -> Device {
    let scan = ScanConfig {
        interval: Duration::from_millis(cfg.radio.scan_interval_ms),
        window: Duration::from_millis(cfg.radio.scan_window_ms),
        ..ScanConfig::default()
    };
    let radio = handle.radio(clock.clone(), scan).unwrap();
    let shared = Shared::new(store, cfg, clock);
    let stop = CancellationToken::new();
    let task = tokio::spawn(service::run(shared.clone(), Box::new(radio), stop.clone()));
    Device {
        handle,
        shared,
        task,
        stop,
        _dir: dir,
    }
}

async fn stop(d: &Device) {
    d.stop.cancel();
}

async fn join(d: Device) -> (DeviceHandle, Arc<Shared>, tempfile::TempDir) {
    d.stop.cancel();
    d.task.await.unwrap().unwrap();
    (d.handle, d.shared, d._dir)
}

fn at(x: f64, y: f64, room: u32) -> Mobility {
    Mobility::Fixed { x, y, room }
}

fn medium(seed: u64) -> (Medium, SharedClock) {
    let clock: SharedClock = Arc::new(VirtualClock::new(START));
    (
        Medium::new(
            MediumConfig {
                seed,
                ..MediumConfig::default()
            },
            clock.clone(),
        ),
        clock,
    )
}

/// `positive` tests positive: its keys are exported (F0 + signed GAEN zip), published, imported
/// by `other` and matched.
fn publish_and_check(positive: &Shared, other: &Shared, today: i64) -> CheckReport {
    let authority = ExportSigner::new(
        "test",
        "v1",
        p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng),
    );
    let own = positive
        .lock_store()
        .own_keys_in_days(today - 13..=today)
        .unwrap();
    assert!(!own.is_empty());
    let f0 = write_f0(&keyexport::f0_list(&own)).into_bytes();
    let zip = keyexport::gaen_zip(&own, Some(&authority), "VN").unwrap();
    let mut store = other.lock_store();
    for bytes in [&f0, &zip] {
        let list = caselist::parse(bytes, &[authority.trusted_key()], &Limits::default()).unwrap();
        store
            .insert_case_list(today, list.format(), list.entries() as u64, bytes)
            .unwrap();
    }
    run_check(&mut store, &config(), today).unwrap()
}

fn notified(r: &CheckReport) -> bool {
    r.exposures.iter().any(|e| e.notifies())
}

#[tokio::test(start_paused = true)]
async fn side_by_side_for_an_hour_log_each_other_every_slot() {
    let (medium, clock) = medium(1);
    let a = start_device(&medium, "a", at(0.0, 0.0, 0), clock.clone(), config());
    let b = start_device(&medium, "b", at(1.0, 0.0, 0), clock.clone(), config());
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let (_, sa, _da) = join(a).await;
    let (_, sb, _db) = join(b).await;
    let day = utc_day(START);
    for (me, other) in [(&sa, &sb), (&sb, &sa)] {
        let (daily_key, tek) = other
            .lock_store()
            .own_keys_for_day(day, &mut rand::rngs::OsRng)
            .unwrap();
        let logged = me
            .lock_store()
            .sightings_in_days(day, day)
            .unwrap()
            .sightings;
        // Every 15-minute Bluezone slot of the hour and every 10-minute GAEN interval.
        for slot in 0..4 {
            let t = START + slot * 900;
            let id = daily_key.id(SlotsPerDay::DEFAULT.slot(t));
            let n = logged
                .iter()
                .filter(|s| s.peer == PeerId::Bluezone(id) && s.time >= t && s.time < t + 900)
                .count();
            assert!(n >= 10, "slot {slot}: {n} sightings of the peer's ID");
        }
        let rpik = Rpik::derive(&tek);
        for k in 0..6 {
            let t = START + k * 600;
            let rpi = gaen::rpi(&rpik, Enin::from_unix(t));
            assert!(
                logged
                    .iter()
                    .any(|s| s.peer == PeerId::Gaen(rpi) && s.time >= t && s.time < t + 600),
                "interval {k}"
            );
        }
        // De-duplication: at most one sighting per peer ID per 30 s.
        assert!(
            logged.len() <= 2 * 3600 / 30 + 4,
            "{} sightings",
            logged.len()
        );
    }
    let report = publish_and_check(&sa, &sb, day);
    assert!(notified(&report), "{report:?}");
    assert!(report
        .exposures
        .iter()
        .any(|e| e.record.protocol == "bluezone" && e.notifies()));
    assert!(report
        .exposures
        .iter()
        .any(|e| e.record.protocol == "gaen" && e.notifies()));
}

#[tokio::test(start_paused = true)]
async fn a_device_30_m_away_is_never_notified() {
    let (medium, clock) = medium(2);
    let a = start_device(&medium, "a", at(0.0, 0.0, 0), clock.clone(), config());
    let far = start_device(&medium, "far", at(30.0, 0.0, 0), clock.clone(), config());
    tokio::time::sleep(Duration::from_secs(4 * 3600)).await;
    let (_, sa, _da) = join(a).await;
    let (_, sf, _df) = join(far).await;
    let report = publish_and_check(&sa, &sf, utc_day(START));
    assert!(!notified(&report), "{:?}", report.exposures);
}

#[tokio::test(start_paused = true)]
async fn a_replayed_f0_packet_never_notifies() {
    let (medium, clock) = medium(3);
    // The positive person passes by once; an attacker records one advert and replays it next to
    // the victim for hours.
    let positive = start_device(
        &medium,
        "positive",
        at(500.0, 0.0, 9),
        clock.clone(),
        config(),
    );
    let victim = start_device(&medium, "victim", at(0.0, 0.0, 0), clock.clone(), config());
    tokio::time::sleep(Duration::from_secs(60)).await;
    let day = utc_day(START);
    let (key, _) = positive
        .shared
        .lock_store()
        .own_keys_for_day(day, &mut rand::rngs::OsRng)
        .unwrap();
    let captured: RollingId = key.id(SlotsPerDay::DEFAULT.slot(START));
    medium.add_device(DeviceSpec::new(
        "attacker",
        DeviceModel::Replayer {
            packet: encode_bluezone_android(&captured),
        },
        at(0.5, 0.0, 0),
    ));
    tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
    let (_, sp, _dp) = join(positive).await;
    let (_, sv, _dv) = join(victim).await;
    let report = publish_and_check(&sp, &sv, day);
    let e: Vec<_> = report
        .exposures
        .iter()
        .map(|e| &e.record)
        .filter(|e| e.protocol == "bluezone")
        .collect();
    assert_eq!(
        e.len(),
        1,
        "the replayed ID matches inside its slot: {:?}",
        report.exposures
    );
    assert_eq!(e[0].distinct_ids, 1);
    assert!(!notified(&report), "{:?}", report.exposures);
}

#[tokio::test(start_paused = true)]
async fn sixty_seconds_of_clock_skew_still_matches() {
    let (medium, clock) = medium(4);
    let a = start_device(&medium, "a", at(0.0, 0.0, 0), clock.clone(), config());
    let vc = VirtualClock::new(START);
    let fast: SharedClock = Arc::new(vc.skewed(60));
    let slow: SharedClock = Arc::new(vc.skewed(-60));
    let b = start_device(&medium, "b (+60 s)", at(1.0, 0.0, 0), fast, config());
    let c = start_device(&medium, "c (-60 s)", at(0.0, 1.0, 0), slow, config());
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let (_, sa, _da) = join(a).await;
    let (_, sb, _db) = join(b).await;
    let (_, sc, _dc) = join(c).await;
    for s in [&sb, &sc] {
        let report = publish_and_check(&sa, s, utc_day(START));
        let bz = report
            .exposures
            .iter()
            .map(|e| &e.record)
            .find(|e| e.protocol == "bluezone")
            .expect("bluezone exposure");
        assert!(bz.notify, "{bz:?}");
        // Nearly every sighting matched, not only those away from slot edges.
        let day = utc_day(START);
        let (key_a, _) = sa
            .lock_store()
            .own_keys_for_day(day, &mut rand::rngs::OsRng)
            .unwrap();
        let ids_a: Vec<PeerId> = key_a.ids().take(96).map(PeerId::Bluezone).collect();
        let logged = s
            .lock_store()
            .sightings_in_days(day, day)
            .unwrap()
            .sightings;
        let of_a = logged.iter().filter(|x| ids_a.contains(&x.peer)).count();
        assert!(of_a > 100, "{of_a} sightings of a");
        assert!(
            bz.sightings * 10 >= of_a * 9,
            "{} of {} Bluezone sightings matched",
            bz.sightings,
            of_a
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_restart_mid_day_keeps_the_same_ids() {
    let (medium, clock) = medium(5);
    let observer = start_device(
        &medium,
        "observer",
        at(1.0, 0.0, 0),
        clock.clone(),
        config(),
    );
    let a = start_device(&medium, "a", at(0.0, 0.0, 0), clock.clone(), config());
    tokio::time::sleep(Duration::from_secs(1800)).await;
    let day = utc_day(START);
    let (key_before, tek_before) = a
        .shared
        .lock_store()
        .own_keys_for_day(day, &mut rand::rngs::OsRng)
        .unwrap();
    let (handle, shared, dir) = join(a).await;
    drop(shared);
    tokio::time::sleep(Duration::from_secs(120)).await;
    let store = Store::open(dir.path()).unwrap();
    let a = run_device(handle, store, clock.clone(), config(), dir);
    tokio::time::sleep(Duration::from_secs(1800)).await;
    let (key_after, tek_after) = a
        .shared
        .lock_store()
        .own_keys_for_day(day, &mut rand::rngs::OsRng)
        .unwrap();
    assert_eq!(key_before.as_bytes(), key_after.as_bytes());
    assert_eq!(tek_before.as_bytes(), tek_after.as_bytes());
    // And the observer heard the IDs of that key after the restart.
    let _ = join(a).await;
    let (_, so, _do) = join(observer).await;
    let t = START + 1800 + 120 + 900;
    let id = key_before.id(SlotsPerDay::DEFAULT.slot(t));
    let logged = so
        .lock_store()
        .sightings_in_days(day, day)
        .unwrap()
        .sightings;
    assert!(logged.iter().any(|s| s.peer == PeerId::Bluezone(id)));
}

#[tokio::test(start_paused = true)]
async fn a_week_keeps_memory_flat() {
    let (medium, clock) = medium(6);
    let mut cfg = config();
    cfg.store.keep_days = 2;
    let a = start_device(&medium, "a", at(0.0, 0.0, 0), clock.clone(), cfg.clone());
    bluezoned::radio::sim::phones::add_phone(
        &medium,
        "phone",
        DeviceModel::BluezoneAndroid,
        7,
        at(1.0, 0.0, 0),
    );
    bluezoned::radio::sim::phones::add_phone(
        &medium,
        "gaen",
        DeviceModel::Gaen,
        8,
        at(0.0, 2.0, 0),
    );
    let mut dedup = Vec::new();
    let mut days_held = Vec::new();
    for _ in 0..7 {
        tokio::time::sleep(Duration::from_secs(86_400)).await;
        dedup.push(
            a.shared
                .metrics
                .dedup_entries
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        days_held.push(a.shared.lock_store().sighting_days().unwrap().len());
    }
    stop(&a).await;
    let stored = a
        .shared
        .metrics
        .sightings_stored
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(stored > 7 * 2 * 2000, "{stored} sightings in a week");
    // Per-peer state stays at a handful of live IDs; the store holds keep_days + today.
    assert!(dedup.iter().all(|&n| n <= 8), "{dedup:?}");
    assert!(days_held[2..].iter().all(|&n| n <= 3), "{days_held:?}");
    let _ = join(a).await;
}
