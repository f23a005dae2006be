//! Notification delivery: runs the hook for every exposure whose notification is due, one at a
//! time, off the matching path (matching only marks an exposure `pending` in the store and wakes
//! this task).
//!
//! - At-least-once: an exposure becomes `delivered` only after the hook exited 0; a failure or a
//!   timeout is retried with exponential backoff, and the bookkeeping lives in the store, so it
//!   survives a restart. The hook gets the exposure's stable `id` to de-duplicate.
//! - The hook runs `sh -c COMMAND` with the event as JSON on stdin (the exposure report plus
//!   `id` and `event`: `exposure` or `withdrawal`), in its own process group, with an
//!   environment reduced to [`HOOK_ENV`] (never `CREDENTIALS_DIRECTORY`, `BLUEZONED_*`, tokens
//!   or `NOTIFY_SOCKET`). On timeout or shutdown the whole group is killed, so nothing it
//!   started in the background is left running.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::clock::until;
use crate::store::{ExposureId, NotificationEvent, StoredExposure};

/// The only variables the hook inherits from the daemon's environment.
pub const HOOK_ENV: &[&str] = &["PATH", "LANG", "LC_ALL"];
/// First retry after this many seconds; doubled per failed attempt up to [`BACKOFF_MAX_S`].
pub const BACKOFF_BASE_S: i64 = 30;
/// Retries are at most this far apart (6 h): a hook that is down for a day is still retried
/// several times before the exposure leaves the retention window.
pub const BACKOFF_MAX_S: i64 = 6 * 3600;

/// The seconds to wait after `attempts` failed attempts (1, 2, …).
pub fn backoff_s(attempts: u32) -> i64 {
    let doublings = attempts.saturating_sub(1).min(20);
    BACKOFF_BASE_S
        .saturating_mul(1 << doublings)
        .min(BACKOFF_MAX_S)
}

/// The hook to run.
#[derive(Clone, Debug)]
pub struct Hook {
    /// Run as `sh -c COMMAND`.
    pub command: String,
    /// Killed (with its whole process group) after this long.
    pub timeout: Duration,
}

/// How one run of the hook ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookOutcome {
    Success,
    Failed(String),
    TimedOut,
    /// Shutdown arrived while it ran; the group was killed and the attempt is not counted.
    Cancelled,
}

/// One due event, ready for the hook.
struct Due {
    id: ExposureId,
    event: NotificationEvent,
    payload: Vec<u8>,
}

/// Runs until shutdown: delivers what is due, then sleeps until the next retry or a wake-up
/// from matching ([`Shared::notify_now`]).
pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) -> Result<()> {
    let Some(command) = shared.config.hook.command.clone() else {
        tracing::info!(
            "no hook.command configured: notifications stay pending (see /v1/exposures)"
        );
        shutdown.cancelled().await;
        return Ok(());
    };
    let hook = Hook {
        command,
        timeout: Duration::from_secs(shared.config.hook.timeout_s.max(1)),
    };
    loop {
        let next = match deliver_due(&shared, &hook, &shutdown).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "notification delivery failed");
                Some(shared.clock.now() + BACKOFF_BASE_S)
            }
        };
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let sleep = match next {
            Some(t) => until(shared.clock.as_ref(), t.saturating_mul(1000)),
            None => Duration::from_secs(24 * 3600),
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = shared.notify_now.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// Delivers, one at a time, every event due at the clock's current time. Returns the unix time
/// of the earliest retry still scheduled, if any.
pub async fn deliver_due(
    shared: &Arc<Shared>,
    hook: &Hook,
    shutdown: &CancellationToken,
) -> Result<Option<i64>> {
    let now = shared.clock.now();
    let (due, next) = shared
        .with_store(move |s| -> Result<_> {
            let all = s.exposures()?;
            let mut due = Vec::new();
            let mut next: Option<i64> = None;
            for e in all.exposures {
                let Some(event) = e.delivery.due() else {
                    continue;
                };
                if e.delivery.next_attempt > now {
                    next = Some(
                        next.map_or(e.delivery.next_attempt, |n| n.min(e.delivery.next_attempt)),
                    );
                    continue;
                }
                due.push(Due {
                    payload: payload(&e, event)?,
                    id: e.id,
                    event,
                });
            }
            Ok((due, next))
        })
        .await??;
    let mut next = next;
    for d in due {
        if shutdown.is_cancelled() {
            break;
        }
        let outcome = run_hook(hook, &d.payload, shutdown).await;
        let id = d.id.clone();
        match outcome {
            HookOutcome::Success => {
                tracing::info!(id = %d.id, event = ?d.event, "notification delivered");
                shared
                    .with_store(move |s| s.mark_delivered(&id, d.event))
                    .await??;
            }
            HookOutcome::Cancelled => break,
            HookOutcome::Failed(_) | HookOutcome::TimedOut => {
                let now = shared.clock.now();
                let retry = shared
                    .with_store(move |s| s.mark_failed(&id, now, backoff_s))
                    .await??;
                tracing::error!(id = %d.id, event = ?d.event, outcome = ?outcome, retry_at = retry,
                    "exposure hook failed; will retry");
                next = Some(next.map_or(retry, |n| n.min(retry)));
            }
        }
    }
    Ok(next)
}

/// The hook's stdin: the exposure as `GET /v1/exposures` reports it (with `id` and `state`),
/// plus `event`.
fn payload(e: &StoredExposure, event: NotificationEvent) -> Result<Vec<u8>> {
    #[derive(Serialize)]
    struct HookEvent<'a> {
        #[serde(flatten)]
        exposure: &'a StoredExposure,
        event: NotificationEvent,
    }
    Ok(serde_json::to_vec(&HookEvent { exposure: e, event })?)
}

/// Runs the hook once with `stdin`, in its own process group, killed as a group on timeout or
/// shutdown.
pub async fn run_hook(hook: &Hook, stdin: &[u8], shutdown: &CancellationToken) -> HookOutcome {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(&hook.command)
        .env_clear()
        .envs(
            HOOK_ENV
                .iter()
                .filter_map(|k| Some((k, std::env::var_os(k)?))),
        )
        .stdin(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return HookOutcome::Failed(format!("cannot start: {e}")),
    };
    // The group id is the child's pid (process_group(0)); taken now, before it can be reaped.
    let pgid = child.id().and_then(|p| i32::try_from(p).ok());
    let io = async {
        if let Some(mut pipe) = child.stdin.take() {
            // A hook that does not read its stdin is fine: ignore a broken pipe.
            let _ = pipe.write_all(stdin).await;
        }
        child.wait().await
    };
    let outcome = tokio::select! {
        r = tokio::time::timeout(hook.timeout, io) => match r {
            Ok(Ok(s)) if s.success() => return HookOutcome::Success,
            Ok(Ok(s)) => HookOutcome::Failed(format!("exited with {s}")),
            Ok(Err(e)) => HookOutcome::Failed(format!("waiting for it: {e}")),
            Err(_) => HookOutcome::TimedOut,
        },
        _ = shutdown.cancelled() => HookOutcome::Cancelled,
    };
    if !matches!(outcome, HookOutcome::Failed(_)) {
        if let Some(pgid) = pgid {
            // SAFETY: kill(2) with a negative pid signals the process group; no memory involved.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
        let _ = child.wait().await;
    }
    outcome
}
