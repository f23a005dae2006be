//! `bluezoned run`: the daemon.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use crate::cli::{RadioArg, RunArgs};
use crate::clock::{SharedClock, SystemClock};
use crate::config::{Backend, Config};
use crate::radio::sim::phones;
use crate::radio::sim::{DeviceModel, DeviceSpec, Medium, MediumConfig, Mobility, ScanConfig};
use crate::radio::Radio;
use crate::service::{self, Shared};
use crate::store::{resolve_data_dir, Store};
use crate::systemd;

pub fn run(data_dir: Option<PathBuf>, args: RunArgs) -> Result<()> {
    let dir = resolve_data_dir(data_dir);
    let mut config = Config::load(args.config.as_deref(), &dir)?;
    if let Some(r) = args.radio {
        config.radio.backend = match r {
            RadioArg::Bluez => Backend::Bluez,
            RadioArg::Sim => Backend::Sim,
        };
    }
    if let Some(a) = args.api {
        config.api.listen = Some(a);
    }
    if let Some(f) = args.api_token_file {
        config.api.owner_token_file = Some(f);
    }
    if !args.trust.is_empty() {
        config.cases.trust = args.trust;
    }
    config.validate()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(serve(dir, config))
}

async fn serve(dir: PathBuf, config: Config) -> Result<()> {
    // `init` is idempotent: a fresh StateDirectory becomes a store on first start.
    let (store, report) =
        Store::init(&dir).with_context(|| format!("opening the store in {}", dir.display()))?;
    if !report.nothing_changed() {
        tracing::info!(dir = %dir.display(), "initialised a new store");
    }
    let clock: SharedClock = Arc::new(SystemClock);
    let shutdown = CancellationToken::new();
    let radio: Box<dyn Radio> = match config.radio.backend {
        Backend::Sim => sim_radio(&config, clock.clone())?,
        Backend::Bluez => bluez_radio(&config, clock.clone()).await?,
    };
    let shared = Shared::new(store, config, clock);
    let api = crate::api::start(shared.clone(), shutdown.clone()).await?;
    let poller = crate::poll::spawn(shared.clone(), shutdown.clone())?;
    spawn_signal_handler(shutdown.clone());
    systemd::ready();
    let watchdog = systemd::spawn_watchdog(shutdown.clone());
    let result = service::run(shared, radio, shutdown.clone()).await;
    shutdown.cancel();
    if let Some(api) = api {
        let _ = api.await;
    }
    if let Some(poller) = poller {
        let _ = poller.await;
    }
    if let Some(w) = watchdog {
        w.abort();
    }
    systemd::stopping();
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

async fn bluez_radio(config: &Config, clock: SharedClock) -> Result<Box<dyn Radio>> {
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
        ..BluezConfig::default()
    };
    // `connect` fails within 10 s, naming D-Bus, bluetoothd or the adapter, when one is missing.
    let radio = BluezRadio::connect(bluez, clock).await?;
    tracing::info!(adapter = %radio.adapter(), "BlueZ radio ready");
    Ok(Box::new(radio))
}

pub(crate) fn spawn_signal_handler(shutdown: CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        shutdown.cancel();
    });
}
