//! The key server as the poller may use it: `poll.url` checked (https, or http on loopback),
//! a client that follows redirects only within its origin and trusts `poll.tls_roots` and
//! `poll.ca_file`, file paths from `index.txt` kept under the base path, bodies read up to a
//! limit, and URLs shown without their credentials.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use reqwest::{StatusCode, Url};

use crate::config::{PollConfig, TlsRoots};

/// Largest `index.txt` read.
const MAX_INDEX_BYTES: usize = 1 << 20;
/// Most files taken from one index.
const MAX_INDEX_ENTRIES: usize = 10_000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// Same-origin redirects followed at most.
const MAX_REDIRECTS: usize = 5;

/// A fetched `index.txt`.
pub(super) struct Index {
    pub listing: Vec<String>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// `poll.url` and the client that talks to it.
pub(super) struct KeyServer {
    base: Url,
    client: reqwest::Client,
    tls: Tls,
}

impl KeyServer {
    /// Checks `url` (https, or plain http to a loopback host) and normalises it to a directory.
    pub(super) fn base(url: &str) -> Result<Url> {
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
        Ok(base)
    }

    /// A client for `base` (from [`Self::base`]) with the TLS trust of `cfg`.
    pub(super) fn new(base: Url, cfg: &PollConfig) -> Result<KeyServer> {
        let tls = Tls::load(cfg)?;
        let client = build_client(&base, false, &tls)?;
        Ok(KeyServer { base, client, tls })
    }

    /// The same client without system proxies (tests on loopback).
    pub(super) fn without_proxy(&mut self) -> Result<()> {
        self.client = build_client(&self.base, true, &self.tls)?;
        Ok(())
    }

    /// The base URL for logs and errors.
    pub(super) fn shown(&self) -> String {
        redacted(&self.base)
    }

    /// `index.txt`, conditionally on the validators given: its listing (entries that are not
    /// safe relative paths skipped, duplicates dropped, at most [`MAX_INDEX_ENTRIES`]), or
    /// `None` on 304 Not Modified.
    pub(super) async fn index(
        &self,
        etag: Option<&str>,
        last_modified: Option<&str>,
    ) -> Result<Option<Index>> {
        let url = self.under_base("index.txt")?;
        let shown = redacted(&url);
        let mut req = self.client.get(url);
        if let Some(e) = etag {
            req = req.header(IF_NONE_MATCH, e);
        }
        if let Some(lm) = last_modified {
            req = req.header(IF_MODIFIED_SINCE, lm);
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
        Ok(Some(Index {
            listing,
            etag,
            last_modified,
        }))
    }

    /// A file at `url` (from [`Self::under_base`]), at most `limit` bytes.
    pub(super) async fn download(&self, url: Url, limit: usize) -> Result<Vec<u8>> {
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.without_url()))?;
        if resp.status() != StatusCode::OK {
            bail!("HTTP {}", resp.status());
        }
        read_limited(resp, limit).await
    }

    /// `path` resolved against the base, with the base's query (token auth); refused unless the
    /// result is still on the base's origin and under its path once dot-segments (also
    /// percent-encoded ones) are resolved.
    pub(super) fn under_base(&self, path: &str) -> Result<Url> {
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
}

/// The URL for logs and errors: no user, password, query or fragment.
pub(super) fn redacted(u: &Url) -> String {
    let mut u = u.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// A relative path: no scheme, no leading slash, no `..` (also percent-encoded), no query or
/// fragment. [`KeyServer::under_base`] checks the joined URL again.
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
