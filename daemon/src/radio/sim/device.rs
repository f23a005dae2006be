//! The devices of a medium: what kind each is ([`DeviceModel`]), how it was added
//! ([`DeviceSpec`]), and what it puts on air — its raw adverts, encoded and decoded once per
//! broadcast ([`Device::air`]).

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bluezone_protocol::adv;
use bluezone_protocol::time::UnixSeconds;
use tokio::sync::watch;

use super::frame::Air;
use super::mix;
use super::space::{Mobility, Position};
use crate::radio::Broadcast;

/// Broadcast changes a device remembers: IDs switch every 10–15 minutes, scanners look back
/// at most one scan window.
const CHANGES_KEPT: usize = 4;

/// What kind of device this is, i.e. what it puts on air and whether it scans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceModel {
    /// Our daemon, driven by a [`SimRadio`]: advertises the Bluezone-Android layout (if
    /// `bluezone`) and/or the GAEN layout (if `gaen`) of its current [`Broadcast`], and scans.
    Bluezoned { bluezone: bool, gaen: bool },
    /// A Bluezone Android phone: the ID is in its advert.
    BluezoneAndroid,
    /// A Bluezone iOS phone in the foreground: the advert carries no ID; scanners read it over
    /// GATT.
    BluezoneIos,
    /// An Exposure Notification phone: RPI + AEM in service data.
    Gaen,
    /// An attacker re-broadcasting one captured raw advert, whatever the time.
    Replayer { packet: Vec<u8> },
}

impl DeviceModel {
    pub(super) fn label(&self) -> &'static str {
        match self {
            DeviceModel::Bluezoned { .. } => "bluezoned",
            DeviceModel::BluezoneAndroid => "Bluezone-Android",
            DeviceModel::BluezoneIos => "Bluezone-iOS",
            DeviceModel::Gaen => "GAEN",
            DeviceModel::Replayer { .. } => "replayer",
        }
    }
}

/// Everything the medium needs to know about a new device.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceSpec {
    /// For logs and demos only.
    pub name: String,
    /// What it puts on air, and whether it runs our daemon.
    pub model: DeviceModel,
    /// Radiated power; RSSI = tx power − attenuation.
    pub tx_power_dbm: i8,
    /// Where it is over time.
    pub mobility: Mobility,
    /// Time between two packets of each advert the device has on air.
    pub advert_interval: Duration,
}

impl DeviceSpec {
    /// A spec with the model's usual tx power and advert interval: −15 dBm ("low") and 100 ms
    /// for Bluezone phones and bluezoned, −10 dBm and 250 ms for GAEN (200–270 ms on real phones),
    /// −10 dBm and 100 ms for a replayer.
    pub fn new(name: impl Into<String>, model: DeviceModel, mobility: Mobility) -> Self {
        let (tx_power_dbm, interval_ms) = match model {
            DeviceModel::Gaen => (-10, 250),
            DeviceModel::Replayer { .. } => (-10, 100),
            _ => (-15, 100),
        };
        DeviceSpec {
            name: name.into(),
            model,
            tx_power_dbm,
            mobility,
            advert_interval: Duration::from_millis(interval_ms),
        }
    }
}

/// Identifies a device on one medium.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(pub(super) usize);

impl DeviceId {
    /// Devices are numbered from 0 in the order they were added.
    pub fn index(self) -> usize {
        self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A phone's broadcast as a function of true unix time (e.g. the IDs of its own keys).
pub type BroadcastSchedule = Arc<dyn Fn(UnixSeconds) -> Broadcast + Send + Sync>;

/// Where a device's on-air state comes from.
pub(super) enum Source {
    /// Nothing on air (a bluezoned device whose radio is not running).
    Off,
    Watch(watch::Receiver<Broadcast>),
    Schedule(BroadcastSchedule),
}

pub(super) struct Device {
    pub(super) spec: DeviceSpec,
    /// `(from_ms, mobility)`, ascending; the first entry starts at `i64::MIN`.
    pub(super) mobility: Vec<(i64, Mobility)>,
    pub(super) added_ms: i64,
    pub(super) removed_ms: Option<i64>,
    pub(super) sender: watch::Sender<Broadcast>,
    pub(super) source: Source,
    /// Bumped whenever `source` is replaced, so a stopping radio only clears its own.
    pub(super) source_gen: u64,
    /// What it has on air, kept until its broadcast changes.
    pub(super) air: Option<Arc<Air>>,
    pub(super) gatt_reads_served: Arc<AtomicU64>,
    /// Recent changes of a watched broadcast, `(true time ms, new value)` ascending, as its
    /// radio saw them happen (see [`Device::note_broadcast`]): scanners that hear a window's
    /// earlier instants at its end hear what was on air then.
    pub(super) changes: Vec<(i64, Broadcast)>,
}

impl Device {
    pub(super) fn present(&self, t_ms: i64) -> bool {
        let before_removal = match self.removed_ms {
            Some(r) => t_ms < r,
            None => true,
        };
        t_ms >= self.added_ms && before_removal
    }

    pub(super) fn position(&self, t_ms: i64) -> Position {
        self.mobility
            .iter()
            .rev()
            .find(|(from, _)| *from <= t_ms)
            .or(self.mobility.first())
            .map_or(
                Position {
                    x: 0.0,
                    y: 0.0,
                    room: 0,
                },
                |(_, m)| m.position_at_ms(t_ms),
            )
    }

    /// Records that the watched broadcast became `b` at true time `t_ms` (a few are kept).
    pub(super) fn note_broadcast(&mut self, t_ms: i64, b: Broadcast) {
        if self.changes.len() >= CHANGES_KEPT {
            self.changes.remove(0);
        }
        self.changes.push((t_ms, b));
    }

    fn broadcast(&self, t_ms: i64) -> Option<Broadcast> {
        match &self.source {
            Source::Off => None,
            Source::Watch(rx) => {
                // Before the last recorded change: the value recorded for `t_ms`. From it on
                // (or with nothing recorded): what is on air now, recorded or not.
                let at = match self.changes.last() {
                    Some((since, _)) if t_ms < *since => self
                        .changes
                        .iter()
                        .rev()
                        .find(|(since, _)| *since <= t_ms)
                        .map(|(_, b)| *b),
                    _ => None,
                };
                Some(at.unwrap_or_else(|| *rx.borrow()))
            }
            Source::Schedule(f) => Some(f(t_ms.div_euclid(1000))),
        }
    }

    /// What the device has on air at `t_ms`: encoded and decoded once per broadcast, then
    /// shared by every scanner until the broadcast changes.
    pub(super) fn air(&mut self, t_ms: i64, seed: u64, index: usize) -> Option<Arc<Air>> {
        let b = self.broadcast(t_ms)?;
        if let Some(air) = self.air.as_ref().filter(|a| a.broadcast == b) {
            return Some(Arc::clone(air));
        }
        let mut raw = Vec::new();
        match &self.spec.model {
            DeviceModel::Bluezoned { bluezone, gaen } => {
                if let Some(id) = b.bluezone.filter(|_| *bluezone) {
                    raw.push(adv::encode_bluezone_android(&id));
                }
                if let Some((rpi, aem)) = b.gaen.filter(|_| *gaen) {
                    raw.push(adv::encode_gaen(&rpi, &aem));
                }
            }
            DeviceModel::BluezoneAndroid => {
                if let Some(id) = b.bluezone {
                    raw.push(adv::encode_bluezone_android(&id));
                }
            }
            DeviceModel::BluezoneIos => {
                if b.bluezone.is_some() {
                    raw.push(adv::encode_bluezone_ios_foreground());
                }
            }
            DeviceModel::Gaen => {
                if let Some((rpi, aem)) = b.gaen {
                    raw.push(adv::encode_gaen(&rpi, &aem));
                }
            }
            DeviceModel::Replayer { packet } => raw.push(packet.clone()),
        }
        let air = Arc::new(Air {
            broadcast: b,
            address: mix(mix(seed ^ 0x0ADD_7E55 ^ index as u64) ^ b.epoch),
            // The scanner's own decoder, as a real scanner would run it on the raw bytes.
            adverts: raw
                .iter()
                .map(|r| adv::decode_advert(r).ok().flatten())
                .collect(),
            gatt_value: match self.spec.model {
                DeviceModel::BluezoneIos => b.bluezone,
                _ => None,
            },
        });
        self.air = Some(Arc::clone(&air));
        Some(air)
    }
}
