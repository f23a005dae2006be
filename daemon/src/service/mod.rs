//! The service loop: what `bluezoned run` (and every simulated device of `demo`) runs.
//!
//! Tasks, joined by channels, supervised together ([`supervisor`]) and stopped by one
//! cancellation token:
//! - [`advertiser`]: puts the current Bluezone ID and GAEN RPI on air, switching exactly at slot
//!   and interval boundaries.
//! - the radio backend (a [`Radio`]): advertises the [`Broadcast`], reports what it hears (sightings).
//! - [`logger`]: de-duplicates receptions into sightings and writes them in batches; a batch is
//!   acknowledged (counted, reported) only after the store returned from a durable write.
//! - [`maintenance`]: retention purge, and matching whenever case lists arrive.
//! - [`notify`]: delivers due exposure notifications to the hook, one at a time, with retries.
//!
//! On shutdown every task finishes its current write, the logger flushes what it holds, and
//! `run` returns. A task that ends on its own stops the others and `run` returns an error naming
//! it.

pub mod advertiser;
pub mod logger;
pub mod maintenance;
pub mod notify;
pub mod supervisor;

pub use supervisor::{Heartbeat, Supervisor};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Context, Result};
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::radio::{Broadcast, Radio, RadioIo};
use crate::store::{Store, StoredExposure};

/// Counters and gauges for `/metrics` and `/v1/status` (counts only, never an identifier).
#[derive(Debug, Default)]
pub struct Metrics {
    pub receptions: AtomicU64,
    pub sightings_stored: AtomicU64,
    pub store_errors: AtomicU64,
    pub dedup_entries: AtomicU64,
    pub ids_indexed: AtomicU64,
    pub keys_checked: AtomicU64,
    pub last_match_ms: AtomicU64,
    /// Keys per second of the last match, as f64 bits.
    pub last_match_keys_per_s: AtomicU64,
    pub matches_run: AtomicU64,
    pub broadcasts: AtomicU64,
    /// New case lists stored by the API or the poller.
    pub case_lists_stored: AtomicU64,
    /// SIGHUP reloads of the API token files that took effect…
    pub token_reloads: AtomicU64,
    /// …and that were refused (the tokens in use stayed).
    pub token_reload_failures: AtomicU64,
}

impl Metrics {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// State shared by the service's tasks and the API.
pub struct Shared {
    store: Mutex<Store>,
    pub config: Config,
    pub clock: SharedClock,
    pub metrics: Metrics,
    /// Wakes the matching task (a case list arrived).
    pub match_now: Notify,
    /// Wakes the notification task (an exposure became due).
    pub notify_now: Notify,
    /// What the BlueZ backend learned about our address privacy (none on the simulated radio).
    pub radio_privacy: std::sync::OnceLock<crate::radio::bluez::privacy::AdapterPrivacy>,
    /// Exposures of the latest match.
    pub exposures: Mutex<Vec<StoredExposure>>,
    /// Beats after every flush round of the logger; the watchdog is fed only while it is fresh.
    pub logger_beat: Arc<Heartbeat>,
    /// Store calls run on the calling task instead of tokio's blocking pool (see
    /// [`Shared::new_on_virtual_time`]).
    store_inline: bool,
}

impl Shared {
    pub fn new(store: Store, config: Config, clock: SharedClock) -> Arc<Shared> {
        Arc::new(Shared {
            store: Mutex::new(store),
            config,
            clock,
            metrics: Metrics::default(),
            match_now: Notify::new(),
            notify_now: Notify::new(),
            exposures: Mutex::new(Vec::new()),
            logger_beat: Heartbeat::new(),
            radio_privacy: std::sync::OnceLock::new(),
            store_inline: false,
        })
    }

    /// Like [`Shared::new`], for a device simulated on tokio's paused clock (`demo`, large
    /// simulations): [`Shared::with_store`] runs its closure right away on the runtime's thread
    /// instead of handing it to the blocking pool. On virtual time a blocking call only holds
    /// the clock still (nothing else runs meanwhile, so no task sees time pass), whereas a round
    /// trip through the blocking pool costs two thread wake-ups, which thousands of simulated
    /// devices polling and flushing their stores pay millions of times. What is read and
    /// written is the same.
    pub fn new_on_virtual_time(store: Store, config: Config, clock: SharedClock) -> Arc<Shared> {
        let mut shared = Shared::new(store, config, clock);
        if let Some(s) = Arc::get_mut(&mut shared) {
            s.store_inline = true;
        }
        shared
    }

    /// The store, for a short synchronous operation. Call it from blocking context
    /// ([`Shared::with_store`]) so that SQLite's fsyncs do not stall the runtime.
    pub fn lock_store(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock leaves the store usable (SQLite rolls back an open
        // transaction), so a poisoned lock is recovered rather than propagated.
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` with the store on tokio's blocking pool.
    pub async fn with_store<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Store) -> T + Send + 'static,
    ) -> Result<T> {
        if self.store_inline {
            return Ok(f(&mut self.lock_store()));
        }
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&mut me.lock_store()))
            .await
            .context("store task panicked")
    }

    pub fn exposures(&self) -> Vec<StoredExposure> {
        self.exposures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Runs the service until `shutdown` fires or one of its tasks ends on its own.
pub async fn run(
    shared: Arc<Shared>,
    radio: Box<dyn Radio>,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut sup = Supervisor::new(shutdown);
    spawn(shared, radio, &mut sup);
    sup.run().await
}

/// Spawns the radio, advertiser, logger and maintenance tasks under `sup` (which may already
/// supervise others: the API, the poller), and makes the logger's flushes a condition of
/// feeding the watchdog.
pub fn spawn(shared: Arc<Shared>, radio: Box<dyn Radio>, sup: &mut Supervisor) {
    let shutdown = sup.shutdown().clone();
    let (btx, brx) = watch::channel(Broadcast::default());
    let (htx, hrx) = mpsc::channel(8192);
    let radio_name = radio.name();
    let io = RadioIo {
        broadcast: brx,
        heard: htx,
        shutdown: shutdown.clone(),
    };
    sup.spawn("radio", async move {
        radio
            .run(io)
            .await
            .with_context(|| format!("{radio_name} backend"))
    });
    sup.spawn(
        "advertiser",
        advertiser::run(shared.clone(), btx, shutdown.clone()),
    );
    sup.spawn("logger", logger::run(shared.clone(), hrx, shutdown.clone()));
    sup.spawn(
        "maintenance",
        maintenance::run(shared.clone(), shutdown.clone()),
    );
    sup.spawn("notify", notify::run(shared.clone(), shutdown.clone()));
    sup.require_heartbeat(
        "logger",
        shared.logger_beat.clone(),
        logger_stuck_after(shared.config.flush_interval()),
    );
    tracing::info!(radio = radio_name, "service started");
}

/// The logger beats once per flush interval; a flush may take a few seconds on a loaded disk
/// before the logger counts as stuck.
fn logger_stuck_after(flush_interval: std::time::Duration) -> std::time::Duration {
    flush_interval * 2 + std::time::Duration::from_secs(5)
}
