//! Housekeeping: retention, and matching when case lists arrive (notifications are delivered
//! by [`super::notify`], off this path).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use bluezone_protocol::time::utc_day;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::check::{self, incremental::Incremental, CheckReport};

/// How often retention runs (it is cheap when there is nothing to purge).
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// How often the store is asked whether another process (e.g. `cases import`) wrote to it:
/// `PRAGMA data_version`, one read of a counter; only when it moved does the matcher look at the
/// case lists. A list written by another process is matched within this delay; lists this
/// process stores wake the task at once (`match_now`).
const CASE_LISTS_POLL: Duration = Duration::from_secs(5);

/// How often sightings logged since the last match are matched against the case keys that
/// cover their days (new case lists are matched within [`CASE_LISTS_POLL`]).
const SIGHTINGS_MATCH_EVERY: Duration = Duration::from_secs(900);

pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) -> Result<()> {
    // Matches what is stored at start (e.g. after a restart), then only what changes.
    let mut matcher = Incremental::new();
    let mut want_match = true;
    let mut sightings_due = true;
    let mut retention = tokio::time::interval(RETENTION_EVERY);
    let mut poll = tokio::time::interval(CASE_LISTS_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sightings = tokio::time::interval(SIGHTINGS_MATCH_EVERY);
    sightings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The data_version last seen; `None` until read (and after a failed read).
    let mut others_wrote_at: Option<i64> = None;
    loop {
        if want_match {
            want_match = false;
            match_changes(&shared, &mut matcher, std::mem::take(&mut sightings_due)).await?;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = retention.tick() => {
                purge(&shared).await?;
                // The purge may have dropped old case lists.
                want_match = true;
            }
            _ = shared.match_now.notified() => want_match = true,
            _ = poll.tick() => {
                // Read before matching: a write after this read moves it again for the next poll.
                let version = shared.with_store(|s| s.data_version()).await?;
                let version = version
                    .inspect_err(|e| tracing::warn!(error = %e, "reading the store's data_version"))
                    .ok();
                if version.is_none() || version != others_wrote_at {
                    want_match = true;
                }
                others_wrote_at = version;
            }
            _ = sightings.tick() => {
                want_match = true;
                sightings_due = true;
            }
        }
    }
}

async fn compute_and_persist(
    shared: &Arc<Shared>,
    input: check::CheckInput,
    cfg: &crate::config::Config,
) -> Result<CheckReport> {
    let cfg = cfg.clone();
    let today = utc_day(shared.clock.now());
    let mut report =
        tokio::task::spawn_blocking(move || check::compute(&input, &cfg, today)).await?;
    shared
        .with_store(move |s| check::persist(s, &mut report).map(|()| report))
        .await?
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

/// Matches everything stored, as at start (a fresh [`Incremental`]: every list against the
/// whole log).
pub async fn match_once(shared: &Arc<Shared>) -> Result<()> {
    match_changes(shared, &mut Incremental::new(), true).await
}

/// Matches what changed since `matcher`'s last match; exposures that became notifying wake the
/// notification task.
pub async fn match_changes(
    shared: &Arc<Shared>,
    matcher: &mut Incremental,
    sightings_due: bool,
) -> Result<()> {
    let skew = shared.config.matching.skew_s;
    let planned = {
        let m = std::mem::take(matcher);
        let (m, plan) = shared
            .with_store(move |s| {
                let plan = m.plan(s, sightings_due, skew);
                (m, plan)
            })
            .await?;
        *matcher = m;
        plan
    };
    let mut plan = match planned {
        Ok(Some(p)) => p,
        Ok(None) => return Ok(()),
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "reading what to match failed");
            return Ok(());
        }
    };
    let cfg = shared.config.clone();
    // The store is held only to read and to write back: matching millions of keys must not
    // stall the logger's writes or the API.
    let mut reports = Vec::new();
    let outcome: Result<()> = async {
        if let Some(full) = plan.full.take() {
            reports.push(compute_and_persist(shared, full, &cfg).await?);
        }
        if let Some(probe) = plan.probe.take() {
            let probe = Arc::new(probe);
            let (p, c) = (probe.clone(), cfg.clone());
            let today = utc_day(shared.clock.now());
            let found = tokio::task::spawn_blocking(move || check::compute(&p, &c, today)).await?;
            let input = shared
                .with_store(move |s| Incremental::rescore(s, &probe, &found).map(|i| (i, found)))
                .await??;
            let (input, found) = input;
            if let Some(input) = input {
                reports.push(compute_and_persist(shared, input, &cfg).await?);
            }
            reports.push(CheckReport {
                exposures: Vec::new(),
                ..found
            });
        }
        Ok(())
    }
    .await;
    if let Err(e) = outcome {
        // Not committed: the same work is planned again next time.
        tracing::error!(error = format!("{e:#}"), "matching failed");
        return Ok(());
    }
    matcher.commit(plan, &reports);
    if reports.is_empty() {
        return Ok(());
    }
    let m = &shared.metrics;
    let keys: u64 = reports.iter().map(|r| r.keys_checked).sum();
    let time: Duration = reports.iter().map(|r| r.match_time).sum();
    let new: usize = reports.iter().map(|r| r.new_exposures.len()).sum();
    // The run over the whole log (new lists) indexes the most.
    let ids = reports.iter().map(|r| r.distinct_ids).max().unwrap_or(0);
    m.ids_indexed.store(ids as u64, Ordering::Relaxed);
    m.keys_checked.fetch_add(keys, Ordering::Relaxed);
    m.last_match_ms
        .store(time.as_millis() as u64, Ordering::Relaxed);
    let per_s = if time.as_secs_f64() > 0.0 {
        keys as f64 / time.as_secs_f64()
    } else {
        0.0
    };
    m.last_match_keys_per_s
        .store(per_s.to_bits(), Ordering::Relaxed);
    m.matches_run.fetch_add(1, Ordering::Relaxed);
    tracing::info!(
        keys,
        exposures = reports.iter().map(|r| r.exposures.len()).sum::<usize>(),
        new,
        ms = time.as_millis() as u64,
        "matching done"
    );
    if new > 0 {
        shared.notify_now.notify_one();
    }
    let mut held = shared.exposures.lock().unwrap_or_else(|p| p.into_inner());
    for r in reports {
        let revoked: HashSet<(&str, &str)> = r
            .revoked_keys
            .iter()
            .map(|(p, k)| (*p, k.as_str()))
            .collect();
        let replaced: HashSet<(&str, &str, i64)> = r
            .exposures
            .iter()
            .map(|n| {
                let n = &n.record;
                (n.protocol.as_str(), n.case_key.as_str(), n.day)
            })
            .collect();
        held.retain(|e| {
            let e = &e.record;
            let gone = revoked.contains(&(e.protocol.as_str(), e.case_key.as_str()));
            let newer = replaced.contains(&(e.protocol.as_str(), e.case_key.as_str(), e.day));
            !gone && !newer
        });
        held.extend(r.exposures.iter().cloned());
    }
    held.sort_by(|a, b| {
        let (a, b) = (&a.record, &b.record);
        (a.first_seen, &a.protocol, &a.case_key).cmp(&(b.first_seen, &b.protocol, &b.case_key))
    });
    Ok(())
}
