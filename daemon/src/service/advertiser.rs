//! Puts the device's current identifiers on air.
//!
//! The Bluezone ID changes every 15-minute slot and the GAEN RPI every 10-minute interval, both
//! counted from 00:00 UTC; the advertiser sleeps until the next of those boundaries and publishes
//! the new [`Broadcast`] at that instant, so there is no late-ID window (spec bluezone §1: real
//! phones lag up to ~15 s and lose the sightings in between). Own keys come from the store, one
//! fresh random pair per UTC day, so a restart mid-day continues with the same IDs.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Result;
use bluezone_protocol::bluezone::SlotsPerDay;
use bluezone_protocol::gaen::{self, Aemk, Enin, Metadata, Rpik};
use bluezone_protocol::time::{utc_day, DAY_SECONDS};
use bluezone_protocol::DailyKey;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::clock;
use crate::config::Protocol;
use crate::radio::Broadcast;

struct DayKeys {
    daily_key: DailyKey,
    rpik: Rpik,
    aemk: Aemk,
}

/// The broadcast for unix time `t_ms` under the day's keys.
fn broadcast_at(
    keys: &DayKeys,
    t_ms: i64,
    bluezone: bool,
    gaen_on: bool,
    tx: i8,
    epoch: u64,
) -> Broadcast {
    let t = t_ms.div_euclid(1000);
    let bz = bluezone.then(|| keys.daily_key.id(SlotsPerDay::DEFAULT.slot(t)));
    let ga = gaen_on.then(|| {
        let rpi = gaen::rpi(&keys.rpik, Enin::from_unix(t));
        (
            rpi,
            gaen::encrypt_metadata(&keys.aemk, &rpi, Metadata::v1_0(tx)),
        )
    });
    Broadcast {
        bluezone: bz,
        gaen: ga,
        epoch,
    }
}

/// The next boundary after `t_ms` where any broadcast identifier changes, in unix ms.
pub fn next_boundary_ms(t_ms: i64, bluezone: bool, gaen_on: bool) -> i64 {
    let t = t_ms.div_euclid(1000);
    let mut next = (utc_day(t) + 1) * DAY_SECONDS * 1000;
    if bluezone {
        next = next.min(SlotsPerDay::DEFAULT.next_boundary(t) * 1000);
    }
    if gaen_on {
        next = next.min((t.div_euclid(gaen::INTERVAL_SECONDS) + 1) * gaen::INTERVAL_SECONDS * 1000);
    }
    next
}

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
            Ok((daily_key, tek)) => DayKeys {
                rpik: Rpik::derive(&tek),
                aemk: Aemk::derive(&tek),
                daily_key,
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
        tx.send_replace(broadcast_at(&keys, now_ms, bz, ga, tx_power, epoch));
        shared.metrics.broadcasts.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(epoch, "broadcast switched");
        let next = next_boundary_ms(now_ms, bz, ga);
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(clock::until(shared.clock.as_ref(), next)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries() {
        let day = 1_596_844_800_000i64;
        assert_eq!(next_boundary_ms(day, true, false), day + 900_000);
        assert_eq!(next_boundary_ms(day, false, true), day + 600_000);
        assert_eq!(next_boundary_ms(day + 600_000, true, true), day + 900_000);
        assert_eq!(next_boundary_ms(day + 899_999, true, false), day + 900_000);
        assert_eq!(
            next_boundary_ms(day + 86_399_999, true, true),
            day + 86_400_000
        );
    }
}
