//! The simulated scanner: [`SimRadio`], what a bluezoned device runs instead of BlueZ. It puts
//! the daemon's broadcast on the medium, wakes on its scan schedule, hears what the medium lets
//! through, and reads Bluezone-iOS peers over (simulated) GATT.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bluezone_protocol::adv::Advert;
use bluezone_protocol::bluezone::{IosReadCache, ReadDecision};
use bluezone_protocol::{PeerId, Sighting};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, watch};

use super::device::{DeviceId, DeviceModel, Source};
use super::frame::Frame;
use super::medium::{DeviceHandle, Medium, SimStats};
use super::space::MediumConfig;
use super::{mix, Normals, SimError};
use crate::clock::{self, SharedClock};
use crate::radio::{Broadcast, Radio, RadioError, RadioFuture, RadioIo};

/// The scanner's duty cycle, on the device's own clock: a `window` starting at every multiple of
/// `interval` (shifted by `phase`). Within a window the radio listens at `max_packets_per_window`
/// evenly spaced instants and hears at most one packet per advert per peer at each — a
/// coalescing of the real ~20 packets that keeps CPU small. Each coalesced packet has its own
/// noise and loss. The simulated radio wakes once per window, at its last instant, and hears
/// the earlier ones as they were (positions then, broadcasts as they were then), each reception
/// stamped with its own instant.
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

/// The simulated Bluetooth backend of one bluezoned device: what the daemon runs in simulations
/// and tests instead of BlueZ.
pub struct SimRadio {
    medium: Medium,
    device: DeviceId,
    clock: SharedClock,
    schedule: Schedule,
    rng: StdRng,
    normals: Normals,
    /// Bluezone-iOS IDs read over (simulated) GATT: the protocol's one-read-per-slot rule.
    gatt: IosReadCache<u64>,
    /// Counters not yet added to the medium's (added when the next frame is fetched).
    stats: SimStats,
    /// Buffers kept from one wake-up to the next: the peers in range (with squared distance),
    /// and what was heard.
    candidates: Vec<(usize, f64)>,
    heard: Vec<Sighting>,
}

impl fmt::Debug for SimRadio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimRadio")
            .field("device", &self.device)
            .field("schedule", &self.schedule)
            .finish_non_exhaustive()
    }
}

/// Counters of the last scans reach the medium even when the radio stops between two frames.
impl Drop for SimRadio {
    fn drop(&mut self) {
        self.medium.add_stats(&self.stats);
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
            normals: Normals::default(),
            gatt: IosReadCache::new(),
            stats: SimStats::default(),
            candidates: Vec::new(),
            heard: Vec::new(),
        })
    }

    /// Hears everything audible in `frame` (one wake-up of a scan window), stamped `stamp_ms`
    /// on the device's clock, onto `self.heard`. Holds no lock: the frame is that instant's
    /// snapshot of the air.
    fn scan_point(&mut self, frame: &Frame, cfg: &MediumConfig, stamp_ms: i64) {
        let out = &mut self.heard;
        let Some(me) = frame.entries.get(self.device.0).filter(|e| e.present) else {
            return;
        };
        let stamp = stamp_ms.div_euclid(1000);
        // A failed read is retried in the next scan window, not at every packet.
        let retry_s = (self.schedule.interval_ms / 1000).max(1);
        let window_ms = self.schedule.window_ms as f64;
        let points = self.schedule.points as f64;
        let stats = &mut self.stats;
        frame.candidates_into(self.device.0, &mut self.candidates);
        for &(index, distance2) in &self.candidates {
            let Some(peer) = frame.entries.get(index) else {
                continue;
            };
            let Some(air) = &peer.air else { continue };
            let walls = u32::from(peer.pos.room != me.pos.room);
            let attenuation = cfg.mean_attenuation_db_sq(distance2, walls);
            // Packets per window of each advert, coalesced onto `points` wake-ups.
            let per_window = window_ms / peer.advert_interval_s / 1000.0;
            let p_point = per_window.min(points) / points;
            for advert in &air.adverts {
                // A peer sending at least one packet per wake-up is always on air then.
                if p_point < 1.0 && self.rng.gen::<f64>() >= p_point {
                    continue;
                }
                stats.packets += 1;
                if self.rng.gen::<f64>() < cfg.packet_loss {
                    stats.lost += 1;
                    continue;
                }
                let rssi = f64::from(peer.tx_power_dbm) - attenuation
                    + cfg.noise_sigma_db * self.normals.next(&mut self.rng);
                if !rssi.is_finite() || rssi < f64::from(cfg.sensitivity_dbm) {
                    stats.too_weak += 1;
                    continue;
                }
                let rssi = rssi.round().clamp(-127.0, 20.0) as i8;
                let (peer_id, aem) = match advert {
                    Some(Advert::BluezoneAndroid { id }) => (PeerId::Bluezone(*id), None),
                    Some(Advert::Gaen { rpi, aem }) => (PeerId::Gaen(*rpi), Some(*aem)),
                    Some(Advert::BluezoneIos { .. }) => {
                        match self.gatt.decide(&air.address, stamp, retry_s) {
                            ReadDecision::Known(id) => (PeerId::Bluezone(id), None),
                            ReadDecision::Wait => continue,
                            ReadDecision::Read => {
                                let served = self.rng.gen::<f64>() >= cfg.packet_loss;
                                match air.gatt_value.filter(|_| served) {
                                    Some(id) => {
                                        peer.gatt_served.fetch_add(1, Ordering::Relaxed);
                                        stats.gatt_reads += 1;
                                        self.gatt.read_ok(air.address, id, stamp, stamp);
                                        (PeerId::Bluezone(id), None)
                                    }
                                    None => {
                                        stats.gatt_failures += 1;
                                        self.gatt.read_failed(air.address, stamp);
                                        continue;
                                    }
                                }
                            }
                        }
                    }
                    None => {
                        stats.ignored += 1;
                        continue;
                    }
                };
                out.push(Sighting {
                    peer: peer_id,
                    aem,
                    rssi,
                    tx_power: None,
                    time: stamp,
                });
            }
        }
    }

    async fn run_inner(mut self, io: RadioIo) -> Result<(), RadioError> {
        let RadioIo {
            broadcast,
            heard,
            shutdown,
        } = io;
        // Every change of the broadcast is recorded with its time, for scanners that hear a
        // window's earlier instants at its end.
        let mut changes = broadcast.clone();
        let mut watching = true;
        let _on_air = OnAirGuard::install(&self.medium, self.device, broadcast)?;
        let config = self.medium.config();
        let mut after = self.clock.now_ms();
        // The wake-ups of one window (ms, own clock), how long before its last one each is,
        // and the air at each: kept from window to window.
        let mut points: Vec<i64> = Vec::new();
        let mut back: Vec<i64> = Vec::new();
        let mut frames = Vec::new();
        loop {
            // The next window's wake-ups at or after `after`, heard all at once at the last of
            // them: one timer and one delivery per window, each reception stamped with its own
            // wake-up's time.
            points.clear();
            let (first, window) = self.schedule.next_point(after);
            let mut last = first;
            points.push(first);
            loop {
                let (t, w) = self.schedule.next_point(last.saturating_add(1));
                if w != window || t <= last {
                    break;
                }
                points.push(t);
                last = t;
            }
            let sleep = tokio::time::sleep(clock::until(&*self.clock, last));
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return Ok(()),
                    changed = changes.changed(), if watching => match changed {
                        Ok(()) => {
                            let b = *changes.borrow_and_update();
                            self.medium.note_broadcast(self.device, b);
                        }
                        // The advertiser is gone: nothing changes any more.
                        Err(_) => watching = false,
                    },
                    _ = &mut sleep => break,
                }
            }
            after = last.saturating_add(1);
            back.clear();
            back.extend(points.iter().map(|t| last - t));
            self.medium
                .frames_back(&back, &std::mem::take(&mut self.stats), &mut frames);
            if frames
                .last()
                .is_none_or(|f| f.entries.get(self.device.0).is_none_or(|e| e.removed))
            {
                shutdown.cancelled().await;
                return Ok(());
            }
            let now_ms = self.clock.now_ms();
            self.heard.clear();
            for (frame, b) in frames.iter().zip(&back) {
                self.scan_point(frame, &config, now_ms - b);
            }
            frames.clear();
            let receptions = &mut self.heard;
            let send_all = async {
                for reception in receptions.drain(..) {
                    // Without an await point while the logger keeps up (the common case).
                    match heard.try_send(reception) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(r)) => heard.send(r).await?,
                        Err(mpsc::error::TrySendError::Closed(r)) => {
                            return Err(mpsc::error::SendError(r))
                        }
                    }
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
        dev.changes.clear();
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
