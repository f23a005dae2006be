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
//! State ([`STATE_FILE`] in the data directory, plain JSON written atomically): the redacted
//! URL, the index's validators and listing, and the imported file names with their case list
//! ids. It holds only public file names and validators, so it is not sealed. A restart therefore
//! neither refetches known files nor (with an unchanged index) the index body. Files no longer
//! listed are forgotten. A file refused for its content is not fetched again until restart.
//!
//! Cost: a round fetches at most [`FILES_PER_ROUND`] files (the rest wait for the next round);
//! a file that failed is retried after 1, 2, 4 … up to [`MAX_BACKOFF_ROUNDS`] rounds.
//! Failures are logged; the poller never stops the daemon.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::caselist::Format;
use crate::config::{PollConfig, TlsRoots};
use crate::ingest::{self, Ingest};
use crate::service::Shared;

/// The poller's state file, in the data directory.
pub const STATE_FILE: &str = "poll-state.json";
/// Largest `index.txt` read.
const MAX_INDEX_BYTES: usize = 1 << 20;
/// Most files taken from one index.
const MAX_INDEX_ENTRIES: usize = 10_000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// Files downloaded in one round at most.
pub const FILES_PER_ROUND: usize = 50;
/// Longest wait, in rounds, before a failed file is tried again.
pub const MAX_BACKOFF_ROUNDS: u64 = 64;
/// Same-origin redirects followed at most.
const MAX_REDIRECTS: usize = 5;

/// What survives a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PollState {
    /// The `poll.url` this state belongs to, without user, password or query (another URL
    /// starts afresh).
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
    /// Files that could not be fetched or stored: retried after a backoff.
    pub failed: usize,
    /// Files not tried this round: over [`FILES_PER_ROUND`], or waiting out a backoff.
    pub deferred: usize,
}

pub struct Poller {
    shared: Arc<Shared>,
    base: Url,
    client: reqwest::Client,
    tls: Tls,
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
    /// A poller for `url`, trusting `cases.trust`, keeping its state in the store's data
    /// directory.
    pub fn new(shared: Arc<Shared>, url: &str) -> Result<Poller> {
        let mut base = Url::parse(url.trim()).map_err(|e| anyhow::anyhow!("poll.url: {e}"))?;
        match base.scheme() {
            "https" => {}
            "http" if host_is_loopback(&base) => {}
            "http" => bail!(
                "poll.url: plain http is allowed only for a loopback host; use https for {}",
                redacted(&base)
            ),
            other => bail!("poll.url: expected an https URL, got {other}"),
        }
        base.set_fragment(None);
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
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
        let tls = Tls::load(&shared.config.poll)?;
        let client = build_client(&base, false, &tls)?;
        let state = load_state(&state_path, &base);
        Ok(Poller {
            shared,
            base,
            client,
            tls,
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
        self.client = build_client(&self.base, true, &self.tls)?;
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
                url = %redacted(&self.base),
                listed = report.listed,
                imported = report.imported,
                duplicates = report.duplicates,
                rejected = report.rejected,
                failed = report.failed,
                deferred = report.deferred,
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
        let url = self.under_base("index.txt")?;
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
        let url = match self.under_base(path) {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(file = %path.escape_debug(), error = %crate::error_chain(&e),
                    "poll: file path refused");
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
        read_limited(resp, self.ingest.max_bytes()).await
    }

    /// `path` resolved against the base, with the base's query (token auth); refused unless the
    /// result is still on the base's origin and under its path once dot-segments (also
    /// percent-encoded ones) are resolved.
    fn under_base(&self, path: &str) -> Result<Url> {
        let mut u = self
            .base
            .join(path)
            .with_context(|| format!("joining {:?}", path.escape_debug().to_string()))?;
        if u.origin() != self.base.origin() || !u.path().starts_with(self.base.path()) {
            bail!(
                "{:?} resolves outside {} (to {})",
                path.escape_debug().to_string(),
                redacted(&self.base),
                redacted(&u)
            );
        }
        u.set_query(self.base.query());
        Ok(u)
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

/// A relative path: no scheme, no leading slash, no `..` (also percent-encoded), no query or
/// fragment. [`Poller::under_base`] checks the joined URL again.
fn valid_entry(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    !["%2e", "%2f", "%5c"].iter().any(|enc| lower.contains(enc))
        && !s.starts_with('/')
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

fn host_is_loopback(u: &Url) -> bool {
    let Some(h) = u.host_str() else {
        return false;
    };
    let h = h.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback())
}

/// The certificates the poller's TLS trusts: `poll.tls_roots` and `poll.ca_file`, read once.
#[derive(Clone)]
struct Tls {
    roots: TlsRoots,
    /// `poll.ca_file`'s certificates, then (for `system`) the system's.
    extra: Vec<reqwest::Certificate>,
}

impl Tls {
    fn load(cfg: &PollConfig) -> Result<Tls> {
        let mut extra = Vec::new();
        if let Some(path) = &cfg.ca_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("poll.ca_file: reading {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                anyhow::anyhow!(
                    "poll.ca_file: {}: not a PEM certificate bundle: {e}",
                    path.display()
                )
            })?;
            if certs.is_empty() {
                bail!(
                    "poll.ca_file: {} holds no certificate (expected PEM blocks \
                     \"-----BEGIN CERTIFICATE-----\")",
                    path.display()
                );
            }
            extra.extend(certs);
        }
        if cfg.tls_roots == TlsRoots::System {
            let found = rustls_native_certs::load_native_certs();
            let before = extra.len();
            for der in found.certs {
                // A system store may hold a certificate reqwest cannot use; skip it.
                if let Ok(c) = reqwest::Certificate::from_der(&der) {
                    extra.push(c);
                }
            }
            if extra.len() == before {
                let why = found
                    .errors
                    .first()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default();
                bail!(
                    "poll.tls_roots = \"system\": no certificate found in the system trust store \
                     (SSL_CERT_FILE, SSL_CERT_DIR or the distribution's CA bundle){why}"
                );
            }
        }
        Ok(Tls {
            roots: cfg.tls_roots,
            extra,
        })
    }
}

/// Redirects only within the base's origin (scheme, host, port), at most [`MAX_REDIRECTS`];
/// none at all when the URL carries a user or password, which reqwest would send again.
/// Trusts the compiled-in roots only for `poll.tls_roots = "builtin"`, plus [`Tls`]'s.
fn build_client(base: &Url, no_proxy: bool, tls: &Tls) -> Result<reqwest::Client> {
    let origin = base.origin();
    let has_credentials = !base.username().is_empty() || base.password().is_some();
    let policy = if has_credentials {
        reqwest::redirect::Policy::none()
    } else {
        reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS || attempt.url().origin() != origin {
                attempt.stop()
            } else {
                attempt.follow()
            }
        })
    };
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("bluezoned/", env!("CARGO_PKG_VERSION")))
        .redirect(policy);
    b = b.tls_built_in_root_certs(tls.roots == TlsRoots::Builtin);
    for c in &tls.extra {
        b = b.add_root_certificate(c.clone());
    }
    if no_proxy {
        b = b.no_proxy();
    }
    b.build()
        .context("poll: building the HTTP client (poll.ca_file, poll.tls_roots)")
}

fn load_state(path: &Path, base: &Url) -> PollState {
    let fresh = PollState {
        url: redacted(base),
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
    let json = serde_json::to_vec_pretty(state)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    // NamedTempFile is created 0600 in the same directory, so the rename is atomic.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(&json)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("renaming to {}", path.display()))?;
    // The rename is durable only once the directory is.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
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
    tracing::info!(url = %redacted(&poller.base), every_s = every.as_secs(), "polling the key server");
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
            "sub/%2e%2e/%2e%2e/outside.zip",
            "%2E%2E/x.zip",
            "a%2fb.zip",
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
