//! Advertising through `org.bluez.LEAdvertisingManager1` (bluer).
//!
//! Each layout is one registered advertisement. When [`Broadcast`] changes, the registered ones
//! are dropped (bluer unregisters them) and the new ones registered at once. An adapter that
//! reports fewer than two free instances, or refuses the second one with "Maximum
//! advertisements reached", gets one layout at a time, alternating every
//! [`BluezConfig::alternate_period`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bluer::adv::{Advertisement, AdvertisementHandle, Type};
use bluezone_protocol::adv::{
    BLUEZONE_ANDROID_SERVICE, BLUEZONE_COMPANY_ID, GAEN_PAYLOAD_LEN, GAEN_SERVICE,
};
use bluezone_protocol::{Aem, RollingId, Rpi};
use tokio::sync::watch;
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::BluezConfig;
use crate::radio::Broadcast;

/// One advertisement layout with its identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    Bluezone(RollingId),
    Gaen(Rpi, Aem),
}

impl Layout {
    fn label(&self) -> &'static str {
        match self {
            Layout::Bluezone(_) => "Bluezone",
            Layout::Gaen(..) => "GAEN",
        }
    }
}

/// The layouts `b` asks for, as far as `cfg` allows.
pub(crate) fn layouts(b: &Broadcast, cfg: &BluezConfig) -> Vec<Layout> {
    let mut out = Vec::with_capacity(2);
    if let Some(id) = b.bluezone.filter(|_| cfg.advertise_bluezone) {
        out.push(Layout::Bluezone(id));
    }
    if let Some((rpi, aem)) = b.gaen.filter(|_| cfg.advertise_gaen) {
        out.push(Layout::Gaen(rpi, aem));
    }
    out
}

/// The `LEAdvertisement1` object for a layout.
///
/// - Bluezone Android: connectable (`peripheral`), service UUID `0x4E56`, manufacturer data
///   `0x22B5` → the 12-byte ID, no name, no other includes.
/// - GAEN: non-connectable (`broadcast`), service UUID `0xFD6F`, service data `0xFD6F` → RPI‖AEM.
pub(crate) fn advertisement(layout: &Layout, cfg: &BluezConfig) -> Advertisement {
    match layout {
        Layout::Bluezone(id) => Advertisement {
            advertisement_type: Type::Peripheral,
            service_uuids: [Uuid::from_u128(BLUEZONE_ANDROID_SERVICE)].into(),
            manufacturer_data: BTreeMap::from([(BLUEZONE_COMPANY_ID, id.0.to_vec())]),
            min_interval: cfg.bluezone_interval.map(|(lo, _)| lo),
            max_interval: cfg.bluezone_interval.map(|(_, hi)| hi),
            tx_power: cfg.tx_power,
            ..Default::default()
        },
        Layout::Gaen(rpi, aem) => {
            let mut data = Vec::with_capacity(GAEN_PAYLOAD_LEN);
            data.extend_from_slice(&rpi.0);
            data.extend_from_slice(&aem.0);
            Advertisement {
                advertisement_type: Type::Broadcast,
                service_uuids: [Uuid::from_u128(GAEN_SERVICE)].into(),
                service_data: BTreeMap::from([(Uuid::from_u128(GAEN_SERVICE), data)]),
                min_interval: cfg.gaen_interval.map(|(lo, _)| lo),
                max_interval: cfg.gaen_interval.map(|(_, hi)| hi),
                tx_power: cfg.tx_power,
                ..Default::default()
            }
        }
    }
}

fn is_max_reached(e: &bluer::Error) -> bool {
    e.message.contains("Maximum advertisements reached")
}

/// How long a just-dropped advertisement may take to be unregistered (bluer does it from a
/// spawned task) before a refusal for lack of room is believed.
const UNREGISTER_GRACE: Duration = Duration::from_millis(500);
const UNREGISTER_POLL: Duration = Duration::from_millis(25);

async fn register(
    adapter: &bluer::Adapter,
    layout: &Layout,
    cfg: &BluezConfig,
) -> Result<AdvertisementHandle, bluer::Error> {
    let deadline = tokio::time::Instant::now() + UNREGISTER_GRACE;
    loop {
        match adapter.advertise(advertisement(layout, cfg)).await {
            Err(e) if is_max_reached(&e) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(UNREGISTER_POLL).await;
            }
            r => return r,
        }
    }
}

enum Outcome {
    /// The broadcast changed: register the new layouts.
    Changed,
    /// The broadcast channel closed: the daemon is going away.
    Closed,
    /// The adapter refused the second advertisement for lack of room.
    NeedAlternate,
    Failed(bluer::Error),
}

async fn changed(rx: &mut watch::Receiver<Broadcast>) -> Outcome {
    match rx.changed().await {
        Ok(()) => Outcome::Changed,
        Err(_) => Outcome::Closed,
    }
}

/// All layouts on air at once until the broadcast changes.
async fn hold_all(
    adapter: &bluer::Adapter,
    wanted: &[Layout],
    cfg: &BluezConfig,
    rx: &mut watch::Receiver<Broadcast>,
) -> Outcome {
    let mut handles = Vec::with_capacity(wanted.len());
    for (i, layout) in wanted.iter().enumerate() {
        match register(adapter, layout, cfg).await {
            Ok(h) => handles.push(h),
            Err(e) if i > 0 && is_max_reached(&e) => {
                release(adapter, handles).await;
                return Outcome::NeedAlternate;
            }
            Err(e) => {
                release(adapter, handles).await;
                return Outcome::Failed(e);
            }
        }
    }
    if !wanted.is_empty() {
        let names: Vec<_> = wanted.iter().map(Layout::label).collect();
        debug!(adapter = %adapter.name(), "advertising {}", names.join(" + "));
    }
    let outcome = changed(rx).await;
    release(adapter, handles).await;
    outcome
}

/// One layout at a time, in turn, until the broadcast changes.
async fn alternate(
    adapter: &bluer::Adapter,
    wanted: &[Layout],
    cfg: &BluezConfig,
    rx: &mut watch::Receiver<Broadcast>,
) -> Outcome {
    for layout in wanted.iter().cycle() {
        let handle = match register(adapter, layout, cfg).await {
            Ok(h) => h,
            Err(e) => return Outcome::Failed(e),
        };
        let outcome = tokio::select! {
            outcome = changed(rx) => Some(outcome),
            _ = tokio::time::sleep(cfg.alternate_period) => None,
        };
        release(adapter, vec![handle]).await;
        if let Some(outcome) = outcome {
            return outcome;
        }
    }
    // `wanted` is empty: nothing to put on air.
    changed(rx).await
}

/// Takes `handles` off the air and waits (at most [`UNREGISTER_GRACE`]) until bluetoothd
/// reports them gone (`ActiveInstances`). bluer unregisters a dropped advertisement from a
/// spawned task, so a registration sent right after the drop races it; on a full adapter it is
/// refused, and [`register`] retries. Waiting here keeps alternation from turning every switch
/// into refused calls (the contract tests count them) and a gap off air.
async fn release(adapter: &bluer::Adapter, handles: Vec<AdvertisementHandle>) {
    if handles.is_empty() {
        return;
    }
    let Ok(active) = adapter.active_advertising_instances().await else {
        return;
    };
    let target = active.saturating_sub(handles.len() as u8);
    drop(handles);
    let released = async {
        while adapter
            .active_advertising_instances()
            .await
            .is_ok_and(|n| n > target)
        {
            tokio::time::sleep(UNREGISTER_POLL).await;
        }
    };
    let _ = tokio::time::timeout(UNREGISTER_GRACE, released).await;
}

/// Whether the adapter can put out the tx power we ask for. The GAEN metadata announces the
/// requested value and receivers compute attenuation from it, so an adapter that ignores it
/// makes every receiver misjudge distance by the difference: worth a warning.
async fn check_tx_power(adapter: &bluer::Adapter, wanted: Option<i16>) {
    use bluer::adv::PlatformFeature;
    let Some(wanted) = wanted else { return };
    let name = adapter.name();
    let can_set = matches!(
        adapter.supported_advertising_features().await,
        Ok(Some(f)) if f.contains(&PlatformFeature::CanSetTxPower)
    );
    if !can_set {
        warn!(
            adapter = %name,
            "BlueZ: the adapter cannot set the advertising tx power (no CanSetTxPower; needs \
             BlueZ >= 5.56 and controller support); our GAEN metadata says {wanted} dBm, which \
             may not be what goes on air"
        );
        return;
    }
    match adapter.supported_advertising_capabilities().await {
        Ok(Some(c)) if wanted < c.min_tx_power || wanted > c.max_tx_power => warn!(
            adapter = %name,
            "BlueZ: requested tx power {wanted} dBm is outside the adapter's range {}..={} dBm; \
             our GAEN metadata may not match what goes on air",
            c.min_tx_power,
            c.max_tx_power
        ),
        _ => info!(adapter = %name, "BlueZ: advertising at {wanted} dBm"),
    }
}

/// Keeps the adapter advertising what the broadcast says. Never returns while the broadcast
/// channel is open; trouble is logged and retried with backoff.
pub(super) async fn run(
    adapter: bluer::Adapter,
    cfg: Arc<BluezConfig>,
    mut rx: watch::Receiver<Broadcast>,
) {
    let name = adapter.name().to_string();
    let mut one_at_a_time = match adapter.supported_advertising_instances().await {
        Ok(free) => {
            let active = adapter.active_advertising_instances().await.unwrap_or(0);
            info!(adapter = %name, free, active, "BlueZ: LE advertising instances");
            free < 2
        }
        Err(e) => {
            warn!(adapter = %name, "BlueZ: adapter has no LE advertising manager ({e}); not advertising");
            return std::future::pending().await;
        }
    };
    check_tx_power(&adapter, cfg.tx_power).await;
    let mut told = false;
    let mut delay = cfg.retry_initial;
    loop {
        let wanted = layouts(&rx.borrow_and_update(), &cfg);
        if one_at_a_time && wanted.len() > 1 && !told {
            warn!(
                adapter = %name,
                "BlueZ: the adapter holds only one advertisement at a time; \
                 alternating Bluezone and GAEN adverts every {:?}",
                cfg.alternate_period
            );
            told = true;
        }
        let outcome = if one_at_a_time && wanted.len() > 1 {
            alternate(&adapter, &wanted, &cfg, &mut rx).await
        } else {
            hold_all(&adapter, &wanted, &cfg, &mut rx).await
        };
        match outcome {
            Outcome::Changed => delay = cfg.retry_initial,
            Outcome::Closed => return std::future::pending().await,
            Outcome::NeedAlternate => {
                warn!(
                    adapter = %name,
                    "BlueZ: registering a second advertisement failed with \"Maximum \
                     advertisements reached\"; alternating Bluezone and GAEN adverts every {:?}",
                    cfg.alternate_period
                );
                one_at_a_time = true;
                told = true;
            }
            Outcome::Failed(e) => {
                warn!(adapter = %name, "BlueZ: advertising failed: {e}; retrying in {delay:?}");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    r = rx.changed() => if r.is_err() {
                        return std::future::pending().await;
                    },
                }
                delay = delay.saturating_mul(2).min(cfg.retry_max);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broadcast() -> Broadcast {
        Broadcast {
            bluezone: Some(RollingId([1; 12])),
            gaen: Some((Rpi([2; 16]), Aem([3; 4]))),
            epoch: 9,
        }
    }

    #[test]
    fn layouts_follow_broadcast_and_config() {
        let all = BluezConfig::default();
        assert_eq!(
            layouts(&broadcast(), &all),
            [
                Layout::Bluezone(RollingId([1; 12])),
                Layout::Gaen(Rpi([2; 16]), Aem([3; 4]))
            ]
        );
        let no_gaen = BluezConfig {
            advertise_gaen: false,
            ..BluezConfig::default()
        };
        assert_eq!(
            layouts(&broadcast(), &no_gaen),
            [Layout::Bluezone(RollingId([1; 12]))]
        );
        assert_eq!(layouts(&Broadcast::default(), &all), []);
    }

    #[test]
    fn advertisements_have_exactly_the_protocol_fields() {
        let cfg = BluezConfig::default();
        let bz = advertisement(&Layout::Bluezone(RollingId([1; 12])), &cfg);
        assert_eq!(bz.advertisement_type, Type::Peripheral);
        assert_eq!(
            bz.service_uuids,
            [Uuid::from_u128(BLUEZONE_ANDROID_SERVICE)].into()
        );
        assert_eq!(
            bz.manufacturer_data,
            BTreeMap::from([(0x22B5, vec![1; 12])])
        );
        assert!(bz.service_data.is_empty() && bz.local_name.is_none());
        assert!(bz.system_includes.is_empty());

        let gaen = advertisement(&Layout::Gaen(Rpi([2; 16]), Aem([3; 4])), &cfg);
        assert_eq!(gaen.advertisement_type, Type::Broadcast);
        assert_eq!(gaen.service_uuids, [Uuid::from_u128(GAEN_SERVICE)].into());
        let data = &gaen.service_data[&Uuid::from_u128(GAEN_SERVICE)];
        assert_eq!(data.len(), 20);
        assert_eq!(data[..16], [2; 16]);
        assert_eq!(data[16..], [3; 4]);
        assert!(gaen.manufacturer_data.is_empty() && gaen.local_name.is_none());
        assert_eq!(
            (gaen.min_interval, gaen.max_interval),
            (
                Some(Duration::from_millis(200)),
                Some(Duration::from_millis(270))
            )
        );
    }
}
