//! `bluezoned demo`: a simulated office on virtual time.
//!
//! N people with bluezoned devices work in teams of up to 25, each team in its own hall, each
//! person at a workstation in a booth 10 m from the next (see [`phones::workplace`]). Every hour
//! person 1 meets a few close colleagues around a table (within 1.8 m for 20–40 minutes) and
//! chats with another colleague for 5 minutes; the others hold their own meetings. After H hours
//! person 1 tests positive and exports keys (a Bluezone F0 list and a GAEN zip signed by the
//! health authority's key), the authority publishes them, and every other device imports and
//! matches with the daemon's default configuration. The table compares who was notified with the
//! ground truth of the simulation (within 2 m for at least 15 minutes in total).

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bluezone_protocol::bluezone::f0::write_f0;
use bluezone_protocol::gaen::export::ExportSigner;
use bluezone_protocol::time::utc_day;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::check::run_check;
use crate::cli::DemoArgs;
use crate::clock::{SharedClock, VirtualClock};
use crate::config::Config;
use crate::ingest::{self, Ingest};
use crate::keyexport;
use crate::radio::sim::{phones, DeviceModel, DeviceSpec, Medium, MediumConfig, Mobility};
use crate::service::{self, Shared};
use crate::store::{ExposureRecord, Store};

/// Monday 2026-11-23, 08:00 UTC.
const START: i64 = 1_795_420_800 + 8 * 3600;
/// Ground truth: a contact is within this distance …
pub const CONTACT_M: f64 = 2.0;
/// … for at least this long in total.
pub const CONTACT_S: i64 = 15 * 60;
/// How often each simulated store writes its batch of sightings: the longest the configuration
/// allows. A durable write per device every 2 s (the default) would dominate the run.
const FLUSH_INTERVAL_MS: u64 = 60_000;
/// Page cache of each simulated device's store (SQLite's default is about 2 MiB).
const STORE_CACHE_KIB: u32 = 128;
/// Most devices `demo` simulates.
pub const MAX_DEVICES: usize = 5000;

pub fn run(args: DemoArgs) -> Result<()> {
    if args.devices < 2 || args.devices > MAX_DEVICES {
        anyhow::bail!(
            "--devices: expected 2 to {MAX_DEVICES}, got {}",
            args.devices
        );
    }
    if args.hours == 0 || args.hours > 24 * 7 {
        anyhow::bail!("--hours: expected 1 to 168, got {}", args.hours);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .context("starting the simulation runtime")?;
    let outcome = rt.block_on(simulate(args.devices, args.hours, args.seed, true))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome.json(&args))?);
    } else {
        outcome.print_table(&args);
    }
    Ok(())
}

/// One person other than the case: what really happened, and what their device concluded.
#[derive(Clone, Debug)]
pub struct Person {
    pub name: String,
    /// Ground truth: seconds within [`CONTACT_M`] of the case.
    pub truth_s: i64,
    pub bluezone: Option<ExposureRecord>,
    pub gaen: Option<ExposureRecord>,
}

impl Person {
    /// Ground truth: at least [`CONTACT_S`] within [`CONTACT_M`] of the case.
    pub fn exposed(&self) -> bool {
        self.truth_s >= CONTACT_S
    }
    /// The device told its owner (by either protocol).
    pub fn notified(&self) -> bool {
        self.bluezone.as_ref().is_some_and(|e| e.notify)
            || self.gaen.as_ref().is_some_and(|e| e.notify)
    }
}

/// Everyone but the case, and the scoring configuration their devices used.
pub struct Outcome {
    pub people: Vec<Person>,
    pub config: Config,
}

impl Outcome {
    /// (notified and exposed, notified, exposed).
    pub fn counts(&self) -> (usize, usize, usize) {
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
    pub fn precision(&self) -> f64 {
        let (tp, n, _) = self.counts();
        if n == 0 {
            1.0
        } else {
            tp as f64 / n as f64
        }
    }
    /// With nobody exposed nobody was missed: recall 1.
    pub fn recall(&self) -> f64 {
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
            "configuration": "the daemon's default [scoring] and [matching]",
            "attenuation_bucket_threshold_db": self.config.scoring.attenuation_bucket_threshold_db,
            "attenuation_bucket_weights": self.config.scoring.attenuation_bucket_weights,
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
             The daemon's default configuration: notify at >= {} weighted minutes in a day, weights \
             immediate/near/medium/other = {:?} (thresholds {:?} dB).\n",
            args.devices,
            args.hours,
            args.seed,
            self.config.scoring.notify_weighted_minutes,
            self.config.scoring.attenuation_bucket_weights,
            self.config.scoring.attenuation_bucket_threshold_db,
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
            let cols = |e: &Option<ExposureRecord>| match e {
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

/// Runs the demo's workplace for `hours` on virtual time (call it on a paused current-thread
/// runtime): every device runs the real service loop with its own store; then the case's keys
/// are published and every other device matches them. `progress` draws a bar on stderr.
pub async fn simulate(n: usize, hours: u32, seed: u64, progress: bool) -> Result<Outcome> {
    let mut rng = StdRng::seed_from_u64(seed);
    let clock: SharedClock = Arc::new(VirtualClock::new(START));
    let medium = Medium::new(
        MediumConfig {
            seed,
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
    // Only how often each store writes its batch: thousands of durable writes per device would
    // dominate the run; what is written, matched and scored is the default.
    config.store.flush_interval_ms = FLUSH_INTERVAL_MS;
    let shutdown = CancellationToken::new();
    let mut devices = Vec::new();
    let mut tasks = Vec::new();
    for (i, worker) in phones::workplace(n, START, hours, &mut rng)
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
            Mobility::Path(worker.path),
        ));
        let dir = tmp.path().join(format!("device-{}", i + 1));
        let (store, _) = Store::init(&dir)?;
        // A day's sightings of one device fit in a few hundred KiB; SQLite's default 2 MiB page
        // cache per store would dominate the memory of thousands of devices.
        store.set_cache_kib(STORE_CACHE_KIB)?;
        // Nothing but this device's service ever opens its store: its transactions need not
        // lock the files each time (what is read and written is the same).
        store.set_exclusive_locking()?;
        let shared = Shared::new_on_virtual_time(store, config.clone(), clock.clone());
        let radio = handle.radio(clock.clone(), super::run::scan_config(&config))?;
        tasks.push(tokio::spawn(service::run(
            shared.clone(),
            Box::new(radio),
            shutdown.clone(),
        )));
        devices.push((name, handle, shared));
    }

    let end = START + i64::from(hours) * 3600;
    let mut err = std::io::stderr();
    while clock.now() < end {
        tokio::time::sleep(Duration::from_secs(600)).await;
        if !progress {
            continue;
        }
        let done = (clock.now() - START) as f64 / 3600.0;
        let width = 30usize;
        let filled = ((done / f64::from(hours)) * width as f64)
            .round()
            .min(width as f64) as usize;
        let _ = write!(
            err,
            "\r[{}{}] {:.1}/{} h simulated",
            "#".repeat(filled),
            " ".repeat(width - filled),
            done,
            hours
        );
        let _ = err.flush();
    }
    if progress {
        let _ = writeln!(err);
    }
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
    let cases = Ingest::new(
        vec![authority.trusted_key()],
        Config::default().cases.max_bytes,
    );
    let today = utc_day(clock.now());
    let (f0, zip) = {
        let store = devices[0].2.lock_store();
        let own = store.own_keys_in_days(today - 13..=today)?;
        (
            write_f0(&keyexport::f0_list(&own)).into_bytes(),
            keyexport::gaen_zip(&own, Some(&authority), "VN")?,
        )
    };

    // Checked and parsed once, as the authority's server would; every device stores the same.
    let lists = [cases.accept(f0, None)?, cases.accept(zip, None)?];
    let mut people = Vec::new();
    for (name, handle, shared) in devices.iter().skip(1) {
        let truth_s =
            medium.contacts_within(devices[0].1.id(), handle.id(), CONTACT_M, START, end, 10)?;
        let mut store = shared.lock_store();
        for list in &lists {
            ingest::store(&mut store, list, today)?;
        }
        let report = run_check(&mut store, &config, today)?;
        let best = |proto: &str| {
            report
                .exposures
                .iter()
                .map(|x| &x.record)
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
    Ok(Outcome { people, config })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(notify: bool) -> ExposureRecord {
        ExposureRecord {
            protocol: "gaen".into(),
            notify,
            ..Default::default()
        }
    }

    fn person(truth_min: i64, notified: Option<bool>) -> Person {
        Person {
            name: String::new(),
            truth_s: truth_min * 60,
            bluezone: None,
            gaen: notified.map(report),
        }
    }

    #[test]
    fn precision_and_recall_count_people() {
        let outcome = Outcome {
            // Exposed and notified; exposed and missed; a false alarm; two correct "no".
            people: vec![
                person(30, Some(true)),
                person(15, None),
                person(14, Some(true)),
                person(5, Some(false)),
                person(0, None),
            ],
            config: Config::default(),
        };
        assert_eq!(outcome.counts(), (1, 2, 2));
        assert_eq!(outcome.precision(), 0.5);
        assert_eq!(outcome.recall(), 0.5);
    }

    /// What the README promises of `demo`: a working day on the default configuration finds the
    /// people the case really met (recall ≥ 0.9) without many false alarms (precision ≥ 0.8),
    /// and the case always meets someone long enough (no perfect score by vacuity).
    fn assert_demo_quality(n: usize, seed: u64) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime");
        let outcome = rt.block_on(simulate(n, 8, seed, false)).expect("demo runs");
        assert_eq!(outcome.people.len(), n - 1);
        assert_eq!(outcome.config.scoring, Config::default().scoring);
        let (tp, notified, exposed) = outcome.counts();
        let detail: Vec<_> = outcome
            .people
            .iter()
            .filter(|p| p.exposed() || p.notified())
            .map(|p| (p.name.clone(), p.truth_s / 60, p.notified()))
            .collect();
        assert!(exposed >= 2, "{n} devices, seed {seed}: {detail:?}");
        assert!(
            outcome.precision() >= 0.8 && outcome.recall() >= 0.9,
            "{n} devices, seed {seed}: {tp} correct of {notified} notified, {exposed} exposed: \
             {detail:?}"
        );
    }

    #[test]
    fn a_working_day_at_12_devices_finds_the_exposed() {
        for seed in [1, 2] {
            assert_demo_quality(12, seed);
        }
    }

    #[test]
    fn a_working_day_at_50_devices_finds_the_exposed() {
        for seed in [1, 5] {
            assert_demo_quality(50, seed);
        }
    }

    /// The whole demo on virtual time at a small size: the case meets some people long enough
    /// and others not, every device runs its service loop and store, and with the default
    /// configuration the notified are exactly the exposed.
    #[test]
    fn small_demo_has_exposed_and_unexposed_people_and_finds_them() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime");
        for seed in [1, 2] {
            let outcome = rt.block_on(simulate(8, 3, seed, false)).expect("demo runs");
            assert_eq!(outcome.people.len(), 7);
            assert_eq!(outcome.config.scoring, Config::default().scoring);
            let (tp, notified, exposed) = outcome.counts();
            assert!(exposed >= 1, "seed {seed}: nobody exposed");
            assert!(exposed < 7, "seed {seed}: nobody unexposed");
            assert!(
                outcome.people.iter().any(|p| !p.exposed() && p.truth_s > 0),
                "seed {seed}: the case met nobody briefly"
            );
            assert_eq!(
                (tp, notified),
                (exposed, exposed),
                "seed {seed}: {:?}",
                outcome
                    .people
                    .iter()
                    .map(|p| (p.truth_s, p.notified()))
                    .collect::<Vec<_>>()
            );
            assert_eq!((outcome.precision(), outcome.recall()), (1.0, 1.0));
        }
    }
}
