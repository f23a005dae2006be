//! The BlueZ backend: Bluetooth LE through `bluetoothd` over the D-Bus system bus.
//!
//! - advertising ([`adv`], bluer): the Bluezone Android layout (service UUID `0x4E56` +
//!   manufacturer data `0x22B5` = current 12-byte ID, no name) and the GAEN layout (`0xFD6F`
//!   service UUID + service data RPI‖AEM), re-registered the moment [`Broadcast`] changes; when
//!   the adapter cannot hold both at once they alternate (and the log says so);
//! - GATT server ([`gatt`], bluer): the Bluezone iOS service and its readable characteristic,
//!   whose value is read from the broadcast channel at read time;
//! - scanning ([`scan`]: discovery through bluer with `Transport=le` and `DuplicateData`,
//!   adverts through btleplug): manufacturer data, service data, RSSI and TX power become
//!   [`Sighting`]s; iOS-style Bluezone peers are connected and their characteristic read
//!   (rate-limited, address → ID cached for the Bluezone slot); a watchdog restarts discovery
//!   when no advert arrived for [`BluezConfig::discovery_stall_timeout`];
//! - privacy ([`privacy`]): peers' addresses never reach the logs; whether our own adverts are
//!   linkable (BlueZ privacy off) is read at start, logged, and kept for status;
//! - resilience ([`bus`] and the supervisor here): a lost bus, a restarted `bluetoothd`, an
//!   adapter powered off or removed end the current session, which is rebuilt with exponential
//!   backoff; none of it is fatal once running.
//!
//! Everything goes through the *system* bus as libdbus finds it: `DBUS_SYSTEM_BUS_ADDRESS`, or
//! `unix:path=/var/run/dbus/system_bus_socket`. libdbus reads that variable once per process.

mod adv;
mod bus;
mod gatt;
pub mod privacy;
mod scan;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

#[cfg(doc)]
use super::Broadcast;
use super::{Radio, RadioError, RadioFuture, RadioIo};
use crate::clock::SharedClock;
#[cfg(doc)]
use bluezone_protocol::Sighting;
use privacy::{privacy_setting, AdapterPrivacy};

/// Settings of the BlueZ backend. `Default` is what the daemon uses.
#[derive(Clone, Debug)]
pub struct BluezConfig {
    /// Adapter name (`hci0`); `None`: `hci0` if present, else the first adapter by name.
    pub adapter: Option<String>,
    /// Restart discovery when no advert at all arrived for this long (BlueZ is known to stop
    /// reporting silently after hours of discovery).
    pub discovery_stall_timeout: Duration,
    /// Advertise the Bluezone Android layout (service `0x4E56` + manufacturer data `0x22B5`).
    pub advertise_bluezone: bool,
    /// Advertise the GAEN layout (service `0xFD6F` + service data RPI‖AEM).
    pub advertise_gaen: bool,
    /// Serve the Bluezone iOS GATT service, so iOS phones can read our ID.
    pub gatt: bool,
    /// Connect to iOS-style Bluezone peers (no ID in the advert) and read their ID.
    pub read_ios_peers: bool,
    /// When the adapter holds only one advertisement: how long each layout is on air in turn.
    pub alternate_period: Duration,
    /// Requested advertising interval (min, max) of the Bluezone layout; ignored by `bluetoothd`
    /// versions without `MinInterval`/`MaxInterval`.
    pub bluezone_interval: Option<(Duration, Duration)>,
    /// Requested advertising interval (min, max) of the GAEN layout (spec: 200–270 ms).
    pub gaen_interval: Option<(Duration, Duration)>,
    /// Requested advertising TX power in dBm (BlueZ ≥ 5.56 `TxPower`, honoured only where the
    /// adapter reports `CanSetTxPower`; a warning says when it cannot). The GAEN metadata
    /// carries this same value, so the daemon passes `radio.tx_power_dbm` here.
    pub tx_power: Option<i16>,
    /// Minimum time between two GATT connections to iOS peers.
    pub ios_read_interval: Duration,
    /// After a failed read, leave that address alone this long.
    pub ios_retry_after: Duration,
    /// Give up a connect + read after this long.
    pub ios_read_timeout: Duration,
    /// First delay before rebuilding a failed session; doubles up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// How long [`BluezRadio::connect`] waits for the bus and `bluetoothd` (capped at 10 s).
    pub connect_timeout: Duration,
    /// bluetoothd's configuration, read for its `Privacy=` setting.
    pub main_conf: PathBuf,
}

impl Default for BluezConfig {
    fn default() -> Self {
        BluezConfig {
            adapter: None,
            discovery_stall_timeout: Duration::from_secs(120),
            advertise_bluezone: true,
            advertise_gaen: true,
            gatt: true,
            read_ios_peers: true,
            alternate_period: Duration::from_secs(2),
            bluezone_interval: Some((Duration::from_millis(100), Duration::from_millis(150))),
            gaen_interval: Some((Duration::from_millis(200), Duration::from_millis(270))),
            tx_power: None,
            ios_read_interval: Duration::from_secs(1),
            ios_retry_after: Duration::from_secs(60),
            ios_read_timeout: Duration::from_secs(10),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(8),
            main_conf: PathBuf::from("/etc/bluetooth/main.conf"),
        }
    }
}

/// The longest [`BluezRadio::connect`] may take.
pub const CONNECT_LIMIT: Duration = Duration::from_secs(10);

/// What went wrong talking to BlueZ. Each ends the current session; [`BluezRadio`] rebuilds it.
/// A wrapped library error is said in the message only, not also exposed as `source()`, so an
/// error chain prints each cause once (the convention of `store::error`).
#[derive(Debug, thiserror::Error)]
pub enum BluezError {
    #[error(
        "cannot connect to the D-Bus system bus at {address}: {reason} \
         (is dbus running? DBUS_SYSTEM_BUS_ADDRESS overrides the address)"
    )]
    BusUnavailable { address: String, reason: String },
    #[error(
        "bluetoothd is not running: nobody owns org.bluez on the D-Bus system bus at {address} \
         (start it, e.g. `systemctl start bluetooth`)"
    )]
    NoBluetoothd { address: String },
    #[error("no Bluetooth adapter {wanted} (bluetoothd reports: {found})")]
    NoAdapter { wanted: String, found: String },
    #[error("Bluetooth adapter {0} is powered off")]
    PoweredOff(String),
    #[error("Bluetooth adapter {0} was removed")]
    AdapterRemoved(String),
    #[error("bluetoothd left the D-Bus system bus (stopped or restarting)")]
    BluetoothdGone,
    #[error("lost the connection to the D-Bus system bus")]
    BusLost,
    #[error("timed out after {0:?} {1}")]
    Timeout(Duration, &'static str),
    #[error(
        "no answer from the D-Bus system bus at {address} or from bluetoothd within {limit:?}"
    )]
    NoAnswer { address: String, limit: Duration },
    #[error("{context}: {cause}")]
    Bluer {
        context: &'static str,
        cause: bluer::Error,
    },
    #[error("{context}: {cause}")]
    Btleplug {
        context: &'static str,
        cause: btleplug::Error,
    },
    #[error("{context}: {cause}")]
    DBus {
        context: &'static str,
        cause: dbus::Error,
    },
    #[error("the discovery event stream ended")]
    ScanStreamEnded,
    #[error("the adapter stopped discovering")]
    DiscoveryStopped,
}

impl From<BluezError> for RadioError {
    fn from(e: BluezError) -> Self {
        match e {
            BluezError::BusUnavailable { .. }
            | BluezError::NoBluetoothd { .. }
            | BluezError::NoAdapter { .. }
            | BluezError::BusLost
            | BluezError::BluetoothdGone
            | BluezError::Timeout(..)
            | BluezError::NoAnswer { .. } => RadioError::Unavailable(Box::new(e)),
            _ => RadioError::Failed(Box::new(e)),
        }
    }
}

/// The system bus address libdbus uses (for messages).
pub fn system_bus_address() -> String {
    std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
        .ok()
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| "unix:path=/var/run/dbus/system_bus_socket".to_string())
}

/// Context for errors of bluer calls.
fn bluer_ctx(context: &'static str) -> impl FnOnce(bluer::Error) -> BluezError {
    move |cause| BluezError::Bluer { context, cause }
}

/// Context for errors of btleplug calls.
fn btleplug_ctx(context: &'static str) -> impl FnOnce(btleplug::Error) -> BluezError {
    move |cause| BluezError::Btleplug { context, cause }
}

/// The BlueZ radio. Build it with [`BluezRadio::connect`], then hand it to the service loop.
pub struct BluezRadio {
    config: Arc<BluezConfig>,
    clock: SharedClock,
    adapter: String,
    privacy: AdapterPrivacy,
}

impl std::fmt::Debug for BluezRadio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BluezRadio")
            .field("adapter", &self.adapter)
            .field("privacy", &self.privacy)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl BluezRadio {
    /// Checks that the system bus, `bluetoothd` and the adapter are there, within
    /// `config.connect_timeout` (at most [`CONNECT_LIMIT`]). Fails with
    /// [`RadioError::Unavailable`] naming what is missing. An adapter that is powered off is not
    /// an error: [`Radio::run`] waits for it.
    pub async fn connect(
        config: BluezConfig,
        clock: SharedClock,
    ) -> Result<BluezRadio, RadioError> {
        let limit = config.connect_timeout.min(CONNECT_LIMIT);
        let probe = async {
            let bus = bus::BusWatch::open(limit).await?;
            bus.require_bluetoothd().await?;
            let session = new_session(limit).await?;
            let adapter = select_adapter(&session, config.adapter.as_deref()).await?;
            let powered = adapter
                .is_powered()
                .await
                .map_err(bluer_ctx("reading the adapter's Powered property"))?;
            // Only for the status; bluetoothd versions before 5.47 lack it.
            let address_type = match adapter.address_type().await {
                Ok(t) => t.to_string(),
                Err(_) => "unknown".to_string(),
            };
            Ok::<_, BluezError>((adapter.name().to_string(), powered, address_type))
        };
        let (adapter, powered, address_type) = match tokio::time::timeout(limit, probe).await {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                return Err(BluezError::NoAnswer {
                    address: system_bus_address(),
                    limit,
                }
                .into())
            }
        };
        let privacy = AdapterPrivacy::new(
            adapter.clone(),
            address_type,
            privacy_setting(&config.main_conf),
        );
        privacy.log();
        if powered {
            info!(%adapter, "BlueZ: found adapter");
        } else {
            warn!(%adapter, "BlueZ: adapter is powered off; will start when it is powered on");
        }
        Ok(BluezRadio {
            config: Arc::new(config),
            clock,
            adapter,
            privacy,
        })
    }

    /// Whether our adverts are linkable, as read at [`BluezRadio::connect`]; for status.
    pub fn privacy(&self) -> &AdapterPrivacy {
        &self.privacy
    }

    /// The adapter found by [`BluezRadio::connect`].
    pub fn adapter(&self) -> &str {
        &self.adapter
    }

    async fn supervise(self, io: RadioIo) -> Result<(), RadioError> {
        let cfg = self.config;
        let mut delay = cfg.retry_initial;
        let mut failures = 0u32;
        let mut scanner = scan::Persistent::default();
        loop {
            let started = Instant::now();
            let result = run_session(&cfg, &self.clock, &io, &mut scanner, failures).await;
            let e = match result {
                Ok(()) => {
                    info!("BlueZ: stopped");
                    return Ok(());
                }
                Err(e) => e,
            };
            if matches!(
                e,
                BluezError::BusLost | BluezError::BusUnavailable { .. } | BluezError::Timeout(..)
            ) {
                scanner.bus_lost();
            }
            if started.elapsed() >= cfg.retry_max.max(Duration::from_secs(30)) {
                delay = cfg.retry_initial;
            }
            failures = failures.saturating_add(1);
            warn!(attempt = failures, "BlueZ: {e}; retrying in {delay:?}");
            tokio::select! {
                _ = io.shutdown.cancelled() => {
                    info!("BlueZ: stopped");
                    return Ok(());
                }
                _ = tokio::time::sleep(delay) => {}
            }
            delay = delay.saturating_mul(2).min(cfg.retry_max);
        }
    }
}

impl Radio for BluezRadio {
    fn name(&self) -> &'static str {
        "bluez"
    }

    fn run(self: Box<Self>, io: RadioIo) -> RadioFuture {
        Box::pin(self.supervise(io))
    }
}

async fn new_session(limit: Duration) -> Result<bluer::Session, BluezError> {
    match tokio::time::timeout(limit, bluer::Session::new()).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(BluezError::BusUnavailable {
            address: system_bus_address(),
            reason: e.to_string(),
        }),
        Err(_) => Err(BluezError::Timeout(limit, "opening a bluer session")),
    }
}

/// The configured adapter, or `hci0`, or the first by name.
async fn select_adapter(
    session: &bluer::Session,
    wanted: Option<&str>,
) -> Result<bluer::Adapter, BluezError> {
    let mut names = session
        .adapter_names()
        .await
        .map_err(bluer_ctx("listing adapters"))?;
    names.sort();
    let name = match wanted {
        Some(w) => names.iter().find(|n| n.as_str() == w),
        None => names
            .iter()
            .find(|n| n.as_str() == "hci0")
            .or_else(|| names.first()),
    };
    let Some(name) = name else {
        return Err(BluezError::NoAdapter {
            wanted: wanted.unwrap_or("at all").to_string(),
            found: if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            },
        });
    };
    session
        .adapter(name)
        .map_err(bluer_ctx("opening the adapter"))
}

/// One session: connections, adapter checks, then advertiser, GATT server, scanner and the
/// watchers side by side until shutdown (`Ok`) or the first failure (`Err`).
async fn run_session(
    cfg: &Arc<BluezConfig>,
    clock: &SharedClock,
    io: &RadioIo,
    scanner: &mut scan::Persistent,
    failures: u32,
) -> Result<(), BluezError> {
    let limit = cfg.connect_timeout.min(CONNECT_LIMIT);
    let mut bus = bus::BusWatch::open(limit).await?;
    bus.require_bluetoothd().await?;
    let session = new_session(limit).await?;
    let adapter = select_adapter(&session, cfg.adapter.as_deref()).await?;
    let name = adapter.name().to_string();
    let adapter_events = adapter
        .events()
        .await
        .map_err(bluer_ctx("subscribing to adapter events"))?;
    let session_events = session
        .events()
        .await
        .map_err(bluer_ctx("subscribing to session events"))?;
    if !adapter
        .is_powered()
        .await
        .map_err(bluer_ctx("reading the adapter's Powered property"))?
    {
        return Err(BluezError::PoweredOff(name));
    }

    let manager = scanner.manager(limit).await?;
    let central = scan::find_adapter(&manager, &name).await?;

    if failures > 0 {
        info!(adapter = %name, "BlueZ: session rebuilt after {failures} failure(s)");
    } else {
        info!(adapter = %name, "BlueZ: session started");
    }

    // The parts end with the block, dropping the advertisement and application handles.
    let result = {
        let health = health(name.clone(), adapter_events, session_events);
        let advertiser = adv::run(adapter.clone(), cfg.clone(), io.broadcast.clone());
        let gatt_server = gatt::run(adapter.clone(), cfg.clone(), io.broadcast.clone());
        let scanning = scan::run(
            adapter.clone(),
            central.clone(),
            cfg.clone(),
            clock.clone(),
            io.heard.clone(),
            &mut scanner.events,
        );
        tokio::select! {
            _ = io.shutdown.cancelled() => Ok(()),
            e = bus.lost() => Err(e),
            e = health => Err(e),
            r = scanning => match r {
                Ok(never) => match never {},
                Err(e) => Err(e),
            },
            // These two retry by themselves and never finish.
            () = advertiser => Ok(()),
            () = gatt_server => Ok(()),
        }
    };

    // bluer stops the dropped discovery and unregisters the dropped advertisements and
    // application from spawned tasks: give them a moment to reach bluetoothd before the runtime
    // may go away.
    tokio::time::sleep(Duration::from_millis(150)).await;
    drop(session);
    result
}

/// Ends with the reason when the adapter is powered off or removed.
async fn health(
    name: String,
    adapter_events: impl futures::Stream<Item = bluer::AdapterEvent>,
    session_events: impl futures::Stream<Item = bluer::SessionEvent>,
) -> BluezError {
    use futures::StreamExt;
    enum Ev {
        Adapter(bluer::AdapterEvent),
        Session(bluer::SessionEvent),
    }
    let events = futures::stream::select(
        adapter_events.map(Ev::Adapter),
        session_events.map(Ev::Session),
    );
    tokio::pin!(events);
    while let Some(ev) = events.next().await {
        match ev {
            Ev::Adapter(bluer::AdapterEvent::PropertyChanged(bluer::AdapterProperty::Powered(
                false,
            ))) => return BluezError::PoweredOff(name),
            Ev::Session(bluer::SessionEvent::AdapterRemoved(n)) if n == name => {
                return BluezError::AdapterRemoved(name)
            }
            _ => {}
        }
    }
    BluezError::BusLost
}
