//! Housekeeping: retention, and matching when case lists arrive (notifications are delivered
//! by [`super::notify`], off this path).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use bluezone_protocol::time::utc_day;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::check;

/// How often retention runs (it is cheap when there is nothing to purge).
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) -> Result<()> {
    // Match once at start if lists are already stored (e.g. after a restart).
    let mut want_match = shared
        .with_store(|s| s.case_lists().map(|l| !l.is_empty()).unwrap_or(false))
        .await?;
    let mut retention = tokio::time::interval(RETENTION_EVERY);
    loop {
        if want_match {
            want_match = false;
            match_once(&shared).await?;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = retention.tick() => purge(&shared).await?,
            _ = shared.match_now.notified() => want_match = true,
        }
    }
}

async fn purge(shared: &Arc<Shared>) -> Result<()> {
    let today = utc_day(shared.clock.now());
    let keep = shared.config.store.keep_days;
    let r = shared
        .with_store(move |s| s.purge_older_than(today, keep))
        .await?;
    match r {
        Ok(rep) if rep.day_keys > 0 => {
            tracing::info!(
                cutoff_day = rep.cutoff_day,
                days = rep.day_keys,
                "retention purge"
            )
        }
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "retention purge failed"),
    }
    Ok(())
}

/// Matches all stored case lists; exposures that became notifying wake the notification task.
pub async fn match_once(shared: &Arc<Shared>) -> Result<()> {
    let cfg = shared.config.check_config();
    // The store is held only to read and to write back: matching millions of keys must not
    // stall the logger's writes or the API.
    let report = async {
        let input = shared.with_store(|s| check::load(s)).await??;
        let mut report = tokio::task::spawn_blocking(move || check::compute(&input, &cfg)).await?;
        shared
            .with_store(move |s| check::persist(s, &mut report).map(|()| report))
            .await?
    }
    .await;
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "matching failed");
            return Ok(());
        }
    };
    let m = &shared.metrics;
    m.ids_indexed
        .store(report.distinct_ids as u64, Ordering::Relaxed);
    m.keys_checked
        .fetch_add(report.keys_checked, Ordering::Relaxed);
    m.last_match_ms
        .store(report.match_time.as_millis() as u64, Ordering::Relaxed);
    m.last_match_keys_per_s
        .store(report.keys_per_second().to_bits(), Ordering::Relaxed);
    m.matches_run.fetch_add(1, Ordering::Relaxed);
    tracing::info!(
        keys = report.keys_checked,
        exposures = report.exposures.len(),
        new = report.new_exposures.len(),
        ms = report.match_time.as_millis() as u64,
        "matching done"
    );
    if !report.new_exposures.is_empty() {
        shared.notify_now.notify_one();
    }
    *shared.exposures.lock().unwrap_or_else(|p| p.into_inner()) = report.exposures;
    Ok(())
}
