//! Receptions in, durable sightings out.
//!
//! A peer is advertised ~10 times a second and every scan window hears it several times; one
//! sighting per peer per `radio.dedup_s` is what matching and scoring need (the scoring credits
//! the gaps between sightings). Sightings wait in memory at most `store.flush_interval_ms` (or
//! until `store.batch_max`), then one transaction writes the batch with `synchronous=FULL`: only
//! after it returns is the batch counted as stored ("acknowledged"). A failed write (disk full)
//! keeps the batch for the next attempt, up to a cap, and is never reported as stored.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Result;
use bluezone_protocol::{PeerId, Sighting};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::config::Protocol;
use crate::radio::Reception;

/// Sightings held while the store refuses writes, before the oldest are dropped.
const MAX_PENDING: usize = 100_000;

pub async fn run(
    shared: Arc<Shared>,
    mut heard: mpsc::Receiver<Reception>,
    shutdown: CancellationToken,
) -> Result<()> {
    let cfg = &shared.config;
    let bz = cfg.radio.protocols.contains(&Protocol::Bluezone);
    let ga = cfg.radio.protocols.contains(&Protocol::Gaen);
    let dedup_s = cfg.radio.dedup_s as i64;
    let mut dedup = Dedup::default();
    let mut pending: Vec<Sighting> = Vec::new();
    let mut tick = tokio::time::interval(shared.config.flush_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = heard.recv() => {
                let Some(r) = r else { break };
                shared.metrics.receptions.fetch_add(1, Ordering::Relaxed);
                let wanted = match r.peer {
                    PeerId::Bluezone(_) => bz,
                    PeerId::Gaen(_) => ga,
                };
                if wanted {
                    dedup.offer(r, dedup_s, &mut pending);
                }
                if pending.len() >= cfg.store.batch_max {
                    flush(&shared, &mut pending, &mut dedup).await?;
                }
            }
            _ = tick.tick() => {
                flush(&shared, &mut pending, &mut dedup).await?;
                shared.logger_beat.beat();
                dedup.forget_older_than(shared.clock.now() - dedup_s.max(1) * 2);
                shared.metrics.dedup_entries.store(dedup.len() as u64, Ordering::Relaxed);
            }
            _ = shutdown.cancelled() => break,
        }
    }
    // Drain what the radio already handed over, then write it.
    while let Ok(r) = heard.try_recv() {
        dedup.offer(r, dedup_s, &mut pending);
    }
    flush(&shared, &mut pending, &mut dedup).await?;
    if !pending.is_empty() {
        tracing::error!(
            lost = pending.len(),
            "store refused the last sightings at shutdown"
        );
    }
    Ok(())
}

/// One sighting per peer per `dedup_s`. While a sighting is still waiting to be written, later
/// receptions of the same peer refine its RSSI (their mean): single packets carry several dB of
/// noise, and attenuation buckets are only as good as the RSSI behind them.
#[derive(Default)]
struct Dedup {
    /// Peer → (time of its logged sighting, index in `pending` while unwritten, RSSI sum, count).
    peers: HashMap<PeerId, (i64, Option<usize>, i32, i32)>,
}

impl Dedup {
    fn offer(&mut self, r: Reception, dedup_s: i64, pending: &mut Vec<Sighting>) {
        if let Some(e) = self.peers.get_mut(&r.peer) {
            if (r.time - e.0).abs() < dedup_s {
                if let Some(s) = e.1.and_then(|i| pending.get_mut(i)) {
                    e.2 += r.rssi as i32;
                    e.3 += 1;
                    s.rssi = (e.2 as f64 / e.3 as f64).round() as i8;
                }
                return;
            }
        }
        self.peers
            .insert(r.peer, (r.time, Some(pending.len()), r.rssi as i32, 1));
        pending.push(Sighting {
            peer: r.peer,
            time: r.time,
            rssi: r.rssi,
            tx_power: r.tx_power,
            aem: r.aem,
        });
    }

    /// The pending batch was handed to the store: its sightings can no longer change.
    fn written(&mut self) {
        for e in self.peers.values_mut() {
            e.1 = None;
        }
    }

    /// IDs rotate every 10–15 minutes, so without this the map would hold every ID ever heard.
    fn forget_older_than(&mut self, t: i64) {
        self.peers.retain(|_, e| e.0 >= t);
    }

    fn len(&self) -> usize {
        self.peers.len()
    }
}

async fn flush(shared: &Arc<Shared>, pending: &mut Vec<Sighting>, dedup: &mut Dedup) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    dedup.written();
    let batch = std::mem::take(pending);
    let n = batch.len();
    let (batch, result) = shared
        .with_store(move |s| {
            let r = s.insert_sightings(&batch);
            (batch, r)
        })
        .await?;
    match result {
        Ok(()) => {
            let total = shared
                .metrics
                .sightings_stored
                .fetch_add(n as u64, Ordering::SeqCst)
                + n as u64;
            tracing::debug!(stored = n, total, "sightings stored");
        }
        Err(e) => {
            shared.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, held = n, "storing sightings failed; will retry");
            *pending = batch;
            if pending.len() > MAX_PENDING {
                let drop = pending.len() - MAX_PENDING;
                pending.drain(..drop);
                tracing::error!(
                    dropped = drop,
                    "dropped unstored sightings: the store keeps failing"
                );
            }
        }
    }
    Ok(())
}
