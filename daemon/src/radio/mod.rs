//! The radio: what the service loop needs from a Bluetooth stack, and its backends.
//!
//! A backend runs as one task. It advertises whatever the latest [`Broadcast`] says (switching
//! the moment it changes, together with the random address), answers GATT reads of the Bluezone
//! iOS characteristic with the current ID, and sends every identifier it hears as a
//! [`Sighting`]. It never stores or de-duplicates: that is the service loop's job.
//!
//! - [`sim`]: an in-process medium of many simulated devices on virtual time.
//! - [`bluez`]: BlueZ over D-Bus (bluer advertises and serves GATT, btleplug scans).

pub mod bluez;
pub mod sim;

use std::future::Future;
use std::pin::Pin;

use bluezone_protocol::broadcast::OnAir;
use bluezone_protocol::{Aem, RollingId, Rpi, Sighting};
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

impl Broadcast {
    /// What the protocol puts on air, as the radio takes it; a new `epoch` rotates the address.
    pub fn new(on_air: OnAir, epoch: u64) -> Broadcast {
        Broadcast {
            bluezone: on_air.bluezone,
            gaen: on_air.gaen.map(|g| (g.rpi, g.aem)),
            epoch,
        }
    }
}

/// Channels between the service loop and a backend.
pub struct RadioIo {
    pub broadcast: watch::Receiver<Broadcast>,
    /// Every identifier heard, stamped with the daemon's clock (not yet de-duplicated).
    pub heard: mpsc::Sender<Sighting>,
    /// Resolves when the daemon shuts down; the backend then stops advertising and returns.
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// The cause of a [`RadioError`]: the backend's own typed error, kept for the chain.
pub type RadioCause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a radio could not start or stopped. The cause stays a typed source (`error_chain` prints
/// it), so callers can tell a missing service from a failure without parsing text.
#[derive(Debug, thiserror::Error)]
pub enum RadioError {
    #[error("Bluetooth stack unavailable")]
    Unavailable(#[source] RadioCause),
    #[error("radio failed")]
    Failed(#[source] RadioCause),
}

pub type RadioFuture = Pin<Box<dyn Future<Output = Result<(), RadioError>> + Send>>;

/// A Bluetooth backend. `run` returns when `io.shutdown` fires (Ok) or on an error it cannot
/// recover from by itself; transient trouble (adapter off, stack restart) is retried inside.
pub trait Radio: Send + 'static {
    fn name(&self) -> &'static str;
    fn run(self: Box<Self>, io: RadioIo) -> RadioFuture;
}
