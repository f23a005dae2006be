//! Scanning: discovery started through bluer with an explicit filter (`Transport=le`,
//! `DuplicateData=true`), adverts read through btleplug's events, every advert-bearing event
//! turned into a [`Sighting`], iOS-style Bluezone peers read over GATT (once per slot:
//! [`IosReadCache`]), and a watchdog that restarts discovery when adverts stop.
//!
//! Why not btleplug's `start_scan`: it sets `DuplicateData` but leaves `Transport=auto`, so a
//! dual-mode adapter interleaves classic inquiry and loses up to half its LE scan time, while
//! real Bluezone phones advertise only 15 s of every 30 s. BlueZ merges the filters of all
//! clients that scan, so btleplug must not start discovery at all: bluer starts it, and
//! btleplug only listens to the device objects bluetoothd updates for everybody.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bluer::{DiscoveryFilter, DiscoveryTransport};
use bluezone_protocol::adv::{
    decode_structured, Advert, StructuredAdvert, BLUEZONE_IOS_CHARACTERISTIC, BLUEZONE_IOS_SERVICE,
};
use bluezone_protocol::bluezone::{IosReadCache, ReadDecision};
use bluezone_protocol::{Aem, PeerId, RollingId, Sighting};
use btleplug::api::{BDAddr, Central, CentralEvent, Manager as _, Peripheral as _};
use btleplug::platform::{Adapter, Manager, Peripheral, PeripheralId};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, trace, warn};
use uuid::Uuid;

use super::privacy::{redact, PeerTag};
use super::{bluer_ctx, btleplug_ctx, BluezConfig, BluezError};
use crate::clock::SharedClock;

/// Events for one advert arrive in bursts (one per changed property); within this window an
/// identical reception of the same device is the same advert.
const SAME_ADVERT: Duration = Duration::from_millis(50);

type Events = std::pin::Pin<Box<dyn futures::Stream<Item = CentralEvent> + Send>>;

/// btleplug state that outlives a session: the manager (one D-Bus connection, which btleplug
/// never closes, so it is kept while it works) and the last session's event stream.
#[derive(Default)]
pub(super) struct Persistent {
    manager: Option<Manager>,
    pub(super) events: Option<Events>,
    /// The bus was seen gone since the manager connected: its connection is dead.
    bus_lost: bool,
}

/// How long a call on a kept manager may take before its connection counts as dead (a
/// connection whose bus restarted unnoticed may swallow calls until their timeout).
const PROBE: Duration = Duration::from_secs(1);

impl Persistent {
    pub(super) fn bus_lost(&mut self) {
        self.bus_lost = true;
    }

    /// The manager of the last session if its connection still works, else a new one.
    pub(super) async fn manager(&mut self, limit: Duration) -> Result<Manager, BluezError> {
        let kept = self.manager.take().filter(|_| !self.bus_lost);
        self.bus_lost = false;
        if let Some(m) = kept {
            if let Ok(Ok(_)) = tokio::time::timeout(PROBE, m.adapters()).await {
                self.events = None;
                self.manager = Some(m.clone());
                return Ok(m);
            }
        }
        // The old connection is dead. Dropping a stream of it would make bluez-async 0.9 panic
        // in a spawned task (it unwraps `remove_match` on the dead connection), so the stream is
        // leaked instead: a few allocations per lost bus; a dead connection delivers nothing.
        if let Some(events) = self.events.take() {
            std::mem::forget(events);
        }
        let m = tokio::time::timeout(limit, Manager::new())
            .await
            .map_err(|_| BluezError::Timeout(limit, "connecting btleplug to the bus"))?
            .map_err(btleplug_ctx("connecting btleplug to the bus"))?;
        self.manager = Some(m.clone());
        Ok(m)
    }
}

/// btleplug's adapter for the bluer adapter `name`.
pub(super) async fn find_adapter(manager: &Manager, name: &str) -> Result<Adapter, BluezError> {
    let adapters = manager
        .adapters()
        .await
        .map_err(btleplug_ctx("listing adapters (btleplug)"))?;
    let mut seen = Vec::new();
    for a in adapters {
        // "hci0 (usb:v1D6Bp0245d050A)"
        let info = a
            .adapter_info()
            .await
            .map_err(btleplug_ctx("reading adapter info (btleplug)"))?;
        let this = info
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        if this == name {
            return Ok(a);
        }
        seen.push(this);
    }
    Err(BluezError::NoAdapter {
        wanted: name.to_string(),
        found: if seen.is_empty() {
            "none".to_string()
        } else {
            seen.join(", ")
        },
    })
}

/// The filter every discovery of ours runs with (asserted by the contract tests).
pub(crate) fn discovery_filter() -> DiscoveryFilter {
    DiscoveryFilter {
        transport: DiscoveryTransport::Le,
        // BlueZ then keeps reporting a device's adverts (RSSI) instead of only the first.
        duplicate_data: true,
        ..DiscoveryFilter::default()
    }
}

/// A running discovery: bluer stops it (`StopDiscovery`) when this is dropped.
pub(super) type Discovery = Pin<Box<dyn futures::Stream<Item = bluer::AdapterEvent> + Send>>;

/// Sets the filter (once per bluer session: bluer keeps it) and starts discovery.
pub(super) async fn start(adapter: &bluer::Adapter) -> Result<Discovery, BluezError> {
    if adapter.discovery_filter().await != discovery_filter() {
        adapter
            .set_discovery_filter(discovery_filter())
            .await
            .map_err(bluer_ctx("setting the discovery filter"))?;
    }
    let events = adapter
        .discover_devices()
        .await
        .map_err(bluer_ctx("starting discovery"))?;
    Ok(Box::pin(events))
}

/// Stops `old` and starts discovery again. bluer sends `StopDiscovery` from a spawned task when
/// the stream is dropped: waiting for `Discovering` to go false keeps that stop from landing
/// after the new start (another client's discovery keeps it true: then the wait just ends).
async fn restart(adapter: &bluer::Adapter, old: Discovery) -> Result<Discovery, BluezError> {
    drop(old);
    let stopped = async {
        while adapter.is_discovering().await.unwrap_or(false) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), stopped).await;
    start(adapter).await
}

/// The device an event reports a fresh advert of. Devices bluetoothd already knew when we
/// subscribed are replayed by btleplug as "discovered" with their cached data: they count only
/// from their first property change on.
fn advert_event(ev: &CentralEvent, stale: &mut HashSet<PeripheralId>) -> Option<PeripheralId> {
    match ev {
        CentralEvent::DeviceDiscovered(id) | CentralEvent::ServicesAdvertisement { id, .. } => {
            (!stale.contains(id)).then(|| id.clone())
        }
        CentralEvent::ManufacturerDataAdvertisement { id, .. }
        | CentralEvent::ServiceDataAdvertisement { id, .. }
        | CentralEvent::RssiUpdate { id, .. }
        | CentralEvent::DeviceUpdated(id) => {
            stale.remove(id);
            Some(id.clone())
        }
        _ => None,
    }
}

fn clamp_i8(v: i16) -> i8 {
    // Lossless after the clamp.
    v.clamp(i16::from(i8::MIN), i16::from(i8::MAX)) as i8
}

/// A sighting waiting for an iOS peer's ID.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Signal {
    rssi: i8,
    tx_power: Option<i8>,
}

/// The last sighting of an address.
struct Last {
    at: Instant,
    peer: PeerId,
    aem: Option<Aem>,
    signal: Signal,
}

struct Scanner {
    cfg: Arc<BluezConfig>,
    clock: SharedClock,
    heard: mpsc::Sender<Sighting>,
    stale: HashSet<PeripheralId>,
    /// Last sighting per address, to fold the several events of one advert into one.
    last: HashMap<BDAddr, Last>,
    /// iOS peers: the IDs read this slot, and the failed reads.
    ios: IosReadCache<BDAddr>,
    /// Addresses whose read is in flight, with the signal of the sighting that started it and
    /// the (unix) time the read started.
    ios_reading: HashMap<BDAddr, (Signal, i64)>,
    ios_last_start: Option<Instant>,
    reads: JoinSet<(BDAddr, Result<RollingId, String>)>,
}

/// Scans until an error; the caller rebuilds the session then.
pub(super) async fn run(
    adapter: bluer::Adapter,
    central: Adapter,
    cfg: Arc<BluezConfig>,
    clock: SharedClock,
    heard: mpsc::Sender<Sighting>,
    events_slot: &mut Option<Events>,
) -> Result<Infallible, BluezError> {
    let known = central
        .peripherals()
        .await
        .map_err(btleplug_ctx("listing known devices"))?;
    // Kept outside this future: see `Persistent::manager`.
    let events = events_slot.insert(
        central
            .events()
            .await
            .map_err(btleplug_ctx("subscribing to discovery events"))?,
    );
    let mut discovery = start(&adapter).await?;
    info!(
        stall_timeout = ?cfg.discovery_stall_timeout,
        "BlueZ: discovery started (LE only, duplicate reports on)"
    );

    let tick =
        (cfg.discovery_stall_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(10));
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_advert = Instant::now();
    let mut s = Scanner {
        cfg: cfg.clone(),
        clock,
        heard,
        stale: known.iter().map(|p| p.id()).collect(),
        last: HashMap::new(),
        ios: IosReadCache::new(),
        ios_reading: HashMap::new(),
        ios_last_start: None,
        reads: JoinSet::new(),
    };

    loop {
        tokio::select! {
            ev = events.next() => {
                let Some(ev) = ev else { return Err(BluezError::ScanStreamEnded) };
                if let Some(id) = advert_event(&ev, &mut s.stale) {
                    last_advert = Instant::now();
                    s.sighting(&central, &id).await;
                }
            }
            _ = ticker.tick() => {
                if last_advert.elapsed() >= cfg.discovery_stall_timeout {
                    warn!(
                        "BlueZ: no advert for {:?}; restarting discovery (BlueZ can stop \
                         reporting silently)",
                        last_advert.elapsed()
                    );
                    discovery = restart(&adapter, discovery).await?;
                    last_advert = Instant::now();
                }
                let now = Instant::now();
                s.last.retain(|_, v| now.duration_since(v.at) < SAME_ADVERT);
            }
            // The discovery's own events are not needed (btleplug reports the adverts), but its
            // stream is polled so that it does not back up.
            ev = discovery.next() => if ev.is_none() {
                // The adapter reports it stopped discovering (powered off, reset, another
                // program): rebuild the session, which checks the adapter first.
                return Err(BluezError::DiscoveryStopped);
            },
            Some(done) = s.reads.join_next(), if !s.reads.is_empty() => {
                match done {
                    Ok((addr, result)) => s.read_done(addr, result).await,
                    Err(e) => debug!("BlueZ: GATT read task ended: {e}"),
                }
            }
        }
    }
}

impl Scanner {
    /// Reads the device's current properties and reports what they carry.
    async fn sighting(&mut self, central: &Adapter, id: &PeripheralId) {
        let p = match central.peripheral(id).await {
            Ok(p) => p,
            Err(e) => {
                trace!(
                    "BlueZ: device gone before it could be read: {}",
                    redact(&e.to_string())
                );
                return;
            }
        };
        let props = match p.properties().await {
            Ok(Some(props)) => props,
            Ok(None) => return,
            Err(e) => {
                trace!(
                    "BlueZ: reading device properties: {}",
                    redact(&e.to_string())
                );
                return;
            }
        };
        // bluetoothd drops RSSI from devices it has not heard lately: no RSSI, no fresh advert.
        let Some(rssi) = props.rssi else { return };
        let signal = Signal {
            rssi: clamp_i8(rssi),
            tx_power: props.tx_power_level.map(clamp_i8),
        };
        let adv = StructuredAdvert {
            manufacturer_data: props
                .manufacturer_data
                .iter()
                .map(|(c, d)| (*c, d.as_slice()))
                .collect(),
            service_data: props
                .service_data
                .iter()
                .map(|(u, d)| (u.as_u128(), d.as_slice()))
                .collect(),
            services: props.services.iter().map(Uuid::as_u128).collect(),
        };
        match decode_structured(&adv) {
            Ok(Some(Advert::BluezoneAndroid { id })) => {
                self.emit(props.address, PeerId::Bluezone(id), None, signal)
                    .await
            }
            Ok(Some(Advert::Gaen { rpi, aem })) => {
                self.emit(props.address, PeerId::Gaen(rpi), Some(aem), signal)
                    .await
            }
            Ok(Some(Advert::BluezoneIos { overflow })) => {
                self.ios(p, props.address, overflow, signal).await
            }
            Ok(None) => {}
            Err(e) => debug!(
                peer = %PeerTag::of(props.address.into_inner()),
                "BlueZ: ignoring malformed advert: {e}"
            ),
        }
    }

    async fn emit(&mut self, addr: BDAddr, peer: PeerId, aem: Option<Aem>, signal: Signal) {
        let now = Instant::now();
        if let Some(last) = self.last.get(&addr) {
            if now.duration_since(last.at) < SAME_ADVERT
                && (last.peer, last.aem, last.signal) == (peer, aem, signal)
            {
                return;
            }
        }
        self.last.insert(
            addr,
            Last {
                at: now,
                peer,
                aem,
                signal,
            },
        );
        let sighting = Sighting {
            peer,
            aem,
            rssi: signal.rssi,
            tx_power: signal.tx_power,
            time: self.clock.now(),
        };
        if self.heard.send(sighting).await.is_err() {
            trace!("BlueZ: sighting dropped: the service loop is gone");
        }
    }

    /// An iOS-style Bluezone peer: its ID from this slot's cache, or a (rate-limited) read.
    async fn ios(&mut self, p: Peripheral, addr: BDAddr, overflow: bool, signal: Signal) {
        let now = self.clock.now();
        let retry_after = i64::try_from(self.cfg.ios_retry_after.as_secs()).unwrap_or(i64::MAX);
        match self.ios.decide(&addr, now, retry_after) {
            ReadDecision::Known(id) => {
                self.emit(addr, PeerId::Bluezone(id), None, signal).await;
                return;
            }
            ReadDecision::Wait => return,
            ReadDecision::Read => {}
        }
        if !self.cfg.read_ios_peers
            || self.ios_reading.contains_key(&addr)
            || !self.reads.is_empty()
        {
            return;
        }
        if let Some(t) = self.ios_last_start {
            if t.elapsed() < self.cfg.ios_read_interval {
                return;
            }
        }
        debug!(peer = %PeerTag::of(addr.into_inner()), overflow, "BlueZ: reading the ID of an iOS Bluezone peer");
        self.ios_last_start = Some(Instant::now());
        self.ios_reading.insert(addr, (signal, now));
        let limit = self.cfg.ios_read_timeout;
        self.reads.spawn(async move {
            let result = match tokio::time::timeout(limit, read_ios_id(&p)).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {limit:?}")),
            };
            if let Err(e) = p.disconnect().await {
                trace!(
                    "BlueZ: disconnecting after the read: {}",
                    redact(&e.to_string())
                );
            }
            (addr, result)
        });
    }

    async fn read_done(&mut self, addr: BDAddr, result: Result<RollingId, String>) {
        let reading = self.ios_reading.remove(&addr);
        let now = self.clock.now();
        match result {
            Ok(id) => {
                let started = reading.map_or(now, |(_, t)| t);
                self.ios.read_ok(addr, id, started, now);
                if let Some((signal, _)) = reading {
                    self.emit(addr, PeerId::Bluezone(id), None, signal).await;
                }
            }
            Err(e) => {
                debug!(
                    peer = %PeerTag::of(addr.into_inner()),
                    "BlueZ: reading an iOS peer's ID failed: {}",
                    redact(&e)
                );
                self.ios.read_failed(addr, now);
            }
        }
    }
}

/// Connects, finds the Bluezone iOS characteristic and reads the 12-byte ID.
async fn read_ios_id(p: &Peripheral) -> Result<RollingId, String> {
    if !p.is_connected().await.unwrap_or(false) {
        p.connect().await.map_err(|e| format!("connecting: {e}"))?;
    }
    p.discover_services()
        .await
        .map_err(|e| format!("discovering services: {e}"))?;
    let characteristic = p
        .characteristics()
        .into_iter()
        .find(|c| {
            c.uuid == Uuid::from_u128(BLUEZONE_IOS_CHARACTERISTIC)
                && c.service_uuid == Uuid::from_u128(BLUEZONE_IOS_SERVICE)
        })
        .ok_or_else(|| "no Bluezone characteristic".to_string())?;
    let value = p
        .read(&characteristic)
        .await
        .map_err(|e| format!("reading: {e}"))?;
    RollingId::try_from(value.as_slice()).map_err(|_| {
        format!(
            "characteristic value is {} bytes, expected {}",
            value.len(),
            RollingId::LEN
        )
    })
}
