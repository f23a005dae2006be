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
//! each with its own noise and its own chance of loss, all heard when the scanner wakes at the
//! window's last instant (one timer and one delivery per window). A broadcast driven through
//! [`DeviceHandle::broadcast_sender`] that changes within a window is heard with its new value
//! from the window's start; bluezoned devices (their radio records each change's time) and
//! broadcast schedules are heard with the value of each instant. A Bluezone-iOS peer is read over GATT at
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
//!
//! - `space`: where a device is over time (positions, rooms, mobility) and how the signal fades
//!   with distance and walls ([`MediumConfig`]).
//! - `device`: what kind of device each is and what it puts on air (raw adverts, decoded once
//!   per broadcast).
//! - `medium`: the shared world — its devices, handles to drive them, counters, ground truth.
//! - `frame`: the air at one instant, shared by every scanner waking then, with a spatial grid
//!   so that a scan visits only the peers in radio range ([`CULL_SIGMAS`]).
//! - `scanner`: [`SimRadio`], the simulated scanner that implements [`Radio`](super::Radio).
//! - [`phones`]: what the simulated phones broadcast, and the scenes built from them.

mod device;
mod frame;
mod medium;
pub mod phones;
mod scanner;
mod space;

use bluezone_protocol::time::UnixSeconds;
use rand::Rng;

pub use device::{BroadcastSchedule, DeviceId, DeviceModel, DeviceSpec};
pub use frame::CULL_SIGMAS;
pub use medium::{DeviceHandle, Medium, SimStats};
pub use scanner::{ScanConfig, SimRadio};
pub use space::{MediumConfig, Mobility, Position, Waypoint, MIN_DISTANCE_M};

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
/// SplitMix64 finaliser: spreads seeds and derives addresses deterministically.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Draws of N(0, 1) by Marsaglia's polar method, so the crate needs no distribution library
/// (and no trigonometry on the scanner's hot path). Each accepted pair of uniforms gives two
/// independent normals; both are used (the scanner draws one per packet).
#[derive(Debug, Default)]
struct Normals {
    spare: Option<f64>,
}

impl Normals {
    fn next<R: Rng>(&mut self, rng: &mut R) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        loop {
            let u = 2.0 * rng.gen::<f64>() - 1.0;
            let v = 2.0 * rng.gen::<f64>() - 1.0;
            let s = u * u + v * v;
            // Inside the unit disc and not at its centre (ln 0); accepted with probability π/4.
            if s > 0.0 && s < 1.0 {
                let f = (-2.0 * s.ln() / s).sqrt();
                self.spare = Some(v * f);
                return u * f;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn normal_has_unit_variance() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut normals = Normals::default();
        let n = 20_000;
        let xs: Vec<f64> = (0..n).map(|_| normals.next(&mut rng)).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(
            mean.abs() < 0.05 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
        // The two values of a pair are independent: no correlation between neighbours.
        let cov = xs
            .windows(2)
            .map(|w| (w[0] - mean) * (w[1] - mean))
            .sum::<f64>()
            / (n - 1) as f64;
        assert!(cov.abs() < 0.05, "{cov}");
        // About 2.3 % beyond two sigma, as for N(0, 1).
        let tail = xs.iter().filter(|x| **x > 2.0).count() as f64 / n as f64;
        assert!((0.015..0.032).contains(&tail), "{tail}");
    }
}
