//! Puts the device's current identifiers on air.
//!
//! What is on air at t and when it next changes are protocol rules
//! ([`bluezone_protocol::broadcast`]); the advertiser sleeps until that switch and publishes the
//! new [`Broadcast`] at that instant, so there is no late-ID window (spec bluezone §1: real
//! phones lag up to ~15 s and lose the sightings in between). Own keys come from the store, one
//! fresh random pair per UTC day, so a restart mid-day continues with the same IDs.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Result;
use bluezone_protocol::broadcast::{BroadcastKeys, GaenBroadcastKeys};
use bluezone_protocol::gaen::Metadata;
use bluezone_protocol::time::utc_day;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::clock;
use crate::config::Protocol;
use crate::radio::Broadcast;

pub async fn run(
    shared: Arc<Shared>,
    tx: watch::Sender<Broadcast>,
    shutdown: CancellationToken,
) -> Result<()> {
    let protocols = &shared.config.radio.protocols;
    let bz = protocols.contains(&Protocol::Bluezone);
    let ga = protocols.contains(&Protocol::Gaen);
    let tx_power = shared.config.radio.tx_power_dbm;
    let mut epoch = 0u64;
    loop {
        let now_ms = shared.clock.now_ms();
        let day = utc_day(now_ms.div_euclid(1000));
        // Re-read at every boundary (one sealed row per 10 minutes): keys rotated by
        // `keys export` in another process take effect at the next ID switch.
        let got = shared
            .with_store(move |s| s.own_keys_for_day(day, &mut rand::rngs::OsRng))
            .await?;
        let keys = match got {
            Ok((daily_key, tek)) => BroadcastKeys {
                bluezone: bz.then_some(daily_key),
                gaen: ga.then(|| GaenBroadcastKeys::new(&tek, Metadata::v1_0(tx_power))),
            },
            Err(e) => {
                // Without today's keys there is nothing safe to broadcast; retry shortly.
                tracing::error!(error = %e, "cannot load own keys for today");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => continue,
                }
            }
        };
        epoch += 1;
        let now = now_ms.div_euclid(1000);
        tx.send_replace(Broadcast::new(keys.on_air(now), epoch));
        shared.metrics.broadcasts.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(epoch, "broadcast switched");
        let next = keys.next_switch(now) * 1000;
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(clock::until(shared.clock.as_ref(), next)) => {}
        }
    }
}
