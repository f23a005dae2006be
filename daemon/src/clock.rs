//! The daemon's only source of time. Production reads the system clock; simulations and tests
//! run on tokio's paused clock so that a day passes in seconds.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bluezone_protocol::time::UnixSeconds;

/// Wall-clock time in unix seconds (and milliseconds where sub-second timing matters).
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
    fn now(&self) -> UnixSeconds {
        self.now_ms().div_euclid(1000)
    }
}

pub type SharedClock = Arc<dyn Clock>;

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_millis() as i64,
            Err(e) => -(e.duration().as_millis() as i64),
        }
    }
}

/// Unix time that advances with tokio's clock from a fixed start. Under `tokio::time::pause()`
/// it advances only as timers fire, so simulated hours take no real time. An optional offset
/// models a device whose clock is wrong by a few seconds.
#[derive(Clone, Copy, Debug)]
pub struct VirtualClock {
    start_ms: i64,
    origin: tokio::time::Instant,
    skew_ms: i64,
}

impl VirtualClock {
    pub fn new(start: UnixSeconds) -> Self {
        VirtualClock {
            start_ms: start * 1000,
            origin: tokio::time::Instant::now(),
            skew_ms: 0,
        }
    }
    /// The same timeline seen by a device whose clock is `skew_s` seconds off.
    pub fn skewed(self, skew_s: i64) -> Self {
        VirtualClock {
            skew_ms: skew_s * 1000,
            ..self
        }
    }
}

impl Clock for VirtualClock {
    fn now_ms(&self) -> i64 {
        self.start_ms + self.origin.elapsed().as_millis() as i64 + self.skew_ms
    }
}

/// How long until unix time `t` (zero if it has passed).
pub fn until(clock: &dyn Clock, t_ms: i64) -> std::time::Duration {
    std::time::Duration::from_millis((t_ms - clock.now_ms()).max(0) as u64)
}
