//! Supervision: every long-lived task of the daemon runs in one [`JoinSet`].
//!
//! The first task to end before shutdown was asked for (returned, failed or panicked) cancels the
//! rest, and [`Supervisor::run`] returns an error naming it, so the process exits non-zero and
//! systemd restarts it: a daemon that quietly stopped scanning or logging is worse than one that
//! restarts. After a requested shutdown every task finishes its current work and `run` returns
//! `Ok` (exit 0), unless a task failed while stopping.
//!
//! The systemd watchdog is fed from here only, and only while every task is alive and every
//! registered [`Heartbeat`] is fresh: a task that is alive but stuck (the logger blocked on the
//! store) stops the pings, and systemd restarts the service after `WatchdogSec`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Result};
use tokio::task::{Id, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// When a looping task last completed a round (tokio's clock, so it works under paused time).
#[derive(Debug)]
pub struct Heartbeat(Mutex<Instant>);

impl Heartbeat {
    pub fn new() -> Arc<Heartbeat> {
        Arc::new(Heartbeat(Mutex::new(Instant::now())))
    }
    pub fn beat(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }
    pub fn age(&self) -> Duration {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).elapsed()
    }
}

/// Feeds the watchdog: `WATCHDOG=1` to systemd in production, a counter in tests.
pub type Feed = Box<dyn FnMut() + Send>;

struct Watchdog {
    every: Duration,
    feed: Feed,
}

pub struct Supervisor {
    set: JoinSet<Result<()>>,
    names: HashMap<Id, &'static str>,
    shutdown: CancellationToken,
    watchdog: Option<Watchdog>,
    beats: Vec<(&'static str, Arc<Heartbeat>, Duration)>,
}

impl Supervisor {
    pub fn new(shutdown: CancellationToken) -> Supervisor {
        Supervisor {
            set: JoinSet::new(),
            names: HashMap::new(),
            shutdown,
            watchdog: None,
            beats: Vec::new(),
        }
    }

    /// The token that stops every task; tasks must return soon after it fires.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Runs `task` under supervision. `name` is what the exit error and the logs call it.
    pub fn spawn(
        &mut self,
        name: &'static str,
        task: impl Future<Output = Result<()>> + Send + 'static,
    ) {
        let handle = self.set.spawn(task);
        self.names.insert(handle.id(), name);
    }

    /// Feed `feed` every `every` while the service is healthy.
    pub fn watchdog(&mut self, every: Duration, feed: Feed) {
        self.watchdog = Some(Watchdog { every, feed });
    }

    /// The service is healthy only while `beat` is younger than `max_age`.
    pub fn require_heartbeat(
        &mut self,
        name: &'static str,
        beat: Arc<Heartbeat>,
        max_age: Duration,
    ) {
        self.beats.push((name, beat, max_age));
    }

    /// The first stale heartbeat, if any.
    fn stale(&self) -> Option<(&'static str, Duration)> {
        self.beats
            .iter()
            .map(|(n, b, max)| (*n, b.age(), *max))
            .find(|(_, age, max)| age > max)
            .map(|(n, age, _)| (n, age))
    }

    /// Supervises until shutdown or the first unexpected end; see the module documentation.
    pub async fn run(mut self) -> Result<()> {
        let mut ping = self.watchdog.as_ref().map(|w| {
            let mut i = tokio::time::interval(w.every);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        let mut unhealthy = false;
        let mut failure: Option<anyhow::Error> = None;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                ended = self.set.join_next_with_id() => {
                    let Some(ended) = ended else { break };
                    let (name, outcome) = self.outcome(ended);
                    if !self.shutdown.is_cancelled() {
                        let e = match outcome {
                            Ok(()) => anyhow!("{name} task stopped unexpectedly"),
                            Err(e) => e.context(format!("{name} task failed")),
                        };
                        tracing::error!(task = name, error = %crate::error_chain(&e), "a service task ended; stopping the daemon");
                        failure = Some(e);
                        self.shutdown.cancel();
                    } else if let Err(e) = outcome {
                        failure = Some(e.context(format!("{name} failed while stopping")));
                    }
                    break;
                }
                _ = async { ping.as_mut().expect("guarded").tick().await }, if ping.is_some() => {
                    match self.stale() {
                        None => {
                            if unhealthy {
                                tracing::info!("service healthy again; feeding the watchdog");
                                unhealthy = false;
                            }
                            if let Some(w) = self.watchdog.as_mut() {
                                (w.feed)();
                            }
                        }
                        Some((name, age)) => {
                            if !unhealthy {
                                tracing::error!(task = name, age_ms = age.as_millis() as u64,
                                    "task is stuck; no longer feeding the watchdog");
                                unhealthy = true;
                            }
                        }
                    }
                }
            }
        }
        // Every task was asked to stop; each finishes its current write first.
        while let Some(ended) = self.set.join_next_with_id().await {
            let (name, outcome) = self.outcome(ended);
            if let Err(e) = outcome {
                tracing::error!(task = name, error = %crate::error_chain(&e), "task failed while stopping");
                if failure.is_none() {
                    failure = Some(e.context(format!("{name} failed while stopping")));
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn outcome(
        &mut self,
        ended: Result<(Id, Result<()>), tokio::task::JoinError>,
    ) -> (&'static str, Result<()>) {
        match ended {
            Ok((id, r)) => (self.names.remove(&id).unwrap_or("a task"), r),
            Err(e) => {
                let name = self.names.remove(&e.id()).unwrap_or("a task");
                let why = if e.is_panic() {
                    "panicked"
                } else {
                    "was cancelled"
                };
                (name, Err(anyhow!("{name} {why}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn counter() -> (Arc<AtomicU64>, Feed) {
        let n = Arc::new(AtomicU64::new(0));
        let m = n.clone();
        (
            n,
            Box::new(move || {
                m.fetch_add(1, Ordering::SeqCst);
            }),
        )
    }

    /// A task that runs until shutdown, like the real ones.
    fn until_shutdown(t: &CancellationToken) -> impl Future<Output = Result<()>> {
        let t = t.clone();
        async move {
            t.cancelled().await;
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_dies_stops_all_and_is_named() {
        let shutdown = CancellationToken::new();
        let mut s = Supervisor::new(shutdown.clone());
        s.spawn("logger", until_shutdown(&shutdown));
        s.spawn("advertiser", until_shutdown(&shutdown));
        s.spawn("poller", async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            anyhow::bail!("key server unreachable for good")
        });
        let e = s.run().await.unwrap_err();
        let msg = crate::error_chain(&e);
        assert!(
            msg.contains("poller task failed") && msg.contains("unreachable"),
            "{msg}"
        );
        assert!(shutdown.is_cancelled());

        // Returning Ok before shutdown is just as unexpected, and so is a panic.
        for (name, task) in [
            (
                "api",
                Box::pin(async { Ok(()) })
                    as std::pin::Pin<Box<dyn Future<Output = Result<()>> + Send>>,
            ),
            ("radio", Box::pin(async { panic!("boom") })),
        ] {
            let shutdown = CancellationToken::new();
            let mut s = Supervisor::new(shutdown.clone());
            s.spawn("logger", until_shutdown(&shutdown));
            s.spawn(name, task);
            let msg = crate::error_chain(&s.run().await.unwrap_err());
            assert!(msg.starts_with(name), "{msg}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_requested_shutdown_is_ok() {
        let shutdown = CancellationToken::new();
        let mut s = Supervisor::new(shutdown.clone());
        s.spawn("logger", until_shutdown(&shutdown));
        s.spawn("maintenance", until_shutdown(&shutdown));
        let t = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            t.cancel();
        });
        s.run().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_is_fed_only_while_the_logger_beats() {
        let shutdown = CancellationToken::new();
        let mut s = Supervisor::new(shutdown.clone());
        let beat = Heartbeat::new();
        let stuck = CancellationToken::new();
        // A logger that flushes every second, until it gets stuck (alive, but no longer looping).
        let (b, st, sd) = (beat.clone(), stuck.clone(), shutdown.clone());
        s.spawn("logger", async move {
            loop {
                tokio::select! {
                    _ = sd.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                if st.is_cancelled() {
                    sd.cancelled().await;
                    return Ok(());
                }
                b.beat();
            }
        });
        s.require_heartbeat("logger", beat, Duration::from_secs(3));
        let (fed, feed) = counter();
        s.watchdog(Duration::from_secs(5), feed);
        let sup = tokio::spawn(s.run());

        tokio::time::sleep(Duration::from_secs(60)).await;
        let healthy = fed.load(Ordering::SeqCst);
        assert!(healthy >= 10, "fed {healthy} times in 60 s at a 5 s period");
        stuck.cancel();
        // Within one heartbeat limit plus one ping period the feeding stops, and stays stopped.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let at_stuck = fed.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(
            fed.load(Ordering::SeqCst),
            at_stuck,
            "fed while the logger was stuck"
        );
        assert!(
            !sup.is_finished(),
            "a stuck task is left to the watchdog, not ended here"
        );
        shutdown.cancel();
        sup.await.unwrap().unwrap();
    }
}
