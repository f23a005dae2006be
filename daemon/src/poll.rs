//! Polling a GAEN-style key server: `poll.url` serves `index.txt` (one zip path per line,
//! resolved against `poll.url`) and the zips it lists.
//!
//! Every `poll.interval_s` (and once at start) the poller fetches `index.txt` conditionally
//! (`If-None-Match` / `If-Modified-Since` from the last answer), then fetches each listed file
//! it has not imported yet, verifies it under the keys of `api.trust`, and stores it (the store
//! dedups by content as well). Matching is woken after new imports.
//!
//! State ([`STATE_FILE`] in the data directory, plain JSON written atomically): the URL, the
//! index's validators and listing, and the imported file names with their case list ids. It
//! holds only public file names and validators, so it is not sealed. A restart therefore
//! neither refetches known files nor (with an unchanged index) the index body. Files no longer
//! listed are forgotten. A file refused for its content is not fetched again until restart.
//!
//! Failures (network, HTTP status, a bad file) are logged and retried at the next interval;
//! the poller never stops the daemon.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bluezone_protocol::gaen::export::TrustedKey;
use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::api::{store_case_list, IngestError};
use crate::caselist::{self, Format};
use crate::service::Shared;

/// The poller's state file, in the data directory.
pub const STATE_FILE: &str = "poll-state.json";
/// Largest `index.txt` read.
const MAX_INDEX_BYTES: usize = 1 << 20;
/// Most files taken from one index.
const MAX_INDEX_ENTRIES: usize = 10_000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// What survives a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PollState {
    /// The `poll.url` this state belongs to (another URL starts afresh).
    pub url: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// The files of the last index fetched, in its order.
    pub listed: Vec<String>,
    /// Imported files: index path → case list id.
    pub imported: BTreeMap<String, i64>,
}

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
    /// Files that could not be fetched or stored: retried next round.
    pub failed: usize,
}

pub struct Poller {
    shared: Arc<Shared>,
    base: Url,
    client: reqwest::Client,
    trusted: Arc<Vec<TrustedKey>>,
    max_file_bytes: usize,
    state_path: PathBuf,
    state: PollState,
    rejected: HashSet<String>,
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("url", &redacted(&self.base))
            .field("state_path", &self.state_path)
            .finish_non_exhaustive()
    }
}

/// The URL for logs and errors: no user, password, query or fragment.
fn redacted(u: &Url) -> String {
    let mut u = u.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

impl Poller {
    /// A poller for `url`, trusting `api.trust`, keeping its state in the store's data directory.
    pub fn new(shared: Arc<Shared>, url: &str) -> Result<Poller> {
        let mut base = Url::parse(url.trim()).map_err(|e| anyhow::anyhow!("poll.url: {e}"))?;
        if !matches!(base.scheme(), "http" | "https") {
            bail!(
                "poll.url: expected an http or https URL, got {}",
                base.scheme()
            );
        }
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let trusted = caselist::load_trusts(&shared.config.api.trust).context("api.trust")?;
        if trusted.is_empty() {
            bail!("poll.url is set but api.trust names no key: files from the key server could not be verified");
        }
        let dir = shared
            .lock_store()
            .path()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let state_path = dir.join(STATE_FILE);
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("bluezoned/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .context("poll: building the HTTP client")?;
        let state = load_state(&state_path, &base);
        Ok(Poller {
            max_file_bytes: shared.config.api.max_upload_bytes,
            shared,
            base,
            client,
            trusted: Arc::new(trusted),
            state_path,
            state,
            rejected: HashSet::new(),
        })
    }

    /// Another HTTP client (e.g. without proxies, for tests).
    pub fn with_client(mut self, client: reqwest::Client) -> Poller {
        self.client = client;
        self
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
        let todo: Vec<String> = self
            .state
            .listed
            .iter()
            .filter(|p| !self.state.imported.contains_key(*p) && !self.rejected.contains(*p))
            .cloned()
            .collect();
        for path in todo {
            self.fetch_file(&path, &mut report).await;
        }
        if report.imported + report.rejected + report.failed > 0 {
            tracing::info!(
                url = %redacted(&self.base),
                listed = report.listed,
                imported = report.imported,
                duplicates = report.duplicates,
                rejected = report.rejected,
                failed = report.failed,
                "key server polled"
            );
        } else {
            tracing::debug!(url = %redacted(&self.base), listed = report.listed,
                index_fetched = report.index_fetched, "key server polled: nothing new");
        }
        Ok(report)
    }

    /// The new listing, or `None` on 304 Not Modified.
    async fn fetch_index(&mut self) -> Result<Option<Vec<String>>> {
        let url = self
            .base
            .join("index.txt")
            .context("poll.url: joining index.txt")?;
        let shown = redacted(&url);
        let mut req = self.client.get(url);
        // Validators only make sense with the listing they came with.
        if !self.state.listed.is_empty() {
            if let Some(e) = &self.state.etag {
                req = req.header(IF_NONE_MATCH, e);
            }
            if let Some(lm) = &self.state.last_modified {
                req = req.header(IF_MODIFIED_SINCE, lm);
            }
        }
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("GET {shown}: {}", e.without_url()))?;
        if resp.status() == StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        if resp.status() != StatusCode::OK {
            bail!("GET {shown}: HTTP {}", resp.status());
        }
        let header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        let (etag, last_modified) = (header(ETAG), header(LAST_MODIFIED));
        let body = read_limited(resp, MAX_INDEX_BYTES)
            .await
            .with_context(|| format!("GET {shown}"))?;
        let text = String::from_utf8(body)
            .map_err(|_| anyhow::anyhow!("GET {shown}: index.txt is not UTF-8 text"))?;
        let mut listing = Vec::new();
        let mut seen = HashSet::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if !valid_entry(line) {
                let clipped: String = line.chars().take(80).collect();
                tracing::warn!(line = n + 1, entry = %clipped.escape_debug(),
                    "index.txt: not a relative file path; skipped");
                continue;
            }
            if listing.len() == MAX_INDEX_ENTRIES {
                tracing::warn!(
                    limit = MAX_INDEX_ENTRIES,
                    "index.txt lists too many files; the rest are skipped"
                );
                break;
            }
            if seen.insert(line) {
                listing.push(line.to_string());
            }
        }
        self.state.etag = etag;
        self.state.last_modified = last_modified;
        Ok(Some(listing))
    }

    async fn fetch_file(&mut self, path: &str, report: &mut PollReport) {
        let url = match self.base.join(path) {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(file = %path.escape_debug(), error = %e, "poll: bad file path");
                self.rejected.insert(path.to_string());
                report.rejected += 1;
                return;
            }
        };
        let shown = redacted(&url);
        let bytes = match self.download(url).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(url = %shown, error = %crate::error_chain(&e),
                    "poll: fetching a file failed; retried next round");
                report.failed += 1;
                return;
            }
        };
        report.fetched += 1;
        let r = store_case_list(
            &self.shared,
            bytes,
            self.trusted.clone(),
            Some(Format::GaenExport),
        )
        .await;
        match r {
            Ok(got) => {
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
            Err(IngestError::Invalid(msg)) => {
                tracing::warn!(url = %shown, error = %msg,
                    "poll: key file refused; not fetched again until restart");
                self.rejected.insert(path.to_string());
                report.rejected += 1;
            }
            Err(IngestError::Store) => report.failed += 1,
        }
    }

    async fn download(&self, url: Url) -> Result<Vec<u8>> {
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.without_url()))?;
        if resp.status() != StatusCode::OK {
            bail!("HTTP {}", resp.status());
        }
        read_limited(resp, self.max_file_bytes).await
    }

    /// Writes the state atomically (temp file, fsync, rename). A failure is logged: it only
    /// costs refetching after a restart.
    fn save(&self) {
        if let Err(e) = save_state(&self.state_path, &self.state) {
            tracing::warn!(file = %self.state_path.display(), error = %crate::error_chain(&e),
                "poll: saving the state failed");
        }
    }
}

/// A relative path: no scheme, no leading slash, no `..`, no query or fragment.
fn valid_entry(s: &str) -> bool {
    !s.starts_with('/')
        && !s.contains("://")
        && !s.contains(['?', '#', '\\', ':'])
        && !s.chars().any(char::is_control)
        && s.split('/')
            .all(|seg| seg != ".." && seg != "." && !seg.is_empty())
}

async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        bail!("the server declares more than the {limit}-byte limit");
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| anyhow::anyhow!("reading the body: {}", e.without_url()))?
    {
        if out.len() + chunk.len() > limit {
            bail!("the body is over the {limit}-byte limit");
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn load_state(path: &Path, base: &Url) -> PollState {
    let fresh = PollState {
        url: base.to_string(),
        ..PollState::default()
    };
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return fresh,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "poll: cannot read the state; starting afresh");
            return fresh;
        }
    };
    match serde_json::from_slice::<PollState>(&text) {
        Ok(s) if s.url == fresh.url => s,
        Ok(_) => {
            tracing::info!("poll.url changed: the poller starts afresh");
            fresh
        }
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "poll: unreadable state; starting afresh");
            fresh
        }
    }
}

fn save_state(path: &Path, state: &PollState) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let json = serde_json::to_vec_pretty(state)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(&json)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Starts the poller if `poll.url` is set: once now, then every `poll.interval_s`.
pub fn spawn(
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(url) = shared.config.poll.url.clone() else {
        return Ok(None);
    };
    let every = Duration::from_secs(shared.config.poll.interval_s.max(1));
    let poller = Poller::new(shared, &url)?;
    tracing::info!(url = %redacted(&poller.base), every_s = every.as_secs(), "polling the key server");
    Ok(Some(tokio::spawn(run(poller, every, shutdown))))
}

/// Polls every `every` until `shutdown`; a failed round is logged and retried next time.
pub async fn run(mut poller: Poller, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = poller.poll_once() => if let Err(e) = r {
                tracing::warn!(error = %crate::error_chain(&e), "poll: key server round failed; retried next interval");
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_entries() {
        assert!(valid_entry(
            "exposureKeyExport-US/1600000000-1600086400-00001.zip"
        ));
        assert!(valid_entry("a.zip"));
        for bad in [
            "/etc/passwd",
            "../x.zip",
            "a/../../x.zip",
            "http://evil/x.zip",
            "//evil/x.zip",
            "a.zip?x=1",
            "a//b.zip",
            "c:\\x.zip",
            "./a.zip",
        ] {
            assert!(!valid_entry(bad), "{bad}");
        }
    }

    #[test]
    fn urls_are_redacted() {
        let u = Url::parse("https://user:secret@keys.example/v1/?token=abc").unwrap();
        let r = redacted(&u);
        assert!(
            !r.contains("secret") && !r.contains("user") && !r.contains("abc"),
            "{r}"
        );
        assert!(r.starts_with("https://keys.example/v1/"), "{r}");
    }
}
