//! What the radio hears and the store keeps: one identifier at one moment.

use crate::ids::{Aem, PeerId};
use crate::time::UnixSeconds;

/// One reception of a peer's identifier (after de-duplication by the scanner).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Sighting {
    pub peer: PeerId,
    pub time: UnixSeconds,
    /// Received signal strength, dBm.
    pub rssi: i8,
    /// Calibrated transmit power, dBm, when the advert carried it (GAEN metadata, or an AD tx
    /// power level). Bluezone adverts carry none; scoring then uses a configured value.
    pub tx_power: Option<i8>,
    /// GAEN only: the encrypted metadata heard with the RPI. It can be opened (for the sender's
    /// tx power) only once the sender's TEK is published, so the store keeps it sealed with the
    /// sighting.
    pub aem: Option<Aem>,
}
