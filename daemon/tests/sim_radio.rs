//! The simulated radio (`bluezoned::radio::sim`) on tokio's paused clock: propagation model,
//! loss, scan windows, device models and ground truth.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bluezone_protocol::adv;
use bluezone_protocol::{Aem, PeerId, RollingId, Rpi, Sighting};
use bluezoned::clock::{SharedClock, VirtualClock};
use bluezoned::radio::sim::{
    DeviceHandle, DeviceModel, DeviceSpec, Medium, MediumConfig, Mobility, ScanConfig, SimError,
    Waypoint,
};
use bluezoned::radio::{Broadcast, Radio, RadioError, RadioIo};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// 2020-09-13 00:00 UTC: slot-aligned, so 15-minute slots start at multiples of 900 s from here.
const T0: i64 = 1_599_955_200;

fn bz(n: u8) -> RollingId {
    RollingId([n; 12])
}

fn gaen(n: u8) -> (Rpi, Aem) {
    (Rpi([n; 16]), Aem([n ^ 0xA5; 4]))
}

fn fixed(x: f64, y: f64, room: u32) -> Mobility {
    Mobility::Fixed { x, y, room }
}

fn world(seed: u64) -> (Medium, VirtualClock) {
    let clock = VirtualClock::new(T0);
    let medium = Medium::new(
        MediumConfig {
            seed,
            ..MediumConfig::default()
        },
        Arc::new(clock),
    );
    (medium, clock)
}

fn bluezoned(medium: &Medium, name: &str, mobility: Mobility, gaen: bool) -> DeviceHandle {
    medium.add_device(DeviceSpec::new(
        name,
        DeviceModel::Bluezoned {
            bluezone: true,
            gaen,
        },
        mobility,
    ))
}

fn phone(medium: &Medium, name: &str, model: DeviceModel, mobility: Mobility) -> DeviceHandle {
    medium.add_device(DeviceSpec::new(name, model, mobility))
}

/// A running SimRadio: the watch that drives its broadcast, and what it hears.
struct Node {
    broadcast: watch::Sender<Broadcast>,
    radio: JoinHandle<Result<(), RadioError>>,
    heard: JoinHandle<Vec<Sighting>>,
}

fn start(
    dev: &DeviceHandle,
    clock: SharedClock,
    scan: ScanConfig,
    initial: Broadcast,
    shutdown: &CancellationToken,
) -> Node {
    let radio = dev.radio(clock, scan).expect("bluezoned device");
    assert_eq!(radio.name(), "sim");
    let (broadcast, rx) = watch::channel(initial);
    let (heard_tx, mut heard_rx) = mpsc::channel(1024);
    let io = RadioIo {
        broadcast: rx,
        heard: heard_tx,
        shutdown: shutdown.clone(),
    };
    let radio = tokio::spawn(Box::new(radio).run(io));
    let heard = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Some(r) = heard_rx.recv().await {
            all.push(r);
        }
        all
    });
    Node {
        broadcast,
        radio,
        heard,
    }
}

async fn stop(node: Node) -> Vec<Sighting> {
    let result = node.radio.await.expect("radio task");
    assert!(result.is_ok(), "{result:?}");
    drop(node.broadcast);
    node.heard.await.expect("collector task")
}

fn announce(id: u8, epoch: u64) -> Broadcast {
    Broadcast {
        bluezone: Some(bz(id)),
        gaen: None,
        epoch,
    }
}

fn set_phone(dev: &DeviceHandle, b: Broadcast) {
    dev.broadcast_sender().expect("phone").send_replace(b);
}

async fn run_for(secs: u64) {
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

#[tokio::test(start_paused = true)]
async fn rssi_follows_log_distance_model() {
    let (medium, clock) = world(1);
    let rx = bluezoned(&medium, "rx", fixed(0.0, 0.0, 0), false);
    let distances = [1.0, 2.0, 4.0, 8.0, 16.0];
    for (i, d) in distances.iter().enumerate() {
        let p = phone(
            &medium,
            "android",
            DeviceModel::BluezoneAndroid,
            fixed(*d, 0.0, 0),
        );
        set_phone(&p, announce(i as u8 + 1, 1));
    }
    let shutdown = CancellationToken::new();
    let node = start(
        &rx,
        Arc::new(clock),
        ScanConfig::default(),
        Broadcast::default(),
        &shutdown,
    );
    run_for(2000).await;
    shutdown.cancel();
    let heard = stop(node).await;

    let cfg = medium.config();
    let mut prev = f64::INFINITY;
    for (i, d) in distances.iter().enumerate() {
        let rssi: Vec<f64> = heard
            .iter()
            .filter(|r| r.peer == PeerId::Bluezone(bz(i as u8 + 1)))
            .map(|r| f64::from(r.rssi))
            .collect();
        assert!(rssi.len() > 600, "{d} m: only {} receptions", rssi.len());
        let mean = rssi.iter().sum::<f64>() / rssi.len() as f64;
        let expected = -15.0 - cfg.mean_attenuation_db(*d, 0);
        assert!(
            (mean - expected).abs() < 1.0,
            "{d} m: mean RSSI {mean:.2}, model {expected:.2}"
        );
        let sd = (rssi.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / rssi.len() as f64).sqrt();
        assert!((sd - cfg.noise_sigma_db).abs() < 0.6, "{d} m: sd {sd:.2}");
        assert!(mean < prev, "RSSI not decreasing at {d} m");
        prev = mean;
        let attenuation = -15.0 - mean;
        match *d {
            d if d <= 2.0 => assert!(attenuation <= 51.0, "{d} m: {attenuation}"),
            d if d <= 8.0 => assert!((50.0..=70.0).contains(&attenuation), "{d} m: {attenuation}"),
            _ => {}
        }
    }
    for r in &heard {
        assert_eq!(r.tx_power, None);
        assert_eq!(r.aem, None);
    }
}

#[tokio::test(start_paused = true)]
async fn one_metre_neighbours_hear_each_other_every_window_with_configured_loss() {
    let (medium, clock) = world(2);
    let a = bluezoned(&medium, "a", fixed(0.0, 0.0, 0), false);
    let b = bluezoned(&medium, "b", fixed(1.0, 0.0, 0), false);
    let shutdown = CancellationToken::new();
    let scan = ScanConfig::default();
    let na = start(&a, Arc::new(clock), scan, announce(1, 1), &shutdown);
    let nb = start(&b, Arc::new(clock), scan, announce(2, 1), &shutdown);
    run_for(3600).await;
    shutdown.cancel();
    let heard_a = stop(na).await;
    let heard_b = stop(nb).await;

    let windows = 360usize;
    let points = windows * scan.max_packets_per_window as usize;
    for (heard, peer) in [(&heard_a, bz(2)), (&heard_b, bz(1))] {
        assert!(heard.iter().all(|r| r.peer == PeerId::Bluezone(peer)));
        let mut per_window: BTreeMap<i64, usize> = BTreeMap::new();
        for r in heard.iter() {
            *per_window.entry((r.time - T0) / 10).or_default() += 1;
        }
        assert!(
            per_window.len() >= windows - 2,
            "heard in {} of {windows} windows",
            per_window.len()
        );
        assert!(per_window.values().all(|&n| n <= 4));
        let delivered = heard.len() as f64 / points as f64;
        assert!(
            (delivered - 0.9).abs() < 0.03,
            "delivered {delivered:.3}, expected 1 - packet_loss = 0.9"
        );
    }
    let stats = medium.stats();
    assert_eq!(stats.packets, 2 * points as u64);
    let loss = stats.lost as f64 / stats.packets as f64;
    assert!((loss - 0.1).abs() < 0.02, "loss {loss:.3}");
    assert_eq!(stats.too_weak, 0);
    assert_eq!(
        stats.packets - stats.lost,
        (heard_a.len() + heard_b.len()) as u64
    );
}

#[tokio::test(start_paused = true)]
async fn nothing_is_received_outside_scan_windows() {
    let (medium, clock) = world(3);
    let src = phone(
        &medium,
        "android",
        DeviceModel::BluezoneAndroid,
        fixed(0.0, 0.0, 0),
    );
    set_phone(&src, announce(9, 1));
    let shutdown = CancellationToken::new();
    // Receivers with skewed clocks, and one scanning with a phase of 5 s.
    let cases = [(3i64, 0u64), (-7, 0), (0, 5)];
    let mut nodes = Vec::new();
    for (i, (skew, phase)) in cases.iter().enumerate() {
        let dev = bluezoned(&medium, "rx", fixed(1.0 + i as f64, 0.0, 0), false);
        let scan = ScanConfig {
            phase: Duration::from_secs(*phase),
            ..ScanConfig::default()
        };
        nodes.push(start(
            &dev,
            Arc::new(clock.skewed(*skew)),
            scan,
            Broadcast::default(),
            &shutdown,
        ));
    }
    run_for(1800).await;
    shutdown.cancel();
    for (node, (skew, phase)) in nodes.into_iter().zip(cases) {
        let heard = stop(node).await;
        assert!(heard.len() > 500);
        for r in &heard {
            // Receptions are stamped with the receiver's own (skewed) clock, on which its
            // 2-second windows start every 10 s (+ phase).
            let in_cycle = (r.time - phase as i64).rem_euclid(10);
            assert!(
                in_cycle < 2,
                "reception at {} (skew {skew}, phase {phase}) outside window",
                r.time
            );
            assert!((r.time - T0 - skew) >= 0 && (r.time - T0 - skew) <= 1800);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn thirty_metres_through_a_wall_is_rarely_heard_and_weak() {
    let (medium, clock) = world(4);
    let rx = bluezoned(&medium, "rx", fixed(0.0, 0.0, 0), false);
    let far = phone(
        &medium,
        "next door",
        DeviceModel::BluezoneAndroid,
        fixed(30.0, 0.0, 1),
    );
    set_phone(&far, announce(7, 1));
    let near = phone(
        &medium,
        "near",
        DeviceModel::BluezoneAndroid,
        fixed(1.0, 1.0, 0),
    );
    set_phone(&near, announce(8, 1));
    assert!((medium.distance(rx.id(), far.id(), T0).expect("present") - 30.0).abs() < 1e-9);
    let shutdown = CancellationToken::new();
    let node = start(
        &rx,
        Arc::new(clock),
        ScanConfig::default(),
        Broadcast::default(),
        &shutdown,
    );
    run_for(3600).await;
    shutdown.cancel();
    let heard = stop(node).await;

    let far_heard: Vec<&Sighting> = heard
        .iter()
        .filter(|r| r.peer == PeerId::Bluezone(bz(7)))
        .collect();
    let near_heard = heard.len() - far_heard.len();
    let points = 360 * 4;
    assert!(
        (far_heard.len() as f64) < 0.2 * points as f64,
        "far device heard {} times of {points}",
        far_heard.len()
    );
    assert!(near_heard as f64 > 0.85 * points as f64);
    for r in far_heard {
        let attenuation = -15 - i32::from(r.rssi);
        assert!(attenuation > 70, "attenuation {attenuation} dB at 30 m");
        assert!(i32::from(r.rssi) >= -100, "below sensitivity: {}", r.rssi);
    }
    assert!(medium.stats().too_weak > 0);
}

#[tokio::test(start_paused = true)]
async fn ios_is_read_over_gatt_once_per_slot_and_yields_its_id() {
    let (medium, clock) = world(5);
    let ios = phone(
        &medium,
        "iphone",
        DeviceModel::BluezoneIos,
        fixed(1.5, 0.0, 0),
    );
    // The phone's ID and address change with each 15-minute slot (true time).
    let id_of = |t: i64| bz((t.div_euclid(900) % 200) as u8);
    ios.set_broadcast_schedule(Arc::new(move |t| Broadcast {
        bluezone: Some(id_of(t)),
        gaen: None,
        epoch: t.div_euclid(900) as u64,
    }))
    .expect("phone");
    let shutdown = CancellationToken::new();
    let r1 = bluezoned(&medium, "r1", fixed(0.0, 0.0, 0), false);
    let r2 = bluezoned(&medium, "r2", fixed(0.0, 1.0, 0), false);
    let n1 = start(
        &r1,
        Arc::new(clock),
        ScanConfig::default(),
        Broadcast::default(),
        &shutdown,
    );
    let n2 = start(
        &r2,
        Arc::new(clock),
        ScanConfig::default(),
        Broadcast::default(),
        &shutdown,
    );
    run_for(7200).await;
    shutdown.cancel();
    let slots = 8u64;
    for node in [n1, n2] {
        let heard = stop(node).await;
        let mut ids_per_slot: BTreeMap<i64, Vec<PeerId>> = BTreeMap::new();
        for r in &heard {
            assert_eq!(r.peer, PeerId::Bluezone(id_of(r.time)), "at {}", r.time);
            ids_per_slot.entry(r.time / 900).or_default().push(r.peer);
        }
        assert_eq!(ids_per_slot.len() as u64, slots);
        // Heard (from the cached read) in nearly every window.
        let windows: std::collections::BTreeSet<i64> = heard.iter().map(|r| r.time / 10).collect();
        assert!(windows.len() >= 700, "{} windows", windows.len());
    }
    let served = ios.gatt_reads_served().expect("device");
    assert!(
        (2 * (slots - 1)..=2 * slots).contains(&served),
        "{served} GATT reads for 2 readers over {slots} slots"
    );
    let stats = medium.stats();
    assert_eq!(stats.gatt_reads, served);
    assert!(stats.gatt_failures <= served, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn replayed_adverts_decode_to_the_captured_ids() {
    let (medium, clock) = world(6);
    let rx = bluezoned(&medium, "rx", fixed(0.0, 0.0, 0), true);
    let captured_bz = adv::encode_bluezone_android(&bz(42));
    let (rpi, aem) = gaen(43);
    let captured_gaen = adv::encode_gaen(&rpi, &aem);
    for packet in [captured_bz, captured_gaen] {
        phone(
            &medium,
            "attacker",
            DeviceModel::Replayer { packet },
            fixed(2.0, 0.0, 0),
        );
    }
    let shutdown = CancellationToken::new();
    let node = start(
        &rx,
        Arc::new(clock),
        ScanConfig::default(),
        Broadcast::default(),
        &shutdown,
    );
    run_for(600).await;
    shutdown.cancel();
    let heard = stop(node).await;
    let bz_heard = heard
        .iter()
        .filter(|r| r.peer == PeerId::Bluezone(bz(42)))
        .count();
    let gaen_heard: Vec<_> = heard
        .iter()
        .filter(|r| r.peer == PeerId::Gaen(rpi))
        .collect();
    assert_eq!(bz_heard + gaen_heard.len(), heard.len());
    assert!(bz_heard > 150 && gaen_heard.len() > 150);
    assert!(gaen_heard
        .iter()
        .all(|r| r.aem == Some(aem) && r.tx_power.is_none()));
}

#[tokio::test(start_paused = true)]
async fn broadcast_change_is_heard_from_the_next_scan() {
    let (medium, clock) = world(7);
    let a = bluezoned(&medium, "a", fixed(0.0, 0.0, 0), true);
    let b = bluezoned(&medium, "b", fixed(1.0, 0.0, 0), true);
    let shutdown = CancellationToken::new();
    let both = |n: u8, epoch| Broadcast {
        bluezone: Some(bz(n)),
        gaen: Some(gaen(n)),
        epoch,
    };
    let na = start(
        &a,
        Arc::new(clock),
        ScanConfig::default(),
        both(1, 1),
        &shutdown,
    );
    let nb = start(
        &b,
        Arc::new(clock),
        ScanConfig::default(),
        Broadcast::default(),
        &shutdown,
    );
    run_for(35).await; // between windows
    na.broadcast.send_replace(both(2, 2));
    run_for(36).await; // t = 71.0 s: in the middle of the window [70, 72)
    na.broadcast.send_replace(both(3, 3));
    run_for(29).await;
    shutdown.cancel();
    let heard = stop(nb).await;
    let _ = stop(na).await;

    let generation = |r: &Sighting| match r.peer {
        PeerId::Bluezone(id) => {
            assert_eq!(r.aem, None);
            id.0[0]
        }
        PeerId::Gaen(rpi) => {
            assert_eq!(r.aem, Some(gaen(rpi.0[0]).1));
            rpi.0[0]
        }
    };
    for r in &heard {
        let expected = match r.time - T0 {
            ..35 => 1,
            35..71 => 2,
            _ => 3,
        };
        assert_eq!(generation(r), expected, "reception at +{}", r.time - T0);
    }
    let at = |s: i64, g: u8| {
        heard
            .iter()
            .filter(|r| r.time - T0 == s && generation(r) == g)
            .count()
    };
    assert!(
        at(40, 2) > 0,
        "new IDs heard at the first window after the change"
    );
    assert!(at(70, 2) > 0 && at(71, 3) > 0, "switch inside a window");
    assert!(heard.iter().any(|r| matches!(r.peer, PeerId::Gaen(_))));
}

#[tokio::test(start_paused = true)]
async fn moving_and_removing_devices_changes_what_is_heard_and_ground_truth() {
    let (medium, clock) = world(8);
    let rx = bluezoned(&medium, "rx", fixed(0.0, 0.0, 0), false);
    let walker = phone(
        &medium,
        "walker",
        DeviceModel::BluezoneAndroid,
        // Out of range for the first 100 s, walks in over 100 s, stays 1 m away.
        Mobility::Path(vec![
            Waypoint::new(T0 + 200, 1.0, 0.0, 0),
            Waypoint::new(T0, 500.0, 0.0, 1),
            Waypoint::new(T0 + 100, 500.0, 0.0, 1),
        ]),
    );
    set_phone(&walker, announce(5, 1));
    let shutdown = CancellationToken::new();
    let node = start(
        &rx,
        Arc::new(clock),
        ScanConfig::default(),
        Broadcast::default(),
        &shutdown,
    );
    run_for(300).await;
    walker.set_position(200.0, 0.0, 2).expect("device");
    run_for(100).await;
    walker.set_position(0.5, 0.0, 0).expect("device");
    run_for(100).await;
    walker.remove().expect("device");
    run_for(100).await;
    shutdown.cancel();
    let heard = stop(node).await;

    let times: Vec<i64> = heard.iter().map(|r| r.time - T0).collect();
    assert!(times
        .iter()
        .all(|t| (150..300).contains(t) || (400..500).contains(t)));
    assert!(times.iter().any(|t| (400..500).contains(t)));

    let (r, w) = (rx.id(), walker.id());
    assert!((medium.distance(r, w, T0 + 150).expect("present") - 250.5).abs() < 1e-9);
    assert_eq!(medium.position(w, T0 + 250).expect("present").x, 1.0);
    assert_eq!(medium.position(w, T0 + 350).expect("present").room, 2);
    assert_eq!(
        medium.position(w, T0 + 550),
        Err(SimError::Absent {
            device: w,
            t: T0 + 550
        })
    );
    // Within 2 m: from t = 199.6 s (path) to 300, then 400 to 500.
    assert_eq!(
        medium.contacts_within(r, w, 2.0, T0, T0 + 600, 1),
        Ok(100 + 100)
    );
    assert_eq!(
        medium.contacts_within(r, w, 2.0, T0, T0 + 600, 0),
        Err(SimError::InvalidStep(0))
    );
}

#[tokio::test(start_paused = true)]
async fn api_misuse_is_a_typed_error() {
    let (medium, clock) = world(9);
    let p = phone(&medium, "p", DeviceModel::Gaen, fixed(0.0, 0.0, 0));
    let d = bluezoned(&medium, "d", fixed(0.0, 0.0, 0), true);
    assert!(matches!(
        p.radio(Arc::new(clock), ScanConfig::default()),
        Err(SimError::NotBluezoned { .. })
    ));
    assert!(matches!(
        d.broadcast_sender(),
        Err(SimError::DrivenByRadio(_))
    ));
    let bad = ScanConfig {
        window: Duration::ZERO,
        ..ScanConfig::default()
    };
    assert!(matches!(
        d.radio(Arc::new(clock), bad),
        Err(SimError::InvalidScan(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn same_seed_same_receptions() {
    async fn once(seed: u64) -> Vec<Sighting> {
        let (medium, clock) = world(seed);
        let rx = bluezoned(&medium, "rx", fixed(0.0, 0.0, 0), true);
        let p = phone(&medium, "g", DeviceModel::Gaen, fixed(3.0, 4.0, 0));
        let (rpi, aem) = gaen(1);
        set_phone(
            &p,
            Broadcast {
                bluezone: None,
                gaen: Some((rpi, aem)),
                epoch: 1,
            },
        );
        let shutdown = CancellationToken::new();
        let node = start(
            &rx,
            Arc::new(clock),
            ScanConfig::default(),
            Broadcast::default(),
            &shutdown,
        );
        run_for(600).await;
        shutdown.cancel();
        stop(node).await
    }
    let a = once(11).await;
    assert!(a.len() > 100);
    assert_eq!(a, once(11).await);
    assert_ne!(a, once(12).await);
}

/// Starts a radio whose receptions are only counted (a day would be ~1M receptions).
fn start_counting(
    dev: &DeviceHandle,
    clock: SharedClock,
    initial: Broadcast,
    shutdown: &CancellationToken,
) -> (JoinHandle<Result<(), RadioError>>, JoinHandle<u64>) {
    let radio = dev
        .radio(clock, ScanConfig::default())
        .expect("bluezoned device");
    let (broadcast, rx) = watch::channel(initial);
    let (heard_tx, mut heard_rx) = mpsc::channel(1024);
    let io = RadioIo {
        broadcast: rx,
        heard: heard_tx,
        shutdown: shutdown.clone(),
    };
    let radio = tokio::spawn(Box::new(radio).run(io));
    let counter = tokio::spawn(async move {
        let _broadcast = broadcast;
        let mut n = 0u64;
        while heard_rx.recv().await.is_some() {
            n += 1;
        }
        n
    });
    (radio, counter)
}

#[tokio::test(start_paused = true)]
async fn a_day_of_ten_devices_runs_quickly() {
    let started = std::time::Instant::now();
    let (medium, clock) = world(10);
    let shutdown = CancellationToken::new();
    let mut daemons = Vec::new();
    let mut tasks = Vec::new();
    // Six daemons: an office of four (two rooms), and two walking between rooms all day.
    for i in 0..6u8 {
        let mobility = if i < 4 {
            fixed(f64::from(i) * 1.5, 0.0, u32::from(i / 2))
        } else {
            let f = f64::from(i);
            Mobility::Path(
                (0..=24)
                    .map(|h| Waypoint::new(T0 + h * 3600, f * (h % 3) as f64, 5.0, (h % 2) as u32))
                    .collect(),
            )
        };
        let dev = bluezoned(&medium, "daemon", mobility, i % 2 == 0);
        let initial = Broadcast {
            bluezone: Some(bz(100 + i)),
            gaen: Some(gaen(100 + i)),
            epoch: 1,
        };
        let skew = i64::from(i) - 3;
        tasks.push(start_counting(
            &dev,
            Arc::new(clock.skewed(skew)),
            initial,
            &shutdown,
        ));
        daemons.push(dev);
    }
    let android = phone(
        &medium,
        "android",
        DeviceModel::BluezoneAndroid,
        fixed(2.0, 2.0, 0),
    );
    let ios = phone(&medium, "ios", DeviceModel::BluezoneIos, fixed(3.0, 2.0, 1));
    let g = phone(&medium, "gaen", DeviceModel::Gaen, fixed(1.0, 3.0, 0));
    for (dev, base) in [(&android, 10u8), (&ios, 60)] {
        dev.set_broadcast_schedule(Arc::new(move |t| Broadcast {
            bluezone: Some(bz(base + (t.div_euclid(900) % 40) as u8)),
            gaen: None,
            epoch: t.div_euclid(900) as u64,
        }))
        .expect("phone");
    }
    g.set_broadcast_schedule(Arc::new(|t| Broadcast {
        bluezone: None,
        gaen: Some(gaen(200 + (t.div_euclid(600) % 50) as u8)),
        epoch: t.div_euclid(600) as u64,
    }))
    .expect("phone");
    phone(
        &medium,
        "replayer",
        DeviceModel::Replayer {
            packet: adv::encode_bluezone_android(&bz(250)),
        },
        fixed(10.0, 10.0, 0),
    );

    run_for(86_400).await;
    shutdown.cancel();
    let mut total = 0;
    for (i, (radio, counter)) in tasks.into_iter().enumerate() {
        assert!(radio.await.expect("task").is_ok());
        let n = counter.await.expect("task");
        assert!(n > 10_000, "daemon {i} heard only {n}");
        total += n;
    }
    eprintln!(
        "24 h, 10 devices: {total} receptions, {:?}, {:?} real time",
        medium.stats(),
        started.elapsed()
    );
    // Ground truth for the demo: the two office neighbours 1.5 m apart were together all day.
    let (a, b) = (daemons[0].id(), daemons[1].id());
    assert_eq!(
        medium.contacts_within(a, b, 2.0, T0, T0 + 86_400, 60),
        Ok(86_400)
    );
    // At least one read per 15-minute slot by some daemon.
    assert!(ios.gatt_reads_served().expect("device") >= 96);
}
