//! The officials' HTTP API and the publication schedule (`bluezoned authority serve`).
//!
//! - `POST /v1/cases` (official token): a case's keys → 201 `{"case", "keys", "skipped"}`; the same
//!   body again → 200 with the same case; 400 naming what is wrong; 413 over the size limit before
//!   the body is read; 401 without a valid token; 429 after repeated failed tokens from one peer.
//! - `POST /v1/cases/{id}/revoke` (official token): the next publication carries the case's keys as
//!   revised keys with report type REVOKED.
//! - Any request whose `Host` is neither a loopback name nor the listen address gets 421 (DNS
//!   rebinding), by the device API's own rule in [`crate::api::listen`].
//!
//! Publications run every `publish.interval_s`, on `SIGHUP`, never two at once.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::db::{Db, Revoked};
use super::output::Output;
use super::publish::{publish, PublishReport};
use super::tokens::{OfficialTokens, TokenId};
use super::upload::parse_upload;
use super::Authority;
use crate::api::auth::{bearer, FailureLimit};
use crate::api::listen::{self, Listen, Listener, Peer, ServeLimits};
use crate::clock::SharedClock;

/// Time allowed to receive an upload's body.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);

struct ServeState {
    auth: Authority,
    tokens: OfficialTokens,
    db: Mutex<Db>,
    out: Output,
    clock: SharedClock,
    failures: FailureLimit,
    publishing: tokio::sync::Mutex<()>,
}

/// Serves until `shutdown`. `ready` receives the bound address once the socket listens.
pub async fn serve(
    auth: Authority,
    listen: &str,
    out: Output,
    clock: SharedClock,
    shutdown: CancellationToken,
    ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("--listen {listen}: expected IP:PORT, e.g. 127.0.0.1:8420"))?;
    let tokens = OfficialTokens::load(&auth.tokens_path())?;
    let db = Db::open(&auth.database_path())?;
    out.prepare().await?;
    let state = Arc::new(ServeState {
        auth,
        tokens,
        db: Mutex::new(db),
        out,
        clock,
        failures: FailureLimit::default(),
        publishing: tokio::sync::Mutex::new(()),
    });
    let app = Router::new()
        .route("/v1/cases", post(upload))
        .route("/v1/cases/:id/revoke", post(revoke))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(state.clone());
    // The device API's listener: header-read timeout, connection cap, a bounded shutdown, the
    // `Host` rule, and loopback only unless `api.allow_remote`.
    let (listener, local) =
        Listener::bind(&Listen::Tcp(addr), state.auth.config.api.allow_remote).await?;
    let Listen::Tcp(local) = local else {
        unreachable!("a TCP address binds a TCP listener")
    };
    tracing::info!(listen = %local, "authority API listening");
    ready(local);

    let schedule = tokio::spawn(schedule(state.clone(), shutdown.clone()));
    let access = listen::Access {
        allowed_hosts: state.auth.config.api.allowed_hosts.clone(),
        allowed_uids: Vec::new(),
    };
    listen::serve(
        listener,
        app,
        ServeLimits::default(),
        &access,
        shutdown.clone(),
    )
    .await
    .context("serving the authority API")?;
    shutdown.cancel();
    schedule.await.context("publication schedule")?
}

async fn schedule(state: Arc<ServeState>, shutdown: CancellationToken) -> Result<()> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    let every = Duration::from_secs(state.auth.config.publish.interval_s);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(every) => {}
            _ = hup.recv() => tracing::info!("SIGHUP: publishing now"),
        }
        match publish_now(&state).await {
            Ok(r) => tracing::info!(
                files = r.files.len(),
                keys = r.gaen_keys,
                revised = r.revised_keys,
                f0 = r.f0_entries,
                "published"
            ),
            // A failed publication leaves the previous one in place; the next tick retries.
            Err(e) => tracing::error!(error = %format!("{e:#}"), "publication failed"),
        }
    }
}

async fn publish_now(state: &ServeState) -> Result<PublishReport> {
    let _one_at_a_time = state.publishing.lock().await;
    let now = state.clock.now();
    publish(&state.auth, &state.db, &state.out, now).await
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

impl ServeState {
    /// The token's id, or the response to send (401, or 429 for a peer that keeps failing).
    fn authenticate(
        &self,
        headers: &HeaderMap,
        peer: Peer,
    ) -> Result<TokenId, (StatusCode, &'static str)> {
        let now = Instant::now();
        if self.failures.blocked(peer, now) {
            return Err((
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed authentications; try again in a minute",
            ));
        }
        match bearer(headers).and_then(|t| self.tokens.check(t)) {
            Some(id) => Ok(id),
            None => {
                self.failures.failed(peer, now);
                Err((
                    StatusCode::UNAUTHORIZED,
                    "a valid official bearer token is required",
                ))
            }
        }
    }
}

async fn upload(
    State(state): State<Arc<ServeState>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let token = match state.authenticate(&headers, peer) {
        Ok(t) => t,
        Err((status, why)) => return error(status, why),
    };
    let max = state.auth.config.api.max_upload_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {max} bytes"),
        );
    }
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, max)).await {
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time",
            )
        }
        Ok(Err(_)) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {max} bytes"),
            )
        }
        Ok(Ok(b)) => b,
    };
    let max_keys = state.auth.config.api.max_keys_per_upload;
    let st = state.clone();
    let result = tokio::task::spawn_blocking(move || {
        let upload = parse_upload(&bytes, max_keys)
            .map_err(|e| (StatusCode::BAD_REQUEST, crate::error_chain(&e.into())))?;
        let hash: [u8; 32] = Sha256::digest(&bytes).into();
        let now = st.clock.now();
        let stored = st
            .db
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert_case(&hash, &upload, &token, now)
            .map_err(|e| {
                tracing::error!(error = %format!("{e:#}"), "storing an upload");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the case could not be stored".to_string(),
                )
            })?;
        Ok::<_, (StatusCode, String)>((stored, upload.skipped))
    })
    .await;
    match result {
        Ok(Ok((stored, skipped))) => {
            let status = if stored.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            tracing::info!(
                case = stored.case,
                keys = stored.keys,
                new = stored.created,
                "case uploaded"
            );
            (
                status,
                Json(json!({ "case": stored.case, "keys": stored.keys, "skipped": skipped })),
            )
                .into_response()
        }
        Ok(Err((status, msg))) => error(status, msg),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the upload could not be processed",
        ),
    }
}

async fn revoke(
    State(state): State<Arc<ServeState>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let token = match state.authenticate(&headers, peer) {
        Ok(t) => t,
        Err((status, why)) => return error(status, why),
    };
    let Ok(case) = id.parse::<i64>() else {
        return error(StatusCode::BAD_REQUEST, "case id: expected a number");
    };
    let st = state.clone();
    let r = tokio::task::spawn_blocking(move || {
        let now = st.clock.now();
        st.db
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .revoke(case, &token, now)
    })
    .await;
    match r {
        Ok(Ok(Revoked::Now)) => (
            StatusCode::OK,
            Json(json!({ "case": case, "revoked": true })),
        )
            .into_response(),
        Ok(Ok(Revoked::Already)) => (
            StatusCode::OK,
            Json(json!({ "case": case, "revoked": true, "already": true })),
        )
            .into_response(),
        Ok(Ok(Revoked::NoSuchCase)) => error(StatusCode::NOT_FOUND, format!("no case {case}")),
        _ => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the revocation could not be stored",
        ),
    }
}
