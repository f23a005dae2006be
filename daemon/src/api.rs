//! The HTTP API for health officials and the device's owner (axum, HTTP/1.1).
//!
//! | method and path | token | what |
//! |---|---|---|
//! | `POST /v1/case-lists` | yes | upload a Bluezone F0 JSON or a signed GAEN export zip |
//! | `GET /v1/exposures` | yes | the owner's stored exposures |
//! | `GET /v1/status` | no | counts only (sightings, IDs, case lists, exposures, store size, uptime) |
//! | `GET /metrics` | no | Prometheus text exposition |
//!
//! `api.listen` is `HOST:PORT` (default off; use a loopback address) or `unix:/path/to.sock`.
//! Bearer tokens come from `api.token_file` (one per line, `#` comments), read at start and kept
//! only as SHA-256 digests, compared in constant time. GAEN uploads must verify under a key of
//! `api.trust`. Uploads are limited to `api.max_upload_bytes`: a declared `Content-Length`
//! over it is refused before any of the body is read, a chunked body as soon as it passes it.
//! Errors are JSON `{"error": "..."}`. Nothing here logs a token or a body.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bluezone_protocol::gaen::export::TrustedKey;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use crate::caselist::{self, CaseList, Format, Limits};
use crate::service::{Metrics, Shared};

/// Uploads parsed at once; more wait (each may hold up to `api.max_upload_bytes` in memory).
const UPLOADS_AT_ONCE: usize = 4;
/// Longest an upload's body may take to arrive.
const UPLOAD_READ_TIMEOUT: Duration = Duration::from_secs(600);
/// `/v1/status` and `/metrics` reuse store counts this long unless something changed them.
const STATS_TTL: Duration = Duration::from_secs(10);

/// Case lists stored by the API or the poller in this process (a cache key for the counts).
static CASE_LISTS_STORED: AtomicU64 = AtomicU64::new(0);

/// Where the API listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Listen {
    /// `HOST:PORT` (an IP address and a port; port 0 picks a free one) or `unix:/path`.
    pub fn parse(s: &str) -> Result<Listen> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                bail!(
                    "api.listen: \"unix:\" needs a socket path, e.g. unix:/run/bluezoned/api.sock"
                );
            }
            return Ok(Listen::Unix(PathBuf::from(path)));
        }
        s.trim().parse().map(Listen::Tcp).map_err(|_| {
            anyhow::anyhow!(
                "api.listen: expected IP:PORT (e.g. 127.0.0.1:8421) or unix:/path, got {s:?}"
            )
        })
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(a) => write!(f, "{a}"),
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A running API server.
pub struct Server {
    /// The bound address (the real port when port 0 was asked for).
    pub local: Listen,
    /// Ends after the shutdown token fired and open requests finished.
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts the API if `api.listen` is set, and logs the bound address.
pub async fn start(
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(listen) = shared.config.api.listen.clone() else {
        return Ok(None);
    };
    let server = serve(shared, &listen, shutdown).await?;
    Ok(Some(server.task))
}

/// Binds `listen` and serves the API until `shutdown` fires.
pub async fn serve(
    shared: Arc<Shared>,
    listen: &str,
    shutdown: CancellationToken,
) -> Result<Server> {
    let listen = Listen::parse(listen)?;
    let state = ApiState::load(shared)?;
    let app = router(state);
    match listen {
        Listen::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("api.listen: binding {addr}"))?;
            let local = listener
                .local_addr()
                .with_context(|| format!("api.listen: address bound for {addr}"))?;
            tracing::info!(listen = %local, "HTTP API listening");
            if !local.ip().is_loopback() {
                tracing::warn!(listen = %local,
                    "the HTTP API is reachable beyond this host and speaks plain HTTP: \
                     bearer tokens cross the network in clear unless a TLS proxy fronts it");
            }
            let task = tokio::spawn(async move {
                let r = axum::serve(listener, app.into_make_service())
                    .with_graceful_shutdown(shutdown.cancelled_owned())
                    .await;
                if let Err(e) = r {
                    tracing::error!(error = %e, "HTTP API stopped");
                }
            });
            Ok(Server {
                local: Listen::Tcp(local),
                task,
            })
        }
        Listen::Unix(path) => {
            let listener = bind_unix(&path)?;
            tracing::info!(listen = %format!("unix:{}", path.display()), "HTTP API listening");
            let task = tokio::spawn(serve_unix(listener, path.clone(), app, shutdown));
            Ok(Server {
                local: Listen::Unix(path),
                task,
            })
        }
    }
}

fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    // A socket left by an earlier run is replaced; anything else at the path is an error.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            bail!(
                "api.listen: {} exists and is not a socket; refusing to replace it",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("api.listen: removing stale socket {}", path.display()))?;
    }
    tokio::net::UnixListener::bind(path)
        .with_context(|| format!("api.listen: binding unix socket {}", path.display()))
}

async fn serve_unix(
    listener: tokio::net::UnixListener,
    path: PathBuf,
    app: Router,
    shutdown: CancellationToken,
) {
    use hyper_util::rt::TokioIo;
    use tower::Service;
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP API: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let app = app.clone();
        let stop = shutdown.clone();
        conns.spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                app.clone().call(req)
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let r = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = r {
                tracing::debug!(error = %e, "HTTP API connection ended with an error");
            }
        });
        while conns.try_join_next().is_some() {}
    }
    while conns.join_next().await.is_some() {}
    let _ = std::fs::remove_file(&path);
}

/// Bearer tokens, kept as SHA-256 digests (comparing digests makes the time independent of
/// the token's length too). `Debug` shows only the count.
struct Tokens(Vec<[u8; 32]>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.0.len())
    }
}

impl Tokens {
    fn load(path: Option<&Path>) -> Result<Tokens> {
        let Some(path) = path else {
            tracing::warn!("api.token_file is not set: uploads and exposures are refused (401)");
            return Ok(Tokens(Vec::new()));
        };
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("api.token_file: reading {}", path.display()))?,
        );
        let tokens: Vec<[u8; 32]> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|t| Sha256::digest(t.as_bytes()).into())
            .collect();
        if tokens.is_empty() {
            tracing::warn!(file = %path.display(),
                "api.token_file holds no token: uploads and exposures are refused (401)");
        }
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o004 != 0 {
                tracing::warn!(file = %path.display(),
                    "api.token_file is readable by every user; chmod o-r it");
            }
        }
        Ok(Tokens(tokens))
    }

    /// Constant time over every configured token.
    fn accepts(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut ok = subtle::Choice::from(0u8);
        for t in &self.0 {
            ok |= t.ct_eq(&digest);
        }
        bool::from(ok)
    }
}

struct ApiState {
    shared: Arc<Shared>,
    tokens: Tokens,
    trusted: Arc<Vec<TrustedKey>>,
    max_upload: usize,
    uploads: Semaphore,
    started: Instant,
    stats: tokio::sync::Mutex<Option<CachedStats>>,
}

impl ApiState {
    fn load(shared: Arc<Shared>) -> Result<Arc<ApiState>> {
        let api = &shared.config.api;
        let tokens = Tokens::load(api.token_file.as_deref())?;
        let trusted = caselist::load_trusts(&api.trust).context("api.trust")?;
        if trusted.is_empty() {
            tracing::warn!("api.trust names no key: GAEN uploads are refused");
        }
        Ok(Arc::new(ApiState {
            max_upload: api.max_upload_bytes,
            tokens,
            trusted: Arc::new(trusted),
            uploads: Semaphore::new(UPLOADS_AT_ONCE),
            started: Instant::now(),
            stats: tokio::sync::Mutex::new(None),
            shared,
        }))
    }
}

fn router(state: Arc<ApiState>) -> Router {
    let upload = post(upload)
        .layer(middleware::from_fn_with_state(state.clone(), limit_body))
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    let exposures =
        get(exposures).layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/v1/case-lists", upload)
        .route("/v1/exposures", exposures)
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
        })
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
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

async fn require_token(State(st): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let presented = bearer(req.headers());
    let ok = match presented {
        Some(t) => st.tokens.accepts(t),
        None => false,
    };
    if !ok {
        let msg = if presented.is_none() {
            "missing bearer token (Authorization: Bearer TOKEN)"
        } else {
            "invalid bearer token"
        };
        let mut resp = error(StatusCode::UNAUTHORIZED, msg);
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"bluezoned\""),
        );
        return resp;
    }
    next.run(req).await
}

fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let v = headers.get(header::AUTHORIZATION)?.as_bytes();
    let scheme = v.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let t = v[7..].trim_ascii();
    (!t.is_empty()).then_some(t)
}

/// The upload size limit: a declared length over it is refused before the body is read; the
/// body is wrapped so that reading past the limit fails.
async fn limit_body(State(st): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > st.max_upload as u64) {
        return too_large(st.max_upload);
    }
    let (parts, body) = req.into_parts();
    let body = Body::new(http_body_util::Limited::new(body, st.max_upload));
    next.run(Request::from_parts(parts, body)).await
}

fn too_large(limit: usize) -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("upload is over the {limit}-byte limit (api.max_upload_bytes)"),
    )
}

/// What [`store_case_list`] refused or failed at.
pub(crate) enum IngestError {
    /// The content: malformed, over a limit, or not verifiable. The message is precise and
    /// carries no key material.
    Invalid(String),
    /// The store failed (logged where it happened).
    Store,
}

/// What [`store_case_list`] stored.
pub(crate) struct Ingested {
    pub id: i64,
    pub format: Format,
    pub entries: usize,
    /// False when the same content was stored before.
    pub new: bool,
}

/// Checks a case list completely (a GAEN file must verify under `trusted`) and stores it,
/// on the blocking pool. A refused list changes nothing. Wakes matching if it is new.
pub(crate) async fn store_case_list(
    shared: &Arc<Shared>,
    bytes: Vec<u8>,
    trusted: Arc<Vec<TrustedKey>>,
    only: Option<Format>,
) -> Result<Ingested, IngestError> {
    let parsed = tokio::task::spawn_blocking(move || {
        let r = check_case_list(&bytes, &trusted, only);
        (bytes, r)
    })
    .await;
    let (bytes, (format, entries)) = match parsed {
        Ok((b, Ok(v))) => (b, v),
        Ok((_, Err(msg))) => return Err(IngestError::Invalid(msg)),
        Err(e) => {
            tracing::error!(error = %e, "case list check panicked");
            return Err(IngestError::Store);
        }
    };
    let day = bluezone_protocol::time::utc_day(shared.clock.now());
    let stored = shared
        .with_store(move |s| s.insert_case_list(day, format, entries as u64, &bytes))
        .await;
    match stored {
        Ok(Ok((id, new))) => {
            if new {
                CASE_LISTS_STORED.fetch_add(1, Ordering::Relaxed);
                shared.match_now.notify_one();
            }
            Ok(Ingested {
                id,
                format,
                entries,
                new,
            })
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "storing a case list failed");
            Err(IngestError::Store)
        }
        Err(e) => {
            tracing::error!(error = %e, "storing a case list failed");
            Err(IngestError::Store)
        }
    }
}

fn check_case_list(
    bytes: &[u8],
    trusted: &[TrustedKey],
    only: Option<Format>,
) -> Result<(Format, usize), String> {
    if bytes.is_empty() {
        return Err("empty body: expected a Bluezone F0 JSON object or a GAEN export zip".into());
    }
    let detected = caselist::detect(bytes).map_err(|e| e.to_string())?;
    if let Some(want) = only {
        if detected != want {
            return Err(format!(
                "expected a {}, got a {}",
                want.as_str(),
                detected.as_str()
            ));
        }
    }
    if detected == Format::GaenExport && trusted.is_empty() {
        return Err("GAEN export refused: no trusted signing key is configured (api.trust)".into());
    }
    let list = caselist::parse(bytes, trusted, &Limits::default()).map_err(|e| {
        format!(
            "invalid {}: {}",
            detected.as_str(),
            crate::error_chain(&e.into())
        )
    })?;
    if let CaseList::GaenExport(x) = &list {
        // With `trusted` non-empty `parse` verifies or fails; this guards that contract.
        if !x.is_verified() {
            return Err("GAEN export refused: no signature verifies under a trusted key".into());
        }
    }
    Ok((list.format(), list.entries()))
}

async fn upload(State(st): State<Arc<ApiState>>, body: Body) -> Response {
    let Ok(_permit) = st.uploads.acquire().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    };
    let read = tokio::time::timeout(
        UPLOAD_READ_TIMEOUT,
        axum::body::to_bytes(body, st.max_upload),
    )
    .await;
    let bytes = match read {
        Err(_) => return error(StatusCode::REQUEST_TIMEOUT, "upload took too long"),
        Ok(Err(e)) if over_limit(&e) => return too_large(st.max_upload),
        Ok(Err(e)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("reading the upload failed: {e}"),
            )
        }
        Ok(Ok(b)) => b,
    };
    let size = bytes.len();
    match store_case_list(&st.shared, Vec::from(bytes), st.trusted.clone(), None).await {
        Ok(got) => {
            tracing::info!(
                id = got.id,
                format = got.format.as_str(),
                entries = got.entries,
                bytes = size,
                new = got.new,
                "case list uploaded"
            );
            let status = if got.new {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let body = json!({ "id": got.id, "format": got.format, "entries": got.entries });
            (status, Json(body)).into_response()
        }
        Err(IngestError::Invalid(msg)) => {
            tracing::info!(bytes = size, "case list upload refused (400)");
            error(StatusCode::BAD_REQUEST, msg)
        }
        Err(IngestError::Store) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storing the case list failed (see the daemon's log)",
        ),
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
    match st.shared.with_store(|s| s.exposures::<Value>()).await {
        Ok(Ok(x)) => {
            let list: Vec<Value> = x.exposures.iter().map(|e| e.report_json()).collect();
            Json(json!({ "exposures": list })).into_response()
        }
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

/// Store counts for status and metrics (counts only).
#[derive(Clone, Copy, Debug, Default)]
struct StoreCounts {
    sightings: usize,
    distinct_ids: usize,
    case_lists: usize,
    exposures: usize,
    notifying: usize,
    store_bytes: u64,
}

struct CachedStats {
    key: [u64; 3],
    at: Instant,
    counts: StoreCounts,
}

impl ApiState {
    /// Store counts, recomputed when a sighting, case list or match happened since, or after
    /// [`STATS_TTL`] (the statistics decrypt every chunk: not on each unauthenticated request).
    async fn counts(&self) -> Result<StoreCounts, ()> {
        let m = &self.shared.metrics;
        let key = [
            Metrics::get(&m.sightings_stored),
            Metrics::get(&m.matches_run),
            CASE_LISTS_STORED.load(Ordering::Relaxed),
        ];
        let mut cache = self.stats.lock().await;
        if let Some(c) = cache.as_ref() {
            if c.key == key && c.at.elapsed() < STATS_TTL {
                return Ok(c.counts);
            }
        }
        let r = self
            .shared
            .with_store(|s| -> Result<StoreCounts, crate::store::StoreError> {
                let st = s.stats()?;
                let notifying = s
                    .exposures::<serde::de::IgnoredAny>()?
                    .exposures
                    .iter()
                    .filter(|e| {
                        matches!(
                            e.delivery.state,
                            crate::store::DeliveryState::Pending
                                | crate::store::DeliveryState::Delivered
                        )
                    })
                    .count();
                Ok(StoreCounts {
                    sightings: st.sightings,
                    distinct_ids: st.distinct_ids,
                    case_lists: st.case_lists,
                    exposures: st.exposures,
                    notifying,
                    store_bytes: st.store_bytes,
                })
            })
            .await;
        let counts = match r {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "reading store statistics failed");
                return Err(());
            }
            Err(e) => {
                tracing::error!(error = %e, "reading store statistics failed");
                return Err(());
            }
        };
        *cache = Some(CachedStats {
            key,
            at: Instant::now(),
            counts,
        });
        Ok(counts)
    }
}

async fn status(State(st): State<Arc<ApiState>>) -> Response {
    let Ok(c) = st.counts().await else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "reading store statistics failed",
        );
    };
    let m = &st.shared.metrics;
    Json(json!({
        "sightings_stored": c.sightings,
        "distinct_ids": c.distinct_ids,
        "case_lists": c.case_lists,
        "exposures": c.exposures,
        "notifying_exposures": c.notifying,
        "store_bytes": c.store_bytes,
        "uptime_s": st.started.elapsed().as_secs(),
        "matches_run": Metrics::get(&m.matches_run),
    }))
    .into_response()
}

async fn metrics(State(st): State<Arc<ApiState>>) -> Response {
    let counts = st.counts().await.ok();
    let m = &st.shared.metrics;
    let mut out = String::new();
    let mut put = |name: &str, kind: &str, help: &str, value: String| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    };
    let c = |a: &AtomicU64| Metrics::get(a).to_string();
    put(
        "bluezoned_receptions_total",
        "counter",
        "Advertisements received from the radio.",
        c(&m.receptions),
    );
    put(
        "bluezoned_sightings_stored_total",
        "counter",
        "Sightings durably written to the store.",
        c(&m.sightings_stored),
    );
    put(
        "bluezoned_store_errors_total",
        "counter",
        "Failed store writes.",
        c(&m.store_errors),
    );
    put(
        "bluezoned_broadcasts_total",
        "counter",
        "Broadcast changes put on air.",
        c(&m.broadcasts),
    );
    put(
        "bluezoned_ids_indexed",
        "gauge",
        "Distinct peer IDs indexed by the last match.",
        c(&m.ids_indexed),
    );
    put(
        "bluezoned_keys_checked_total",
        "counter",
        "Case keys (F0 records and GAEN keys) matched.",
        c(&m.keys_checked),
    );
    put(
        "bluezoned_matches_total",
        "counter",
        "Matching runs.",
        c(&m.matches_run),
    );
    put(
        "bluezoned_last_match_duration_seconds",
        "gauge",
        "Duration of the last match.",
        format!("{}", Metrics::get(&m.last_match_ms) as f64 / 1000.0),
    );
    put(
        "bluezoned_last_match_keys_per_second",
        "gauge",
        "Keys matched per second in the last match.",
        format!("{}", f64::from_bits(Metrics::get(&m.last_match_keys_per_s))),
    );
    put(
        "bluezoned_uptime_seconds",
        "gauge",
        "Seconds since the API started.",
        st.started.elapsed().as_secs().to_string(),
    );
    if let Some(s) = counts {
        put(
            "bluezoned_store_size_bytes",
            "gauge",
            "Store database plus WAL size.",
            s.store_bytes.to_string(),
        );
        put(
            "bluezoned_store_sightings",
            "gauge",
            "Sightings held in the store.",
            s.sightings.to_string(),
        );
        put(
            "bluezoned_store_distinct_ids",
            "gauge",
            "Distinct peer IDs held in the store.",
            s.distinct_ids.to_string(),
        );
        put(
            "bluezoned_case_lists",
            "gauge",
            "Case lists held in the store.",
            s.case_lists.to_string(),
        );
        put(
            "bluezoned_exposures",
            "gauge",
            "Exposures held in the store.",
            s.exposures.to_string(),
        );
        put(
            "bluezoned_notifying_exposures",
            "gauge",
            "Stored exposures over the notification threshold.",
            s.notifying.to_string(),
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
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
}
