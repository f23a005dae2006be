//! The whole chain on loopback (README "For health authorities"): `authority init` → `serve` → an
//! official uploads a device's `keys export` output (both formats) → `publish` → the public tree
//! served by a static HTTP server → two devices with `poll.url` import it → the device that logged
//! the case's IDs reports a notifying exposure, the other none → `revoke` → the next publication
//! → both exposures are withdrawn (GAEN by revised keys, F0 by the signed revocation list). And
//! the same publication to an S3-compatible bucket (moto) that a device polls.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bluezone_protocol::bluezone::SlotsPerDay;
use bluezone_protocol::gaen::{self, Enin, Metadata};
use bluezoned::store::Store;
use serde_json::Value;

mod support;
use support::{bin, http as loopback, now, ok, Running};

/// A static file server for `root` on loopback (what a CDN is to devices): GET only.
fn static_server(root: PathBuf) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) <= 2 {
                    break;
                }
            }
            let path = line
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/');
            let path = path.split('?').next().unwrap_or("");
            let file = (!path.contains("..")).then(|| root.join(path));
            match file.and_then(|f| std::fs::read(f).ok()) {
                Some(body) => {
                    let _ = write!(
                        c,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = c.write_all(&body);
                }
                None => {
                    let _ = write!(
                        c,
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                }
            }
        }
    });
    addr
}

/// A device daemon (simulated radio) that polls the published root and trusts the authority.
fn device(dir: &Path, url: &str, trust: &Path) -> Running {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("bluezoned.toml"),
        format!(
            "[poll]\nurl = \"{url}\"\n[cases]\ntrust = [\"{}\"]\n",
            trust.display()
        ),
    )
    .unwrap();
    Running(
        bin()
            .arg("--data-dir")
            .arg(dir)
            .args(["run", "--radio", "sim"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn case_lists(dir: &Path) -> usize {
    let o = bin()
        .arg("--data-dir")
        .arg(dir)
        .args(["cases", "list", "--json"])
        .output()
        .unwrap();
    serde_json::from_slice::<Value>(&o.stdout)
        .ok()
        .and_then(|v| v["case_lists"].as_array().map(Vec::len))
        .unwrap_or(0)
}

/// Waits (generously: machines are loaded) until the device has imported `n` case lists.
fn wait_for_lists(dir: &Path, n: usize) {
    let t = Instant::now();
    while case_lists(dir) < n {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the device never imported {n} lists"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn check(dir: &Path) -> Value {
    serde_json::from_str(&ok(&bin()
        .arg("--data-dir")
        .arg(dir)
        .args(["check", "--json"])
        .output()
        .unwrap()))
    .unwrap()
}

fn post(addr: &str, path: &str, token: &str, body: &[u8]) -> (u16, Value) {
    loopback::post(addr, path, Some(token), body)
}

#[test]
fn official_to_authority_to_cdn_to_devices_and_revocation() {
    let t = tempfile::tempdir().unwrap();
    let auth = t.path().join("authority");
    ok(&bin()
        .args(["authority", "init", "--dir"])
        .arg(&auth)
        .output()
        .unwrap());
    let token = std::fs::read_to_string(auth.join("official-tokens"))
        .unwrap()
        .lines()
        .find(|l| !l.starts_with('#') && !l.is_empty())
        .unwrap()
        .to_string();

    // The case's device: yesterday's own keys (as its advertiser made them), then `keys export`.
    let case = t.path().join("case");
    ok(&bin()
        .arg("--data-dir")
        .arg(&case)
        .arg("init")
        .output()
        .unwrap());
    let yesterday = now().div_euclid(86_400) - 1;
    let own = {
        let mut s = Store::open(&case).unwrap();
        s.own_keys_for_day(yesterday, &mut rand::rngs::OsRng)
            .unwrap()
    };
    let f0 = t.path().join("f0.json");
    let zip = t.path().join("keys.zip");
    for (format, out) in [("bluezone-f0", &f0), ("gaen-zip", &zip)] {
        ok(&bin()
            .arg("--data-dir")
            .arg(&case)
            .args([
                "keys", "export", "--days", "2", "--format", format, "--yes", "--out",
            ])
            .arg(out)
            .output()
            .unwrap());
    }

    // The official uploads both files.
    let (serve, api) = support::authority_serve(&auth);
    let (st, v) = post(&api, "/v1/cases", &token, &std::fs::read(&f0).unwrap());
    assert_eq!(st, 201, "{v}");
    let f0_case = v["case"].as_i64().unwrap();
    let (st, v) = post(&api, "/v1/cases", &token, &std::fs::read(&zip).unwrap());
    assert_eq!(st, 201, "{v}");
    let gaen_case = v["case"].as_i64().unwrap();
    ok(&bin()
        .args(["authority", "publish", "--dir"])
        .arg(&auth)
        .output()
        .unwrap());

    // Device B sat next to the case yesterday for 25 minutes; device C never met it.
    let b = t.path().join("b");
    let c = t.path().join("c");
    for d in [&b, &c] {
        ok(&bin().arg("--data-dir").arg(d).arg("init").output().unwrap());
    }
    let t0 = yesterday * 86_400 + 10 * 3600;
    let sched = gaen::key_schedule(
        &own.1,
        Enin::from_unix(yesterday * 86_400),
        144,
        Metadata::v1_0(-20),
    );
    let mut log = String::new();
    for m in 0..25 {
        let ts = t0 + m * 60;
        log += &format!("{} -55 {ts}\n", own.0.id(SlotsPerDay::DEFAULT.slot(ts)));
        let (_, rpi, _) =
            sched[Enin::from_unix(ts).0 as usize - Enin::from_unix(yesterday * 86_400).0 as usize];
        log += &format!("{rpi} -60 {ts}\n");
    }
    std::fs::write(t.path().join("b.tsv"), log).unwrap();
    ok(&bin()
        .arg("--data-dir")
        .arg(&b)
        .args(["log", "import", "--format", "tsv"])
        .arg(t.path().join("b.tsv"))
        .output()
        .unwrap());

    let cdn = format!("http://{}/", static_server(auth.join("public")));
    let trust = auth.join("signing-key.pub.pem");
    {
        let _db = device(&b, &cdn, &trust);
        let _dc = device(&c, &cdn, &trust);
        wait_for_lists(&b, 2);
        wait_for_lists(&c, 2);
    }
    let rb = check(&b);
    let notifying: Vec<&Value> = rb["exposures"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["notify"] == true)
        .collect();
    assert_eq!(notifying.len(), 2, "both protocols notify on B: {rb}");
    assert_eq!(check(&c)["exposures"].as_array().unwrap().len(), 0);

    // The official revokes both cases; the next publication withdraws both exposures on B: the
    // GAEN one through revised keys (REVOKED), the F0 one through the signed F0 file's
    // revocation list.
    for case in [gaen_case, f0_case] {
        let (st, _) = post(&api, &format!("/v1/cases/{case}/revoke"), &token, b"");
        assert_eq!(st, 200);
    }
    drop(serve);
    std::thread::sleep(Duration::from_millis(1100)); // a new window end second
    ok(&bin()
        .args(["authority", "publish", "--dir"])
        .arg(&auth)
        .output()
        .unwrap());
    {
        let _db = device(&b, &cdn, &trust);
        wait_for_lists(&b, 4);
    }
    let rb = check(&b);
    assert_eq!(
        rb["exposures"].as_array().unwrap().len(),
        0,
        "revoked keys match nothing: {rb}"
    );
    // The stored exposures are kept, withdrawn with their reason, and no longer notify.
    let stored = Store::open(&b).unwrap().exposures().unwrap();
    let rows: Vec<Value> = stored
        .exposures
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for protocol in ["gaen", "bluezone"] {
        let row = rows.iter().find(|e| e["protocol"] == protocol).unwrap();
        assert_eq!(row["state"], "withdrawn", "{row}");
        assert_eq!(row["notify"], false);
        assert!(row["withdrawn_reason"]
            .as_str()
            .unwrap()
            .contains("revoked"));
    }
}

/// A moto S3 server (`python3 -m moto.server`, from PyPI, installed by `.ci/run`) on loopback;
/// killed on drop.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The interpreter that has moto: `BLUEZONED_MOTO_PYTHON`, else `python3` on PATH (the one
/// `.ci/run` installs moto into).
fn moto_python() -> String {
    std::env::var("BLUEZONED_MOTO_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Starts moto, or returns None (with a loud message) when it is not installed outside CI. In CI
/// (`CI` set) or with `BLUEZONED_REQUIRE_S3_TESTS` a missing moto fails the test.
fn start_moto() -> Option<Moto> {
    let python = moto_python();
    let has_moto = Command::new(&python)
        .args(["-c", "import moto.server"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_moto {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(
            !ci && std::env::var_os("BLUEZONED_REQUIRE_S3_TESTS").is_none(),
            "CI (or BLUEZONED_REQUIRE_S3_TESTS) is set but `{python} -c 'import moto.server'` fails: .ci/run installs moto[server]"
        );
        eprintln!(
            "\n\n*** SKIPPED: the S3 output test needs moto (`{python} -m pip install 'moto[server]'`) ***\n\n"
        );
        return None;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&python)
        .args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let moto = Moto {
        child,
        endpoint: format!("127.0.0.1:{port}"),
    };
    let t = Instant::now();
    while http(&moto.endpoint, "GET", "/", b"").0 == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "moto did not start on {}",
            moto.endpoint
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Some(moto)
}

/// One plain HTTP/1.1 request; status 0 when nothing answers.
fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return (0, Vec::new());
    };
    if write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .and_then(|()| s.write_all(body))
    .is_err()
    {
        return (0, Vec::new());
    }
    let mut resp = Vec::new();
    if s.read_to_end(&mut resp).is_err() || resp.len() < 12 {
        return (0, Vec::new());
    }
    let status = std::str::from_utf8(&resp[9..12])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let at = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(resp.len(), |i| i + 4);
    (status, resp[at..].to_vec())
}

/// `authority publish --out s3://…` against a real S3-compatible server: the files and
/// `index.txt` land in the bucket under the prefix, a device polling the bucket's HTTP endpoint
/// imports them, and an object no index lists is swept once older than the grace period.
#[test]
fn publishing_to_an_s3_bucket_reaches_a_polling_device() {
    let Some(moto) = start_moto() else { return };
    let t = tempfile::tempdir().unwrap();
    let auth = t.path().join("authority");
    ok(&bin()
        .args(["authority", "init", "--dir"])
        .arg(&auth)
        .output()
        .unwrap());
    // No grace: a stray object is swept as soon as it is a second old.
    let cfg = std::fs::read_to_string(auth.join("authority.toml")).unwrap();
    std::fs::write(
        auth.join("authority.toml"),
        cfg.replace("grace_s = 86400", "grace_s = 0"),
    )
    .unwrap();
    let token = std::fs::read_to_string(auth.join("official-tokens"))
        .unwrap()
        .lines()
        .find(|l| !l.starts_with('#') && !l.is_empty())
        .unwrap()
        .to_string();
    assert_eq!(http(&moto.endpoint, "PUT", "/bluezone", b"").0, 200);
    // Publications are public: the operator's bucket policy lets anyone read them (as a CDN's
    // origin would).
    let policy = br#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::bluezone/*"}]}"#;
    assert_eq!(
        http(&moto.endpoint, "PUT", "/bluezone?policy", policy).0,
        200
    );
    let stray = "/bluezone/v1/keys/1000-2000-00001.zip";
    assert_eq!(http(&moto.endpoint, "PUT", stray, b"left behind").0, 200);

    // Uploads: a device's F0 export and a GAEN key set.
    let (serve, api) = support::authority_serve(&auth);
    let day = now().div_euclid(86_400) - 1;
    let f0 = format!(
        "{{\"data\":[{{\"daily_key\":\"{}\",\"time_start\":{},\"time_end\":{},\"max\":96}}]}}",
        "ab".repeat(32),
        day * 86_400,
        day * 86_400 + 86_399
    );
    assert_eq!(post(&api, "/v1/cases", &token, f0.as_bytes()).0, 201);
    let gaen = format!(
        "{{\"temporaryExposureKeys\":[{{\"key\":\"AAECAwQFBgcICQoLDA0ODw==\",\"rollingStartNumber\":{},\"rollingPeriod\":144,\"transmissionRisk\":5}}]}}",
        day * 144
    );
    assert_eq!(post(&api, "/v1/cases", &token, gaen.as_bytes()).0, 201);
    drop(serve);

    let publish = || {
        let o = bin()
            .args([
                "authority",
                "publish",
                "--json",
                "--out",
                "s3://bluezone/v1/keys",
                "--dir",
            ])
            .arg(&auth)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", format!("http://{}", moto.endpoint))
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .output()
            .unwrap();
        serde_json::from_str::<Value>(&ok(&o)).unwrap()
    };
    let r = publish();
    let files: Vec<String> = r["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    assert_eq!(files.len(), 2, "{r}");
    let (st, body) = http(&moto.endpoint, "GET", "/bluezone/v1/keys/index.txt", b"");
    assert_eq!(st, 200);
    let listed: Vec<String> = String::from_utf8(body)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(listed, files);
    for f in &files {
        let (st, body) = http(
            &moto.endpoint,
            "GET",
            &format!("/bluezone/v1/keys/{f}"),
            b"",
        );
        assert_eq!(st, 200, "{f}");
        assert!(body.starts_with(b"PK"), "{f} is a zip");
    }
    assert!(
        !auth.join("public/index.txt").exists(),
        "nothing published to the local directory"
    );

    // A device polls the bucket's HTTP endpoint (what a CDN in front of it serves).
    let dev = t.path().join("device");
    ok(&bin()
        .arg("--data-dir")
        .arg(&dev)
        .arg("init")
        .output()
        .unwrap());
    {
        let _d = device(
            &dev,
            &format!("http://{}/bluezone/v1/keys/", moto.endpoint),
            &auth.join("signing-key.pub.pem"),
        );
        wait_for_lists(&dev, 2);
    }

    // The stray object: swept once it is older than the (zero) grace period; the listed stay.
    let t0 = Instant::now();
    while http(&moto.endpoint, "GET", stray, b"").0 != 404 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the stray object was never removed"
        );
        std::thread::sleep(Duration::from_millis(500));
        publish();
    }
    for f in &files {
        let path = format!("/bluezone/v1/keys/{f}");
        assert_eq!(http(&moto.endpoint, "GET", &path, b"").0, 200, "{f}");
    }
}
