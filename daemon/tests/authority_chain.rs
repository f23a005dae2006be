//! The whole chain on loopback (README "For health authorities"): `authority init` → `serve` → an
//! official uploads a device's `keys export` output (both formats) → `publish` → the public tree
//! served by a static HTTP server → two devices with `poll.url` import it → the device that logged
//! the case's IDs reports a notifying exposure, the other none → `revoke` → the next publication
//! → the GAEN exposure is withdrawn.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bluezone_protocol::bluezone::SlotsPerDay;
use bluezone_protocol::gaen::{self, Enin, Metadata};
use bluezoned::store::Store;
use serde_json::Value;

mod support;
use support::{bin, http, now, ok, Cli, Running};

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
    Cli::at(dir)
        .config(&format!(
            "[poll]\nurl = \"{url}\"\n[cases]\ntrust = [\"{}\"]\n",
            trust.display()
        ))
        .spawn(&["--radio", "sim"])
}

fn case_lists(dir: &Path) -> usize {
    let o = Cli::at(dir).run(&["cases", "list", "--json"]);
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
    Cli::at(dir).json(&["check", "--json"])
}

fn post(addr: &str, path: &str, token: &str, body: &[u8]) -> (u16, Value) {
    http::post(addr, path, Some(token), body)
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
    Cli::at(&case).init();
    let yesterday = now().div_euclid(86_400) - 1;
    let own = {
        let mut s = Store::open(&case).unwrap();
        s.own_keys_for_day(yesterday, &mut rand::rngs::OsRng)
            .unwrap()
    };
    let f0 = t.path().join("f0.json");
    let zip = t.path().join("keys.zip");
    for (format, out) in [("bluezone-f0", &f0), ("gaen-zip", &zip)] {
        Cli::at(&case).ok(&[
            "keys",
            "export",
            "--days",
            "2",
            "--format",
            format,
            "--yes",
            "--out",
            out.to_str().unwrap(),
        ]);
    }

    // The official uploads both files.
    let (serve, api) = support::authority_serve(&auth);
    let (st, _) = post(&api, "/v1/cases", &token, &std::fs::read(&f0).unwrap());
    assert_eq!(st, 201);
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
        Cli::at(d).init();
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
    let b_tsv = t.path().join("b.tsv");
    Cli::at(&b).ok(&["log", "import", "--format", "tsv", b_tsv.to_str().unwrap()]);

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

    // The official revokes the GAEN case; the next publication withdraws it on B.
    let (st, _) = post(&api, &format!("/v1/cases/{gaen_case}/revoke"), &token, b"");
    assert_eq!(st, 200);
    drop(serve);
    // No wait for the clock: windows are bounded by row ids, and a publication in the same
    // second as the last one ends one second after it, so its files get new names.
    ok(&bin()
        .args(["authority", "publish", "--dir"])
        .arg(&auth)
        .output()
        .unwrap());
    {
        let _db = device(&b, &cdn, &trust);
        wait_for_lists(&b, 3);
    }
    let rb = check(&b);
    let left: Vec<&Value> = rb["exposures"].as_array().unwrap().iter().collect();
    assert!(
        left.iter().all(|e| e["protocol"] == "bluezone"),
        "only the F0 exposure remains: {rb}"
    );
    // The stored GAEN exposure is kept, withdrawn with its reason, and no longer notifies.
    let stored = Store::open(&b).unwrap().exposures().unwrap();
    let gaen_rows: Vec<Value> = stored
        .exposures
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .filter(|e| e["protocol"] == "gaen")
        .collect();
    assert_eq!(gaen_rows.len(), 1, "{gaen_rows:?}");
    assert_eq!(gaen_rows[0]["state"], "withdrawn");
    assert_eq!(gaen_rows[0]["notify"], false);
    assert!(gaen_rows[0]["withdrawn_reason"]
        .as_str()
        .unwrap()
        .contains("revoked"));
}
