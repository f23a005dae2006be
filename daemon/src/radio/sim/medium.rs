//! The medium: the simulated world. Devices, where they are over time (rooms, mobility), what
//! they have on air, how a packet fares between two of them (propagation, noise, loss), and the
//! ground truth that demos compare the daemon's conclusions with.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bluezone_protocol::adv;
use bluezone_protocol::time::UnixSeconds;
use tokio::sync::watch;

use super::frame::{Air, EntryInput, Frame};
use super::scanner::{ScanConfig, SimRadio};
use super::{mix, SimError};
use crate::clock::SharedClock;
use crate::radio::Broadcast;

/// Distances below this are treated as this (the far-field model breaks down nearer).
pub const MIN_DISTANCE_M: f64 = 0.1;

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

/// One point of a [`Mobility::Path`]: where the device is at unix time `t`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Waypoint {
    /// True (virtual) unix time of arrival.
    pub t: UnixSeconds,
    /// Metres east on the floor plan.
    pub x: f64,
    /// Metres north on the floor plan.
    pub y: f64,
    /// The room the device is in from `t` until the next waypoint.
    pub room: u32,
}

impl Waypoint {
    /// At `(x, y)` in `room` at time `t`.
    pub fn new(t: UnixSeconds, x: f64, y: f64, room: u32) -> Self {
        Waypoint { t, x, y, room }
    }

    fn position(&self) -> Position {
        Position {
            x: self.x,
            y: self.y,
            room: self.room,
        }
    }
}

/// How a device moves: its position as a function of (true, virtual) unix time.
#[derive(Clone, Debug, PartialEq)]
pub enum Mobility {
    /// Stays put.
    Fixed { x: f64, y: f64, room: u32 },
    /// A piecewise-linear walk through waypoints, in any order (they are sorted by time). Before
    /// the first waypoint the device waits at it, after the last it stays there. Between two
    /// waypoints it is in the room of the earlier one and changes room on arrival. An empty path
    /// means the origin of room 0.
    Path(Vec<Waypoint>),
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

    pub(super) fn normalised(self) -> Mobility {
        match self {
            Mobility::Path(mut points) => {
                points.sort_by_key(|p| p.t);
                Mobility::Path(points)
            }
            fixed => fixed,
        }
    }
}

/// Position on a time-sorted path. A binary search: a day's path of a busy person has hundreds
/// of waypoints, and the medium asks for positions at every scan.
fn path_position(points: &[Waypoint], t_ms: i64) -> Position {
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return Position {
            x: 0.0,
            y: 0.0,
            room: 0,
        };
    };
    let t = t_ms as f64 / 1000.0;
    if t <= first.t as f64 {
        return first.position();
    }
    if t >= last.t as f64 {
        return last.position();
    }
    // The segment [a, b) with a the last waypoint at or before t (equal times: the later one).
    let k = points.partition_point(|p| (p.t as f64) <= t);
    let (Some(a), Some(b)) = (k.checked_sub(1).and_then(|i| points.get(i)), points.get(k)) else {
        return last.position();
    };
    let (ta, tb) = (a.t as f64, b.t as f64);
    let f = (t - ta) / (tb - ta);
    Position {
        x: a.x + f * (b.x - a.x),
        y: a.y + f * (b.y - a.y),
        room: a.room,
    }
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
    pub(super) fn add(&mut self, o: &SimStats) {
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

    fn broadcast(&self, t_ms: i64) -> Option<Broadcast> {
        match &self.source {
            Source::Off => None,
            Source::Watch(rx) => Some(*rx.borrow()),
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

pub(super) struct Inner {
    pub(super) config: MediumConfig,
    pub(super) clock: SharedClock,
    pub(super) devices: Vec<Device>,
    pub(super) stats: SimStats,
    /// Bumped by every change to a device (see `device_mut`): a frame of an older generation
    /// is rebuilt.
    pub(super) generation: u64,
    pub(super) frame: Option<Arc<Frame>>,
}

impl Inner {
    pub(super) fn device(&self, id: DeviceId) -> Result<&Device, SimError> {
        self.devices.get(id.0).ok_or(SimError::UnknownDevice(id))
    }
    /// A device to change: also invalidates the current frame.
    pub(super) fn device_mut(&mut self, id: DeviceId) -> Result<&mut Device, SimError> {
        self.generation = self.generation.wrapping_add(1);
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
                generation: 0,
                frame: None,
            })),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
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
        inner.generation = inner.generation.wrapping_add(1);
        inner.devices.push(Device {
            spec,
            mobility,
            added_ms: now_ms,
            removed_ms: None,
            sender,
            source,
            source_gen: 0,
            air: None,
            gatt_reads_served: Arc::default(),
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

    /// The air now (true time), built once per instant and shared by every scanner that
    /// wakes then; `stats` are the caller's counters since its last call, added here so that
    /// scanning itself needs no lock.
    pub(super) fn frame_now(&self, stats: &SimStats) -> Arc<Frame> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let t_ms = inner.clock.now_ms();
        inner.stats.add(stats);
        if let Some(f) = inner
            .frame
            .as_ref()
            .filter(|f| f.t_ms == t_ms && f.generation == inner.generation)
        {
            return Arc::clone(f);
        }
        let seed = inner.config.seed;
        let entries = inner.devices.iter_mut().enumerate().map(|(i, d)| {
            let present = d.present(t_ms);
            EntryInput {
                present,
                removed: d.removed_ms.is_some_and(|r| t_ms >= r),
                pos: d.position(t_ms),
                tx_power_dbm: d.spec.tx_power_dbm,
                advert_interval_s: d.spec.advert_interval.as_secs_f64(),
                air: if present { d.air(t_ms, seed, i) } else { None },
                gatt_served: Arc::clone(&d.gatt_reads_served),
            }
        });
        let frame = Arc::new(Frame::build(&inner.config, t_ms, inner.generation, entries));
        inner.frame = Some(Arc::clone(&frame));
        frame
    }

    /// Adds a scanner's counters.
    pub(super) fn add_stats(&self, stats: &SimStats) {
        self.lock().stats.add(stats);
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
    pub(super) medium: Medium,
    pub(super) id: DeviceId,
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
        Ok(self
            .medium
            .lock()
            .device(self.id)?
            .gatt_reads_served
            .load(Ordering::Relaxed))
    }

    /// The bluezoned daemon's radio for this device, stamping receptions with `clock`, scanning
    /// with `scan`.
    pub fn radio(&self, clock: SharedClock, scan: ScanConfig) -> Result<SimRadio, SimError> {
        SimRadio::new(self, clock, scan)
    }
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
    fn path_interpolates() {
        let p = vec![
            Waypoint::new(10, 0.0, 0.0, 1),
            Waypoint::new(20, 10.0, 0.0, 2),
        ];
        assert_eq!(path_position(&p, 0).x, 0.0);
        let mid = path_position(&p, 15_000);
        assert!((mid.x - 5.0).abs() < 1e-9 && mid.room == 1);
        assert_eq!(path_position(&p, 25_000).room, 2);
    }
}
