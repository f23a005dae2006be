//! The medium: the simulated world's shared state. Its devices (see [`super::device`]), where
//! they are ([`super::space`]), the air at each instant ([`super::frame`]), counters, and the
//! ground truth that demos compare the daemon's conclusions with.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bluezone_protocol::time::UnixSeconds;
use tokio::sync::watch;

use super::device::{BroadcastSchedule, Device, DeviceId, DeviceModel, DeviceSpec, Source};
use super::frame::{EntryInput, Frame};
use super::scanner::{ScanConfig, SimRadio};
use super::space::{MediumConfig, Mobility, Position};
use super::SimError;
use crate::clock::SharedClock;
use crate::radio::Broadcast;

/// Frames kept for scanners that wake after others: a scan window's wake-ups (4 by default)
/// with room for scanners on other phases.
const FRAMES_KEPT: usize = 16;

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

pub(super) struct Inner {
    pub(super) config: MediumConfig,
    pub(super) clock: SharedClock,
    pub(super) devices: Vec<Device>,
    pub(super) stats: SimStats,
    /// Bumped by every change to a device (see `device_mut`): a frame of an older generation
    /// is rebuilt.
    pub(super) generation: u64,
    /// The frames of the latest instants scanners asked for (at most [`FRAMES_KEPT`]).
    pub(super) frames: Vec<Arc<Frame>>,
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
                frames: Vec::new(),
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
            changes: Vec::new(),
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

    /// The air at each of the instants `back_ms` milliseconds before now (true time), in that
    /// order, into `out`: a scanner that wakes at the end of its window hears the window's
    /// earlier instants through them. Each frame is built once per instant and shared by every
    /// scanner asking for it. Where devices are and whether they are present is that of the
    /// instant; what they have on air is what they have now (a broadcast schedule: of the
    /// instant). `stats` are the caller's counters since its last call, added here so that
    /// scanning itself needs no lock.
    pub(super) fn frames_back(&self, back_ms: &[i64], stats: &SimStats, out: &mut Vec<Arc<Frame>>) {
        out.clear();
        let mut guard = self.lock();
        let inner = &mut *guard;
        let now_ms = inner.clock.now_ms();
        inner.stats.add(stats);
        let generation = inner.generation;
        inner.frames.retain(|f| f.generation == generation);
        for &back in back_ms {
            let t_ms = now_ms.saturating_sub(back);
            if let Some(f) = inner.frames.iter().find(|f| f.t_ms == t_ms) {
                out.push(Arc::clone(f));
                continue;
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
            let frame = Arc::new(Frame::build(&inner.config, t_ms, generation, entries));
            if inner.frames.len() >= FRAMES_KEPT {
                inner.frames.remove(0);
            }
            inner.frames.push(Arc::clone(&frame));
            out.push(frame);
        }
    }

    /// Records that `device`'s watched broadcast changed to `b` now (its radio saw it).
    pub(super) fn note_broadcast(&self, device: DeviceId, b: Broadcast) {
        let mut inner = self.lock();
        let now_ms = inner.clock.now_ms();
        if let Ok(dev) = inner.device_mut(device) {
            dev.note_broadcast(now_ms, b);
        }
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
