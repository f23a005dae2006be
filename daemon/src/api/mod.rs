//! The HTTP API for health officials and the device's owner (axum, HTTP/1.1).
//!
//! | method and path | token | what |
//! |---|---|---|
//! | `POST /v1/case-lists` | upload or owner | a Bluezone F0 JSON or a signed GAEN export zip → 201 (new) / 200, the `cases import` summary: `id`, `format`, `entries`, `skipped` (index, field, reason), `skipped_total` |
//! | `GET /v1/exposures` | owner | the owner's stored exposures (an upload token gets 403) |
//! | `GET /v1/status` | none / owner | operational counts; with an owner token also store counts |
//! | `GET /metrics` | none / owner | Prometheus text; the same split |
//!
//! - [`listen`]: where it listens (`api.listen`: loopback `HOST:PORT`, or `unix:/path`, a socket
//!   made 0660) and the connection loop with its timeouts, cap and shutdown, and the `Host`
//!   rule (421 for a name that is neither loopback nor the listen address: DNS rebinding).
//! - [`auth`]: the two token classes and the failed-authentication limit.
//! - [`routes`]: handlers and per-request checks (token, time limits, upload queue).
//! - [`metrics`]: the Prometheus text and the cached store counts.
//!
//! Uploads go through [`crate::ingest`] like every other case list. Errors are JSON
//! `{"error": "..."}`. Nothing here logs a token or a body.

pub(crate) mod auth;
pub(crate) mod listen;
mod metrics;
mod routes;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use auth::{MIN_TOKEN_LEN, OWNER_CREDENTIAL, UPLOAD_CREDENTIAL};
pub use listen::{Listen, Peer, ServeLimits};

use crate::ingest::Ingest;
use crate::service::Shared;

/// Uploads parsed at once (each may hold up to `cases.max_bytes` in memory).
const PARSERS: usize = 2;
/// Uploads whose bodies are read at once (or wait for a parser); more wait for a place.
const UPLOAD_QUEUE: usize = 8;

pub(crate) struct ApiState {
    shared: Arc<Shared>,
    /// Replaced as a whole on SIGHUP (the token files read again).
    auth: std::sync::RwLock<Arc<auth::Auth>>,
    failures: auth::FailureLimit,
    ingest: Ingest,
    upload_queue: Semaphore,
    parsers: Semaphore,
    started: Instant,
    counts: Arc<metrics::CountsCache>,
}

impl ApiState {
    fn load(shared: Arc<Shared>) -> Result<Arc<ApiState>> {
        let auth = auth::Auth::load(&shared.config.api)?;
        let ingest = Ingest::from_config(&shared.config.cases)?;
        if !ingest.has_trust_anchors() {
            tracing::warn!("cases.trust names no key: GAEN uploads are refused");
        }
        Ok(Arc::new(ApiState {
            auth: std::sync::RwLock::new(Arc::new(auth)),
            failures: auth::FailureLimit::default(),
            ingest,
            upload_queue: Semaphore::new(UPLOAD_QUEUE),
            parsers: Semaphore::new(PARSERS),
            started: Instant::now(),
            counts: Arc::default(),
            shared,
        }))
    }

    /// The tokens in use.
    fn auth(&self) -> Arc<auth::Auth> {
        self.auth.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads the token files again; on an error the tokens in use stay (and it is logged).
    /// Either way a counter says so (`/v1/status`, `/metrics`), after the tokens changed.
    fn reload_tokens(&self) {
        let m = &self.shared.metrics;
        match auth::Auth::load(&self.shared.config.api) {
            Ok(a) => {
                let (owner, upload) = a.counts();
                *self.auth.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(a);
                m.token_reloads.fetch_add(1, Ordering::SeqCst);
                tracing::info!(owner, upload, "SIGHUP: API tokens reloaded");
            }
            Err(e) => {
                m.token_reload_failures.fetch_add(1, Ordering::SeqCst);
                tracing::error!(
                    error = %crate::error_chain(&e),
                    "SIGHUP: reloading the API tokens failed; the previous tokens stay in use"
                )
            }
        }
    }
}

/// A bound API, ready to serve.
pub struct Api {
    /// The bound address (the real port when port 0 was asked for).
    pub local: Listen,
    listener: listen::Listener,
    app: axum::Router,
    limits: ServeLimits,
    state: Arc<ApiState>,
    /// Installed at bind, so a SIGHUP from then on reloads the tokens instead of ending the
    /// process (SIGHUP's default action).
    hup: tokio::signal::unix::Signal,
}

impl Api {
    /// Binds `api.listen` if it is set. Errors (a bad address, a remote address without
    /// `api.allow_remote`, a bad token file or trust anchor) stop startup.
    pub async fn bind(shared: Arc<Shared>) -> Result<Option<Api>> {
        let Some(listen) = shared.config.api.listen.clone() else {
            return Ok(None);
        };
        Api::bind_to(shared, &listen, ServeLimits::default())
            .await
            .map(Some)
    }

    /// Binds `listen` (the `api.listen` syntax) with `limits`.
    pub async fn bind_to(shared: Arc<Shared>, listen: &str, limits: ServeLimits) -> Result<Api> {
        let want = Listen::parse(listen)?;
        let (listener, local) =
            listen::Listener::bind(&want, shared.config.api.allow_remote).await?;
        let state = ApiState::load(shared)?;
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler (API token reload)")?;
        tracing::info!(listen = %local, "HTTP API listening");
        Ok(Api {
            local,
            listener,
            app: routes::router(state.clone()),
            limits,
            state,
            hup,
        })
    }

    /// Serves until `shutdown`; returns within `limits.shutdown_grace` of it. A SIGHUP reads
    /// the token files again (a rotated token takes effect without a restart).
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let Api {
            listener,
            app,
            limits,
            state,
            mut hup,
            ..
        } = self;
        let access = listen::Access {
            allowed_hosts: state.shared.config.api.allowed_hosts.clone(),
            allowed_uids: state.shared.config.api.unix_allowed_uids.clone(),
        };
        let reload = async move {
            while hup.recv().await.is_some() {
                state.reload_tokens();
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            r = listen::serve(listener, app, limits, &access, shutdown) => r,
            () = reload => Ok(()),
        }
    }
}

/// A running API server.
pub struct Server {
    pub local: Listen,
    pub task: tokio::task::JoinHandle<Result<()>>,
}

/// Binds `listen` and serves the API until `shutdown` fires.
pub async fn serve(
    shared: Arc<Shared>,
    listen: &str,
    shutdown: CancellationToken,
) -> Result<Server> {
    serve_with(shared, listen, ServeLimits::default(), shutdown).await
}

/// [`serve`] with other connection limits.
pub async fn serve_with(
    shared: Arc<Shared>,
    listen: &str,
    limits: ServeLimits,
    shutdown: CancellationToken,
) -> Result<Server> {
    let api = Api::bind_to(shared, listen, limits).await?;
    let local = api.local.clone();
    Ok(Server {
        local,
        task: tokio::spawn(api.run(shutdown)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(
            Listen::parse("127.0.0.1:0").unwrap(),
            Listen::Tcp("127.0.0.1:0".parse().unwrap())
        );
        assert_eq!(
            Listen::parse("unix:/run/x.sock").unwrap(),
            Listen::Unix("/run/x.sock".into())
        );
        let e = Listen::parse("localhost").unwrap_err().to_string();
        assert!(e.contains("api.listen"), "{e}");
        assert!(Listen::parse("unix:").is_err());
    }
}
