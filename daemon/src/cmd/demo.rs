//! `bluezoned demo`: a simulated office on virtual time.
//!
//! N people with bluezoned devices sit at desks 3 m apart in an open office and now and then
//! meet in small groups (about 1–1.8 m apart) in meeting rooms or the kitchen. After H hours
//! person 1 tests positive and exports keys (a Bluezone F0 list and a GAEN zip signed by the
//! health authority's key), the authority publishes them, and every other device imports and
//! matches. The table compares who was notified with the ground truth of the simulation
//! (within 2 m for at least 15 minutes in total).

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bluezone_protocol::bluezone::f0::write_f0;
use bluezone_protocol::gaen::export::ExportSigner;
use bluezone_protocol::time::utc_day;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::caselist::{self, Limits};
use crate::check::{run_check, ExposureReport};
use crate::cli::DemoArgs;
use crate::clock::{SharedClock, VirtualClock};
use crate::config::Config;
use crate::keyexport;
use crate::radio::sim::{DeviceModel, DeviceSpec, Medium, MediumConfig, Mobility};
use crate::service::{self, Shared};
use crate::store::Store;

/// Monday 2026-11-23, 08:00 UTC.
const START: i64 = 1_795_420_800 + 8 * 3600;
const DESK_SPACING_M: f64 = 3.0;
const CONTACT_M: f64 = 2.0;
const CONTACT_S: i64 = 15 * 60;
const DEMO_WEIGHTS: [f64; 3] = [1.0, 0.0, 0.0];

pub fn run(args: DemoArgs) -> Result<()> {
    if args.devices < 2 || args.devices > 200 {
        anyhow::bail!("--devices: expected 2 to 200, got {}", args.devices);
    }
    if args.hours == 0 || args.hours > 24 * 7 {
        anyhow::bail!("--hours: expected 1 to 168, got {}", args.hours);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .context("starting the simulation runtime")?;
    let outcome = rt.block_on(simulate(&args))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome.json(&args))?);
    } else {
        outcome.print_table(&args);
    }
    Ok(())
}

struct Person {
    name: String,
    truth_s: i64,
    bluezone: Option<ExposureReport>,
    gaen: Option<ExposureReport>,
}

impl Person {
    fn exposed(&self) -> bool {
        self.truth_s >= CONTACT_S
    }
    fn notified(&self) -> bool {
        self.bluezone.as_ref().is_some_and(|e| e.notify)
            || self.gaen.as_ref().is_some_and(|e| e.notify)
    }
}

struct Outcome {
    people: Vec<Person>,
}

impl Outcome {
    fn counts(&self) -> (usize, usize, usize) {
        let tp = self
            .people
            .iter()
            .filter(|p| p.exposed() && p.notified())
            .count();
        let notified = self.people.iter().filter(|p| p.notified()).count();
        let exposed = self.people.iter().filter(|p| p.exposed()).count();
        (tp, notified, exposed)
    }
    /// With nobody notified there is no false alarm: precision 1.
    fn precision(&self) -> f64 {
        let (tp, n, _) = self.counts();
        if n == 0 {
            1.0
        } else {
            tp as f64 / n as f64
        }
    }
    /// With nobody exposed nobody was missed: recall 1.
    fn recall(&self) -> f64 {
        let (tp, _, e) = self.counts();
        if e == 0 {
            1.0
        } else {
            tp as f64 / e as f64
        }
    }

    fn json(&self, args: &DemoArgs) -> serde_json::Value {
        let people: Vec<_> = self
            .people
            .iter()
            .map(|p| {
                json!({
                    "name": p.name,
                    "within_2m_minutes": p.truth_s as f64 / 60.0,
                    "exposed_truth": p.exposed(),
                    "notified": p.notified(),
                    "bluezone": p.bluezone,
                    "gaen": p.gaen,
                })
            })
            .collect();
        json!({
            "devices": args.devices,
            "hours": args.hours,
            "seed": args.seed,
            "positive": "person 1",
            "weights": DEMO_WEIGHTS,
            "exposed_truth": self.people.iter().filter(|p| p.exposed()).map(|p| p.name.clone()).collect::<Vec<_>>(),
            "notified": self.people.iter().filter(|p| p.notified()).map(|p| p.name.clone()).collect::<Vec<_>>(),
            "precision": self.precision(),
            "recall": self.recall(),
            "people": people,
        })
    }

    fn print_table(&self, args: &DemoArgs) {
        println!(
            "Simulated office: {} devices, {} h, seed {}. Person 1 tested positive.\n\
             Notify: >= 15 weighted minutes in a day, weights immediate/near/far = {:?} (<= 50 / <= 70 dB).\n",
            args.devices, args.hours, args.seed, DEMO_WEIGHTS
        );
        println!(
            "{:<10} {:>12} {:>8} | {:>9} {:>8} {:>9} | {:>9} {:>8} {:>9} |",
            "", "truth", "", "Bluezone", "", "", "GAEN", "", ""
        );
        println!(
            "{:<10} {:>12} {:>8} | {:>9} {:>8} {:>9} | {:>9} {:>8} {:>9} | notified",
            "person",
            "≤2 m (min)",
            "exposed",
            "dur (min)",
            "min att",
            "weighted",
            "dur (min)",
            "min att",
            "weighted"
        );
        for p in &self.people {
            let cols = |e: &Option<ExposureReport>| match e {
                Some(e) => (
                    format!("{:.1}", e.duration_s as f64 / 60.0),
                    format!("{} dB", e.min_attenuation_db),
                    format!("{:.1}", e.weighted_minutes),
                ),
                None => ("-".into(), "-".into(), "-".into()),
            };
            let (bd, ba, bw) = cols(&p.bluezone);
            let (gd, gaa, gw) = cols(&p.gaen);
            println!(
                "{:<10} {:>12.1} {:>8} | {:>9} {:>8} {:>9} | {:>9} {:>8} {:>9} | {}",
                p.name,
                p.truth_s as f64 / 60.0,
                if p.exposed() { "yes" } else { "no" },
                bd,
                ba,
                bw,
                gd,
                gaa,
                gw,
                if p.notified() { "NOTIFIED" } else { "-" }
            );
        }
        let (tp, n, e) = self.counts();
        println!(
            "\nexposed (truth): {e}   notified: {n}   correct: {tp}   precision {:.2}   recall {:.2}",
            self.precision(),
            self.recall()
        );
    }
}

/// Desk `i` in the open office (room 0), on a grid `DESK_SPACING_M` apart.
fn desk(i: usize) -> (f64, f64) {
    (
        (i % 5) as f64 * DESK_SPACING_M,
        (i / 5) as f64 * DESK_SPACING_M,
    )
}

/// Everyone's day: at the desk, with meetings of 2–5 people (1–1.8 m apart around a table in
/// room 1 or 2) and short kitchen visits (room 3).
fn schedules(n: usize, hours: u32, rng: &mut StdRng) -> Vec<Vec<(i64, f64, f64, u32)>> {
    let mut paths: Vec<Vec<(i64, f64, f64, u32)>> = (0..n)
        .map(|i| {
            let (x, y) = desk(i);
            vec![(START, x, y, 0)]
        })
        .collect();
    let mut busy_until = vec![START; n];
    let end = START + hours as i64 * 3600;
    let mut t = START + 15 * 60;
    while t < end - 1800 {
        // A meeting starts now with probability 0.6 per half hour.
        if rng.gen_bool(0.6) {
            let size = rng.gen_range(2..=5.min(n));
            let room = rng.gen_range(1..=2u32);
            let len = rng.gen_range(20..=50) * 60;
            let mut members: Vec<usize> = (0..n).filter(|&i| busy_until[i] <= t).collect();
            for k in (1..members.len()).rev() {
                members.swap(k, rng.gen_range(0..=k));
            }
            members.truncate(size);
            if members.len() >= 2 {
                for (seat, &m) in members.iter().enumerate() {
                    let angle = seat as f64 * std::f64::consts::TAU / members.len() as f64;
                    let r = rng.gen_range(0.6..0.9);
                    let (x, y) = (50.0 + 20.0 * room as f64 + r * angle.cos(), r * angle.sin());
                    let (dx, dy) = desk(m);
                    let p = &mut paths[m];
                    p.push((t, dx, dy, 0));
                    p.push((t + 60, x, y, room));
                    p.push((t + len, x, y, room));
                    p.push((t + len + 60, dx, dy, 0));
                    busy_until[m] = t + len + 120;
                }
            }
        }
        // A kitchen visit of 5 minutes.
        let i = rng.gen_range(0..n);
        if busy_until[i] <= t {
            let (dx, dy) = desk(i);
            let p = &mut paths[i];
            p.push((t + 300, dx, dy, 0));
            p.push((
                t + 360,
                100.0 + rng.gen_range(0.0..3.0),
                rng.gen_range(0.0..3.0),
                3,
            ));
            p.push((t + 660, 100.0, 1.0, 3));
            p.push((t + 720, dx, dy, 0));
            busy_until[i] = t + 780;
        }
        t += 1800;
    }
    paths
}

async fn simulate(args: &DemoArgs) -> Result<Outcome> {
    let mut rng = StdRng::seed_from_u64(args.seed);
    let clock: SharedClock = Arc::new(VirtualClock::new(START));
    let medium = Medium::new(
        MediumConfig {
            seed: args.seed,
            ..MediumConfig::default()
        },
        clock.clone(),
    );
    // Stores in memory-backed /dev/shm where it exists: the demo writes thousands of durable
    // batches, and fsync on a real disk would dominate its run time.
    let tmp_root = if std::path::Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "."
    };
    let tmp = tempfile::Builder::new()
        .prefix("bluezoned-demo-")
        .tempdir_in(tmp_root)?;
    let mut config = Config::default();
    config.store.flush_interval_ms = 30_000;
    // The demo's ground truth is the health authority's definition of a contact (within 2 m),
    // so its devices are configured the way such an authority would: only immediate-bucket
    // minutes (≤ 50 dB, about 2.3 m) count. The daemon's default also gives near minutes half
    // weight, which would notify everyone who shared the open office all day.
    config.scoring.weights = DEMO_WEIGHTS;
    let shutdown = CancellationToken::new();
    let mut devices = Vec::new();
    let mut tasks = Vec::new();
    for (i, path) in schedules(args.devices, args.hours, &mut rng)
        .into_iter()
        .enumerate()
    {
        let name = format!("person {}", i + 1);
        let handle = medium.add_device(DeviceSpec::new(
            name.clone(),
            DeviceModel::Bluezoned {
                bluezone: true,
                gaen: true,
            },
            Mobility::Path(path),
        ));
        let dir = tmp.path().join(format!("device-{}", i + 1));
        let (store, _) = Store::init(&dir)?;
        let shared = Shared::new(store, config.clone(), clock.clone());
        let radio = handle.radio(clock.clone(), super::run::scan_config(&config))?;
        tasks.push(tokio::spawn(service::run(
            shared.clone(),
            Box::new(radio),
            shutdown.clone(),
        )));
        devices.push((name, handle, shared));
    }

    let end = START + args.hours as i64 * 3600;
    let mut err = std::io::stderr();
    while clock.now() < end {
        tokio::time::sleep(Duration::from_secs(600)).await;
        let done = (clock.now() - START) as f64 / 3600.0;
        let width = 30usize;
        let filled = ((done / args.hours as f64) * width as f64)
            .round()
            .min(width as f64) as usize;
        let _ = write!(
            err,
            "\r[{}{}] {:.1}/{} h simulated",
            "#".repeat(filled),
            " ".repeat(width - filled),
            done,
            args.hours
        );
        let _ = err.flush();
    }
    let _ = writeln!(err);
    shutdown.cancel();
    for t in tasks {
        t.await.context("device task panicked")??;
    }

    // Person 1 tests positive: their device exports keys; the authority signs and publishes.
    let authority = ExportSigner::new(
        "demo-authority",
        "v1",
        p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng),
    );
    let trusted = vec![authority.trusted_key()];
    let today = utc_day(clock.now());
    let (f0, zip) = {
        let store = devices[0].2.lock_store();
        let own = store.own_keys_in_days(today - 13..=today)?;
        (
            write_f0(&keyexport::f0_list(&own)).into_bytes(),
            keyexport::gaen_zip(&own, Some(&authority), "VN")?,
        )
    };

    let mut people = Vec::new();
    for (name, handle, shared) in devices.iter().skip(1) {
        let truth_s =
            medium.contacts_within(devices[0].1.id(), handle.id(), CONTACT_M, START, end, 10)?;
        let mut store = shared.lock_store();
        for bytes in [&f0, &zip] {
            let list = caselist::parse(bytes, &trusted, &Limits::default())?;
            store.insert_case_list_on_day(
                today,
                list.format().as_str(),
                list.entries() as u64,
                bytes,
            )?;
        }
        let report = run_check(&mut store, &config)?;
        let best = |proto: &str| {
            report
                .exposures
                .iter()
                .filter(|e| e.protocol == proto)
                .max_by(|a, b| a.weighted_minutes.total_cmp(&b.weighted_minutes))
                .cloned()
        };
        people.push(Person {
            name: name.clone(),
            truth_s,
            bluezone: best("bluezone"),
            gaen: best("gaen"),
        });
    }
    Ok(Outcome { people })
}
