//! Publication rules with an injected clock (the library's `publish` takes `now`): batching over
//! the per-file key cap, padding keys, the 14-day retention, removal of unlisted files after the
//! grace period, F0 revocation lists; and the device's poller refusing unsigned or untrusted F0
//! lists from the network while importing a trusted one.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bluezone_protocol::bluezone::f0::{parse_f0_revocations, write_f0};
use bluezone_protocol::bluezone::signed::{parse_signed_f0, verified_json, write_signed_f0};
use bluezone_protocol::bluezone::{F0Entry, F0List, SlotsPerDay};
use bluezone_protocol::gaen::export::{
    parse_export, ExportFile, ExportLimits, ExportSigner, ReportType, TrustedKey,
};
use bluezone_protocol::ids::DailyKey;
use bluezoned::authority::db::Db;
use bluezoned::authority::output::Output;
use bluezoned::authority::publish::{publish, PublishReport};
use bluezoned::authority::tokens::TokenId;
use bluezoned::authority::upload::parse_upload;
use bluezoned::authority::{init, Authority, InitSettings};
use bluezoned::clock::SystemClock;
use bluezoned::config::Config;
use bluezoned::poll::Poller;
use bluezoned::service::Shared;
use bluezoned::store::Store;
use sha2::{Digest, Sha256};

const DAY: i64 = 86_400;
/// A fixed "now" (2026-11-29T12:00:00Z): the tests move it, never the wall clock.
const T0: i64 = 1_795_953_600;

struct Fixture {
    _tmp: tempfile::TempDir,
    auth: Authority,
    db: Mutex<Db>,
    public: PathBuf,
    out: Output,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("auth");
    init(&dir, &InitSettings::default()).unwrap();
    let auth = Authority::open(&dir).unwrap();
    let db = Mutex::new(Db::open(&auth.database_path()).unwrap());
    let public = dir.join("public");
    let out = Output::parse(public.to_str().unwrap()).unwrap();
    Fixture {
        _tmp: tmp,
        auth,
        db,
        public,
        out,
    }
}

impl Fixture {
    fn trusted(&self) -> TrustedKey {
        TrustedKey::from_pem(
            "452",
            "v1",
            &std::fs::read_to_string(self.auth.dir.join("signing-key.pub.pem")).unwrap(),
        )
        .unwrap()
    }

    /// Stores `body` as an official's upload at `now`; the case id.
    fn upload(&self, body: &[u8], now: i64) -> i64 {
        let up = parse_upload(body, 100_000).unwrap();
        let hash: [u8; 32] = Sha256::digest(body).into();
        let token = TokenId("0011223344556677".into());
        self.db
            .lock()
            .unwrap()
            .insert_case(&hash, &up, &token, now)
            .unwrap()
            .case
    }

    fn revoke(&self, case: i64, now: i64) {
        let token = TokenId("0011223344556677".into());
        self.db.lock().unwrap().revoke(case, &token, now).unwrap();
    }

    async fn publish(&self, now: i64) -> PublishReport {
        publish(&self.auth, &self.db, &self.out, now).await.unwrap()
    }

    fn export(&self, name: &str) -> ExportFile {
        let bytes = std::fs::read(self.public.join(name)).unwrap();
        let e = parse_export(&bytes, &[self.trusted()], &ExportLimits::DEFAULT).unwrap();
        assert!(e.is_verified());
        e.file
    }

    fn index(&self) -> Vec<String> {
        std::fs::read_to_string(self.public.join("index.txt"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Publish JSON for `keys`: (16-byte key seed, rolling start in days since the epoch).
fn publish_json(keys: &[(u8, i64)]) -> Vec<u8> {
    let keys: Vec<serde_json::Value> = keys
        .iter()
        .map(|&(seed, day)| {
            use base64::Engine;
            serde_json::json!({
                "key": base64::engine::general_purpose::STANDARD.encode([seed; 16]),
                "rollingStartNumber": day * 144,
                "rollingPeriod": 144,
                "transmissionRisk": 5,
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "temporaryExposureKeys": keys })).unwrap()
}

fn f0_json(seeds: &[u8], day: i64) -> Vec<u8> {
    write_f0(&F0List {
        entries: seeds
            .iter()
            .map(|&s| F0Entry {
                daily_key: DailyKey::from_bytes([s; 32]),
                time_start: day * DAY,
                time_end: day * DAY + DAY - 1,
                max: SlotsPerDay::DEFAULT,
            })
            .collect(),
    })
    .into_bytes()
}

#[tokio::test]
async fn more_keys_than_the_file_cap_become_numbered_batches() {
    let mut f = fixture();
    f.auth.config.publish.max_keys_per_file = 3;
    let today = T0.div_euclid(DAY);
    let seeds: Vec<(u8, i64)> = (1..=7).map(|s| (s * 10, today - 1)).collect();
    f.upload(&publish_json(&seeds), T0);
    let r = f.publish(T0).await;
    assert_eq!(r.gaen_keys, 7);
    assert_eq!(r.files.len(), 3, "{r:?}");
    let mut all = Vec::new();
    for (i, name) in r.files.iter().enumerate() {
        let file = f.export(name);
        assert_eq!(
            (file.batch_num, file.batch_size),
            (i as i32 + 1, 3),
            "{name}"
        );
        assert!(file.keys.len() <= 3);
        all.extend(file.keys.iter().map(|k| *k.tek.as_bytes()));
    }
    assert_eq!(all.len(), 7, "every key in exactly one batch");
    assert!(all.windows(2).all(|w| w[0] < w[1]), "sorted across batches");
    assert_eq!(f.index(), r.files, "index lists the batches in order");
}

#[tokio::test]
async fn keys_past_the_retention_period_are_not_published() {
    let f = fixture();
    let today = T0.div_euclid(DAY);
    // One key from 20 days ago, one from 2 days ago; F0 entries likewise.
    f.upload(&publish_json(&[(1, today - 20), (2, today - 2)]), T0);
    let mut old_and_new = f0_json(&[3], today - 20);
    f.upload(&old_and_new, T0);
    old_and_new = f0_json(&[4], today - 2);
    f.upload(&old_and_new, T0);
    let r = f.publish(T0).await;
    assert_eq!((r.gaen_keys, r.f0_entries), (1, 1), "{r:?}");
    let file = f.export(&r.files[0]);
    assert_eq!(file.keys.len(), 1);
    assert_eq!(file.keys[0].tek.as_bytes(), &[2; 16]);
    let f0 = std::fs::read(f.public.join(&r.files[1])).unwrap();
    let v = parse_signed_f0(
        &f0,
        &[f.trusted()],
        &ExportLimits::DEFAULT,
        &Default::default(),
    )
    .unwrap();
    assert_eq!(v.parsed.list.entries.len(), 1);
    assert_eq!(v.parsed.list.entries[0].daily_key.as_bytes(), &[4; 32]);
}

#[tokio::test]
async fn padding_keys_hide_the_case_count_and_match_nothing() {
    let mut f = fixture();
    f.auth.config.publish.padding_keys = 50;
    let today = T0.div_euclid(DAY);
    f.upload(&publish_json(&[(1, today - 1), (2, today - 3)]), T0);
    let r1 = f.publish(T0).await;
    assert_eq!((r1.gaen_keys, r1.padding_keys), (2, 50));
    let one = f.export(&r1.files[0]);
    assert_eq!(one.keys.len(), 52, "2 real keys + 50 padding keys");

    f.upload(&publish_json(&[(3, today - 1)]), T0 + 10);
    let r2 = f.publish(T0 + 3600).await;
    let two = f.export(&r2.files[0]);
    assert_eq!(two.keys.len(), 51, "1 real key + 50 padding keys");
    let size = |n: &str| std::fs::metadata(f.public.join(n)).unwrap().len() as f64;
    let (s1, s2) = (size(&r1.files[0]), size(&r2.files[0]));
    assert!(
        (s1 - s2).abs() / s1 < 0.05,
        "sizes dominated by padding: {s1} vs {s2}"
    );

    let real: HashSet<[u8; 16]> = [[1; 16], [2; 16], [3; 16]].into_iter().collect();
    let pad = |file: &ExportFile| -> Vec<[u8; 16]> {
        file.keys
            .iter()
            .map(|k| *k.tek.as_bytes())
            .filter(|k| !real.contains(k))
            .collect()
    };
    let (p1, p2) = (pad(&one), pad(&two));
    assert_eq!((p1.len(), p2.len()), (50, 50));
    let distinct: HashSet<[u8; 16]> = p1.iter().chain(&p2).copied().collect();
    assert_eq!(
        distinct.len(),
        100,
        "random keys: no repeats within or across files"
    );
    // Shaped like real keys (so they cannot be told apart): whole days inside the retention
    // period, a confirmed test.
    for k in one.keys.iter().chain(&two.keys) {
        assert_eq!(k.rolling_period, 144);
        assert_eq!(k.rolling_start % 144, 0);
        let day = k.rolling_start as i64 / 144;
        assert!((today - 14..=today).contains(&day), "{day}");
        assert_eq!(k.report_type, ReportType::ConfirmedTest);
    }
}

#[tokio::test]
async fn unlisted_files_are_removed_after_the_grace_period_only() {
    let f = fixture();
    let today = T0.div_euclid(DAY);
    f.upload(&publish_json(&[(1, today - 1)]), T0);
    let r = f.publish(T0).await;
    let old = r.files[0].clone();
    // A file a crashed publication left behind (never recorded): swept once older than the grace.
    std::fs::write(f.public.join("1000-2000-00001.zip"), b"left behind").unwrap();

    // 15 days on, the key left the retention period: the file leaves the index but stays.
    let t1 = T0 + 15 * DAY;
    let r = f.publish(t1).await;
    assert!(!r.index.contains(&old), "{r:?}");
    assert!(
        f.public.join(&old).exists(),
        "still there during the grace period"
    );
    assert!(!f.index().contains(&old));

    // Half the grace period (a day) later: still there.
    let r = f.publish(t1 + DAY / 2).await;
    assert!(r.removed.iter().all(|p| p != &old), "{r:?}");
    assert!(f.public.join(&old).exists());

    // After the grace period: removed, with the stray file.
    let r = f.publish(t1 + DAY + 1).await;
    assert!(r.removed.contains(&old), "{r:?}");
    assert!(!f.public.join(&old).exists());
    assert!(!f.public.join("1000-2000-00001.zip").exists());
    assert!(f.public.join("index.txt").exists());
}

#[tokio::test]
async fn a_revoked_f0_case_goes_out_as_a_signed_revocation_list() {
    let f = fixture();
    let today = T0.div_euclid(DAY);
    let case = f.upload(&f0_json(&[7, 8], today - 1), T0);
    let _other = f.upload(&f0_json(&[9], today - 1), T0);
    let r = f.publish(T0).await;
    assert_eq!(r.f0_entries, 3);

    // Revoked before publication: never published.
    let never = f.upload(&f0_json(&[5], today - 1), T0 + 1);
    f.revoke(never, T0 + 2);
    f.revoke(case, T0 + 3);
    let r = f.publish(T0 + 3600).await;
    assert_eq!((r.f0_entries, r.revoked_f0_keys), (0, 2), "{r:?}");
    assert_eq!(r.files.len(), 1);
    let zip = std::fs::read(f.public.join(&r.files[0])).unwrap();
    // The revocation list is inside the signed JSON: a CDN cannot add or strip one.
    let json = verified_json(&zip, &[f.trusted()], &ExportLimits::DEFAULT).unwrap();
    let revoked = parse_f0_revocations(&json, 1000).unwrap();
    let mut got: Vec<[u8; 32]> = revoked.iter().map(|k| *k.as_bytes()).collect();
    got.sort();
    assert_eq!(got, [[7; 32], [8; 32]]);
    let other_key = ExportSigner::new(
        "452",
        "v1",
        p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng),
    );
    let forged = write_signed_f0(&json, &other_key).unwrap();
    assert!(verified_json(&forged, &[f.trusted()], &ExportLimits::DEFAULT).is_err());
}

/// A static file server for `root` (what a CDN is to devices).
async fn serve_dir(root: PathBuf) -> SocketAddr {
    async fn get(State(root): State<Arc<PathBuf>>, uri: Uri) -> Response {
        let p = uri.path().trim_start_matches('/');
        if p.contains("..") {
            return StatusCode::NOT_FOUND.into_response();
        }
        match std::fs::read(root.join(p)) {
            Ok(b) => b.into_response(),
            Err(_) => StatusCode::NOT_FOUND.into_response(),
        }
    }
    let app = axum::Router::new().fallback(get).with_state(Arc::new(root));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

fn device(dir: &Path, trust: PathBuf) -> Arc<Shared> {
    let (store, _) = Store::init(dir).unwrap();
    let mut c = Config::default();
    c.cases.trust = vec![trust];
    Shared::new(store, c, Arc::new(SystemClock))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poller_imports_only_f0_lists_signed_by_a_trusted_key() {
    let f = fixture();
    let root = f._tmp.path().join("cdn");
    std::fs::create_dir_all(&root).unwrap();
    let today = T0.div_euclid(DAY);
    let plain = f0_json(&[1], today);
    std::fs::write(root.join("plain.json"), &plain).unwrap();
    let stranger = ExportSigner::new(
        "452",
        "v1",
        p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng),
    );
    std::fs::write(
        root.join("stranger.f0.zip"),
        write_signed_f0(&f0_json(&[2], today), &stranger).unwrap(),
    )
    .unwrap();
    std::fs::write(
        root.join("authority.f0.zip"),
        write_signed_f0(&f0_json(&[3], today), &f.auth.signer).unwrap(),
    )
    .unwrap();
    std::fs::write(
        root.join("index.txt"),
        "plain.json\nstranger.f0.zip\nauthority.f0.zip\n",
    )
    .unwrap();
    let addr = serve_dir(root).await;

    let shared = device(
        &f._tmp.path().join("device"),
        f.auth.dir.join("signing-key.pub.pem"),
    );
    let mut p = Poller::new(shared.clone(), &format!("http://{addr}/"))
        .unwrap()
        .without_proxy()
        .unwrap();
    let r = p.poll_once().await.unwrap();
    assert_eq!(
        (r.fetched, r.imported, r.rejected),
        (3, 1, 2),
        "only the authority's list: {r:?}"
    );
    assert_eq!(
        p.state().imported.keys().collect::<Vec<_>>(),
        ["authority.f0.zip"]
    );
    let lists = shared.lock_store().case_lists().unwrap();
    assert_eq!(lists.len(), 1);
    let stored = shared.lock_store().case_list_bytes(lists[0].id).unwrap();
    assert_eq!(
        stored,
        f0_json(&[3], today),
        "the signed f0.json is what is stored"
    );
}
