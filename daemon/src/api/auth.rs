//! Bearer tokens in two classes, and a limit on failed attempts.
//!
//! - **Upload** tokens (health officials) may only `POST /v1/case-lists`.
//! - **Owner** tokens (the device's owner) may also read exposures and the status details.
//!
//! Token files hold one token per line (`#` comments, blank lines ignored). A file that group or
//! others may read is refused, as is a token under [`MIN_TOKEN_LEN`] characters. Tokens are
//! kept only as SHA-256 digests and compared in constant time over every configured token.
//! Under systemd the files arrive by `LoadCredential=` as `$CREDENTIALS_DIRECTORY/api-tokens`
//! (owner) and `api-upload-tokens` (upload), read when the config names no file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::listen::Peer;
use crate::config::ApiConfig;

/// 32 hex characters: 128 bits, if the token is random (`openssl rand -hex 16` or more).
pub const MIN_TOKEN_LEN: usize = 32;
/// Failed authentications a peer may make per [`FAILURE_WINDOW`] before it gets 429.
pub const MAX_FAILURES: u32 = 10;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Peers remembered by the failure limit; the oldest windows are dropped beyond it.
const MAX_PEERS_TRACKED: usize = 4096;

/// Credential names under `$CREDENTIALS_DIRECTORY` (see `dist/bluezoned.service`).
pub const OWNER_CREDENTIAL: &str = "api-tokens";
pub const UPLOAD_CREDENTIAL: &str = "api-upload-tokens";

/// What a request's token allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Upload,
    Owner,
}

/// Token digests of one class (also the authority's official tokens). `Debug` shows only the
/// count.
pub(crate) struct Tokens(Vec<[u8; 32]>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.0.len())
    }
}

impl Tokens {
    pub(crate) fn load(key: &str, path: &Path) -> Result<Tokens> {
        let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(std::path::PathBuf::from);
        Self::load_with(key, path, credentials.as_deref())
    }

    /// [`Tokens::load`] with the credentials directory given (tests).
    fn load_with(key: &str, path: &Path, credentials: Option<&Path>) -> Result<Tokens> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path)
            .with_context(|| format!("{key}: reading {}", path.display()))?;
        let mode = meta.permissions().mode();
        // systemd hands `LoadCredential=` files to a DynamicUser by ACL, so they show 0440:
        // systemd protects that directory; the mode rule is for files we are pointed at.
        if mode & 0o077 != 0 && !credentials.is_some_and(|c| is_within(path, c)) {
            bail!(
                "{key}: {} is readable or writable by group or others (mode {:o}); \
                 expected 0600 or 0400 (chmod go= it)",
                path.display(),
                mode & 0o777
            );
        }
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("{key}: reading {}", path.display()))?,
        );
        let mut tokens = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            if t.len() < MIN_TOKEN_LEN {
                // The line number, never the token.
                bail!(
                    "{key}: {} line {}: a token must have at least {MIN_TOKEN_LEN} characters \
                     (128 bits, e.g. `openssl rand -hex 16`), got {}",
                    path.display(),
                    n + 1,
                    t.len()
                );
            }
            tokens.push(Sha256::digest(t.as_bytes()).into());
        }
        if tokens.is_empty() {
            tracing::warn!(file = %path.display(), "{key} holds no token");
        }
        Ok(Tokens(tokens))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Constant time over every configured token.
    pub(crate) fn accepts(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut ok = subtle::Choice::from(0u8);
        for t in &self.0 {
            ok |= t.ct_eq(&digest);
        }
        bool::from(ok)
    }
}

/// Whether `path` lies in `dir`, both resolved (no `..` or symlink tricks).
fn is_within(path: &Path, dir: &Path) -> bool {
    match (std::fs::canonicalize(dir), std::fs::canonicalize(path)) {
        (Ok(dir), Ok(path)) => path.starts_with(dir),
        _ => false,
    }
}

/// Both classes of token.
#[derive(Debug)]
pub(crate) struct Auth {
    owner: Tokens,
    upload: Tokens,
}

impl Auth {
    /// From `api.owner_token_file` / `api.upload_token_file`, else the systemd credentials.
    pub(crate) fn load(api: &ApiConfig) -> Result<Auth> {
        let creds = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        let pick = |configured: &Option<PathBuf>, credential: &str| {
            configured.clone().or_else(|| {
                creds
                    .as_ref()
                    .map(|d| d.join(credential))
                    .filter(|p| p.exists())
            })
        };
        let load = |key: &str, path: Option<PathBuf>| match path {
            Some(p) => Tokens::load(key, &p),
            None => Ok(Tokens(Vec::new())),
        };
        let owner = load(
            "api.owner_token_file",
            // `token_file` is the old name (Config::migrate moves it; a Config built in code
            // may still use it).
            pick(
                &api.owner_token_file.clone().or(api.token_file.clone()),
                OWNER_CREDENTIAL,
            ),
        )?;
        let upload = load(
            "api.upload_token_file",
            pick(&api.upload_token_file, UPLOAD_CREDENTIAL),
        )?;
        if owner.0.is_empty() && upload.0.is_empty() {
            tracing::warn!("no API token is configured: uploads and exposures are refused (401)");
        }
        Ok(Auth { owner, upload })
    }

    /// How many owner and upload tokens are configured.
    pub(crate) fn counts(&self) -> (usize, usize) {
        (self.owner.0.len(), self.upload.0.len())
    }

    /// The role a presented token grants, if any. Every class is checked, so the time does not
    /// tell which class (or whether any) matched.
    pub(crate) fn role(&self, presented: &[u8]) -> Option<Role> {
        let owner = self.owner.accepts(presented);
        let upload = self.upload.accepts(presented);
        if owner {
            Some(Role::Owner)
        } else if upload {
            Some(Role::Upload)
        } else {
            None
        }
    }
}

/// The token of `Authorization: Bearer TOKEN`.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let v = headers.get(header::AUTHORIZATION)?.as_bytes();
    let scheme = v.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let t = v[7..].trim_ascii();
    (!t.is_empty()).then_some(t)
}

/// Failed authentications per peer in a fixed window; a peer over [`MAX_FAILURES`] is refused
/// (429) until its window ends, whatever token it presents.
#[derive(Debug, Default)]
pub(crate) struct FailureLimit {
    peers: Mutex<HashMap<Peer, (Instant, u32)>>,
}

impl FailureLimit {
    pub(crate) fn blocked(&self, peer: Peer, now: Instant) -> bool {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers
            .get(&peer)
            .is_some_and(|&(start, n)| now < start + FAILURE_WINDOW && n >= MAX_FAILURES)
    }

    pub(crate) fn failed(&self, peer: Peer, now: Instant) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if peers.len() >= MAX_PEERS_TRACKED {
            peers.retain(|_, (start, _)| now < *start + FAILURE_WINDOW);
        }
        if peers.len() >= MAX_PEERS_TRACKED {
            // Still full of live windows: forget the oldest rather than grow without bound.
            if let Some(oldest) = peers.iter().min_by_key(|(_, (s, _))| *s).map(|(p, _)| *p) {
                peers.remove(&oldest);
            }
        }
        let e = peers.entry(peer).or_insert((now, 0));
        if now >= e.0 + FAILURE_WINDOW {
            *e = (now, 0);
        }
        e.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_parsing_and_constant_time_check() {
        let tokens = Tokens(vec![
            Sha256::digest(b"alpha").into(),
            Sha256::digest(b"beta-token").into(),
        ]);
        assert!(tokens.accepts(b"alpha"));
        assert!(tokens.accepts(b"beta-token"));
        assert!(!tokens.accepts(b"alph"));
        assert!(!tokens.accepts(b""));
        assert!(!Tokens(Vec::new()).accepts(b"alpha"));
        assert_eq!(format!("{tokens:?}"), "Tokens(2 configured)");

        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bEaReR  alpha "),
        );
        assert_eq!(bearer(&h), Some(&b"alpha"[..]));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YTpi"),
        );
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn failures_block_a_peer_for_the_window_only() {
        let limit = FailureLimit::default();
        let a = Peer::Ip("127.0.0.1".parse().unwrap());
        let b = Peer::Uid(1000);
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES - 1 {
            limit.failed(a, t0);
        }
        assert!(!limit.blocked(a, t0));
        limit.failed(a, t0);
        assert!(limit.blocked(a, t0));
        assert!(!limit.blocked(b, t0), "another peer is not affected");
        assert!(!limit.blocked(a, t0 + FAILURE_WINDOW), "the window ends");
    }

    #[test]
    fn token_files_are_checked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        let good = "0123456789abcdef0123456789abcdef";
        std::fs::write(&f, format!("# c\n\n {good} \n")).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = Tokens::load("api.owner_token_file", &f)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("api.owner_token_file") && e.contains("group"),
            "{e}"
        );
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let t = Tokens::load("k", &f).unwrap();
        assert!(t.accepts(good.as_bytes()));
        std::fs::write(&f, "short-token\n").unwrap();
        let e = format!("{:#}", Tokens::load("k", &f).unwrap_err());
        assert!(e.contains("line 1") && e.contains("32"), "{e}");
        assert!(
            !e.contains("short-token"),
            "the token is never in an error: {e}"
        );
    }

    /// systemd's `LoadCredential=` file shows mode 0440 (an ACL for the DynamicUser): accepted
    /// inside `$CREDENTIALS_DIRECTORY`, refused anywhere else.
    #[test]
    fn a_0440_token_file_is_accepted_only_in_the_credentials_directory() {
        use std::os::unix::fs::PermissionsExt;
        let creds = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        for d in [creds.path(), other.path()] {
            let f = d.join(OWNER_CREDENTIAL);
            std::fs::write(&f, "0123456789abcdef0123456789abcdef\n").unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o440)).unwrap();
        }
        let inside = creds.path().join(OWNER_CREDENTIAL);
        let t = Tokens::load_with("k", &inside, Some(creds.path())).unwrap();
        assert!(t.accepts(b"0123456789abcdef0123456789abcdef"));
        let outside = other.path().join(OWNER_CREDENTIAL);
        assert!(Tokens::load_with("k", &outside, Some(creds.path())).is_err());
        assert!(Tokens::load_with("k", &inside, None).is_err());
    }
}
