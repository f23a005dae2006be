//! Routes and handlers, and the checks every request passes: the bearer token and its class, a
//! time limit, and for uploads a bounded queue and a body limit. (The `Host` header is checked
//! before a request gets here, by [`super::listen`]'s `HostRule`, for every server.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::json;
use tower_http::limit::RequestBodyLimitLayer;

use super::auth::{bearer, Role};
use super::listen::Peer;
use super::{metrics, ApiState};
use crate::ingest::{self, Error as IngestError};
use crate::service::Metrics;

/// Longest any request but an upload may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest an upload's body may take to arrive (64 MiB at ~1 MB/s).
const UPLOAD_READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest an upload waits for a place in the queue before it gets 503.
const QUEUE_WAIT: Duration = Duration::from_secs(30);

/// The role of the request's (valid) token, if it presented one.
#[derive(Clone, Copy, Debug)]
struct Caller(Option<Role>);

pub(crate) fn router(st: Arc<ApiState>) -> Router {
    let upload = post(upload)
        .layer(RequestBodyLimitLayer::new(st.ingest.max_bytes()))
        .layer(middleware::from_fn_with_state(st.clone(), json_413))
        .layer(middleware::from_fn(|r, n| require(Role::Upload, r, n)));
    let exposures = get(exposures)
        .layer(middleware::from_fn(time_limit))
        .layer(middleware::from_fn(|r, n| require(Role::Owner, r, n)));
    Router::new()
        .route("/v1/case-lists", upload)
        .route("/v1/exposures", exposures)
        .route(
            "/v1/status",
            get(status).layer(middleware::from_fn(time_limit)),
        )
        .route(
            "/metrics",
            get(metrics).layer(middleware::from_fn(time_limit)),
        )
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
        })
        .layer(middleware::from_fn_with_state(st.clone(), authenticate))
        .layer(middleware::from_fn(log_request))
        .with_state(st)
}

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Logs method, path and status only: never a header (tokens) or a body.
async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let t = Instant::now();
    let resp = next.run(req).await;
    tracing::debug!(%method, path = %path.escape_debug(), status = resp.status().as_u16(),
        ms = t.elapsed().as_millis() as u64, "HTTP API request");
    resp
}

/// Learns the role of a presented token. A wrong token counts as a failure of its peer; a peer
/// with too many failures gets 429 for any token until its window ends.
async fn authenticate(State(st): State<Arc<ApiState>>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<Peer>()
        .copied()
        .unwrap_or(Peer::Unknown);
    let role = match bearer(req.headers()) {
        None => None,
        Some(token) => {
            let now = Instant::now();
            if st.failures.blocked(peer, now) {
                return error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many failed authentications; try again in a minute",
                );
            }
            match st.auth().role(token) {
                Some(r) => Some(r),
                None => {
                    st.failures.failed(peer, now);
                    return unauthorized("invalid bearer token");
                }
            }
        }
    };
    req.extensions_mut().insert(Caller(role));
    next.run(req).await
}

fn unauthorized(msg: &str) -> Response {
    let mut resp = error(StatusCode::UNAUTHORIZED, msg);
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"bluezoned\""),
    );
    resp
}

/// An owner token may do what an upload token may; not the other way round.
async fn require(min: Role, req: Request, next: Next) -> Response {
    match req.extensions().get::<Caller>().and_then(|c| c.0) {
        None => unauthorized("missing bearer token (Authorization: Bearer TOKEN)"),
        Some(r) if r < min => error(
            StatusCode::FORBIDDEN,
            "this token may only upload case lists; exposures need an owner token",
        ),
        Some(_) => next.run(req).await,
    }
}

async fn time_limit(req: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the request took too long"),
    }
}

/// `RequestBodyLimitLayer` answers a declared length over the limit itself, in plain text;
/// errors of this API are JSON.
async fn json_413(State(st): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json {
        return too_large(st.ingest.max_bytes());
    }
    resp
}

fn too_large(limit: usize) -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("upload is over the {limit}-byte limit (cases.max_bytes)"),
    )
}

/// Reads the body under a time limit while holding a queue place (the queue bounds the memory
/// held by bodies in flight); only a complete body waits for a parse permit, so slow senders
/// cannot hold the parsers.
async fn upload(State(st): State<Arc<ApiState>>, body: Body) -> Response {
    let queued = tokio::time::timeout(QUEUE_WAIT, st.upload_queue.acquire()).await;
    let Ok(Ok(_queued)) = queued else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many uploads in progress; retry later",
        );
    };
    let read =
        tokio::time::timeout(UPLOAD_READ_TIMEOUT, axum::body::to_bytes(body, usize::MAX)).await;
    let bytes = match read {
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "the upload took too long to arrive",
            )
        }
        Ok(Err(e)) if over_limit(&e) => return too_large(st.ingest.max_bytes()),
        Ok(Err(e)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("reading the upload failed: {e}"),
            )
        }
        Ok(Ok(b)) => b,
    };
    let Ok(_parsing) = st.parsers.acquire().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    };
    let size = bytes.len();
    match ingest::ingest(&st.shared, &st.ingest, Vec::from(bytes), None).await {
        Ok(got) => {
            let skipped = got.skipped();
            let ingest::Ingested {
                stored,
                mut summary,
            } = got;
            tracing::info!(
                id = stored.id,
                format = stored.format.as_str(),
                entries = stored.entries,
                skipped,
                bytes = size,
                new = stored.new,
                "case list uploaded"
            );
            let status = if stored.new {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            // The summary `cases import` prints (skipped entries named by index, field and
            // reason) and the id; the status says whether it was new.
            summary["id"] = json!(stored.id);
            (status, Json(summary)).into_response()
        }
        Err(IngestError::TooLarge { limit, .. }) => too_large(limit),
        Err(e) if e.is_content() => {
            tracing::info!(bytes = size, "case list upload refused (400)");
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(e) => {
            tracing::error!(error = %e, "storing an uploaded case list failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storing the case list failed (see the daemon's log)",
            )
        }
    }
}

fn over_limit(e: &axum::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if c.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = c.source();
    }
    false
}

async fn exposures(State(st): State<Arc<ApiState>>) -> Response {
    match st.shared.with_store(|s| s.exposures()).await {
        Ok(Ok(x)) => Json(json!({ "exposures": x.exposures })).into_response(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "reading exposures failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "reading exposures failed",
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "reading exposures failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "reading exposures failed",
            )
        }
    }
}

fn is_owner(caller: Option<Extension<Caller>>) -> bool {
    caller.is_some_and(|Extension(c)| c.0 == Some(Role::Owner))
}

/// Operational counts for anyone; the store counts (contacts, exposures) for an owner token.
/// Store counts may lag by one refresh (`counts_ready` says whether there are any yet).
async fn status(State(st): State<Arc<ApiState>>, caller: Option<Extension<Caller>>) -> Response {
    let m = &st.shared.metrics;
    let mut body = json!({
        "uptime_s": st.started.elapsed().as_secs(),
        "matches_run": Metrics::get(&m.matches_run),
        "case_lists_stored": Metrics::get(&m.case_lists_stored),
        "store_errors": Metrics::get(&m.store_errors),
        "token_reloads": Metrics::get(&m.token_reloads),
        "token_reload_failures": Metrics::get(&m.token_reload_failures),
        // Operational: whether our adverts carry a fixed (linkable) address.
        "radio_privacy": st.shared.radio_privacy.get(),
    });
    if is_owner(caller) {
        let counts = st.counts.get(&st.shared);
        body["counts_ready"] = json!(counts.is_some());
        if let Some(c) = counts {
            body["sightings_stored"] = json!(c.sightings);
            body["distinct_ids"] = json!(c.distinct_ids);
            body["case_lists"] = json!(c.case_lists);
            body["exposures"] = json!(c.exposures);
            body["notifying_exposures"] = json!(c.notifying);
            body["store_bytes"] = json!(c.store_bytes);
        }
    }
    Json(body).into_response()
}

async fn metrics(State(st): State<Arc<ApiState>>, caller: Option<Extension<Caller>>) -> Response {
    let owner = is_owner(caller);
    let counts = if owner {
        st.counts.get(&st.shared)
    } else {
        None
    };
    let text = metrics::render(
        &st.shared.metrics,
        st.started.elapsed().as_secs(),
        owner,
        counts,
    );
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    (h, text).into_response()
}
