//! The Bluezone iOS GATT service (bluer): primary service
//! `00004E56-73F5-4BC4-A12F-17D1AD07A667` with the readable characteristic
//! `00004E56-73F5-4BC4-A12F-17D1AD07A689`, whose value is the current 12-byte ID at read time.

use std::sync::Arc;

use bluer::gatt::local::{
    Application, ApplicationHandle, Characteristic, CharacteristicRead, ReqError, Service,
};
use bluezone_protocol::adv::{BLUEZONE_IOS_CHARACTERISTIC, BLUEZONE_IOS_SERVICE};
use bluezone_protocol::RollingId;
use futures::FutureExt;
use tokio::sync::watch;
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::privacy::PeerTag;
use super::BluezConfig;
use crate::radio::Broadcast;

/// The characteristic's value for a read at `offset`: the ID from that offset on. No ID yet is
/// `Failed`; an offset past the end is `InvalidOffset` (ATT "Invalid Offset").
pub(crate) fn characteristic_value(
    id: Option<RollingId>,
    offset: u16,
) -> Result<Vec<u8>, ReqError> {
    let id = id.ok_or(ReqError::Failed)?;
    id.0.get(usize::from(offset)..)
        .map(<[u8]>::to_vec)
        .ok_or(ReqError::InvalidOffset)
}

fn application(rx: watch::Receiver<Broadcast>) -> Application {
    let read = CharacteristicRead {
        read: true,
        fun: Box::new(move |req| {
            let id = rx.borrow().bluezone;
            debug!(peer = %PeerTag::of(req.device_address.0), offset = req.offset, "GATT read of our ID");
            async move { characteristic_value(id, req.offset) }.boxed()
        }),
        ..Default::default()
    };
    Application {
        services: vec![Service {
            uuid: Uuid::from_u128(BLUEZONE_IOS_SERVICE),
            primary: true,
            characteristics: vec![Characteristic {
                uuid: Uuid::from_u128(BLUEZONE_IOS_CHARACTERISTIC),
                read: Some(read),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Serves the application while the session lives (disabled: does nothing). Registration
/// failures are logged and retried with backoff; never returns.
pub(super) async fn run(
    adapter: bluer::Adapter,
    cfg: Arc<BluezConfig>,
    rx: watch::Receiver<Broadcast>,
) {
    if !cfg.gatt {
        return std::future::pending().await;
    }
    let mut delay = cfg.retry_initial;
    loop {
        match adapter
            .serve_gatt_application(application(rx.clone()))
            .await
        {
            Ok(handle) => {
                info!(adapter = %adapter.name(), "BlueZ: serving the Bluezone iOS GATT service");
                let _handle: ApplicationHandle = handle;
                return std::future::pending().await;
            }
            Err(e) => {
                warn!(
                    adapter = %adapter.name(),
                    "BlueZ: registering the GATT service failed: {e}; retrying in {delay:?} \
                     (iOS phones cannot read our ID meanwhile)"
                );
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2).min(cfg.retry_max);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_is_the_id_from_the_offset() {
        let id = RollingId(std::array::from_fn(|i| i as u8));
        assert_eq!(characteristic_value(Some(id), 0), Ok(id.0.to_vec()));
        assert_eq!(characteristic_value(Some(id), 10), Ok(vec![10, 11]));
        assert_eq!(characteristic_value(Some(id), 12), Ok(vec![]));
        assert_eq!(
            characteristic_value(Some(id), 13),
            Err(ReqError::InvalidOffset)
        );
        assert_eq!(characteristic_value(None, 0), Err(ReqError::Failed));
    }
}
