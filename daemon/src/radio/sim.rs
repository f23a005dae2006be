//! Simulated radio: one in-process [`Medium`] shared by many devices on virtual time.
//!
//! The medium knows where every device is (fixed, walking a path, or moved by a test), what it
//! has on air (the real raw advert bytes from `bluezone_protocol::adv`), and turns distance into
//! RSSI with a log-distance path-loss model plus Gaussian noise, wall loss between rooms, packet
//! loss and receiver sensitivity (see [`MediumConfig`]). Bluezoned devices run a [`SimRadio`] that
//! implements [`Radio`]: it puts the daemon's [`Broadcast`] on air and scans with a duty cycle
//! ([`ScanConfig`]), decoding the raw bytes it hears with the same `decode_advert` a real
//! scanner uses and performing simulated GATT reads of Bluezone-iOS peers.
//!
//! Per scan window a peer sends `window / advert_interval` packets of each advert it has on air;
//! to keep CPU small these are coalesced onto at most `max_packets_per_window` (4) receptions,
//! each with its own noise and its own chance of loss. A Bluezone-iOS peer is read over GATT at
//! most once per address per 15-minute slot (a failed read is retried in the next window).
//!
//! Everything runs on tokio's clock: under `tokio::time::pause()` (or
//! `#[tokio::test(start_paused = true)]`) a simulated day of ten devices takes seconds. There are
//! no threads, sockets or real timers; all randomness comes from [`MediumConfig::seed`], so a run
//! is reproducible.
//!
//! The medium also answers ground-truth questions ([`Medium::distance`],
//! [`Medium::contacts_within`]) so that demos can compare what the daemon concluded with what
//! really happened.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bluezone_protocol::adv::{self, Advert};
use bluezone_protocol::time::UnixSeconds;
use bluezone_protocol::{PeerId, RollingId, Sighting};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, watch};

use super::{Broadcast, Radio, RadioError, RadioFuture, RadioIo};
use crate::clock::{self, SharedClock};

/// Length of the slot during which a GATT-read Bluezone-iOS ID stays cached (bluezone.md §1).
pub const GATT_CACHE_SLOT_SECONDS: i64 = 900;

/// Distances below this are treated as this (the far-field model breaks down nearer).
pub const MIN_DISTANCE_M: f64 = 0.1;

/// Errors of the simulation's API (never of the simulated air, which just loses packets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// The id does not belong to this medium.
    #[error("no device {0} on this medium")]
    UnknownDevice(DeviceId),
    /// Ground truth asked about a time at which the device was not (or no longer) on the medium.
    #[error("device {device} is not on the medium at unix time {t}")]
    Absent {
        /// The absent device.
        device: DeviceId,
        /// The time asked about.
        t: UnixSeconds,
    },
    /// `contacts_within` needs a positive step.
    #[error("step must be a positive number of seconds, got {0}")]
    InvalidStep(i64),
    /// A [`ScanConfig`] that cannot be scheduled.
    #[error("invalid scan configuration: {0}")]
    InvalidScan(&'static str),
    /// Only [`DeviceModel::Bluezoned`] devices run our daemon and hence a [`SimRadio`].
    #[error(
        "device {device} is a {model} device; only DeviceModel::Bluezoned devices get a SimRadio"
    )]
    NotBluezoned {
        /// The device asked for.
        device: DeviceId,
        /// Its model, for the message.
        model: &'static str,
    },
    /// A bluezoned device's on-air state comes from its radio's `RadioIo::broadcast`.
    #[error("device {0} runs bluezoned: its broadcast comes from its SimRadio, not from the test")]
    DrivenByRadio(DeviceId),
}

/// Propagation and loss parameters of a [`Medium`].
///
/// Mean attenuation (tx power − RSSI) at distance `d` metres:
/// `path_loss_at_1m_db + 10 · path_loss_exponent · log10(max(d, 0.1))`, plus `wall_loss_db`
/// when the two devices are in different rooms (one wall, however many rooms apart). Every packet
/// adds its own `N(0, noise_sigma_db)` and is then lost with probability `packet_loss`; a packet
/// below `sensitivity_dbm` is not heard.
///
/// With the defaults (indoor, exponent 2.7): 1 m → 40.0 dB, 2 m → 48.1 dB, 3 m → 52.9 dB,
/// 5 m → 58.9 dB, 10 m → 67.0 dB, 30 m → 79.9 dB (89.9 dB through a wall). At Bluezone's "low"
/// tx power of −15 dBm and −100 dBm sensitivity, packets beyond 85 dB are lost: mean range about
/// 46 m in one room and 20 m through a wall.
#[derive(Clone, Debug, PartialEq)]
pub struct MediumConfig {
    /// Attenuation at the 1 m reference distance (40 dB: 2.4 GHz free space plus body/antenna).
    pub path_loss_at_1m_db: f64,
    /// How fast attenuation grows with distance (2 = free space; 2.7 = indoors).
    pub path_loss_exponent: f64,
    /// Standard deviation of each packet's RSSI (multipath fading, orientation).
    pub noise_sigma_db: f64,
    /// Extra attenuation between devices in different rooms.
    pub wall_loss_db: f64,
    /// Weakest RSSI a scanner still reports.
    pub sensitivity_dbm: i8,
    /// Probability that any one packet (advert or GATT read) is lost, in `[0, 1]`.
    pub packet_loss: f64,
    /// Seeds every random draw of the simulation (noise, loss, addresses).
    pub seed: u64,
}

impl Default for MediumConfig {
    fn default() -> Self {
        MediumConfig {
            path_loss_at_1m_db: 40.0,
            path_loss_exponent: 2.7,
            noise_sigma_db: 4.0,
            wall_loss_db: 10.0,
            sensitivity_dbm: -100,
            packet_loss: 0.1,
            seed: 0,
        }
    }
}

impl MediumConfig {
    /// Mean attenuation in dB over `distance_m` through `walls` walls (before noise): the formula
    /// the medium uses, exposed so tests and demos can compare against it.
    pub fn mean_attenuation_db(&self, distance_m: f64, walls: u32) -> f64 {
        let d = if distance_m.is_nan() {
            distance_m
        } else {
            distance_m.max(MIN_DISTANCE_M)
        };
        self.path_loss_at_1m_db
            + 10.0 * self.path_loss_exponent * d.log10()
            + f64::from(walls) * self.wall_loss_db
    }
}

/// Where a device is: metres on a floor plan, and the room it is in (walls separate rooms).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Position {
    /// Metres east on the floor plan.
    pub x: f64,
    /// Metres north on the floor plan.
    pub y: f64,
    /// Devices in different rooms have a wall between them.
    pub room: u32,
}

impl Position {
    /// Straight-line distance in metres (rooms do not matter here, only for wall loss).
    pub fn distance(&self, other: &Position) -> f64 {
        (self.x - other.x).hypot(self.y - other.y)
    }
}

/// How a device moves: its position as a function of (true, virtual) unix time.
#[derive(Clone, Debug, PartialEq)]
pub enum Mobility {
    /// Stays put.
    Fixed { x: f64, y: f64, room: u32 },
    /// A piecewise-linear walk through waypoints `(time, x, y, room)`, in any order (they are
    /// sorted by time). Before the first waypoint the device waits at it, after the last it stays
    /// there. Between two waypoints it is in the room of the earlier one and changes room on
    /// arrival. An empty path means the origin of room 0.
    Path(Vec<(UnixSeconds, f64, f64, u32)>),
}

impl Mobility {
    /// The position at unix time `t_ms` (milliseconds, for smooth walks).
    pub fn position_at_ms(&self, t_ms: i64) -> Position {
        match self {
            Mobility::Fixed { x, y, room } => Position {
                x: *x,
                y: *y,
                room: *room,
            },
            Mobility::Path(points) => path_position(points, t_ms),
        }
    }

    fn normalised(self) -> Mobility {
        match self {
            Mobility::Path(mut points) => {
                points.sort_by_key(|p| p.0);
                Mobility::Path(points)
            }
            fixed => fixed,
        }
    }
}

/// Position on a time-sorted path.
fn path_position(points: &[(UnixSeconds, f64, f64, u32)], t_ms: i64) -> Position {
    let at = |p: &(UnixSeconds, f64, f64, u32)| Position {
        x: p.1,
        y: p.2,
        room: p.3,
    };
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return Position {
            x: 0.0,
            y: 0.0,
            room: 0,
        };
    };
    let t = t_ms as f64 / 1000.0;
    if t <= first.0 as f64 {
        return at(first);
    }
    if t >= last.0 as f64 {
        return at(last);
    }
    for pair in points.windows(2) {
        let [a, b] = pair else { continue };
        let (ta, tb) = (a.0 as f64, b.0 as f64);
        if ta <= t && t < tb {
            let f = (t - ta) / (tb - ta);
            return Position {
                x: a.1 + f * (b.1 - a.1),
                y: a.2 + f * (b.2 - a.2),
                room: a.3,
            };
        }
    }
    at(last)
}

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
    fn label(&self) -> &'static str {
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
pub struct DeviceId(usize);

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

/// Counters over the whole medium, for tests and demos that check the loss model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Advert packets that reached some scanner's antenna (before loss).
    pub packets: u64,
    /// Of those, lost to `packet_loss`.
    pub lost: u64,
    /// Of those, not lost but below the receiver's sensitivity.
    pub too_weak: u64,
    /// Heard packets that did not decode to anything a Bluezone/GAEN scanner uses.
    pub ignored: u64,
    /// Successful simulated GATT reads of Bluezone-iOS IDs.
    pub gatt_reads: u64,
    /// GATT reads that failed (lost, or the peer had no ID to give).
    pub gatt_failures: u64,
}

impl SimStats {
    fn add(&mut self, o: &SimStats) {
        self.packets += o.packets;
        self.lost += o.lost;
        self.too_weak += o.too_weak;
        self.ignored += o.ignored;
        self.gatt_reads += o.gatt_reads;
        self.gatt_failures += o.gatt_failures;
    }
}

/// A phone's broadcast as a function of true unix time (e.g. the IDs of its own keys).
pub type BroadcastSchedule = Arc<dyn Fn(UnixSeconds) -> Broadcast + Send + Sync>;

/// Where a device's on-air state comes from.
enum Source {
    /// Nothing on air (a bluezoned device whose radio is not running).
    Off,
    Watch(watch::Receiver<Broadcast>),
    Schedule(BroadcastSchedule),
}

/// What a device has on air for one broadcast: its random address and raw adverts.
struct OnAir {
    broadcast: Broadcast,
    address: u64,
    adverts: Arc<Vec<Vec<u8>>>,
}

struct Device {
    spec: DeviceSpec,
    /// `(from_ms, mobility)`, ascending; the first entry starts at `i64::MIN`.
    mobility: Vec<(i64, Mobility)>,
    added_ms: i64,
    removed_ms: Option<i64>,
    sender: watch::Sender<Broadcast>,
    source: Source,
    /// Bumped whenever `source` is replaced, so a stopping radio only clears its own.
    source_gen: u64,
    air: Option<OnAir>,
    gatt_reads_served: u64,
}

impl Device {
    fn present(&self, t_ms: i64) -> bool {
        let before_removal = match self.removed_ms {
            Some(r) => t_ms < r,
            None => true,
        };
        t_ms >= self.added_ms && before_removal
    }

    fn position(&self, t_ms: i64) -> Position {
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

    fn broadcast(&self, t_ms: i64) -> Option<Broadcast> {
        match &self.source {
            Source::Off => None,
            Source::Watch(rx) => Some(*rx.borrow()),
            Source::Schedule(f) => Some(f(t_ms.div_euclid(1000))),
        }
    }

    /// The device's address and raw adverts at `t_ms` (cached per broadcast).
    fn on_air(&mut self, t_ms: i64, seed: u64, index: usize) -> Option<(u64, Arc<Vec<Vec<u8>>>)> {
        let b = self.broadcast(t_ms)?;
        if let Some(air) = self.air.as_ref().filter(|a| a.broadcast == b) {
            return Some((air.address, Arc::clone(&air.adverts)));
        }
        let mut adverts = Vec::new();
        match &self.spec.model {
            DeviceModel::Bluezoned { bluezone, gaen } => {
                if let Some(id) = b.bluezone.filter(|_| *bluezone) {
                    adverts.push(adv::encode_bluezone_android(&id));
                }
                if let Some((rpi, aem)) = b.gaen.filter(|_| *gaen) {
                    adverts.push(adv::encode_gaen(&rpi, &aem));
                }
            }
            DeviceModel::BluezoneAndroid => {
                if let Some(id) = b.bluezone {
                    adverts.push(adv::encode_bluezone_android(&id));
                }
            }
            DeviceModel::BluezoneIos => {
                if b.bluezone.is_some() {
                    adverts.push(adv::encode_bluezone_ios_foreground());
                }
            }
            DeviceModel::Gaen => {
                if let Some((rpi, aem)) = b.gaen {
                    adverts.push(adv::encode_gaen(&rpi, &aem));
                }
            }
            DeviceModel::Replayer { packet } => adverts.push(packet.clone()),
        }
        let address = mix(mix(seed ^ 0x0ADD_7E55 ^ index as u64) ^ b.epoch);
        let adverts = Arc::new(adverts);
        self.air = Some(OnAir {
            broadcast: b,
            address,
            adverts: Arc::clone(&adverts),
        });
        Some((address, adverts))
    }

    /// What a GATT read of the Bluezone-iOS characteristic returns now.
    fn gatt_value(&self, t_ms: i64) -> Option<RollingId> {
        match self.spec.model {
            DeviceModel::BluezoneIos => self.broadcast(t_ms).and_then(|b| b.bluezone),
            _ => None,
        }
    }
}

struct Inner {
    config: MediumConfig,
    clock: SharedClock,
    devices: Vec<Device>,
    stats: SimStats,
}

impl Inner {
    fn device(&self, id: DeviceId) -> Result<&Device, SimError> {
        self.devices.get(id.0).ok_or(SimError::UnknownDevice(id))
    }
    fn device_mut(&mut self, id: DeviceId) -> Result<&mut Device, SimError> {
        self.devices
            .get_mut(id.0)
            .ok_or(SimError::UnknownDevice(id))
    }
    fn position_ms(&self, id: DeviceId, t_ms: i64) -> Result<Option<Position>, SimError> {
        let d = self.device(id)?;
        Ok(d.present(t_ms).then(|| d.position(t_ms)))
    }
}

/// The shared air of a simulation: devices, their positions and what they broadcast. A cheap
/// handle (clone it freely); every clone is the same medium.
#[derive(Clone)]
pub struct Medium {
    inner: Arc<Mutex<Inner>>,
}

impl fmt::Debug for Medium {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("Medium")
            .field("config", &inner.config)
            .field("devices", &inner.devices.len())
            .field("stats", &inner.stats)
            .finish()
    }
}

impl Medium {
    /// A medium without devices. `clock` is the true time that drives mobility, broadcast
    /// schedules and ground truth (typically a [`crate::clock::VirtualClock`]); each radio stamps
    /// its receptions with its own, possibly skewed, clock.
    pub fn new(config: MediumConfig, clock: SharedClock) -> Medium {
        Medium {
            inner: Arc::new(Mutex::new(Inner {
                config,
                clock,
                devices: Vec::new(),
                stats: SimStats::default(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The propagation parameters in force.
    pub fn config(&self) -> MediumConfig {
        self.lock().config.clone()
    }

    /// True unix time of the simulation, in seconds.
    pub fn now(&self) -> UnixSeconds {
        self.lock().clock.now()
    }

    /// Puts a device on the air from now on. Phones start broadcasting `Broadcast::default()`
    /// (nothing, except a replayer) until the test drives [`DeviceHandle::broadcast_sender`] or
    /// sets a schedule; a bluezoned device is silent until its [`SimRadio`] runs.
    pub fn add_device(&self, spec: DeviceSpec) -> DeviceHandle {
        let mut inner = self.lock();
        let now_ms = inner.clock.now_ms();
        let (sender, rx) = watch::channel(Broadcast::default());
        let source = match spec.model {
            DeviceModel::Bluezoned { .. } => Source::Off,
            _ => Source::Watch(rx),
        };
        let mobility = vec![(i64::MIN, spec.mobility.clone().normalised())];
        let id = DeviceId(inner.devices.len());
        inner.devices.push(Device {
            spec,
            mobility,
            added_ms: now_ms,
            removed_ms: None,
            sender,
            source,
            source_gen: 0,
            air: None,
            gatt_reads_served: 0,
        });
        DeviceHandle {
            medium: self.clone(),
            id,
        }
    }

    /// A handle to a device already on this medium.
    pub fn device(&self, id: DeviceId) -> Result<DeviceHandle, SimError> {
        self.lock().device(id)?;
        Ok(DeviceHandle {
            medium: self.clone(),
            id,
        })
    }

    /// Every device ever added (removed ones included), in order.
    pub fn devices(&self) -> Vec<DeviceId> {
        (0..self.lock().devices.len()).map(DeviceId).collect()
    }

    /// Ground truth: where `id` is at unix time `t`.
    pub fn position(&self, id: DeviceId, t: UnixSeconds) -> Result<Position, SimError> {
        self.lock()
            .position_ms(id, t.saturating_mul(1000))?
            .ok_or(SimError::Absent { device: id, t })
    }

    /// Ground truth: distance in metres between `a` and `b` at unix time `t`.
    pub fn distance(&self, a: DeviceId, b: DeviceId, t: UnixSeconds) -> Result<f64, SimError> {
        let inner = self.lock();
        let t_ms = t.saturating_mul(1000);
        let pa = inner
            .position_ms(a, t_ms)?
            .ok_or(SimError::Absent { device: a, t })?;
        let pb = inner
            .position_ms(b, t_ms)?
            .ok_or(SimError::Absent { device: b, t })?;
        Ok(pa.distance(&pb))
    }

    /// Ground truth: how many seconds in `[from, to)` `a` and `b` were both on the medium and
    /// within `meters` of each other, sampling every `step` seconds (each sample counts `step`).
    pub fn contacts_within(
        &self,
        a: DeviceId,
        b: DeviceId,
        meters: f64,
        from: UnixSeconds,
        to: UnixSeconds,
        step: i64,
    ) -> Result<i64, SimError> {
        if step <= 0 {
            return Err(SimError::InvalidStep(step));
        }
        let inner = self.lock();
        inner.device(a)?;
        inner.device(b)?;
        let mut total = 0i64;
        let mut t = from;
        while t < to {
            let t_ms = t.saturating_mul(1000);
            if let (Some(pa), Some(pb)) = (inner.position_ms(a, t_ms)?, inner.position_ms(b, t_ms)?)
            {
                if pa.distance(&pb) <= meters {
                    total = total.saturating_add(step.min(to - t));
                }
            }
            t = t.saturating_add(step);
        }
        Ok(total)
    }

    /// Counters since the medium was created.
    pub fn stats(&self) -> SimStats {
        self.lock().stats
    }
}

/// A device on a medium: lets tests move it, drive what a phone broadcasts, remove it, or build
/// its [`SimRadio`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct DeviceHandle {
    medium: Medium,
    id: DeviceId,
}

impl DeviceHandle {
    /// The device's id on its medium (for ground-truth queries).
    pub fn id(&self) -> DeviceId {
        self.id
    }

    /// The medium the device lives on.
    pub fn medium(&self) -> &Medium {
        &self.medium
    }

    /// The spec it was added with.
    pub fn spec(&self) -> Result<DeviceSpec, SimError> {
        Ok(self.medium.lock().device(self.id)?.spec.clone())
    }

    /// Teleports the device to `(x, y)` in `room` from now on (earlier ground truth unchanged).
    pub fn set_position(&self, x: f64, y: f64, room: u32) -> Result<(), SimError> {
        self.set_mobility(Mobility::Fixed { x, y, room })
    }

    /// Replaces the device's movement from now on (earlier ground truth unchanged).
    pub fn set_mobility(&self, mobility: Mobility) -> Result<(), SimError> {
        let mut inner = self.medium.lock();
        let now_ms = inner.clock.now_ms();
        let dev = inner.device_mut(self.id)?;
        dev.mobility.retain(|(from, _)| *from < now_ms);
        dev.mobility.push((now_ms, mobility.normalised()));
        Ok(())
    }

    /// Takes the device off the medium from now on: it is neither heard nor hears. A running
    /// [`SimRadio`] of it idles until shutdown.
    pub fn remove(&self) -> Result<(), SimError> {
        let mut inner = self.medium.lock();
        let now_ms = inner.clock.now_ms();
        let dev = inner.device_mut(self.id)?;
        dev.removed_ms.get_or_insert(now_ms);
        Ok(())
    }

    /// The sender that drives a phone's (or replayer's) on-air state: `send_replace` a new
    /// [`Broadcast`] and peers hear it on their next scan; bump `epoch` to rotate its address.
    /// Calling this also makes the sender the source again after a schedule.
    pub fn broadcast_sender(&self) -> Result<watch::Sender<Broadcast>, SimError> {
        let mut inner = self.medium.lock();
        let dev = inner.device_mut(self.id)?;
        if matches!(dev.spec.model, DeviceModel::Bluezoned { .. }) {
            return Err(SimError::DrivenByRadio(self.id));
        }
        if !matches!(dev.source, Source::Watch(_)) {
            dev.source = Source::Watch(dev.sender.subscribe());
            dev.source_gen += 1;
        }
        Ok(dev.sender.clone())
    }

    /// Makes a phone broadcast `schedule(true unix time)`, e.g. the IDs derived from its own
    /// keys, without a task to drive it. The closure runs under the medium's lock: it must not
    /// call back into the medium.
    pub fn set_broadcast_schedule(&self, schedule: BroadcastSchedule) -> Result<(), SimError> {
        let mut inner = self.medium.lock();
        let dev = inner.device_mut(self.id)?;
        if matches!(dev.spec.model, DeviceModel::Bluezoned { .. }) {
            return Err(SimError::DrivenByRadio(self.id));
        }
        dev.source = Source::Schedule(schedule);
        dev.source_gen += 1;
        Ok(())
    }

    /// How many simulated GATT reads of its Bluezone-iOS ID this device has answered.
    pub fn gatt_reads_served(&self) -> Result<u64, SimError> {
        Ok(self.medium.lock().device(self.id)?.gatt_reads_served)
    }

    /// The bluezoned daemon's radio for this device, stamping receptions with `clock`, scanning
    /// with `scan`.
    pub fn radio(&self, clock: SharedClock, scan: ScanConfig) -> Result<SimRadio, SimError> {
        SimRadio::new(self, clock, scan)
    }
}

/// The scanner's duty cycle, on the device's own clock: a `window` starting at every multiple of
/// `interval` (shifted by `phase`). Within a window the radio wakes `max_packets_per_window`
/// times, evenly spaced, and hears at most one packet per advert per peer at each wake — a
/// coalescing of the real ~20 packets that keeps CPU small. Each coalesced packet has its own
/// noise and loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanConfig {
    /// Time from one scan window's start to the next (10 s).
    pub interval: Duration,
    /// How long each window listens (2 s); at most `interval`.
    pub window: Duration,
    /// Wake-ups per window, hence packets per advert per peer per window at most (4).
    pub max_packets_per_window: u32,
    /// Offset of the windows from multiples of `interval` (default zero).
    pub phase: Duration,
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            interval: Duration::from_secs(10),
            window: Duration::from_secs(2),
            max_packets_per_window: 4,
            phase: Duration::ZERO,
        }
    }
}

/// A validated [`ScanConfig`] in milliseconds.
#[derive(Clone, Copy, Debug)]
struct Schedule {
    interval_ms: i64,
    window_ms: i64,
    points: i64,
    phase_ms: i64,
}

impl Schedule {
    fn new(c: &ScanConfig) -> Result<Self, SimError> {
        let ms = |d: Duration| {
            i64::try_from(d.as_millis()).map_err(|_| SimError::InvalidScan("duration too long"))
        };
        let s = Schedule {
            interval_ms: ms(c.interval)?,
            window_ms: ms(c.window)?,
            points: i64::from(c.max_packets_per_window),
            phase_ms: ms(c.phase)?,
        };
        if s.interval_ms <= 0 {
            return Err(SimError::InvalidScan("interval must be at least 1 ms"));
        }
        if s.window_ms <= 0 || s.window_ms > s.interval_ms {
            return Err(SimError::InvalidScan(
                "window must be at least 1 ms and at most the interval",
            ));
        }
        if s.points <= 0 {
            return Err(SimError::InvalidScan(
                "max_packets_per_window must be at least 1",
            ));
        }
        if s.phase_ms >= s.interval_ms {
            return Err(SimError::InvalidScan("phase must be shorter than interval"));
        }
        Ok(s)
    }

    /// The first wake-up at or after `after_ms`: `(time, start of its window)`.
    fn next_point(&self, after_ms: i64) -> (i64, i64) {
        let k = (after_ms - self.phase_ms).div_euclid(self.interval_ms);
        for kk in [k, k + 1] {
            let start = self.phase_ms + kk * self.interval_ms;
            for i in 0..self.points {
                let t = start + (2 * i + 1) * self.window_ms / (2 * self.points);
                if t >= after_ms {
                    return (t, start);
                }
            }
        }
        // Unreachable: window k + 1 starts after `after_ms`. Keep the loop moving regardless.
        let start = self.phase_ms + (k + 2) * self.interval_ms;
        (start, start)
    }
}

/// Per-address GATT cache entry of a scanner.
#[derive(Clone, Copy, Debug)]
struct GattEntry {
    slot: i64,
    id: Option<RollingId>,
    last_attempt_window: i64,
}

/// A peer's adverts as last seen on air, and what they decoded to.
type Decoded = (Arc<Vec<Vec<u8>>>, Vec<Option<Advert>>);

/// The simulated Bluetooth backend of one bluezoned device: what the daemon runs in simulations
/// and tests instead of BlueZ.
pub struct SimRadio {
    medium: Medium,
    device: DeviceId,
    clock: SharedClock,
    schedule: Schedule,
    rng: StdRng,
    gatt: HashMap<u64, GattEntry>,
    /// Per peer: the adverts last seen on air and their decoding (decoding is pure, so it is
    /// done once per advert rather than once per packet).
    /// Indexed by peer device index.
    decoded: Vec<Option<Decoded>>,
}

impl fmt::Debug for SimRadio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimRadio")
            .field("device", &self.device)
            .field("schedule", &self.schedule)
            .finish_non_exhaustive()
    }
}

impl SimRadio {
    /// The radio of `device`, which must be a [`DeviceModel::Bluezoned`]. Its random draws are
    /// seeded from the medium's seed and the device's index, so runs are reproducible whatever
    /// order tasks run in.
    pub fn new(
        device: &DeviceHandle,
        clock: SharedClock,
        scan: ScanConfig,
    ) -> Result<SimRadio, SimError> {
        let schedule = Schedule::new(&scan)?;
        let inner = device.medium.lock();
        let dev = inner.device(device.id)?;
        if !matches!(dev.spec.model, DeviceModel::Bluezoned { .. }) {
            return Err(SimError::NotBluezoned {
                device: device.id,
                model: dev.spec.model.label(),
            });
        }
        let seed = mix(inner.config.seed ^ mix(0x5CA9_0000 ^ device.id.0 as u64));
        drop(inner);
        Ok(SimRadio {
            medium: device.medium.clone(),
            device: device.id,
            clock,
            schedule,
            rng: StdRng::seed_from_u64(seed),
            gatt: HashMap::new(),
            decoded: Vec::new(),
        })
    }

    /// Hears everything audible at this instant (one wake-up of a scan window).
    fn scan_point(&mut self, window_start_ms: i64) -> Vec<Sighting> {
        let mut out = Vec::new();
        let mut inner = self.medium.lock();
        let inner = &mut *inner;
        let t_ms = inner.clock.now_ms();
        let Some(me) = inner.devices.get(self.device.0) else {
            return out;
        };
        if !me.present(t_ms) {
            return out;
        }
        let my_pos = me.position(t_ms);
        let cfg = &inner.config;
        let stamp = self.clock.now();
        let slot = stamp.div_euclid(GATT_CACHE_SLOT_SECONDS);
        let window_ms = self.schedule.window_ms as f64;
        let points = self.schedule.points as f64;
        let mut stats = SimStats::default();

        for (index, dev) in inner.devices.iter_mut().enumerate() {
            if index == self.device.0 || !dev.present(t_ms) {
                continue;
            }
            let Some((address, adverts)) = dev.on_air(t_ms, cfg.seed, index) else {
                continue;
            };
            let pos = dev.position(t_ms);
            let walls = u32::from(pos.room != my_pos.room);
            let attenuation = cfg.mean_attenuation_db(my_pos.distance(&pos), walls);
            // Packets per window of each advert, coalesced onto `points` wake-ups.
            let per_window = window_ms / dev.spec.advert_interval.as_secs_f64() / 1000.0;
            let p_point = per_window.min(points) / points;
            if self.decoded.len() <= index {
                self.decoded.resize_with(index + 1, || None);
            }
            let Some(memo) = self.decoded.get_mut(index) else {
                continue;
            };
            let decoded = match memo {
                Some((seen, decoded)) if Arc::ptr_eq(seen, &adverts) => decoded,
                _ => {
                    let decoded = adverts
                        .iter()
                        .map(|raw| adv::decode_advert(raw).ok().flatten())
                        .collect();
                    &memo.insert((Arc::clone(&adverts), decoded)).1
                }
            };
            for advert in decoded {
                if self.rng.gen::<f64>() >= p_point {
                    continue;
                }
                stats.packets += 1;
                if self.rng.gen::<f64>() < cfg.packet_loss {
                    stats.lost += 1;
                    continue;
                }
                let rssi = f64::from(dev.spec.tx_power_dbm) - attenuation
                    + cfg.noise_sigma_db * standard_normal(&mut self.rng);
                if !rssi.is_finite() || rssi < f64::from(cfg.sensitivity_dbm) {
                    stats.too_weak += 1;
                    continue;
                }
                let rssi = rssi.round().clamp(-127.0, 20.0) as i8;
                let (peer, aem) = match advert {
                    Some(Advert::BluezoneAndroid { id }) => (PeerId::Bluezone(*id), None),
                    Some(Advert::Gaen { rpi, aem }) => (PeerId::Gaen(*rpi), Some(*aem)),
                    Some(Advert::BluezoneIos { .. }) => {
                        let entry = self.gatt.entry(address).or_insert(GattEntry {
                            slot,
                            id: None,
                            last_attempt_window: i64::MIN,
                        });
                        if entry.slot != slot {
                            *entry = GattEntry {
                                slot,
                                id: None,
                                last_attempt_window: i64::MIN,
                            };
                        }
                        if entry.id.is_none() && entry.last_attempt_window != window_start_ms {
                            entry.last_attempt_window = window_start_ms;
                            let value = dev.gatt_value(t_ms);
                            if self.rng.gen::<f64>() >= cfg.packet_loss && value.is_some() {
                                entry.id = value;
                                dev.gatt_reads_served += 1;
                                stats.gatt_reads += 1;
                            } else {
                                stats.gatt_failures += 1;
                            }
                        }
                        match entry.id {
                            Some(id) => (PeerId::Bluezone(id), None),
                            None => continue,
                        }
                    }
                    None => {
                        stats.ignored += 1;
                        continue;
                    }
                };
                out.push(Sighting {
                    peer,
                    aem,
                    rssi,
                    tx_power: None,
                    time: stamp,
                });
            }
        }
        inner.stats.add(&stats);
        out
    }

    fn removed(&self) -> bool {
        let inner = self.medium.lock();
        let now = inner.clock.now_ms();
        match inner.devices.get(self.device.0) {
            Some(d) => d.removed_ms.is_some_and(|r| now >= r),
            None => true,
        }
    }

    async fn run_inner(mut self, io: RadioIo) -> Result<(), RadioError> {
        let RadioIo {
            broadcast,
            heard,
            shutdown,
        } = io;
        let _on_air = OnAirGuard::install(&self.medium, self.device, broadcast)?;
        let mut after = self.clock.now_ms();
        let mut window = i64::MIN;
        loop {
            let (t, window_start) = self.schedule.next_point(after);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(clock::until(&*self.clock, t)) => {}
            }
            after = t.saturating_add(1);
            if self.removed() {
                shutdown.cancelled().await;
                return Ok(());
            }
            if window_start != window {
                window = window_start;
                let slot = self.clock.now().div_euclid(GATT_CACHE_SLOT_SECONDS);
                self.gatt.retain(|_, e| e.slot >= slot);
            }
            let receptions = self.scan_point(window_start);
            let send_all = async {
                for reception in receptions {
                    heard.send(reception).await?;
                }
                Ok::<_, mpsc::error::SendError<Sighting>>(())
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                sent = send_all => if sent.is_err() {
                    return Err(RadioError::Failed(
                        "the service loop stopped taking receptions".into(),
                    ));
                }
            }
        }
    }
}

impl Radio for SimRadio {
    fn name(&self) -> &'static str {
        "sim"
    }

    /// Puts `io.broadcast` on air for this device (peers see every change on their next scan)
    /// and scans until `io.shutdown`; then the device goes silent.
    fn run(self: Box<Self>, io: RadioIo) -> RadioFuture {
        Box::pin(self.run_inner(io))
    }
}

/// Makes a running radio's broadcast the device's on-air state, and silences it when the radio
/// stops (returns, fails or is dropped).
struct OnAirGuard {
    medium: Medium,
    device: DeviceId,
    generation: u64,
}

impl OnAirGuard {
    fn install(
        medium: &Medium,
        device: DeviceId,
        broadcast: watch::Receiver<Broadcast>,
    ) -> Result<Self, RadioError> {
        let mut inner = medium.lock();
        let dev = inner
            .device_mut(device)
            .map_err(|e| RadioError::Failed(e.into()))?;
        dev.source = Source::Watch(broadcast);
        dev.source_gen += 1;
        Ok(OnAirGuard {
            medium: medium.clone(),
            device,
            generation: dev.source_gen,
        })
    }
}

impl Drop for OnAirGuard {
    fn drop(&mut self) {
        let mut inner = self.medium.lock();
        if let Ok(dev) = inner.device_mut(self.device) {
            if dev.source_gen == self.generation {
                dev.source = Source::Off;
                dev.source_gen += 1;
            }
        }
    }
}

/// SplitMix64 finaliser: spreads seeds and derives addresses deterministically.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One draw of N(0, 1) (Box–Muller), so the crate needs no distribution library.
fn standard_normal<R: Rng>(rng: &mut R) -> f64 {
    let u1 = 1.0 - rng.gen::<f64>(); // (0, 1]: ln is finite
    let u2 = rng.gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attenuation_bands() {
        let c = MediumConfig::default();
        assert!((c.mean_attenuation_db(1.0, 0) - 40.0).abs() < 1e-9);
        assert!(c.mean_attenuation_db(2.0, 0) <= 50.0);
        let few = c.mean_attenuation_db(4.0, 0);
        assert!((50.0..=70.0).contains(&few));
        assert!(c.mean_attenuation_db(30.0, 0) > 70.0);
        assert!(
            (c.mean_attenuation_db(30.0, 1) - c.mean_attenuation_db(30.0, 0) - 10.0).abs() < 1e-9
        );
    }

    #[test]
    fn scan_points_inside_windows() {
        let s = Schedule::new(&ScanConfig::default()).expect("valid");
        let mut after = 0;
        let mut seen = Vec::new();
        for _ in 0..8 {
            let (t, start) = s.next_point(after);
            assert!(t >= start && t < start + 2000, "{t} {start}");
            seen.push(t);
            after = t + 1;
        }
        assert_eq!(seen, [250, 750, 1250, 1750, 10250, 10750, 11250, 11750]);
        assert!(Schedule::new(&ScanConfig {
            window: Duration::from_secs(11),
            ..ScanConfig::default()
        })
        .is_err());
    }

    #[test]
    fn path_interpolates() {
        let p = vec![(10, 0.0, 0.0, 1), (20, 10.0, 0.0, 2)];
        assert_eq!(path_position(&p, 0).x, 0.0);
        let mid = path_position(&p, 15_000);
        assert!((mid.x - 5.0).abs() < 1e-9 && mid.room == 1);
        assert_eq!(path_position(&p, 25_000).room, 2);
    }

    #[test]
    fn normal_has_unit_variance() {
        let mut rng = StdRng::seed_from_u64(1);
        let n = 20_000;
        let xs: Vec<f64> = (0..n).map(|_| standard_normal(&mut rng)).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(
            mean.abs() < 0.05 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }
}
