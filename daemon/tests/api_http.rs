//! The HTTP API against a running in-process daemon on 127.0.0.1 (port 0), with a real HTTP
//! client: uploads and every status code, malformed and hostile inputs (the store unchanged),
//! concurrency, exposures, status, metrics, the Unix socket and shutdown.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bluezone_protocol::{DailyKey, PeerId, Sighting};
use bluezoned::api::{self, Listen, ServeLimits};
use bluezoned::clock::SystemClock;
use bluezoned::config::Config;
use bluezoned::service::{maintenance, Shared};
use bluezoned::store::{Store, StoredCaseList};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

mod support;
use support::{http::client, write_private};

/// Owner tokens (two lines of one file) and an upload token (a health official's).
const TOKEN: &str = "owner-token-0123456789abcdef0123456789";
const TOKEN2: &str = "second-owner-token-0123456789abcdef";
const UPLOAD: &str = "upload-token-0123456789abcdef012345678";
const ZIP2: &str = "google-server-example-2keys";
const ZIP140: &str = "google-internals-sample-140keys";

fn gaen_zip(name: &str) -> Vec<u8> {
    std::fs::read(support::testdata(&format!("gaen/{name}.zip"))).expect("sample zip")
}

fn gaen_pem(name: &str) -> PathBuf {
    support::testdata(&format!("gaen/{name}.pub.pem"))
}

struct Daemon {
    _dir: tempfile::TempDir,
    shared: Arc<Shared>,
    addr: SocketAddr,
    base: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Daemon {
    async fn start(tweak: impl FnOnce(&mut Config)) -> Daemon {
        Daemon::start_with(tweak, ServeLimits::default()).await
    }

    async fn start_with(tweak: impl FnOnce(&mut Config), limits: ServeLimits) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        write_private(&tokens, &format!("# owner\n{TOKEN}\n\n  {TOKEN2}  \n"));
        let uploads = dir.path().join("upload-tokens");
        write_private(&uploads, &format!("{UPLOAD}\n"));
        let mut cfg = Config::default();
        cfg.api.owner_token_file = Some(tokens);
        cfg.api.upload_token_file = Some(uploads);
        cfg.cases.trust = vec![gaen_pem(ZIP2), gaen_pem(ZIP140)];
        tweak(&mut cfg);
        let (store, _) = Store::init(&dir.path().join("data")).unwrap();
        let shared = Shared::new(store, cfg, Arc::new(SystemClock));
        let stop = CancellationToken::new();
        let server = api::serve_with(shared.clone(), "127.0.0.1:0", limits, stop.clone())
            .await
            .unwrap();
        let Listen::Tcp(addr) = server.local else {
            panic!("expected a TCP address, got {}", server.local)
        };
        assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
        Daemon {
            _dir: dir,
            shared,
            addr,
            base: format!("http://{addr}"),
            stop,
            task: server.task,
        }
    }

    /// `/v1/status` with the owner token, once the cached store counts satisfy `ready`.
    async fn owner_status(&self, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v: Value = client()
                .get(self.url("/v1/status"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if v["counts_ready"] == true && ready(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "status never got there: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Case lists and counts: what a refused upload must not change.
    fn snapshot(&self) -> (Vec<StoredCaseList>, usize, usize, usize) {
        let s = self.shared.lock_store();
        let st = s.stats().unwrap();
        (
            s.case_lists().unwrap(),
            st.case_lists,
            st.sightings,
            st.exposures,
        )
    }

    async fn upload(&self, token: Option<&str>, body: Vec<u8>) -> (u16, Value) {
        let mut req = client().post(self.url("/v1/case-lists")).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(ct.as_deref(), Some("application/json"), "status {status}");
        (status, resp.json().await.unwrap())
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("API stops on shutdown")
            .unwrap()
            .unwrap();
    }
}

fn f0_json(keys: &[[u8; 32]], day: i64) -> Vec<u8> {
    let data: Vec<Value> = keys
        .iter()
        .map(|k| {
            json!({
                "daily_key": hex::encode(k),
                "time_start": day * 86_400,
                "max": 96,
                "time_end": day * 86_400 + 86_399,
            })
        })
        .collect();
    serde_json::to_vec(&json!({ "data": data })).unwrap()
}

fn error_of(v: &Value) -> &str {
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error: {v}"))
}

/// True if matching was woken (a stored `notify_one` permit is taken).
async fn match_woken(shared: &Shared) -> bool {
    tokio::time::timeout(Duration::from_millis(200), shared.match_now.notified())
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_auth_and_status_codes() {
    let d = Daemon::start(|_| {}).await;
    let before = d.snapshot();
    let f0 = f0_json(&[[1; 32], [2; 32]], 20_000);

    // 401: no token, a wrong one, another scheme; nothing stored, matching not woken.
    let resp = client()
        .post(d.url("/v1/case-lists"))
        .body(f0.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(
        resp.headers()["www-authenticate"].to_str().unwrap(),
        "Bearer realm=\"bluezoned\""
    );
    let body: Value = resp.json().await.unwrap();
    assert!(error_of(&body).contains("missing bearer token"), "{body}");
    let (s, body) = d
        .upload(Some("official-token-0123456789abcdeF"), f0.clone())
        .await;
    assert_eq!(s, 401, "{body}");
    assert_eq!(error_of(&body), "invalid bearer token");
    assert!(!body.to_string().contains("official"), "{body}");
    let (s, _) = d.upload(Some(""), f0.clone()).await;
    assert_eq!(s, 401);
    let resp = client()
        .post(d.url("/v1/case-lists"))
        .basic_auth("official", Some(TOKEN))
        .body(f0.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(d.snapshot(), before);
    assert!(!match_woken(&d.shared).await);

    // 201 for new content, then 200 with the same id (with the other token too).
    let (s, body) = d.upload(Some(TOKEN), f0.clone()).await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["format"], "bluezone-f0");
    assert_eq!(body["entries"], 2);
    let id = body["id"].as_i64().unwrap();
    assert!(match_woken(&d.shared).await, "a new list wakes matching");
    let (s, again) = d.upload(Some(TOKEN2), f0.clone()).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again, body);
    assert!(!match_woken(&d.shared).await, "a known list does not");

    // Signed GAEN exports verify under the configured keys.
    let (s, g2) = d.upload(Some(TOKEN), gaen_zip(ZIP2)).await;
    assert_eq!(s, 201, "{g2}");
    assert_eq!(
        (g2["format"].as_str(), g2["entries"].as_u64()),
        (Some("gaen-export"), Some(2))
    );
    let (s, g140) = d.upload(Some(TOKEN), gaen_zip(ZIP140)).await;
    assert_eq!(s, 201, "{g140}");
    assert_eq!(g140["entries"], 140);
    let (s, again) = d.upload(Some(TOKEN), gaen_zip(ZIP140)).await;
    assert_eq!((s, &again), (200, &g140));

    let lists = d.shared.lock_store().case_lists().unwrap();
    let got: Vec<(i64, &str, u64)> = lists
        .iter()
        .map(|l| (l.id, l.format.as_str(), l.entries))
        .collect();
    assert_eq!(
        got,
        vec![
            (id, "bluezone-f0", 2),
            (g2["id"].as_i64().unwrap(), "gaen-export", 2),
            (g140["id"].as_i64().unwrap(), "gaen-export", 140),
        ]
    );

    // Exposures need an owner token; status and metrics answer without one (see below).
    let resp = client().get(d.url("/v1/exposures")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp = client()
        .get(d.url("/v1/exposures"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({ "exposures": [] })
    );
    let status = d.owner_status(|s| s["case_lists"] == 3).await;
    assert_eq!(status["case_lists"], 3, "{status}");
    assert_eq!(status["sightings_stored"], 0, "{status}");
    assert!(status["store_bytes"].as_u64().unwrap() > 0, "{status}");

    // Unknown paths and methods.
    let resp = client().get(d.url("/v2/nothing")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    assert_eq!(
        error_of(&resp.json::<Value>().await.unwrap()),
        "no such endpoint"
    );
    let resp = client()
        .get(d.url("/v1/case-lists"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(
        error_of(&resp.json::<Value>().await.unwrap()),
        "method not allowed here"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaen_uploads_must_verify_under_a_configured_key() {
    // Only the 2-key server's key is trusted: the 140-key sample is signed by another one.
    let d = Daemon::start(|c| c.cases.trust = vec![gaen_pem(ZIP2)]).await;
    let before = d.snapshot();
    let (s, body) = d.upload(Some(TOKEN), gaen_zip(ZIP140)).await;
    assert_eq!(s, 400, "{body}");
    let msg = error_of(&body);
    assert!(msg.starts_with("invalid gaen-export: "), "{msg}");
    assert!(
        msg.contains("signature") || msg.contains("trusted"),
        "{msg}"
    );
    assert_eq!(d.snapshot(), before);
    let (s, _) = d.upload(Some(TOKEN), gaen_zip(ZIP2)).await;
    assert_eq!(s, 201);
    d.stop().await;

    // No trusted key at all: every GAEN upload is refused, F0 lists are still accepted.
    let d = Daemon::start(|c| c.cases.trust.clear()).await;
    let (s, body) = d.upload(Some(TOKEN), gaen_zip(ZIP2)).await;
    assert_eq!(s, 400, "{body}");
    assert!(error_of(&body).contains("no trusted signing key"), "{body}");
    let (s, _) = d.upload(Some(TOKEN), f0_json(&[[9; 32]], 20_000)).await;
    assert_eq!(s, 201);
    assert_eq!(d.shared.lock_store().case_lists().unwrap().len(), 1);
    d.stop().await;
}

/// A zip holding `export.bin` of `size` zero bytes, deflated (a 100 MB one is ~100 kB).
fn zip_bomb(size: usize) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut z = zip::ZipWriter::new(&mut out);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(false);
    z.start_file("export.bin", opts).unwrap();
    let block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len());
        z.write_all(&block[..n]).unwrap();
        left -= n;
    }
    z.start_file("export.sig", opts).unwrap();
    z.write_all(b"").unwrap();
    z.finish().unwrap();
    out.into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_uploads_are_refused_and_change_nothing() {
    let d = Daemon::start(|_| {}).await;
    // Something stored already, so "unchanged" is not trivially "empty".
    let (s, _) = d.upload(Some(TOKEN), f0_json(&[[3; 32]], 20_000)).await;
    assert_eq!(s, 201);
    assert!(match_woken(&d.shared).await);
    let before = d.snapshot();

    let zip = gaen_zip(ZIP2);
    // Only bad entries: one bad entry among good ones is imported (the good ones) since issue 10.
    let mut bad_hex = String::from_utf8(f0_json(&[[5; 32]], 20_000)).unwrap();
    bad_hex = bad_hex.replacen(
        &hex::encode([5u8; 32]),
        &format!("{}zz", &hex::encode([5u8; 32])[..62]),
        1,
    );
    let bomb = zip_bomb(100_000_000);
    assert!(bomb.len() < 1_000_000, "bomb is {} bytes", bomb.len());
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("bad hex", bad_hex.into_bytes(), "F0 entry 0: field `daily_key`"),
        ("truncated zip", zip[..zip.len() / 2].to_vec(), "invalid gaen-export: "),
        ("zip bomb", bomb, "over its size limit"),
        ("empty", Vec::new(), "empty case list"),
        ("not a case list", b"hello world".to_vec(), "not a case list"),
        ("no data array", br#"{"items": []}"#.to_vec(), "no `data` array"),
        ("broken JSON", br#"{"data": [{"daily_key": "#.to_vec(), "malformed at line 1"),
        (
            "reversed times",
            br#"{"data":[{"daily_key":"0000000000000000000000000000000000000000000000000000000000000000","time_start":1596844900,"time_end":1596844899}]}"#.to_vec(),
            "F0 entry 0: field `time_end` (1596844899) is before time_start (1596844900)",
        ),
        ("a zip without entries", b"PK\x05\x06".iter().copied().chain([0u8; 18]).collect(), "export.bin is missing"),
    ];
    for (what, body, want) in cases {
        let (s, resp) = d.upload(Some(TOKEN), body).await;
        assert_eq!(s, 400, "{what}: {resp}");
        let msg = error_of(&resp);
        assert!(msg.contains(want), "{what}: {msg:?} lacks {want:?}");
        assert_eq!(d.snapshot(), before, "{what} changed the store");
    }
    assert!(
        !match_woken(&d.shared).await,
        "a refused upload does not wake matching"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_entry_f0_list_is_refused() {
    // Room for the body, so the parser's entry limit (500,000) is what refuses it.
    let d = Daemon::start(|c| c.cases.max_bytes = 256 << 20).await;
    let before = d.snapshot();
    let entry = format!(
        r#"{{"daily_key":"{}","time_start":1728000000,"max":96,"time_end":1728086399}}"#,
        hex::encode([6u8; 32])
    );
    let mut body = Vec::with_capacity(1_000_000 * (entry.len() + 1) + 16);
    body.extend_from_slice(b"{\"data\":[");
    for i in 0..1_000_000 {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(entry.as_bytes());
    }
    body.extend_from_slice(b"]}");
    let t = Instant::now();
    let (s, resp) = d.upload(Some(TOKEN), body).await;
    assert_eq!(s, 400, "{resp}");
    assert!(
        error_of(&resp).contains("more than 500000 entries"),
        "{resp}"
    );
    assert_eq!(d.snapshot(), before);
    eprintln!("10^6-entry list refused in {:?}", t.elapsed());
    d.stop().await;
}

/// Sends a raw HTTP/1.1 request head (and `body`), reads the whole answer.
async fn raw(addr: SocketAddr, head: &str, body: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("server answers without waiting for the rest of the body")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_uploads_get_413_without_being_read() {
    let limit = 64 * 1024;
    let d = Daemon::start(|c| c.cases.max_bytes = limit).await;
    let before = d.snapshot();

    // A declared 100 MiB body: refused from the headers alone, not one body byte sent.
    let head = format!(
        "POST /v1/case-lists HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Length: {}\r\n\r\n",
        100 << 20
    );
    let answer = raw(d.addr, &head, b"").await;
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    assert!(answer.contains("over the 65536-byte limit"), "{answer}");
    // The default limit is 64 MiB.
    assert_eq!(Config::default().cases.max_bytes, 64 << 20);

    // Without a token the size is not even considered.
    let head = format!(
        "POST /v1/case-lists HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        100 << 20
    );
    let answer = raw(d.addr, &head, b"").await;
    assert!(answer.starts_with("HTTP/1.1 401 "), "{answer}");

    // A chunked body (no declared length) is cut off once it passes the limit.
    let head = format!(
        "POST /v1/case-lists HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n\
         Transfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        limit + 1
    );
    let answer = raw(d.addr, &head, &vec![b' '; limit + 1]).await;
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    assert!(answer.contains("{\"error\":"), "{answer}");

    // Exactly at the limit is read (and judged on content).
    let mut body = f0_json(&[[8; 32]], 20_000);
    body.resize(limit, b' ');
    let (s, resp) = d.upload(Some(TOKEN), body).await;
    assert_eq!(s, 201, "{resp}");
    assert_eq!(d.snapshot().0.len(), before.0.len() + 1);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_uploads_are_all_accounted_for() {
    let d = Arc::new(Daemon::start(|_| {}).await);
    let distinct: Vec<Vec<u8>> = (0..40u8)
        .map(|i| f0_json(&[[i; 32], [i.wrapping_add(100); 32]], 20_000 + i64::from(i)))
        .collect();
    // 40 distinct lists, 10 of them sent twice.
    let bodies: Vec<(usize, Vec<u8>)> = (0..50)
        .map(|n| {
            let which = if n < 40 { n } else { (n - 40) * 4 };
            (which, distinct[which].clone())
        })
        .collect();
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|(which, body)| {
            let d = d.clone();
            tokio::spawn(async move { (which, d.upload(Some(TOKEN), body).await) })
        })
        .collect();
    let mut ids: BTreeMap<usize, BTreeSet<i64>> = BTreeMap::new();
    let mut created = 0;
    for t in tasks {
        let (which, (s, body)) = t.await.unwrap();
        assert!(s == 201 || s == 200, "{s}: {body}");
        assert_eq!(body["entries"], 2);
        created += usize::from(s == 201);
        ids.entry(which)
            .or_default()
            .insert(body["id"].as_i64().unwrap());
    }
    assert_eq!(created, 40, "one 201 per distinct list");
    assert_eq!(ids.len(), 40);
    assert!(
        ids.values().all(|s| s.len() == 1),
        "one id per content: {ids:?}"
    );
    let answered: BTreeSet<i64> = ids.values().flatten().copied().collect();
    let stored: BTreeSet<i64> = d
        .shared
        .lock_store()
        .case_lists()
        .unwrap()
        .iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(answered, stored);
    let Ok(d) = Arc::try_unwrap(d) else {
        panic!("daemon still shared")
    };
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exposures_status_and_metrics_after_a_match() {
    let d = Daemon::start(|_| {}).await;
    // 40 minutes close to a phone whose daily key is then published, yesterday 10:00 UTC.
    let day = bluezone_protocol::time::utc_day(bluezoned::clock::Clock::now(
        &bluezoned::clock::SystemClock,
    )) - 1;
    let key = [0x5a; 32];
    let daily = DailyKey::from_bytes(key);
    let t0 = day * 86_400 + 10 * 3600;
    let sightings: Vec<Sighting> = (0..80)
        .map(|i| {
            let t = t0 + i * 30;
            Sighting {
                peer: PeerId::Bluezone(daily.id(((t - day * 86_400) / 900) as u32)),
                time: t,
                rssi: -55,
                tx_power: None,
                aem: None,
            }
        })
        .collect();
    d.shared.lock_store().insert_sightings(&sightings).unwrap();

    let (s, up) = d
        .upload(Some(TOKEN), f0_json(&[key, [0x11; 32]], day))
        .await;
    assert_eq!(s, 201, "{up}");
    maintenance::match_once(&d.shared).await.unwrap();

    let resp = client()
        .get(d.url("/v1/exposures"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.unwrap();
    let list = body["exposures"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{body}");
    let e = &list[0];
    assert_eq!(e["protocol"], "bluezone");
    assert_eq!(e["case_key"], hex::encode(key));
    assert_eq!(e["case_list"], up["id"]);
    assert_eq!(e["day"], day);
    assert_eq!(e["notify"], true, "{e}");
    assert_eq!(e["sightings"], 80);

    let status = d.owner_status(|s| s["exposures"] == 1).await;
    assert_eq!(status["sightings_stored"], 80, "{status}");
    assert_eq!(status["distinct_ids"], 3, "{status}");
    assert_eq!(status["case_lists"], 1, "{status}");
    assert_eq!(status["exposures"], 1, "{status}");
    assert_eq!(status["notifying_exposures"], 1, "{status}");
    assert_eq!(status["matches_run"], 1, "{status}");
    assert!(status["uptime_s"].is_u64(), "{status}");
    let fields: BTreeSet<&str> = status
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        fields,
        BTreeSet::from([
            "sightings_stored",
            "distinct_ids",
            "case_lists",
            "exposures",
            "notifying_exposures",
            "store_bytes",
            "uptime_s",
            "matches_run",
            "case_lists_stored",
            "store_errors",
            "counts_ready",
            "radio_privacy",
            "token_reloads",
            "token_reload_failures",
        ]),
        "counts only"
    );
    assert!(!status.to_string().contains(&hex::encode(key)));

    let resp = client()
        .get(d.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = resp.text().await.unwrap();
    let metric = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
            .parse()
            .unwrap()
    };
    assert_eq!(metric("bluezoned_keys_checked_total"), 2.0);
    assert_eq!(metric("bluezoned_matches_total"), 1.0);
    assert_eq!(metric("bluezoned_ids_indexed"), 3.0);
    assert_eq!(metric("bluezoned_case_lists"), 1.0);
    assert_eq!(metric("bluezoned_store_sightings"), 80.0);
    assert_eq!(metric("bluezoned_notifying_exposures"), 1.0);
    assert_eq!(metric("bluezoned_sightings_stored_total"), 0.0);
    assert!(metric("bluezoned_store_size_bytes") > 0.0);
    assert!(metric("bluezoned_last_match_duration_seconds") >= 0.0);
    assert!(metric("bluezoned_last_match_keys_per_second") >= 0.0);
    assert!(text.contains("# TYPE bluezoned_sightings_stored_total counter"));
    assert!(!text.contains(&hex::encode(key)));
    d.stop().await;
}

/// Why the API refuses to start on `unix:<sock>` (a store at `data`).
async fn start_error(data: &std::path::Path, sock: &std::path::Path) -> String {
    let (store, _) = Store::init(data).unwrap();
    let shared = Shared::new(store, Config::default(), Arc::new(SystemClock));
    let started = api::serve(
        shared,
        &format!("unix:{}", sock.display()),
        CancellationToken::new(),
    )
    .await;
    started
        .err()
        .expect("the API must refuse to start")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_listener() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::init(&dir.path().join("data")).unwrap();
    let shared = Shared::new(store, Config::default(), Arc::new(SystemClock));
    let sock = dir.path().join("api.sock");
    // A stale socket from an earlier run is replaced.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let stop = CancellationToken::new();
    let server = api::serve(shared, &format!("unix:{}", sock.display()), stop.clone())
        .await
        .unwrap();
    assert_eq!(server.local, Listen::Unix(sock.clone()));
    let mut s = tokio::net::UnixStream::connect(&sock).await.unwrap();
    s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    assert!(out.contains("\"case_lists_stored\":0"), "{out}");
    // Owner and group only, whatever the umask.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "socket mode {mode:o}");
    // Without a token file every protected request is refused.
    let mut s = tokio::net::UnixStream::connect(&sock).await.unwrap();
    s.write_all(b"GET /v1/exposures HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 401 "), "{out}");

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), server.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!sock.exists(), "the socket is removed on shutdown");

    // Security L10: with `api.unix_allowed_uids`, a peer uid not on the list is disconnected
    // unanswered, a listed one is served.
    // SAFETY: getuid has no preconditions.
    let me = unsafe { libc::getuid() };
    for (uids, served) in [(vec![me.wrapping_add(1)], false), (vec![me], true)] {
        let config = Config {
            api: bluezoned::config::ApiConfig {
                unix_allowed_uids: uids,
                ..Default::default()
            },
            ..Config::default()
        };
        let (store, _) = Store::init(&dir.path().join(format!("data-{served}"))).unwrap();
        let shared = Shared::new(store, config, Arc::new(SystemClock));
        let stop = CancellationToken::new();
        let server = api::serve(shared, &format!("unix:{}", sock.display()), stop.clone())
            .await
            .unwrap();
        let mut s = tokio::net::UnixStream::connect(&sock).await.unwrap();
        // The server may close before the request is written: only the answer matters.
        let _ = s
            .write_all(b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await;
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        assert_eq!(out.starts_with("HTTP/1.1 200 OK"), served, "{out}");
        if !served {
            assert!(out.is_empty(), "{out}");
        }
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(60), server.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    // A socket another process listens on is not taken over: the start fails, naming it,
    // and that process keeps its socket.
    let live = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let e = start_error(&dir.path().join("data"), &sock).await;
    assert!(e.contains("another process is listening"), "{e}");
    let _client = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    live.accept().unwrap();
    drop(live);
    std::fs::remove_file(&sock).unwrap();
    // Nothing but the socket is left in the directory (no temporary name).
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("api.sock"))
        .collect();
    assert!(names.is_empty(), "{names:?}");

    // A regular file at the path is never replaced.
    std::fs::write(&sock, b"keep me").unwrap();
    let e = start_error(&dir.path().join("data"), &sock).await;
    assert!(e.contains("not a socket"), "{e}");
    assert_eq!(std::fs::read(&sock).unwrap(), b"keep me");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::init(&dir.path().join("data")).unwrap();
    let mut cfg = Config::default();
    cfg.api.token_file = Some(dir.path().join("missing-tokens"));
    let shared = Shared::new(store, cfg, Arc::new(SystemClock));
    let e = api::serve(shared.clone(), "127.0.0.1:0", CancellationToken::new())
        .await
        .err()
        .unwrap();
    let msg = bluezoned::error_chain(&e);
    assert!(
        msg.contains("api.owner_token_file") && msg.contains("missing-tokens"),
        "{msg}"
    );
    let e = api::serve(shared, "localhost:80", CancellationToken::new())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("api.listen"), "{e}");
}

/// Security M7: an upload token may upload, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_tokens_cannot_read_exposures_or_store_counts() {
    let d = Daemon::start(|_| {}).await;
    let (s, body) = d.upload(Some(UPLOAD), f0_json(&[[3; 32]], 20_000)).await;
    assert_eq!(s, 201, "{body}");
    let resp = client()
        .get(d.url("/v1/exposures"))
        .bearer_auth(UPLOAD)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert!(error_of(&resp.json::<Value>().await.unwrap()).contains("owner token"));
    // Security M2: status and metrics without an owner token show operational counts only.
    for token in [None, Some(UPLOAD)] {
        let mut req = client().get(d.url("/v1/status"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let status: Value = req.send().await.unwrap().json().await.unwrap();
        let fields: BTreeSet<&str> = status
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(
            fields,
            BTreeSet::from([
                "uptime_s",
                "matches_run",
                "case_lists_stored",
                "store_errors",
                "radio_privacy",
                "token_reloads",
                "token_reload_failures",
            ]),
            "{status}"
        );
        let text = client()
            .get(d.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for private in [
            "exposures",
            "sightings",
            "distinct_ids",
            "receptions",
            "ids_indexed",
        ] {
            assert!(!text.contains(private), "{private} in\n{text}");
        }
    }
    d.stop().await;
}

/// Security M2: DNS rebinding. A page on another name that now resolves to 127.0.0.1 sends its
/// own name as Host; only loopback names and the listen address are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_host_headers_are_refused() {
    let d = Daemon::start(|_| {}).await;
    let port = d.addr.port();
    for host in [format!("attacker.example:{port}"), "evil.test".to_string()] {
        let answer = raw(
            d.addr,
            &format!("GET /v1/status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
            b"",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 421 "), "{host}: {answer}");
    }
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "[::1]".to_string(),
        "LOCALHOST".to_string(),
        // An address literal cannot be rebound (a LAN client naming the gateway's address).
        format!("192.0.2.7:{port}"),
    ] {
        let answer = raw(
            d.addr,
            &format!("GET /v1/status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
            b"",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{host}: {answer}");
    }
    d.stop().await;

    // A name is answered only once `api.allowed_hosts` lists it.
    let d = Daemon::start(|c| c.api.allowed_hosts = vec!["Gateway.lan".into()]).await;
    for (host, status) in [("gateway.lan:8421", "200"), ("other.lan", "421")] {
        let answer = raw(
            d.addr,
            &format!("GET /v1/status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
            b"",
        )
        .await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{host}: {answer}"
        );
    }
    d.stop().await;
}

/// Security L9: after 10 wrong tokens in a minute a peer gets 429, even with a right token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_bad_tokens_are_rate_limited() {
    let d = Daemon::start(|_| {}).await;
    let get = |token: &'static str| {
        let url = d.url("/v1/exposures");
        async move {
            client()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for _ in 0..10 {
        assert_eq!(get("wrong-token-0123456789abcdef0123456").await, 401);
    }
    assert_eq!(get("wrong-token-0123456789abcdef0123456").await, 429);
    assert_eq!(get(TOKEN).await, 429, "blocked for the rest of the window");
    d.stop().await;
}

/// Security M1: a client that never finishes its request head is disconnected, and does not
/// keep the server from stopping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_do_not_hold_up_shutdown() {
    let limits = ServeLimits {
        header_read_timeout: Duration::from_secs(1),
        ..ServeLimits::default()
    };
    let d = Daemon::start_with(|_| {}, limits).await;
    let mut slow = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    slow.write_all(b"GET /v1/status HTTP/1.1\r\nHost: loc")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), slow.read_to_end(&mut out))
        .await
        .expect("the server closes a connection whose head never completes")
        .ok();

    // With a header timeout far longer than the wait below, only the shutdown grace (3 s) can
    // end the server: cancellation must not wait for the half-sent head.
    let limits = ServeLimits {
        header_read_timeout: Duration::from_secs(3600),
        ..ServeLimits::default()
    };
    let d = Daemon::start_with(|_| {}, limits).await;
    let mut half = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    half.write_all(b"GET /v1/status HTTP/1.1\r\nHost: loc")
        .await
        .unwrap();
    let idle = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    // The server has accepted both before shutdown (a request on a third answers).
    let answer = raw(
        d.addr,
        "GET /v1/status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        b"",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    d.stop.cancel();
    tokio::time::timeout(Duration::from_secs(60), d.task)
        .await
        .expect("the server stops although a client holds half a request head")
        .unwrap()
        .unwrap();
    drop((half, idle));
}

/// Security M1: connections over the cap are closed at once instead of using up fds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed() {
    let limits = ServeLimits {
        max_connections: 2,
        ..ServeLimits::default()
    };
    let d = Daemon::start_with(|_| {}, limits).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(d.addr).await.unwrap();
        // A kept-alive request proves the server accepted this one before the next connects.
        s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(s);
    }
    let mut third = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    let _ = third
        .write_all(b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), third.read_to_end(&mut out))
        .await
        .expect("the third connection is closed");
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    drop(held);
    d.stop().await;
}

/// Security M1 (per-peer cap): a peer holding its cap's worth of idle connections gets its next
/// one closed at once, though the global cap has room; the connections it holds still work, and
/// a place freed is usable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_peer_cap_are_closed() {
    let limits = ServeLimits {
        max_connections: 64,
        max_connections_per_peer: 3,
        // Idle connections must outlive a slow machine's test.
        header_read_timeout: Duration::from_secs(300),
        ..ServeLimits::default()
    };
    let d = Daemon::start_with(|_| {}, limits).await;
    async fn get_status(s: &mut tokio::net::TcpStream) -> std::io::Result<[u8; 12]> {
        s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await?;
        Ok(buf)
    }
    // Idle: nothing sent. Accepted in order, each takes its place before the next is accepted.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tokio::net::TcpStream::connect(d.addr).await.unwrap());
    }
    let mut fourth = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    let _ = fourth
        .write_all(b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), fourth.read_to_end(&mut out))
        .await
        .expect("the fourth connection of one peer is closed");
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    for s in &mut held {
        assert_eq!(&get_status(s).await.unwrap(), b"HTTP/1.1 200");
    }
    // One place freed: a new connection is served.
    drop(held.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut s = tokio::net::TcpStream::connect(d.addr).await.unwrap();
        match get_status(&mut s).await {
            Ok(b) => {
                assert_eq!(&b, b"HTTP/1.1 200");
                break;
            }
            // The server may not have seen the close yet.
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("a freed place was not given back: {e}"),
        }
    }
    drop(held);
    d.stop().await;
}

/// Security L19: uploads whose bodies stall hold a queue place, not a parser, so a complete
/// upload behind them is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_uploads_do_not_block_complete_ones() {
    let d = Daemon::start(|_| {}).await;
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut s = tokio::net::TcpStream::connect(d.addr).await.unwrap();
        let head = format!(
            "POST /v1/case-lists HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {UPLOAD}\r\n\
             Content-Length: 1000\r\n\r\n{{\"data\""
        );
        s.write_all(head.as_bytes()).await.unwrap();
        stalled.push(s);
    }
    let up = tokio::time::timeout(
        Duration::from_secs(60),
        d.upload(Some(UPLOAD), f0_json(&[[4; 32]], 20_000)),
    )
    .await
    .expect("a complete upload is not queued behind stalled ones");
    assert_eq!(up.0, 201, "{}", up.1);
    drop(stalled);
    d.stop().await;
}

/// Security L11 and L9: a remote listen address needs `api.allow_remote`; token files must be
/// private and tokens long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_listen_and_weak_tokens_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::init(&dir.path().join("data")).unwrap();
    let shared = Shared::new(store, Config::default(), Arc::new(SystemClock));
    let e = api::serve(shared, "0.0.0.0:0", CancellationToken::new())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("api.allow_remote"), "{e}");

    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut cfg = Config::default();
    cfg.api.owner_token_file = Some(tokens.clone());
    let (store, _) = Store::init(&dir.path().join("data")).unwrap();
    let shared = Shared::new(store, cfg.clone(), Arc::new(SystemClock));
    let e = api::serve(shared, "127.0.0.1:0", CancellationToken::new())
        .await
        .err()
        .unwrap();
    let msg = bluezoned::error_chain(&e);
    assert!(msg.contains("group or others"), "{msg}");

    write_private(&tokens, "too-short\n");
    let (store, _) = Store::init(&dir.path().join("data")).unwrap();
    let shared = Shared::new(store, cfg, Arc::new(SystemClock));
    let e = api::serve(shared, "127.0.0.1:0", CancellationToken::new())
        .await
        .err()
        .unwrap();
    let msg = bluezoned::error_chain(&e);
    assert!(msg.contains("at least 32"), "{msg}");
    assert!(!msg.contains("too-short"), "{msg}");
}

/// Security M2/L20: status and metrics never wait for the store (its counts decrypt every chunk
/// under the store lock): with the lock held elsewhere they still answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics_answer_while_the_store_is_busy() {
    let d = Daemon::start(|_| {}).await;
    // Counts exist once (a refresh ran), then the store is held by "a long match".
    d.owner_status(|_| true).await;
    let shared = d.shared.clone();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let _store = shared.lock_store();
        held_tx.send(()).unwrap();
        let _ = release_rx.recv();
    });
    held_rx.recv().unwrap();
    // A sighting counter change makes the cached counts stale: a refresh starts, in the
    // background.
    d.shared
        .metrics
        .sightings_stored
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    for path in ["/v1/status", "/metrics"] {
        let resp = tokio::time::timeout(
            Duration::from_secs(20),
            client().get(d.url(path)).bearer_auth(TOKEN).send(),
        )
        .await
        .unwrap_or_else(|_| panic!("{path} waited for the store"))
        .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
    }
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    d.stop().await;
}

/// A mostly valid list is stored without its malformed entry, and the response names what was
/// skipped (index, field, reason) as `cases import` prints it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_reports_the_entries_it_skipped() {
    let d = Daemon::start(|_| {}).await;
    let day = 20_000i64;
    let mut list: Value = serde_json::from_slice(&f0_json(&[[1; 32], [2; 32]], day)).unwrap();
    let bad = json!({
        "daily_key": "not hex",
        "time_start": day * 86_400,
        "max": 96,
        "time_end": day * 86_400 + 86_399,
    });
    list["data"].as_array_mut().unwrap().insert(1, bad);
    let (s, body) = d
        .upload(Some(UPLOAD), serde_json::to_vec(&list).unwrap())
        .await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["format"], "bluezone-f0");
    assert_eq!(body["entries"], 2, "{body}");
    assert_eq!(body["skipped_total"], 1, "{body}");
    let skipped = body["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{body}");
    assert_eq!(skipped[0]["index"], 1, "{body}");
    assert_eq!(skipped[0]["field"], "daily_key", "{body}");
    assert!(!skipped[0]["reason"].as_str().unwrap().is_empty(), "{body}");
    let lists = d.shared.lock_store().case_lists().unwrap();
    assert_eq!(lists.len(), 1);
    assert_eq!(lists[0].entries, 2);
    assert_eq!(body["id"], lists[0].id);
    // A list with nothing valid is still refused, and nothing is stored.
    let mut none = list.clone();
    none["data"] = json!([list["data"][1].clone()]);
    let (s, body) = d
        .upload(Some(UPLOAD), serde_json::to_vec(&none).unwrap())
        .await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(d.shared.lock_store().case_lists().unwrap().len(), 1);
    d.stop().await;
}
