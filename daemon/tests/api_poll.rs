//! Polling a GAEN-style key server: a tiny axum server on 127.0.0.1:0 serves `index.txt` (with
//! ETag / Last-Modified) and the two signed sample zips. Also the real `bluezoned run` binary
//! serving the API and polling at start.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bluezoned::clock::SystemClock;
use bluezoned::config::Config;
use bluezoned::poll::{PollReport, Poller, STATE_FILE};
use bluezoned::service::Shared;
use bluezoned::store::Store;
use serde_json::Value;

mod support;
use support::{http::client, write_private};
const ZIP2: &str = "google-server-example-2keys";
const ZIP140: &str = "google-internals-sample-140keys";
const LAST_MODIFIED: &str = "Tue, 24 Nov 2026 09:00:00 GMT";

fn sample(name: &str, ext: &str) -> PathBuf {
    support::testdata(&format!("gaen/{name}.{ext}"))
}

/// One request the key server saw.
#[derive(Clone, Debug)]
struct Hit {
    path: String,
    if_none_match: Option<String>,
    if_modified_since: Option<String>,
    authorization: Option<String>,
    query: Option<String>,
    status: u16,
}

#[derive(Default)]
struct KeyServer {
    index: Mutex<String>,
    /// `None`: the index is served with Last-Modified only.
    etag: Mutex<Option<String>>,
    files: HashMap<String, Vec<u8>>,
    /// Path → where a 302 sends it.
    redirects: Mutex<HashMap<String, String>>,
    fail_next_index: Mutex<bool>,
    hits: Mutex<Vec<Hit>>,
}

impl KeyServer {
    fn set_index(&self, text: &str, etag: Option<&str>) {
        *self.index.lock().unwrap() = text.to_string();
        *self.etag.lock().unwrap() = etag.map(str::to_string);
    }

    /// Takes the hits recorded so far.
    fn hits(&self) -> Vec<Hit> {
        std::mem::take(&mut *self.hits.lock().unwrap())
    }
}

async fn serve_keys(State(ks): State<Arc<KeyServer>>, uri: Uri, headers: HeaderMap) -> Response {
    let h = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string());
    let path = uri.path().to_string();
    let (status, resp) = if path == "/keys/index.txt" {
        let etag = ks.etag.lock().unwrap().clone();
        if std::mem::take(&mut *ks.fail_next_index.lock().unwrap()) {
            (500, StatusCode::INTERNAL_SERVER_ERROR.into_response())
        } else if (etag.is_some() && h("if-none-match") == etag)
            || (etag.is_none() && h("if-modified-since").as_deref() == Some(LAST_MODIFIED))
        {
            (304, StatusCode::NOT_MODIFIED.into_response())
        } else {
            let mut r = ks.index.lock().unwrap().clone().into_response();
            if let Some(e) = etag {
                r.headers_mut().insert("etag", e.parse().unwrap());
            }
            r.headers_mut()
                .insert("last-modified", LAST_MODIFIED.parse().unwrap());
            (200, r)
        }
    } else if let Some(to) = ks.redirects.lock().unwrap().get(&path).cloned() {
        let mut r = StatusCode::FOUND.into_response();
        r.headers_mut().insert("location", to.parse().unwrap());
        (302, r)
    } else if let Some(body) = path.strip_prefix("/keys/").and_then(|p| ks.files.get(p)) {
        (200, body.clone().into_response())
    } else {
        (404, StatusCode::NOT_FOUND.into_response())
    };
    ks.hits.lock().unwrap().push(Hit {
        path,
        if_none_match: h("if-none-match"),
        if_modified_since: h("if-modified-since"),
        authorization: h("authorization"),
        query: uri.query().map(str::to_string),
        status,
    });
    resp
}

async fn start_key_server() -> (Arc<KeyServer>, SocketAddr) {
    let mut files = HashMap::new();
    files.insert(
        "2026/a.zip".to_string(),
        std::fs::read(sample(ZIP2, "zip")).unwrap(),
    );
    files.insert(
        "2026/b.zip".to_string(),
        std::fs::read(sample(ZIP140, "zip")).unwrap(),
    );
    files.insert("2026/bad.zip".to_string(), b"PK\x03\x04 not a zip".to_vec());
    let ks = Arc::new(KeyServer {
        files,
        ..KeyServer::default()
    });
    ks.set_index("2026/a.zip\n2026/b.zip\n", Some("\"v1\""));
    let app = axum::Router::new()
        .fallback(serve_keys)
        .with_state(ks.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (ks, addr)
}

fn config() -> Config {
    let mut c = Config::default();
    c.cases.trust = vec![sample(ZIP2, "pub.pem"), sample(ZIP140, "pub.pem")];
    c
}

fn poller(shared: &Arc<Shared>, addr: SocketAddr) -> Poller {
    Poller::new(shared.clone(), &format!("http://{addr}/keys"))
        .unwrap()
        .without_proxy()
        .unwrap()
}

fn paths(hits: &[Hit]) -> Vec<(&str, u16)> {
    hits.iter().map(|h| (h.path.as_str(), h.status)).collect()
}

fn lists(shared: &Shared) -> Vec<(String, u64)> {
    shared
        .lock_store()
        .case_lists()
        .unwrap()
        .into_iter()
        .map(|l| (l.format.as_str().to_string(), l.entries))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poller_imports_once_honours_304_and_remembers_across_restarts() {
    let (ks, addr) = start_key_server().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (store, _) = Store::init(&data).unwrap();
    let shared = Shared::new(store, config(), Arc::new(SystemClock));
    let mut p = poller(&shared, addr);
    assert_eq!(p.state_path(), data.join(STATE_FILE));

    // First round: the index and each file once, verified and stored; matching woken.
    let r = p.poll_once().await.unwrap();
    assert_eq!(
        r,
        PollReport {
            index_fetched: true,
            listed: 2,
            fetched: 2,
            imported: 2,
            ..PollReport::default()
        }
    );
    let hits = ks.hits();
    assert_eq!(
        paths(&hits),
        [
            ("/keys/index.txt", 200),
            ("/keys/2026/a.zip", 200),
            ("/keys/2026/b.zip", 200)
        ]
    );
    assert_eq!(hits[0].if_none_match, None, "nothing to revalidate yet");
    assert_eq!(
        lists(&shared),
        [
            ("gaen-export".to_string(), 2),
            ("gaen-export".to_string(), 140)
        ]
    );
    tokio::time::timeout(Duration::from_secs(1), shared.match_now.notified())
        .await
        .expect("new imports wake matching");

    // Second round: 304 for the index, no file fetched.
    let r = p.poll_once().await.unwrap();
    assert_eq!((r.index_fetched, r.listed, r.fetched), (false, 2, 0));
    let hits = ks.hits();
    assert_eq!(paths(&hits), [("/keys/index.txt", 304)]);
    assert_eq!(hits[0].if_none_match.as_deref(), Some("\"v1\""));
    assert_eq!(hits[0].if_modified_since.as_deref(), Some(LAST_MODIFIED));

    // Restart: a new store handle and poller on the same data directory.
    drop(p);
    drop(shared);
    let shared = Shared::new(Store::open(&data).unwrap(), config(), Arc::new(SystemClock));
    let mut p = poller(&shared, addr);
    assert_eq!(p.state().imported.len(), 2);
    let r = p.poll_once().await.unwrap();
    assert_eq!((r.index_fetched, r.fetched, r.imported), (false, 0, 0));
    assert_eq!(paths(&ks.hits()), [("/keys/index.txt", 304)]);

    // A changed index: known files are not refetched; a bad file is refused once, a missing one
    // retried each round; an escaping path is never requested.
    ks.set_index(
        "2026/a.zip\n../../etc/passwd\n2026/bad.zip\n2026/b.zip\nhttp://elsewhere/x.zip\n2026/missing.zip\n",
        Some("\"v2\""),
    );
    let r = p.poll_once().await.unwrap();
    assert_eq!(
        r,
        PollReport {
            index_fetched: true,
            listed: 4,
            fetched: 1,
            rejected: 1,
            failed: 1,
            ..PollReport::default()
        }
    );
    assert_eq!(
        paths(&ks.hits()),
        [
            ("/keys/index.txt", 200),
            ("/keys/2026/bad.zip", 200),
            ("/keys/2026/missing.zip", 404)
        ]
    );
    let r = p.poll_once().await.unwrap();
    assert_eq!((r.index_fetched, r.fetched, r.failed), (false, 0, 1));
    assert_eq!(
        paths(&ks.hits()),
        [("/keys/index.txt", 304), ("/keys/2026/missing.zip", 404)]
    );
    assert_eq!(lists(&shared).len(), 2, "nothing else was stored");

    // Files dropped from the index are forgotten (the state does not grow without bound).
    ks.set_index("2026/b.zip\n", Some("\"v3\""));
    let r = p.poll_once().await.unwrap();
    assert_eq!((r.index_fetched, r.listed, r.fetched), (true, 1, 0));
    let state: Value =
        serde_json::from_slice(&std::fs::read(data.join(STATE_FILE)).unwrap()).unwrap();
    assert_eq!(state["etag"], "\"v3\"");
    assert_eq!(state["listed"], serde_json::json!(["2026/b.zip"]));
    assert_eq!(
        state["imported"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["2026/b.zip"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poller_uses_last_modified_survives_errors_and_dedups_with_uploads() {
    let (ks, addr) = start_key_server().await;
    ks.set_index("2026/a.zip\n2026/b.zip\n", None);
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::init(&dir.path().join("data")).unwrap();
    // The 2-key file arrived earlier through the API.
    let (id_a, _) = store
        .insert_case_list(
            bluezone_protocol::time::utc_day(bluezoned::clock::Clock::now(&SystemClock)),
            bluezoned::caselist::Format::GaenExport,
            2,
            &std::fs::read(sample(ZIP2, "zip")).unwrap(),
        )
        .unwrap();
    let shared = Shared::new(store, config(), Arc::new(SystemClock));
    let mut p = poller(&shared, addr);

    // A server error: the round fails (nothing recorded), the next one succeeds.
    *ks.fail_next_index.lock().unwrap() = true;
    let e = p.poll_once().await.unwrap_err().to_string();
    assert!(e.contains("HTTP 500"), "{e}");
    assert!(p.state().listed.is_empty());
    let r = p.poll_once().await.unwrap();
    assert_eq!((r.fetched, r.imported, r.duplicates), (2, 1, 1), "{r:?}");
    assert_eq!(p.state().imported["2026/a.zip"], id_a);
    assert_eq!(lists(&shared).len(), 2);

    // Without an ETag the poller revalidates with If-Modified-Since.
    ks.hits();
    let r = p.poll_once().await.unwrap();
    assert!(!r.index_fetched);
    let hits = ks.hits();
    assert_eq!(paths(&hits), [("/keys/index.txt", 304)]);
    assert_eq!(hits[0].if_none_match, None);
    assert_eq!(hits[0].if_modified_since.as_deref(), Some(LAST_MODIFIED));

    // A server that is down: an error, not a panic.
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut p = poller(&shared, down);
    assert!(p.poll_once().await.is_err());

    // Trust is required, and the URL must be http(s).
    let (store, _) = Store::init(&dir.path().join("other")).unwrap();
    let shared = Shared::new(store, Config::default(), Arc::new(SystemClock));
    let e = Poller::new(shared.clone(), &format!("http://{addr}/keys"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cases.trust"), "{e}");
    let e = Poller::new(shared, "ftp://127.0.0.1/keys")
        .unwrap_err()
        .to_string();
    assert!(e.contains("poll.url"), "{e}");
}

/// Credentials in `poll.url` go to the key server's own files only: never into the state
/// file, never to a path outside the base (`%2e%2e`), never along a redirect; a `?token=` query
/// is carried to every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poller_keeps_credentials_to_the_base_url() {
    let (ks, addr) = start_key_server().await;
    ks.set_index(
        "sub/%2e%2e/%2e%2e/outside.zip\n2026/redir.zip\n2026/away.zip\n2026/a.zip\n",
        Some("\"c1\""),
    );
    let other = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    ks.redirects.lock().unwrap().extend([
        (
            "/keys/2026/redir.zip".to_string(),
            "/internal-only?x=1".to_string(),
        ),
        (
            "/keys/2026/away.zip".to_string(),
            format!("http://{other}/keys/2026/a.zip"),
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (store, _) = Store::init(&data).unwrap();
    let shared = Shared::new(store, config(), Arc::new(SystemClock));
    let url = format!("http://alice:s3cretpw@{addr}/keys/?token=TOPSECRET");
    let mut p = Poller::new(shared.clone(), &url)
        .unwrap()
        .without_proxy()
        .unwrap();
    let r = p.poll_once().await.unwrap();
    assert_eq!(r.imported, 1, "{r:?}");
    let hits = ks.hits();
    assert!(
        hits.iter().all(|h| h.path.starts_with("/keys/")),
        "nothing outside the base was requested: {hits:?}"
    );
    assert!(
        !hits.iter().any(|h| h.path == "/internal-only"),
        "no redirect was followed with credentials: {hits:?}"
    );
    assert!(hits
        .iter()
        .all(|h| h.authorization.is_some() && h.query.as_deref() == Some("token=TOPSECRET")));
    let state = std::fs::read_to_string(data.join(STATE_FILE)).unwrap();
    for secret in ["alice", "s3cretpw", "TOPSECRET"] {
        assert!(
            !state.contains(secret),
            "{secret} in the state file: {state}"
        );
    }

    // Without credentials, same-origin redirects are followed, other hosts' are not.
    let (store, _) = Store::init(&dir.path().join("plain")).unwrap();
    let shared = Shared::new(store, config(), Arc::new(SystemClock));
    ks.set_index("2026/redir.zip\n2026/away.zip\n", Some("\"c2\""));
    ks.redirects.lock().unwrap().insert(
        "/keys/2026/redir.zip".to_string(),
        "/keys/2026/b.zip".to_string(),
    );
    let mut p = poller(&shared, addr);
    let r = p.poll_once().await.unwrap();
    assert_eq!((r.imported, r.failed), (1, 1), "{r:?}");
    assert_eq!(lists(&shared), [("gaen-export".to_string(), 140)]);

    // Plain http only on loopback.
    let e = Poller::new(shared.clone(), "http://keys.example/v1/")
        .unwrap_err()
        .to_string();
    assert!(e.contains("https"), "{e}");
    assert!(Poller::new(shared.clone(), "https://keys.example/v1/").is_ok());
}

/// A file that keeps failing is retried after 1, 2, 4 … rounds, not every round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_files_back_off() {
    let (ks, addr) = start_key_server().await;
    ks.set_index("2026/missing.zip\n", Some("\"m\""));
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::init(&dir.path().join("data")).unwrap();
    let shared = Shared::new(store, config(), Arc::new(SystemClock));
    let mut p = poller(&shared, addr);
    let mut tried = Vec::new();
    for _ in 0..8 {
        let r = p.poll_once().await.unwrap();
        tried.push(r.failed);
    }
    // Rounds 1, 2, 4 and 8 try it (after 1, 2 and 4 rounds of waiting).
    assert_eq!(tried, [1, 1, 0, 1, 0, 0, 0, 1]);
}

/// A free loopback port (bound and released: the daemon binds it a moment later).
fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// The real binary: `run --radio sim --api ADDR` with a poll URL serves the API and imports the
/// key server's files at start (learnt from the API, not the log); a connection that sent half
/// a request head does not keep SIGTERM from stopping it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_binary_serves_the_api_and_polls() {
    let token = "binary-test-token-0123456789abcdef";
    let (ks, keys_addr) = start_key_server().await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    write_private(&tokens, &format!("{token}\n"));
    let api = free_port();
    let mut child = support::bin()
        .args(["--log-json", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "run",
            "--radio",
            "sim",
            "--api",
            &api.to_string(),
            "--api-token-file",
        ])
        .arg(&tokens)
        .arg("--trust")
        .arg(sample(ZIP2, "pub.pem"))
        .arg("--trust")
        .arg(sample(ZIP140, "pub.pem"))
        .env("BLUEZONED_POLL_URL", format!("http://{keys_addr}/keys/"))
        .env("RUST_LOG", "info")
        .env_remove("BLUEZONED_API")
        .env("NO_PROXY", "127.0.0.1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    // Ready when the status endpoint says both files were stored (the poller's counter).
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let r = client()
            .get(format!("http://{api}/v1/status"))
            .bearer_auth(token)
            .send()
            .await;
        if let Ok(r) = r {
            let v: Value = r.json().await.unwrap();
            if v["case_lists_stored"] == 2 {
                break v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not serve two polled files:\n{}",
            log.lock().unwrap().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status["case_lists_stored"], 2, "{status}");
    let resp = client()
        .post(format!("http://{api}/v1/case-lists"))
        .bearer_auth(token)
        .body(std::fs::read(sample(ZIP140, "zip")).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "already polled");
    let index_hits = ks
        .hits()
        .iter()
        .filter(|h| h.path == "/keys/index.txt")
        .count();
    assert_eq!(index_hits, 1);

    // Half a request head, then SIGTERM: the daemon still exits, and cleanly.
    let mut half = tokio::net::TcpStream::connect(api).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut half, b"GET /v1/status HTTP/1.1\r\nHost: loc")
        .await
        .unwrap();
    // SAFETY: plain kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let t = Instant::now();
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "daemon did not stop within 10 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(half);
    assert!(exit.success(), "{exit}");
    assert!(!log.lock().unwrap().join("\n").contains(token));
}
