//! Polling a GAEN-style key server: `poll.url` serves `index.txt` (one zip path per line,
//! resolved against `poll.url`) and the zips it lists.
//!
//! Every `poll.interval_s` (and once at start) the poller fetches `index.txt` conditionally
//! (`If-None-Match` / `If-Modified-Since` from the last answer), then fetches each listed file
//! it has not imported yet, and hands it to [`crate::ingest`] (verified under `cases.trust`,
//! stored, deduplicated by content, matching woken).
//!
//! Credentials in `poll.url` (`user:password@`, a `?token=` query) are sent with every request
//! to that server and nowhere else: they are never logged nor written to the state file,
//! redirects are followed only to the same scheme, host and port (none at all when the URL holds
//! a user or password), and every file URL must stay under the base path after the URL
//! parser resolved `%2e%2e` and the like. Plain `http` is refused unless the host is loopback.
//!
//! - `remote`: the key server, what may be asked of it and how (URL, TLS, redirects, paths,
//!   bounded bodies);
//! - `state`: what survives a restart;
//! - here: the rounds (which files to fetch, backoff) and the hand-over to ingestion.
//!
//! State ([`STATE_FILE`] in the data directory, plain JSON written atomically): the redacted
//! URL, the index's validators and listing, and the imported file names with their case list
//! ids. It holds only public file names and validators, so it is not sealed. A restart therefore
//! neither refetches known files nor (with an unchanged index) the index body. Files no longer
//! listed are forgotten. A file refused for its content is not fetched again until restart.
//!
//! Cost: a round fetches at most [`FILES_PER_ROUND`] files (the rest wait for the next round);
//! a file that failed is retried after 1, 2, 4 … up to [`MAX_BACKOFF_ROUNDS`] rounds.
//! Failures are logged; the poller never stops the daemon.

mod remote;
mod state;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use tokio_util::sync::CancellationToken;

use crate::caselist::Format;
use crate::ingest::{self, Ingest};
use crate::service::Shared;
use remote::KeyServer;
pub use state::{PollState, STATE_FILE};

/// Files downloaded in one round at most.
pub const FILES_PER_ROUND: usize = 50;
/// Longest wait, in rounds, before a failed file is tried again.
pub const MAX_BACKOFF_ROUNDS: u64 = 64;

/// What one [`Poller::poll_once`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PollReport {
    /// False when the server answered 304 Not Modified for `index.txt`.
    pub index_fetched: bool,
    pub listed: usize,
    /// Files downloaded this round.
    pub fetched: usize,
    /// Files stored as new case lists.
    pub imported: usize,
    /// Files whose content was stored already (e.g. uploaded through the API).
    pub duplicates: usize,
    /// Files refused for their content (bad zip, bad signature): not fetched again until restart.
    pub rejected: usize,
    /// Files that could not be fetched or stored: retried after a backoff.
    pub failed: usize,
    /// Files not tried this round: over [`FILES_PER_ROUND`], or waiting out a backoff.
    pub deferred: usize,
}

pub struct Poller {
    shared: Arc<Shared>,
    server: KeyServer,
    ingest: Ingest,
    state_path: PathBuf,
    state: PollState,
    rejected: HashSet<String>,
    /// Rounds done, and per failed file: (failures in a row, first round to try again).
    round: u64,
    backoff: HashMap<String, (u32, u64)>,
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("url", &self.server.shown())
            .field("state_path", &self.state_path)
            .finish_non_exhaustive()
    }
}

impl Poller {
    /// A poller for `url`, trusting `cases.trust`, keeping its state in the store's data
    /// directory.
    pub fn new(shared: Arc<Shared>, url: &str) -> Result<Poller> {
        let base = KeyServer::base(url)?;
        let ingest = Ingest::from_config(&shared.config.cases)?;
        if !ingest.has_trust_anchors() {
            bail!("poll.url is set but cases.trust names no key: files from the key server could not be verified");
        }
        let dir = shared
            .lock_store()
            .path()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let state_path = dir.join(STATE_FILE);
        let state = state::load_state(&state_path, &base);
        let server = KeyServer::new(base, &shared.config.poll)?;
        Ok(Poller {
            shared,
            server,
            ingest,
            state_path,
            state,
            rejected: HashSet::new(),
            round: 0,
            backoff: HashMap::new(),
        })
    }

    /// The same client without system proxies (tests on loopback).
    pub fn without_proxy(mut self) -> Result<Poller> {
        self.server.without_proxy()?;
        Ok(self)
    }

    pub fn state(&self) -> &PollState {
        &self.state
    }

    pub fn state_path(&self) -> &Path {
        &self.state_path
    }

    /// One round: the index (conditionally), then every listed file not imported yet. An error
    /// means the index could not be had; a file's failure is counted in the report and logged.
    pub async fn poll_once(&mut self) -> Result<PollReport> {
        let mut report = PollReport::default();
        if let Some(listing) = self.fetch_index().await? {
            report.index_fetched = true;
            let listed: HashSet<&String> = listing.iter().collect();
            self.state.imported.retain(|k, _| listed.contains(k));
            self.state.listed = listing;
            self.save();
        }
        report.listed = self.state.listed.len();
        self.round += 1;
        let round = self.round;
        self.backoff
            .retain(|p, _| self.state.listed.contains(p) && !self.state.imported.contains_key(p));
        let todo: Vec<String> = self
            .state
            .listed
            .iter()
            .filter(|p| !self.state.imported.contains_key(*p) && !self.rejected.contains(*p))
            .cloned()
            .collect();
        for path in todo {
            let waiting = self.backoff.get(&path).is_some_and(|&(_, at)| round < at);
            if waiting || report.fetched + report.failed >= FILES_PER_ROUND {
                report.deferred += 1;
                continue;
            }
            let failed_before = report.failed;
            self.fetch_file(&path, &mut report).await;
            if report.failed > failed_before {
                let n = self.backoff.get(&path).map_or(0, |&(n, _)| n) + 1;
                let wait = (1u64 << (n - 1).min(6)).min(MAX_BACKOFF_ROUNDS);
                self.backoff.insert(path, (n, round + wait));
            } else {
                self.backoff.remove(&path);
            }
        }
        if report.imported + report.rejected + report.failed > 0 {
            tracing::info!(
                url = %self.server.shown(),
                listed = report.listed,
                imported = report.imported,
                duplicates = report.duplicates,
                rejected = report.rejected,
                failed = report.failed,
                deferred = report.deferred,
                "key server polled"
            );
        } else {
            tracing::debug!(url = %self.server.shown(), listed = report.listed,
                index_fetched = report.index_fetched, "key server polled: nothing new");
        }
        Ok(report)
    }

    /// The new listing (validators kept), or `None` on 304 Not Modified.
    async fn fetch_index(&mut self) -> Result<Option<Vec<String>>> {
        // Validators only make sense with the listing they came with.
        let known = !self.state.listed.is_empty();
        let index = self
            .server
            .index(
                self.state.etag.as_deref().filter(|_| known),
                self.state.last_modified.as_deref().filter(|_| known),
            )
            .await?;
        Ok(index.map(|i| {
            self.state.etag = i.etag;
            self.state.last_modified = i.last_modified;
            i.listing
        }))
    }

    async fn fetch_file(&mut self, path: &str, report: &mut PollReport) {
        let url = match self.server.under_base(path) {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(file = %path.escape_debug(), error = %crate::error_chain(&e),
                    "poll: file path refused");
                self.rejected.insert(path.to_string());
                report.rejected += 1;
                return;
            }
        };
        let shown = remote::redacted(&url);
        let bytes = match self.server.download(url, self.ingest.max_bytes()).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(url = %shown, error = %crate::error_chain(&e),
                    "poll: fetching a file failed; retried next round");
                report.failed += 1;
                return;
            }
        };
        report.fetched += 1;
        // From the network only signed files: GAEN exports, and F0 lists inside a health
        // authority's signed zip (a plain F0 JSON is refused: anyone could have placed it).
        let only = if bluezone_protocol::bluezone::signed::is_signed_f0(&bytes) {
            Format::BluezoneF0
        } else {
            Format::GaenExport
        };
        let r = ingest::ingest(&self.shared, &self.ingest, bytes, Some(only)).await;
        match r {
            Ok(got) => {
                let got = got.stored;
                if got.new {
                    report.imported += 1;
                } else {
                    report.duplicates += 1;
                }
                tracing::info!(url = %shown, id = got.id, keys = got.entries, new = got.new,
                    "poll: key file imported");
                self.state.imported.insert(path.to_string(), got.id);
                self.save();
            }
            Err(e) if e.is_content() => {
                tracing::warn!(url = %shown, error = %e,
                    "poll: key file refused; not fetched again until restart");
                self.rejected.insert(path.to_string());
                report.rejected += 1;
            }
            Err(e) => {
                tracing::warn!(url = %shown, error = %e, "poll: storing a key file failed");
                report.failed += 1;
            }
        }
    }

    /// Writes the state atomically (temp file, fsync, rename). A failure is logged: it only
    /// costs refetching after a restart.
    fn save(&self) {
        if let Err(e) = state::save_state(&self.state_path, &self.state) {
            tracing::warn!(file = %self.state_path.display(), error = %crate::error_chain(&e),
                "poll: saving the state failed");
        }
    }
}

/// Starts the poller if `poll.url` is set: once now, then every `poll.interval_s`.
pub fn spawn(
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<Result<()>>>> {
    let Some(url) = shared.config.poll.url.clone() else {
        return Ok(None);
    };
    let every = Duration::from_secs(shared.config.poll.interval_s.max(1));
    let poller = Poller::new(shared, &url)?;
    tracing::info!(url = %poller.server.shown(), every_s = every.as_secs(), "polling the key server");
    Ok(Some(tokio::spawn(run(poller, every, shutdown))))
}

/// Polls every `every` until `shutdown`; a failed round is logged and retried next time.
pub async fn run(mut poller: Poller, every: Duration, shutdown: CancellationToken) -> Result<()> {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = poller.poll_once() => if let Err(e) = r {
                tracing::warn!(error = %crate::error_chain(&e), "poll: key server round failed; retried next interval");
            },
        }
    }
}
