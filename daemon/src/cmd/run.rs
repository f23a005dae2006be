//! `bluezoned run`: the daemon.

use std::path::PathBuf;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use super::Env;
use crate::cli::RunArgs;
use crate::clock::SharedClock;
use crate::config::{Backend, Config};
use crate::radio::sim::phones;
use crate::radio::sim::{DeviceModel, DeviceSpec, Medium, MediumConfig, Mobility, ScanConfig};
use crate::radio::Radio;
use crate::service::{self, Shared, Supervisor};
use crate::store::Store;
use crate::systemd;

pub fn run(env: Env, args: RunArgs) -> Result<()> {
    let Env {
        dir,
        mut config,
        clock,
    } = env;
    if !args.trust.is_empty() {
        config.cases.trust = args.trust;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(serve(dir, config, clock))
}

async fn serve(dir: PathBuf, config: Config, clock: SharedClock) -> Result<()> {
    // `init` is idempotent: a fresh StateDirectory becomes a store on first start.
    let (store, report) =
        Store::init(&dir).with_context(|| format!("opening the store in {}", dir.display()))?;
    if !report.nothing_changed() {
        tracing::info!(dir = %dir.display(), "initialised a new store");
    }
    let shutdown = CancellationToken::new();
    let (radio, privacy): (Box<dyn Radio>, _) = match config.radio.backend {
        Backend::Sim => (sim_radio(&config, clock.clone())?, None),
        Backend::Bluez => {
            let (radio, privacy) = bluez_radio(&config, clock.clone()).await?;
            (radio, Some(privacy))
        }
    };
    // `status --json` reads it from the data dir; /v1/status from `Shared`.
    let status_file = dir.join(RADIO_STATUS_FILE);
    match &privacy {
        Some(p) => {
            let text = serde_json::to_vec(p).context("encoding the radio status")?;
            let mut tmp = tempfile::NamedTempFile::new_in(&dir)
                .with_context(|| format!("writing {}", status_file.display()))?;
            std::io::Write::write_all(&mut tmp, &text)
                .and_then(|()| tmp.as_file().sync_all())
                .with_context(|| format!("writing {}", status_file.display()))?;
            tmp.persist(&status_file)
                .with_context(|| format!("writing {}", status_file.display()))?;
        }
        None => {
            let _ = std::fs::remove_file(&status_file);
        }
    }
    let shared = Shared::new(store, config, clock);
    if let Some(p) = privacy {
        let _ = shared.radio_privacy.set(p);
    }
    let mut sup = Supervisor::new(shutdown.clone());
    // Signals first: a SIGTERM during startup still stops the daemon cleanly.
    sup.spawn("signal handler", signals(shutdown.clone())?);
    if let Some(api) = crate::api::Api::bind(shared.clone()).await? {
        sup.spawn("api", api.run(shutdown.clone()));
    }
    if let Some(poller) = crate::poll::spawn(shared.clone(), shutdown.clone())? {
        sup.spawn(
            "poller",
            async move { poller.await.context("poller task")? },
        );
    }
    service::spawn(shared, radio, &mut sup);
    if let Some(every) = systemd::watchdog_interval() {
        sup.watchdog(every, Box::new(systemd::feed_watchdog));
    }
    systemd::ready();
    let result = sup.run().await;
    systemd::stopping();
    match &result {
        Ok(()) => tracing::info!("service stopped"),
        Err(e) => tracing::error!(error = %crate::error_chain(e), "service failed"),
    }
    result
}

fn sim_radio(config: &Config, clock: SharedClock) -> Result<Box<dyn Radio>> {
    let medium = Medium::new(
        MediumConfig {
            seed: rand::random(),
            ..MediumConfig::default()
        },
        clock.clone(),
    );
    let bz = config
        .radio
        .protocols
        .contains(&crate::config::Protocol::Bluezone);
    let ga = config
        .radio
        .protocols
        .contains(&crate::config::Protocol::Gaen);
    let me = medium.add_device(DeviceSpec::new(
        "this device",
        DeviceModel::Bluezoned {
            bluezone: bz,
            gaen: ga,
        },
        Mobility::Fixed {
            x: 0.0,
            y: 0.0,
            room: 0,
        },
    ));
    phones::desk_scene(&medium, clock.now());
    tracing::info!("simulated radio: a desk with three phones nearby (no Bluetooth is used)");
    let radio = me.radio(clock, scan_config(config))?;
    Ok(Box::new(radio))
}

pub(crate) fn scan_config(config: &Config) -> ScanConfig {
    ScanConfig {
        interval: std::time::Duration::from_millis(config.radio.scan_interval_ms),
        window: std::time::Duration::from_millis(config.radio.scan_window_ms),
        ..ScanConfig::default()
    }
}

/// Where `run` records what the radio learned at start (address privacy), for `status --json`.
pub(crate) const RADIO_STATUS_FILE: &str = "radio-status.json";

async fn bluez_radio(
    config: &Config,
    clock: SharedClock,
) -> Result<(Box<dyn Radio>, crate::radio::bluez::privacy::AdapterPrivacy)> {
    use crate::config::Protocol;
    use crate::radio::bluez::{BluezConfig, BluezRadio};
    let r = &config.radio;
    let bluez = BluezConfig {
        adapter: r.adapter.clone(),
        discovery_stall_timeout: std::time::Duration::from_secs(r.stall_timeout_s),
        advertise_bluezone: r.protocols.contains(&Protocol::Bluezone),
        advertise_gaen: r.protocols.contains(&Protocol::Gaen),
        gatt: r.protocols.contains(&Protocol::Bluezone),
        read_ios_peers: r.protocols.contains(&Protocol::Bluezone),
        // What the GAEN metadata announces is what the adapter is asked for.
        tx_power: Some(i16::from(r.tx_power_dbm)),
        main_conf: r.bluez_main_conf.clone(),
        ..BluezConfig::default()
    };
    // `connect` fails within 10 s, naming D-Bus, bluetoothd or the adapter, when one is missing.
    let radio = BluezRadio::connect(bluez, clock).await?;
    tracing::info!(adapter = %radio.adapter(), "BlueZ radio ready");
    let privacy = radio.privacy().clone();
    Ok((Box::new(radio), privacy))
}

/// Installs the SIGTERM/SIGINT handlers now (failing startup if it cannot) and returns the task
/// that turns the first signal into a shutdown.
pub(crate) fn signals(
    shutdown: CancellationToken,
) -> Result<impl std::future::Future<Output = Result<()>> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            // Shut down for another reason (a task failed): nothing left to wait for.
            _ = shutdown.cancelled() => return Ok(()),
        }
        shutdown.cancel();
        Ok(())
    })
}
