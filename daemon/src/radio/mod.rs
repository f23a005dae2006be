//! The radio: what the service loop needs from a Bluetooth stack, and its backends.
//!
//! A backend runs as one task. It advertises whatever the latest [`Broadcast`] says (switching
//! the moment it changes, together with the random address), answers GATT reads of the Bluezone
//! iOS characteristic with the current ID, and sends every identifier it hears as a
//! [`Reception`]. It never stores or de-duplicates: that is the service loop's job.
//!
//! - [`sim`]: an in-process medium of many simulated devices on virtual time.
//! - [`bluez`]: BlueZ over D-Bus (bluer advertises and serves GATT, btleplug scans).

pub mod bluez;
pub mod sim;

use std::future::Future;
use std::pin::Pin;

use bluezone_protocol::time::UnixSeconds;
use bluezone_protocol::{Aem, PeerId, RollingId, Rpi};
use tokio::sync::{mpsc, watch};

/// What this device should be broadcasting now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Broadcast {
    /// Current Bluezone ID (Android advert layout, and the iOS GATT characteristic).
    pub bluezone: Option<RollingId>,
    /// Current GAEN RPI with its encrypted metadata.
    pub gaen: Option<(Rpi, Aem)>,
    /// Bumped whenever any identifier changes; a backend rotates its random address with it.
    pub epoch: u64,
}

/// One identifier heard on air, stamped by the backend with the daemon's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reception {
    pub peer: PeerId,
    pub aem: Option<Aem>,
    pub rssi: i8,
    pub tx_power: Option<i8>,
    pub time: UnixSeconds,
}

/// Channels between the service loop and a backend.
pub struct RadioIo {
    pub broadcast: watch::Receiver<Broadcast>,
    pub heard: mpsc::Sender<Reception>,
    /// Resolves when the daemon shuts down; the backend then stops advertising and returns.
    pub shutdown: tokio_util::sync::CancellationToken,
}

#[derive(Debug, thiserror::Error)]
pub enum RadioError {
    #[error("Bluetooth stack unavailable: {0}")]
    Unavailable(String),
    #[error("radio failed: {0}")]
    Failed(String),
}

pub type RadioFuture = Pin<Box<dyn Future<Output = Result<(), RadioError>> + Send>>;

/// A Bluetooth backend. `run` returns when `io.shutdown` fires (Ok) or on an error it cannot
/// recover from by itself; transient trouble (adapter off, stack restart) is retried inside.
pub trait Radio: Send + 'static {
    fn name(&self) -> &'static str;
    fn run(self: Box<Self>, io: RadioIo) -> RadioFuture;
}
