//! Receptions in, durable sightings out.
//!
//! De-duplication (one sighting per peer per `radio.dedup_s`, RSSI averaged, protocols not
//! logged dropped) is the protocol's [`Dedup`] state machine; this task feeds it and writes
//! what it yields. Sightings wait in memory at most `store.flush_interval_ms` (or until
//! `store.batch_max`), then one transaction writes the batch with `synchronous=FULL`: only
//! after it returns is the batch counted as stored ("acknowledged"). A failed write (disk full)
//! keeps the batch for the next attempt, up to [`MAX_PENDING`], and is never reported as stored.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Result;
use bluezone_protocol::dedup::{Dedup, ProtocolFilter};
use bluezone_protocol::Sighting;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::config::Protocol;

/// Sightings held while the store refuses writes, before the oldest are dropped.
pub const MAX_PENDING: usize = 100_000;

/// Most receptions taken from the radio's channel at once.
const RECV_BURST: usize = 1024;

pub async fn run(
    shared: Arc<Shared>,
    heard: mpsc::Receiver<Sighting>,
    shutdown: CancellationToken,
) -> Result<()> {
    run_capped(shared, heard, shutdown, MAX_PENDING).await
}

/// [`run`] with the cap on unstored sightings as a parameter (tests use a small one).
pub async fn run_capped(
    shared: Arc<Shared>,
    mut heard: mpsc::Receiver<Sighting>,
    shutdown: CancellationToken,
    max_pending: usize,
) -> Result<()> {
    let cfg = &shared.config;
    let filter = ProtocolFilter {
        bluezone: cfg.radio.protocols.contains(&Protocol::Bluezone),
        gaen: cfg.radio.protocols.contains(&Protocol::Gaen),
    };
    let dedup_s = i64::try_from(cfg.radio.dedup_s).unwrap_or(i64::MAX);
    let mut dedup = Dedup::new(dedup_s, filter);
    let mut tick = tokio::time::interval(shared.config.flush_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Receptions arrive in bursts (a scan hears every peer in range at once): taking what is
    // queued in one go costs one wake-up and one release of channel capacity per burst.
    let mut burst = Vec::with_capacity(RECV_BURST);
    loop {
        tokio::select! {
            // Shutdown first: what is still queued then goes through the drain below.
            biased;
            _ = shutdown.cancelled() => break,
            n = heard.recv_many(&mut burst, RECV_BURST) => {
                if n == 0 {
                    break;
                }
                shared.metrics.receptions.fetch_add(n as u64, Ordering::Relaxed);
                for r in burst.drain(..) {
                    dedup.offer(r);
                    if dedup.pending().len() >= cfg.store.batch_max {
                        flush(&shared, &mut dedup, max_pending).await?;
                    }
                }
            }
            _ = tick.tick() => {
                flush(&shared, &mut dedup, max_pending).await?;
                shared.logger_beat.beat();
                dedup.forget_older_than(shared.clock.now() - dedup_s.clamp(1, i64::MAX / 2) * 2);
                shared.metrics.dedup_entries.store(dedup.peers() as u64, Ordering::Relaxed);
            }
        }
    }
    // Drain what the radio already handed over (through the same filter and windows), then
    // write it.
    while let Ok(r) = heard.try_recv() {
        shared.metrics.receptions.fetch_add(1, Ordering::Relaxed);
        dedup.offer(r);
    }
    flush(&shared, &mut dedup, max_pending).await?;
    if !dedup.pending().is_empty() {
        tracing::error!(
            lost = dedup.pending().len(),
            "store refused the last sightings at shutdown"
        );
    }
    Ok(())
}

async fn flush(shared: &Arc<Shared>, dedup: &mut Dedup, max_pending: usize) -> Result<()> {
    if dedup.pending().is_empty() {
        return Ok(());
    }
    let batch = dedup.take_pending();
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
            let dropped = dedup.restore(batch, max_pending);
            if dropped > 0 {
                tracing::error!(
                    dropped,
                    "dropped unstored sightings: the store keeps failing"
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The logger on tokio's paused clock with a real store in a temporary directory.

    use std::time::Duration;

    use bluezone_protocol::{PeerId, RollingId, Rpi};

    use super::*;
    use crate::clock::VirtualClock;
    use crate::config::Config;
    use crate::service::Metrics;
    use crate::store::{KeyLocation, Store};

    const T0: i64 = 1_600_000_000;

    fn bz(i: u32) -> PeerId {
        let mut id = [0u8; 12];
        id[..4].copy_from_slice(&i.to_be_bytes());
        PeerId::Bluezone(RollingId(id))
    }

    fn seen(peer: PeerId, dt: i64, rssi: i8) -> Sighting {
        Sighting {
            peer,
            time: T0 + dt,
            rssi,
            tx_power: None,
            aem: None,
        }
    }

    fn shared(dir: &std::path::Path, protocols: Vec<Protocol>) -> Arc<Shared> {
        let (store, _) = Store::init_at(dir, KeyLocation::resolve(dir, None)).expect("store");
        let mut config = Config::default();
        config.radio.protocols = protocols;
        config.radio.dedup_s = 30;
        Shared::new(store, config, Arc::new(VirtualClock::new(T0)))
    }

    fn stored(shared: &Shared) -> Vec<Sighting> {
        let out = shared
            .lock_store()
            .sightings_in_days(i64::MIN, i64::MAX)
            .expect("reading sightings");
        assert_eq!(out.corrupt, 0);
        out.sightings
    }

    /// Waits (on the paused clock) until `f` holds.
    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..10_000 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{what} never happened");
    }

    #[tokio::test(start_paused = true)]
    async fn one_sighting_per_peer_per_window_with_mean_rssi() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path(), vec![Protocol::Bluezone, Protocol::Gaen]);
        let (tx, rx) = mpsc::channel(64);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(shared.clone(), rx, stop.clone()));
        for (dt, rssi) in [(0, -60), (5, -70), (29, -71)] {
            tx.send(seen(bz(1), dt, rssi)).await.unwrap();
        }
        tx.send(seen(bz(2), 1, -50)).await.unwrap();
        until("the first batch is stored", || {
            Metrics::get(&shared.metrics.sightings_stored) == 2
        })
        .await;
        // Within the window of a written sighting: not logged again.
        tx.send(seen(bz(1), 20, -40)).await.unwrap();
        // A new window.
        tx.send(seen(bz(1), 30, -45)).await.unwrap();
        stop.cancel();
        task.await.unwrap().unwrap();
        let got: Vec<_> = stored(&shared)
            .iter()
            .map(|s| (s.peer, s.time - T0, s.rssi))
            .collect();
        assert_eq!(got, [(bz(1), 0, -67), (bz(2), 1, -50), (bz(1), 30, -45)]);
        assert_eq!(Metrics::get(&shared.metrics.receptions), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn the_shutdown_drain_is_deduplicated_and_filtered() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path(), vec![Protocol::Bluezone]);
        let (tx, rx) = mpsc::channel(64);
        tx.send(seen(bz(1), 0, -60)).await.unwrap();
        tx.send(seen(bz(1), 1, -62)).await.unwrap();
        tx.send(seen(PeerId::Gaen(Rpi([7; 16])), 1, -62))
            .await
            .unwrap();
        // Shutdown before the logger ever runs: everything goes through the final drain.
        let stop = CancellationToken::new();
        stop.cancel();
        run(shared.clone(), rx, stop).await.unwrap();
        let got: Vec<_> = stored(&shared).iter().map(|s| (s.peer, s.rssi)).collect();
        assert_eq!(
            got,
            [(bz(1), -61)],
            "GAEN is not logged; one sighting for bz(1)"
        );
    }

    /// Makes every write that grows the database fail, as a full disk does.
    fn fill_disk(shared: &Shared, full: bool) {
        let pages = if full { 1 } else { 1 << 30 };
        shared.lock_store().set_max_page_count(pages).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_write_is_retried_and_counted_only_once_stored() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path(), vec![Protocol::Bluezone]);
        fill_disk(&shared, true);
        let (tx, rx) = mpsc::channel(1024);
        // All queued before the logger starts: its first write is the whole batch, which cannot
        // fit in the pages the store already has.
        for i in 0..300 {
            tx.send(seen(bz(i), 0, -60)).await.unwrap();
        }
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(shared.clone(), rx, stop.clone()));
        until("a failed write", || {
            Metrics::get(&shared.metrics.store_errors) >= 1
        })
        .await;
        assert_eq!(Metrics::get(&shared.metrics.sightings_stored), 0);
        assert!(stored(&shared).is_empty(), "nothing half-written");
        fill_disk(&shared, false);
        until("the retry", || {
            Metrics::get(&shared.metrics.sightings_stored) == 300
        })
        .await;
        stop.cancel();
        task.await.unwrap().unwrap();
        let got = stored(&shared);
        assert_eq!(got.len(), 300);
        assert_eq!(Metrics::get(&shared.metrics.sightings_stored), 300);
    }

    #[tokio::test(start_paused = true)]
    async fn unstored_sightings_are_capped_dropping_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path(), vec![Protocol::Bluezone]);
        fill_disk(&shared, true);
        let (tx, rx) = mpsc::channel(1024);
        // All queued before the logger starts: its first write is the whole batch, which cannot
        // fit in the pages the store already has.
        for i in 0..300 {
            tx.send(seen(bz(i), 0, -60)).await.unwrap();
        }
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_capped(shared.clone(), rx, stop.clone(), 50));
        until("a failed write", || {
            Metrics::get(&shared.metrics.store_errors) >= 1
        })
        .await;
        fill_disk(&shared, false);
        until("the retry", || {
            Metrics::get(&shared.metrics.sightings_stored) > 0
        })
        .await;
        stop.cancel();
        task.await.unwrap().unwrap();
        let mut got: Vec<_> = stored(&shared).iter().map(|s| s.peer).collect();
        got.sort_by_key(|p| p.to_hex());
        let want: Vec<_> = (250..300).map(bz).collect();
        assert_eq!(got, want, "the 50 newest are kept");
    }
}
