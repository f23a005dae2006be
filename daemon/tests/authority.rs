//! The health authority's commands as an authority runs them: `authority init`, `serve` (the
//! officials' API on loopback), `publish`, and a publication killed between its files and its index.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bluezone_protocol::bluezone::f0::write_f0;
use bluezone_protocol::bluezone::signed::parse_signed_f0;
use bluezone_protocol::bluezone::{F0Entry, F0List, SlotsPerDay};
use bluezone_protocol::gaen::export::{
    parse_export, write_export, ExportFile, ExportKey, ExportLimits, ReportType, TrustedKey,
};
use bluezone_protocol::ids::{DailyKey, Tek};
use serde_json::Value;

mod support;
use support::{bin, http, now, ok, signer, Running};

fn init(dir: &Path) -> String {
    ok(&bin()
        .args(["authority", "init", "--dir"])
        .arg(dir)
        .output()
        .unwrap());
    token(dir)
}

fn token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("official-tokens"))
        .unwrap()
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .unwrap()
        .trim()
        .to_string()
}

fn trusted(dir: &Path) -> TrustedKey {
    let pem = std::fs::read_to_string(dir.join("signing-key.pub.pem")).unwrap();
    TrustedKey::from_pem("452", "v1", &pem).unwrap()
}

/// A running `authority serve`; killed on drop.
struct Server {
    _child: Running,
    addr: String,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let (child, addr) = support::authority_serve(dir);
        Server {
            _child: child,
            addr,
        }
    }

    /// One HTTP/1.1 request on its own connection (`Connection: close`).
    fn post(&self, path: &str, token: Option<&str>, body: Vec<u8>) -> (u16, Value) {
        http::post(&self.addr, path, token, &body)
    }
}

fn f0_body(seed: u8) -> Vec<u8> {
    let day = support::now().div_euclid(86_400) - 1;
    write_f0(&F0List {
        entries: vec![F0Entry {
            daily_key: DailyKey::from_bytes([seed; 32]),
            time_start: day * 86_400,
            time_end: day * 86_400 + 86_399,
            max: SlotsPerDay::DEFAULT,
        }],
    })
    .into_bytes()
}

fn gaen_body(seed: u8, n: usize) -> Vec<u8> {
    let day = support::now().div_euclid(86_400) - 1;
    let signer = signer("device", "1", 9);
    let keys = (0..n)
        .map(|i| ExportKey {
            report_type: ReportType::ConfirmedTest,
            ..ExportKey::new(
                Tek::from_bytes([seed.wrapping_add(i as u8); 16]),
                ((day - i as i64) * 144) as u32,
            )
        })
        .collect();
    let file = ExportFile {
        region: "VN".into(),
        batch_num: 1,
        batch_size: 1,
        keys,
        ..ExportFile::default()
    };
    write_export(&file, &signer).unwrap()
}

fn publish(dir: &Path) -> Value {
    let out = ok(&bin()
        .args(["authority", "publish", "--json", "--dir"])
        .arg(dir)
        .output()
        .unwrap());
    serde_json::from_str(&out).unwrap()
}

fn index(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("public/index.txt"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn init_creates_private_files_and_changes_nothing_the_second_time() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("auth");
    let tok = init(&dir);
    assert!(tok.len() >= 32, "token of at least 128 bits");
    let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir.clone()), 0o700);
    assert_eq!(mode(dir.join("signing-key.pem")), 0o600);
    assert_eq!(mode(dir.join("official-tokens")), 0o600);
    let cfg = std::fs::read_to_string(dir.join("authority.toml")).unwrap();
    assert!(
        cfg.contains("region = \"VN\"")
            && cfg.contains("key_id = \"452\"")
            && cfg.contains("key_version = \"v1\"")
    );
    let key_before = std::fs::read(dir.join("signing-key.pem")).unwrap();
    let out = bin()
        .args(["authority", "init", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing changed"));
    assert_eq!(
        std::fs::read(dir.join("signing-key.pem")).unwrap(),
        key_before
    );
    assert_eq!(token(&dir), tok);

    let custom = t.path().join("custom");
    let out = bin()
        .args([
            "authority",
            "init",
            "--region",
            "TH",
            "--key-id",
            "520",
            "--key-version",
            "v2",
            "--dir",
        ])
        .arg(&custom)
        .output()
        .unwrap();
    assert!(out.status.success());
    let cfg = std::fs::read_to_string(custom.join("authority.toml")).unwrap();
    assert!(cfg.contains("\"TH\"") && cfg.contains("\"520\"") && cfg.contains("\"v2\""));
}

#[test]
fn officials_api_answers_each_case_with_the_right_status() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("auth");
    let tok = init(&dir);
    let s = Server::start(&dir);

    assert_eq!(s.post("/v1/cases", None, f0_body(1)).0, 401);
    assert_eq!(
        s.post(
            "/v1/cases",
            Some("0123456789abcdef0123456789abcdef"),
            f0_body(1)
        )
        .0,
        401
    );

    let (st, v) = s.post("/v1/cases", Some(&tok), f0_body(1));
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["keys"], 1);
    let case = v["case"].as_i64().unwrap();
    let (st, v) = s.post("/v1/cases", Some(&tok), f0_body(1));
    assert_eq!(
        (st, v["case"].as_i64().unwrap()),
        (200, case),
        "the same body: the same case"
    );

    let (st, v) = s.post("/v1/cases", Some(&tok), gaen_body(10, 3));
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["keys"], 3);

    let zip = gaen_body(20, 3);
    let (st, v) = s.post("/v1/cases", Some(&tok), zip[..zip.len() / 2].to_vec());
    assert_eq!(st, 400);
    assert!(v["error"].as_str().unwrap().contains("GAEN export"), "{v}");
    let (st, v) = s.post(
        "/v1/cases",
        Some(&tok),
        b"{\"temporaryExposureKeys\": [".to_vec(),
    );
    assert_eq!(st, 400);
    assert!(
        v["error"].as_str().unwrap().contains("publish JSON")
            || v["error"].as_str().unwrap().contains("neither"),
        "{v}"
    );
    let (st, v) = s.post(
        "/v1/cases",
        Some(&tok),
        b"{\"data\": [{\"daily_key\": \"zz\"}]}".to_vec(),
    );
    assert_eq!(st, 400, "{v}");

    // 10^6 keys as publish JSON (~70 MB): refused on its Content-Length, before the body is read.
    let key = "\"AAAAAAAAAAAAAAAAAAAAAA==\"";
    let mut big = String::from("{\"temporaryExposureKeys\":[");
    for i in 0..1_000_000 {
        if i > 0 {
            big.push(',');
        }
        big.push_str(&format!("{{\"key\":{key},\"rollingStartNumber\":{i}}}"));
    }
    big.push_str("]}");
    let mut sock = std::net::TcpStream::connect(&s.addr).unwrap();
    write!(
        sock,
        "POST /v1/cases HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {tok}\r\nContent-Length: {}\r\n\r\n",
        s.addr,
        big.len()
    )
    .unwrap();
    let _ = sock.write_all(&big.as_bytes()[..1 << 16]);
    let mut resp = String::new();
    let _ = sock.read_to_string(&mut resp);
    assert!(
        resp.starts_with("HTTP/1.1 413"),
        "{}",
        &resp[..resp.len().min(200)]
    );

    assert_eq!(s.post("/v1/cases/999/revoke", Some(&tok), vec![]).0, 404);
    assert_eq!(
        s.post(&format!("/v1/cases/{case}/revoke"), None, vec![]).0,
        401
    );
    assert_eq!(
        s.post(&format!("/v1/cases/{case}/revoke"), Some(&tok), vec![])
            .0,
        200
    );
}

/// One request with the given `Host` header: the status and the JSON body.
fn post_with_host(addr: &str, host: &str, path: &str, token: &str, body: &[u8]) -> (u16, Value) {
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    write!(
        sock,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    sock.write_all(body).unwrap();
    let mut resp = String::new();
    sock.read_to_string(&mut resp).unwrap();
    let status = resp[9..12].parse().unwrap();
    let json = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(json).unwrap_or(Value::Null))
}

/// Security M2 for the authority API (DNS rebinding): a request whose `Host` is neither a loopback
/// name nor the listen address gets 421 and stores nothing, even with a valid token; `localhost`
/// and the literal listen address are answered.
#[test]
fn foreign_host_headers_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("auth");
    let tok = init(&dir);
    let s = Server::start(&dir);
    let port = s.addr.rsplit_once(':').unwrap().1.to_string();
    for host in [
        format!("attacker.example:{port}"),
        "evil.test".to_string(),
        format!("127.0.0.1.nip.io:{port}"),
    ] {
        let (st, v) = post_with_host(&s.addr, &host, "/v1/cases", &tok, &f0_body(1));
        assert_eq!(st, 421, "{host}: {v}");
        assert!(v["error"].as_str().unwrap().contains("Host"), "{v}");
        let (st, _) = post_with_host(&s.addr, &host, "/v1/cases/1/revoke", &tok, b"");
        assert_eq!(st, 421, "{host}");
    }
    // 201, not 200: none of the refused uploads was stored.
    let (st, v) = post_with_host(
        &s.addr,
        &format!("localhost:{port}"),
        "/v1/cases",
        &tok,
        &f0_body(1),
    );
    assert_eq!(st, 201, "a new case: {v}");
    for host in [
        s.addr.clone(),
        "LOCALHOST".to_string(),
        "127.0.0.1".to_string(),
    ] {
        let (st, v) = post_with_host(&s.addr, &host, "/v1/cases", &tok, &f0_body(1));
        assert_eq!(st, 200, "{host}: the same case again: {v}");
    }
}

#[test]
fn publication_signs_batches_and_revocations_reach_the_next_one() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("auth");
    let tok = init(&dir);
    let key = trusted(&dir);
    let (gaen_case, f0_case);
    {
        let s = Server::start(&dir);
        let (_, v) = s.post("/v1/cases", Some(&tok), gaen_body(40, 4));
        gaen_case = v["case"].as_i64().unwrap();
        let (_, v) = s.post("/v1/cases", Some(&tok), f0_body(7));
        f0_case = v["case"].as_i64().unwrap();
    }
    assert_ne!(gaen_case, f0_case);
    let r = publish(&dir);
    assert_eq!(r["gaen_keys"], 4);
    assert_eq!(r["f0_entries"], 1);
    let files = index(&dir);
    assert_eq!(files.len(), 2, "{files:?}");
    let zip = std::fs::read(dir.join("public").join(&files[0])).unwrap();
    let e = parse_export(&zip, std::slice::from_ref(&key), &ExportLimits::DEFAULT)
        .expect("signed by the authority");
    assert!(e.is_verified());
    assert_eq!(e.file.keys.len(), 4);
    assert_eq!((e.file.batch_num, e.file.batch_size), (1, 1));
    assert_eq!(e.file.region, "VN");
    let sorted = e
        .file
        .keys
        .windows(2)
        .all(|w| w[0].tek.as_bytes() <= w[1].tek.as_bytes());
    assert!(sorted, "keys sorted");
    let f0 = std::fs::read(dir.join("public").join(&files[1])).unwrap();
    let v = parse_signed_f0(
        &f0,
        std::slice::from_ref(&key),
        &ExportLimits::DEFAULT,
        &Default::default(),
    )
    .unwrap();
    assert_eq!(v.parsed.list.entries.len(), 1);

    // Nothing new: nothing published, the index unchanged.
    let r = publish(&dir);
    assert_eq!(r["files"].as_array().unwrap().len(), 0);
    assert_eq!(index(&dir), files);

    // Revoke: the next publication carries the keys as revised keys, REVOKED.
    {
        let s = Server::start(&dir);
        assert_eq!(
            s.post(&format!("/v1/cases/{gaen_case}/revoke"), Some(&tok), vec![])
                .0,
            200
        );
    }
    let r = publish(&dir);
    assert_eq!(r["revised_keys"], 4);
    let files2 = index(&dir);
    assert_eq!(files2.len(), 3);
    assert_eq!(
        &files2[..2],
        &files[..],
        "older files stay listed, newest last"
    );
    let zip = std::fs::read(dir.join("public").join(&files2[2])).unwrap();
    let e = parse_export(&zip, &[key], &ExportLimits::DEFAULT).unwrap();
    assert!(e.file.keys.is_empty());
    assert_eq!(e.file.revised_keys.len(), 4);
    assert!(e
        .file
        .revised_keys
        .iter()
        .all(|k| k.report_type == ReportType::Revoked));
}

/// Set (to the authority's directory) in the child process of the crash test below.
const CRASH_CHILD_ENV: &str = "BLUEZONED_TEST_PUBLISH_CHILD";
const CRASH_TEST: &str =
    "a_publication_killed_before_its_index_leaves_the_old_index_and_the_next_completes";

/// The crash test's child role: publish as `authority publish` does, and die (SIGKILL, no
/// unwinding, no further write) at the moment the files are written and the index is not.
fn publish_and_die_before_the_index(dir: &Path) -> ! {
    use bluezoned::authority::{db::Db, output::Output, publish, Authority};
    let auth = Authority::open(dir).unwrap();
    let out = Output::parse(&auth.out_location(None)).unwrap();
    let db = std::sync::Mutex::new(Db::open(&auth.database_path()).unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(publish::publish_observed(
        &auth,
        &db,
        &out,
        support::now(),
        |step| {
            if step == publish::Step::FilesWritten {
                // SAFETY: kill(2) on this very process; SIGKILL cannot be caught.
                unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            }
        },
    ));
    panic!("the publication ended without reaching its files-written step: {result:?}");
}

#[test]
fn a_publication_killed_before_its_index_leaves_the_old_index_and_the_next_completes() {
    if let Some(dir) = std::env::var_os(CRASH_CHILD_ENV) {
        publish_and_die_before_the_index(Path::new(&dir));
    }
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("auth");
    let tok = init(&dir);
    {
        let s = Server::start(&dir);
        s.post("/v1/cases", Some(&tok), gaen_body(60, 2));
    }
    publish(&dir);
    let before = std::fs::read(dir.join("public/index.txt")).unwrap();
    {
        let s = Server::start(&dir);
        assert_eq!(s.post("/v1/cases", Some(&tok), gaen_body(80, 2)).0, 201);
    }
    // The publication runs in a child process (this test binary again, in the child role),
    // which kills itself with SIGKILL once its files are written and before its index.
    let status = Command::new(std::env::current_exe().unwrap())
        .args([CRASH_TEST, "--exact", "--test-threads=1"])
        .env(CRASH_CHILD_ENV, &dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the child publication died at its step: {status}"
    );
    let zips = std::fs::read_dir(dir.join("public"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".zip")
        })
        .count();
    assert_eq!(zips, 2, "the new file was written");
    assert_eq!(
        std::fs::read(dir.join("public/index.txt")).unwrap(),
        before,
        "the old index stays valid"
    );
    let r = publish(&dir);
    assert_eq!(
        r["gaen_keys"], 2,
        "the interrupted window is published again"
    );
    assert_eq!(index(&dir).len(), 2);
}

/// Waits (generously: machines are loaded) until `index.txt` lists at least `n` files.
fn wait_for_index(dir: &Path, n: usize) -> Vec<String> {
    let t = std::time::Instant::now();
    loop {
        let files = index(dir);
        if files.len() >= n {
            return files;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(60),
            "index.txt never listed {n} file(s): {files:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn serve_publishes_on_its_schedule() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("auth");
    let tok = init(&dir);
    let cfg = std::fs::read_to_string(dir.join("authority.toml")).unwrap();
    assert!(cfg.contains("interval_s = 3600"), "{cfg}");
    std::fs::write(
        dir.join("authority.toml"),
        cfg.replace("interval_s = 3600", "interval_s = 1"),
    )
    .unwrap();
    let s = Server::start(&dir);
    assert_eq!(s.post("/v1/cases", Some(&tok), gaen_body(90, 2)).0, 201);
    let files = wait_for_index(&dir, 1);
    let zip = std::fs::read(dir.join("public").join(&files[0])).unwrap();
    let e = parse_export(&zip, &[trusted(&dir)], &ExportLimits::DEFAULT).unwrap();
    assert_eq!(e.file.keys.len(), 2);
    // A later upload goes out in a later scheduled publication, without any signal.
    assert_eq!(s.post("/v1/cases", Some(&tok), f0_body(91)).0, 201);
    let files = wait_for_index(&dir, 2);
    assert!(files[1].ends_with(".f0.zip"), "{files:?}");
}

#[test]
fn sighup_publishes_at_once() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("auth");
    let tok = init(&dir);
    // The default hour-long interval: only the signal can publish within this test.
    let s = Server::start(&dir);
    assert_eq!(s.post("/v1/cases", Some(&tok), gaen_body(100, 3)).0, 201);
    assert!(
        index(&dir).is_empty(),
        "nothing published before the signal"
    );
    assert_eq!(
        unsafe { libc::kill(s._child.0.id() as libc::pid_t, libc::SIGHUP) },
        0
    );
    let files = wait_for_index(&dir, 1);
    assert_eq!(files.len(), 1);
    let zip = std::fs::read(dir.join("public").join(&files[0])).unwrap();
    let e = parse_export(&zip, &[trusted(&dir)], &ExportLimits::DEFAULT).unwrap();
    assert_eq!(e.file.keys.len(), 3);
    // The server keeps serving after the signal.
    assert_eq!(s.post("/v1/cases", Some(&tok), gaen_body(110, 1)).0, 201);
}

#[test]
fn the_audit_log_names_a_token_digest_time_and_key_count_never_the_token_or_keys() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("auth");
    let tok = init(&dir);
    let before = now();
    let body = gaen_body(120, 3);
    let case;
    {
        let s = Server::start(&dir);
        let (st, v) = s.post("/v1/cases", Some(&tok), body.clone());
        assert_eq!(st, 201, "{v}");
        case = v["case"].as_i64().unwrap();
        assert_eq!(s.post("/v1/cases", Some(&tok), body.clone()).0, 200);
        assert_eq!(
            s.post(&format!("/v1/cases/{case}/revoke"), Some(&tok), vec![])
                .0,
            200
        );
        // Refused uploads leave no audit row.
        assert_eq!(s.post("/v1/cases", Some("wrong"), f0_body(1)).0, 401);
    }
    let after = now();
    let db = bluezoned::authority::db::Db::open(&dir.join("authority.sqlite3")).unwrap();
    let rows = db.audit().unwrap();
    let actions: Vec<(&str, i64, usize)> = rows
        .iter()
        .map(|r| (r.action.as_str(), r.case, r.keys))
        .collect();
    assert_eq!(
        actions,
        [
            ("upload", case, 3),
            ("upload-again", case, 3),
            ("revoke", case, 3)
        ]
    );
    // The token's id: 8 bytes (16 hex) derived from the token, the same for each row.
    let id = &rows[0].token_id;
    assert_eq!(id.len(), 16, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(rows.iter().all(|r| &r.token_id == id));
    assert!(rows.iter().all(|r| (before..=after).contains(&r.time)));
    // Nothing in the audit table is the token or a key (any part of it, in any encoding).
    let conn = rusqlite_dump(&dir.join("authority.sqlite3"));
    assert!(!conn.contains(&tok), "the token is not in the audit log");
    assert!(!conn.contains(&tok[..16]));
    let e = parse_export(&body, &[], &ExportLimits::DEFAULT).unwrap();
    for k in &e.file.keys {
        let hex: String = k
            .tek
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(!conn.to_ascii_lowercase().contains(&hex[..12]), "{conn}");
    }
}

/// Every column of every audit row as text, read with SQLite directly (so a column the `Db` API
/// does not show is checked too).
fn rusqlite_dump(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut q = conn.prepare("SELECT * FROM audit").unwrap();
    let n = q.column_count();
    let mut out = String::new();
    let mut rows = q.query([]).unwrap();
    while let Some(r) = rows.next().unwrap() {
        for i in 0..n {
            let v: rusqlite::types::Value = r.get(i).unwrap();
            out += &format!("{v:?}|");
        }
        out.push('\n');
    }
    assert!(!out.is_empty());
    out
}
