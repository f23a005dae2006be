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
/// How often the store is asked whether case lists changed (another process, e.g. `cases
/// import`, wrote them). One small query; a new list is matched within this delay.
const CASE_LISTS_POLL: Duration = Duration::from_secs(5);

/// Changes whenever a case list is added or removed: their count and highest id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct CaseListsGeneration {
    count: usize,
    max_id: Option<i64>,
}

async fn case_lists_generation(shared: &Arc<Shared>) -> Result<Option<CaseListsGeneration>> {
    let r = shared.with_store(|s| s.case_lists()).await?;
    Ok(match r {
        Ok(lists) => Some(CaseListsGeneration {
            count: lists.len(),
            max_id: lists.iter().map(|l| l.id).max(),
        }),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the case lists");
            None
        }
    })
}

pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) -> Result<()> {
    // Match once at start if lists are already stored (e.g. after a restart).
    let mut matched = CaseListsGeneration::default();
    let mut want_match = case_lists_generation(&shared).await? != Some(matched);
    let mut retention = tokio::time::interval(RETENTION_EVERY);
    let mut poll = tokio::time::interval(CASE_LISTS_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if want_match {
            want_match = false;
            // Read before matching: a list stored during the match changes it again.
            if let Some(g) = case_lists_generation(&shared).await? {
                matched = g;
            }
            match_once(&shared).await?;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = retention.tick() => purge(&shared).await?,
            _ = shared.match_now.notified() => want_match = true,
            _ = poll.tick() => {
                if let Some(g) = case_lists_generation(&shared).await? {
                    if g != matched {
                        tracing::info!(case_lists = g.count, "case lists changed in the store");
                        want_match = true;
                    }
                }
            }
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
    let cfg = shared.config.clone();
    let today = utc_day(shared.clock.now());
    // The store is held only to read and to write back: matching millions of keys must not
    // stall the logger's writes or the API.
    let report = async {
        let input = shared.with_store(|s| check::load(s)).await??;
        let mut report =
            tokio::task::spawn_blocking(move || check::compute(&input, &cfg, today)).await?;
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
