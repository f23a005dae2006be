//! The `bluezoned` binary as a process: `run --radio sim` in real time, killed and stopped, and
//! working alongside the CLI run from other processes. Readiness and watchdog pings are read
//! from a test-owned `NOTIFY_SOCKET`, as systemd would read them.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bluezoned::store::Store;

mod support;
use support::{bin, write_private, Cli, BIN};

/// A fast-cycling configuration so a few seconds produce many acknowledged batches.
const FAST: &str = r#"
[radio]
scan_interval_ms = 500
scan_window_ms = 250
dedup_s = 1
[store]
flush_interval_ms = 100
"#;

/// The owner token of the daemons these tests start with an API.
const OWNER: &str = "e2e-owner-token-0123456789abcdef0123";

/// One HTTP/1.1 GET on the daemon's Unix-socket API: the status and the body; `None` while
/// nothing answers there (not started yet, or gone).
fn api_get(sock: &Path, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut s = std::os::unix::net::UnixStream::connect(sock).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).ok()?;
    let text = String::from_utf8(resp).ok()?;
    let status = text.get(9..12)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// Polls the API until `/v1/status` answers 200 (the daemon is up and serving); its JSON.
fn wait_api(sock: &Path, child: &mut Child) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((200, body)) = api_get(sock, "/v1/status", None) {
            return serde_json::from_str(&body).unwrap();
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("daemon exited ({status}) before its API answered");
        }
        assert!(Instant::now() < deadline, "no API answer within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `[api]` on a Unix socket in `dir`, with [`OWNER`] as the owner token (file beside it).
fn api_config(dir: &Path) -> (String, PathBuf) {
    let sock = dir.join("api.sock");
    let tokens = dir.join("owner.tokens");
    write_private(&tokens, &format!("{OWNER}\n"));
    let toml = format!(
        "[api]\nlisten = \"unix:{}\"\nowner_token_file = \"{}\"\n",
        sock.display(),
        tokens.display()
    );
    (toml, sock)
}

struct Daemon {
    child: Child,
    /// Every new value of `bluezoned_sightings_stored_total` read from `/metrics`, in order:
    /// sightings the daemon counted only after the store committed them.
    acks: mpsc::Receiver<u64>,
}

fn start(dir: &Path) -> Daemon {
    std::fs::create_dir_all(dir).unwrap();
    let (api, sock) = api_config(dir);
    std::fs::write(dir.join("bluezoned.toml"), format!("{FAST}{api}")).unwrap();
    let mut child = bin()
        .args(["--data-dir", dir.to_str().unwrap(), "run", "--radio", "sim"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_api(&sock, &mut child);
    let (tx, acks) = mpsc::channel();
    std::thread::spawn(move || {
        let mut last = None;
        // Ends when the daemon no longer answers (killed or stopped) or the test is done.
        while let Some((200, text)) = api_get(&sock, "/metrics", Some(OWNER)) {
            let total =
                text.lines()
                    .find_map(|l| l.strip_prefix("bluezoned_sightings_stored_total "))
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .expect("bluezoned_sightings_stored_total in /metrics") as u64;
            if last != Some(total) {
                last = Some(total);
                if tx.send(total).is_err() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    Daemon { child, acks }
}

/// Waits until the daemon acknowledged at least `n` sightings; returns the latest total.
fn wait_acked(d: &Daemon, n: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = 0;
    while last < n {
        let left = deadline.saturating_duration_since(Instant::now());
        last = d
            .acks
            .recv_timeout(left)
            .expect("daemon stopped acknowledging sightings");
    }
    last
}

fn stored(dir: &std::path::Path) -> usize {
    let store = Store::open(dir).unwrap();
    let days = store.sighting_days().unwrap();
    let (a, b) = (days[0], days[days.len() - 1]);
    let out = store.sightings_in_days(a, b).unwrap();
    assert_eq!(out.corrupt, 0);
    out.sightings.len()
}

#[test]
fn sigkill_loses_no_acknowledged_sighting() {
    let tmp = tempfile::tempdir().unwrap();
    for round in 0..3u64 {
        let dir = tmp.path().join(format!("round{round}"));
        let mut d = start(&dir);
        let mut acked = wait_acked(&d, 10 + round * 7);
        // Kill at a moment unrelated to the flush cadence.
        std::thread::sleep(Duration::from_millis(37 * (round + 1)));
        while let Ok(t) = d.acks.try_recv() {
            acked = t;
        }
        unsafe { libc::kill(d.child.id() as i32, libc::SIGKILL) };
        d.child.wait().unwrap();
        // Totals read after the last one above (before the kill) can only raise the bar.
        while let Ok(t) = d.acks.try_recv() {
            acked = t;
        }
        let n = stored(&dir) as u64;
        assert!(
            n >= acked,
            "round {round}: {n} stored < {acked} acknowledged"
        );
        let store = Store::open(&dir).unwrap();
        drop(store);
    }
}

#[test]
fn sigterm_flushes_and_exits_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let mut d = start(&dir);
    wait_acked(&d, 5);
    unsafe { libc::kill(d.child.id() as i32, libc::SIGTERM) };
    let status = d.child.wait().unwrap();
    assert!(status.success(), "{status}");
    let mut acked = 0;
    while let Ok(t) = d.acks.try_recv() {
        acked = t;
    }
    assert!(stored(&dir) as u64 >= acked);
}

#[test]
fn a_bad_config_key_is_a_startup_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("bluezoned.toml"),
        "[radio]\nscan_windw_ms = 5\n",
    )
    .unwrap();
    let out = bin()
        .args([
            "--data-dir",
            tmp.path().to_str().unwrap(),
            "run",
            "--radio",
            "sim",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("scan_windw_ms"), "{err}");
}

/// `run --radio bluez` where there is no Bluetooth stack: a clean, quick, named failure.
#[test]
fn run_with_bluez_fails_cleanly_without_bluetoothd() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    let run = |bus: &str| {
        let t = Instant::now();
        let out = bin()
            .args([
                "--data-dir",
                data.to_str().unwrap(),
                "run",
                "--radio",
                "bluez",
            ])
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus)
            .output()
            .unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "took {:?}",
            t.elapsed()
        );
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let missing = format!("unix:path={}", tmp.path().join("no-bus").display());
    let err = run(&missing);
    assert!(err.contains("D-Bus"), "{err}");

    // A system bus with nobody on it: bluetoothd is named. Needs dbus-daemon (CI installs it).
    if Command::new("dbus-daemon")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: dbus-daemon not installed");
        return;
    }
    let sock = tmp.path().join("bus");
    let conf = tmp.path().join("bus.conf");
    std::fs::write(
        &conf,
        format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>system</type><listen>unix:path={}</listen>
<policy context="default"><allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/><allow own="*"/></policy>
</busconfig>"#,
            sock.display()
        ),
    )
    .unwrap();
    let mut bus = Command::new("dbus-daemon")
        .arg(format!("--config-file={}", conf.display()))
        .arg("--nofork")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sock.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = run(&format!("unix:path={}", sock.display()));
    let _ = bus.kill();
    let _ = bus.wait();
    assert!(err.contains("bluetoothd"), "{err}");
}

/// A datagram socket standing in for systemd's `NOTIFY_SOCKET`.
struct Notify {
    sock: std::os::unix::net::UnixDatagram,
    path: std::path::PathBuf,
}

impl Notify {
    fn bind(dir: &std::path::Path) -> Notify {
        let path = dir.join("notify.sock");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        Notify { sock, path }
    }

    /// Waits (generously: machines are loaded) for a message containing `what`.
    fn wait_for(&self, what: &str, child: &mut Child) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.sock.recv(&mut buf) {
                if String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .any(|l| l == what)
                {
                    return;
                }
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("daemon exited ({status}) before sending {what}");
            }
        }
        panic!("no {what} from the daemon within 120 s");
    }
}

fn cli(dir: &std::path::Path, args: &[&str]) -> String {
    Cli::at(dir).ok(args)
}

/// Starts `run --radio sim` with a notify socket; `WATCHDOG_PID` must be the daemon's own pid,
/// so it is started through `sh -c 'exec'` to learn it.
fn start_notified(dir: &std::path::Path, notify: &Notify, watchdog_usec: Option<u64>) -> Child {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"if [ -n "$WD_USEC" ]; then export WATCHDOG_USEC="$WD_USEC" WATCHDOG_PID=$$; fi; exec "$@""#)
        .arg("sh")
        .arg(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(["run", "--radio", "sim"])
        .env("NOTIFY_SOCKET", &notify.path)
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(u) = watchdog_usec {
        cmd.env("WD_USEC", u.to_string());
    }
    cmd.spawn().unwrap()
}

fn stop(mut child: Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

fn status_json(dir: &std::path::Path) -> serde_json::Value {
    Cli::at(dir).json(&["status", "--json"])
}

/// A new store in `dir` logged 21 minutes of one case's IDs yesterday (10:00–10:20 UTC, a
/// sighting a minute, 1 m away), imported with `log import`. Returns the path of that case's F0
/// list (written beside, not imported).
fn logged_contact_yesterday(tmp: &Path, dir: &Path) -> PathBuf {
    use bluezone_protocol::bluezone::SlotsPerDay;
    use bluezone_protocol::DailyKey;
    let day0 = (support::now() / 86400 - 1) * 86400;
    let key = DailyKey::from_bytes([0x42; 32]);
    let mut log = String::new();
    for m in 0..21 {
        let t = day0 + 40 * 900 + m * 60;
        log += &format!("{}\t-55\t{t}\n", key.id(SlotsPerDay::DEFAULT.slot(t)));
    }
    let f = tmp.join("log.tsv");
    std::fs::write(&f, log).unwrap();
    cli(
        dir,
        &["log", "import", "--format", "tsv", f.to_str().unwrap()],
    );
    let f0 = tmp.join("f0.json");
    std::fs::write(
        &f0,
        format!(
            r#"{{"data":[{{"daily_key":"{}","time_start":{day0},"max":96,"time_end":{}}}]}}"#,
            key.to_hex(),
            day0 + 86399
        ),
    )
    .unwrap();
    f0
}

/// A case list imported by another process while the daemon runs is matched by the daemon.
#[test]
fn cases_imported_while_running_are_matched() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    cli(&dir, &["init"]);
    let f0 = logged_contact_yesterday(tmp.path(), &dir);

    let notify = Notify::bind(tmp.path());
    let mut child = start_notified(&dir, &notify, None);
    notify.wait_for("READY=1", &mut child);
    assert_eq!(status_json(&dir)["exposures"], 0);
    cli(&dir, &["cases", "import", f0.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if status_json(&dir)["exposures"] == 1 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the daemon exited before matching"
        );
        assert!(
            Instant::now() < deadline,
            "the daemon did not match the imported list within 120 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    stop(child);
}

/// Under a systemd watchdog the healthy daemon keeps pinging.
#[test]
fn a_healthy_daemon_feeds_the_watchdog() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let notify = Notify::bind(tmp.path());
    let mut child = start_notified(&dir, &notify, Some(400_000));
    notify.wait_for("READY=1", &mut child);
    for _ in 0..3 {
        notify.wait_for("WATCHDOG=1", &mut child);
    }
    stop(child);
}

/// A radio that reports every broadcast it is asked to put on air.
struct Recorder(tokio::sync::mpsc::UnboundedSender<bluezoned::radio::Broadcast>);

impl bluezoned::radio::Radio for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }
    fn run(self: Box<Self>, mut io: bluezoned::radio::RadioIo) -> bluezoned::radio::RadioFuture {
        Box::pin(async move {
            // Hold the whole of `io`: the logger ends when the sender of receptions is dropped.
            let io = &mut io;
            loop {
                let b = *io.broadcast.borrow_and_update();
                if b.epoch > 0 {
                    let _ = self.0.send(b);
                }
                tokio::select! {
                    _ = io.shutdown.cancelled() => return Ok(()),
                    r = io.broadcast.changed() => if r.is_err() { return Ok(()) },
                }
            }
        })
    }
}

/// The service runs in this process on virtual time (starting now); `keys export` runs as
/// another process; at the next ID switch the service broadcasts from the rotated key.
#[tokio::test(start_paused = true)]
async fn a_running_daemon_switches_to_keys_rotated_by_export() {
    use bluezone_protocol::bluezone::SlotsPerDay;
    use bluezone_protocol::time::utc_day;
    use bluezone_protocol::DailyKey;
    use bluezoned::clock::{SharedClock, VirtualClock};
    use std::sync::Arc;

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    cli(&dir, &["init"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Far enough from midnight that the virtual boundary stays on the day `keys export` sees.
    let start = now.min((utc_day(now) + 1) * 86400 - 1800);
    let clock: SharedClock = Arc::new(VirtualClock::new(start));
    // Paused time would auto-advance whenever the runtime idles while the store works on the
    // blocking pool, racing hours ahead. A task that always yields keeps the runtime busy, so
    // virtual time moves only by the explicit `advance` below.
    let busy = tokio::spawn(async {
        loop {
            tokio::task::yield_now().await;
        }
    });
    let shared = bluezoned::service::Shared::new(
        Store::open(&dir).unwrap(),
        bluezoned::config::Config::default(),
        clock.clone(),
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let service = tokio::spawn(bluezoned::service::run(
        shared,
        Box::new(Recorder(tx)),
        shutdown.clone(),
    ));
    // The keys in use are learnt from what `keys export` publishes (the key of the day before
    // it rotates), read by that other process as a user would run it. Two days, so that a
    // boundary at midnight still finds the day's key.
    let export = |dir: std::path::PathBuf| async move {
        let out = tokio::task::spawn_blocking(move || {
            cli(
                &dir,
                &[
                    "keys",
                    "export",
                    "--days",
                    "2",
                    "--format",
                    "bluezone-f0",
                    "--yes",
                ],
            )
        })
        .await
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    utc_day(e["time_start"].as_i64().unwrap()),
                    DailyKey::from_hex(e["daily_key"].as_str().unwrap()).unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    let key_of = |keys: &[(i64, DailyKey)], t: i64| {
        keys.iter()
            .find(|(d, _)| *d == utc_day(t))
            .map(|(_, k)| k.clone())
            .unwrap_or_else(|| panic!("no key for day {} in {keys:?}", utc_day(t)))
    };
    let slot = |t: i64| SlotsPerDay::DEFAULT.slot(t);

    let Some(first) = rx.recv().await else {
        panic!("the service stopped: {:?}", service.await);
    };
    let t0 = clock.now();
    let old = key_of(&export(dir.clone()).await, t0);
    assert_eq!(first.bluezone, Some(old.id(slot(t0))));

    while rx.try_recv().is_ok() {}
    let boundary_ms = bluezone_protocol::broadcast::next_switch(t0, true, true) * 1000;
    tokio::time::advance(std::time::Duration::from_millis(
        (boundary_ms - clock.now_ms()) as u64 + 1,
    ))
    .await;
    let next = rx.recv().await.unwrap();
    let t1 = clock.now();
    assert_eq!(t1, boundary_ms / 1000, "the switch happens at the boundary");
    assert!(next.epoch > first.epoch && t1 > t0);
    let new = key_of(&export(dir.clone()).await, t1);
    assert_ne!(new.to_hex(), old.to_hex(), "the export rotated the key");
    assert_eq!(next.bluezone, Some(new.id(slot(t1))));
    busy.abort();
    shutdown.cancel();
    service.await.unwrap().unwrap();
}

/// A radio that fails for good after its first broadcast (an adapter that disappeared). It
/// leaves its sender of receptions with the test, so that only the radio ends on its own.
struct Failing(std::sync::Arc<std::sync::Mutex<Vec<Box<dyn std::any::Any + Send>>>>);

impl bluezoned::radio::Radio for Failing {
    fn name(&self) -> &'static str {
        "failing"
    }
    fn run(self: Box<Self>, mut io: bluezoned::radio::RadioIo) -> bluezoned::radio::RadioFuture {
        Box::pin(async move {
            let _ = io.broadcast.changed().await;
            self.0.lock().unwrap().push(Box::new(io.heard.clone()));
            Err(bluezoned::radio::RadioError::Failed(
                "adapter hci0 disappeared".into(),
            ))
        })
    }
}

/// A service task that dies stops the service with an error naming it (the process then exits
/// non-zero and systemd restarts it), and the other tasks stop.
#[tokio::test(start_paused = true)]
async fn a_dying_task_ends_the_service_with_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    cli(&dir, &["init"]);
    let clock: bluezoned::clock::SharedClock =
        std::sync::Arc::new(bluezoned::clock::VirtualClock::new(1_596_844_800));
    let shared = bluezoned::service::Shared::new(
        Store::open(&dir).unwrap(),
        bluezoned::config::Config::default(),
        clock,
    );
    let shutdown = tokio_util::sync::CancellationToken::new();
    let kept = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let e = bluezoned::service::run(shared, Box::new(Failing(kept.clone())), shutdown.clone())
        .await
        .unwrap_err();
    let msg = bluezoned::error_chain(&e);
    assert!(
        msg.starts_with("radio task failed: failing backend") && msg.contains("hci0 disappeared"),
        "{msg}"
    );
    assert!(shutdown.is_cancelled(), "the other tasks were told to stop");
    assert_eq!(kept.lock().unwrap().len(), 1);
}

/// Security L9 (reload): the device API's token file is read again on SIGHUP. A running
/// `run --radio sim` whose token file is rotated accepts the new token and refuses the old one
/// (401) after a SIGHUP, and keeps running; a file refused on reload keeps the tokens in use.
/// Each reload is learnt from the API's own counters (`/v1/status`), not from the log.
#[test]
fn sighup_reloads_the_api_tokens() {
    use std::os::unix::fs::PermissionsExt;
    const OLD: &str = "old-owner-token-0123456789abcdef0123";
    const NEW: &str = "new-owner-token-fedcba9876543210fedc";
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    std::fs::create_dir_all(&dir).unwrap();
    let tokens = tmp.path().join("tokens");
    let write_tokens = |token: &str| {
        // Rotated as an admin would: a new file renamed over the old one.
        let next = tmp.path().join("tokens.new");
        write_private(&next, &format!("{token}\n"));
        std::fs::rename(&next, &tokens).unwrap();
    };
    write_tokens(OLD);
    let sock = tmp.path().join("api.sock");
    std::fs::write(
        dir.join("bluezoned.toml"),
        format!(
            "[api]\nlisten = \"unix:{}\"\nowner_token_file = \"{}\"\n",
            sock.display(),
            tokens.display()
        ),
    )
    .unwrap();
    let mut child = bin()
        .args(["--data-dir", dir.to_str().unwrap(), "run", "--radio", "sim"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = wait_api(&sock, &mut child);
    assert_eq!(status["token_reloads"], 0, "{status}");
    assert_eq!(status["token_reload_failures"], 0, "{status}");
    let status_of = |token: &str| -> u16 {
        api_get(&sock, "/v1/exposures", Some(token))
            .expect("the daemon answers")
            .0
    };
    // Waits until the status counter `name` reaches `n` (the reload was done).
    let wait_counter = |child: &mut Child, name: &str, n: u64| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = wait_api(&sock, child);
            if v[name].as_u64().expect(name) >= n {
                return v;
            }
            assert!(Instant::now() < deadline, "{name} never reached {n}: {v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert_eq!(status_of(OLD), 200);
    assert_eq!(status_of(NEW), 401);

    write_tokens(NEW);
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let v = wait_counter(&mut child, "token_reloads", 1);
    assert_eq!(v["token_reload_failures"], 0, "{v}");
    assert_eq!(status_of(NEW), 200);
    assert_eq!(status_of(OLD), 401);

    // A file that became unusable on reload (readable by others) keeps the tokens in use.
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o644)).unwrap();
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let v = wait_counter(&mut child, "token_reload_failures", 1);
    assert_eq!(v["token_reloads"], 1, "{v}");
    assert_eq!(status_of(NEW), 200);
    assert_eq!(status_of(OLD), 401);

    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// The processes whose process group is `pgid`, zombies excluded (a killed process waits as a
/// zombie until its new parent reaps it: that one is gone too).
fn live_members_of_group(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After the `(comm)`: state, ppid, pgrp, …
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string() {
            out.push(pid);
        }
    }
    out
}

/// Issue 10 §1: SIGTERM while the hook hangs on a pending exposure ends the daemon (exit 0)
/// within 10 s, and kills the hook's whole process group (nothing it started is left behind).
/// The exposure was yesterday, under `days_since_exposure_threshold = 14`: it notifies only if
/// the daemon scores on today's date from its clock.
#[test]
fn sigterm_during_a_hanging_hook_exits_promptly_and_leaves_no_orphan() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    cli(&dir, &["init"]);
    let f0 = logged_contact_yesterday(tmp.path(), &dir);
    cli(&dir, &["cases", "import", f0.to_str().unwrap()]);

    // The hook starts a background child, writes its process group id (its own pid: the
    // daemon starts it as a group leader), then hangs.
    let marker = tmp.path().join("hook.pgid");
    let hook = format!(
        "sleep 1000 & echo $$ > {m}.tmp && mv {m}.tmp {m}; wait",
        m = marker.display()
    );
    std::fs::write(
        dir.join("bluezoned.toml"),
        format!(
            "[hook]\ncommand = {hook:?}\ntimeout_s = 3600\n\
             [scoring]\ndays_since_exposure_threshold = 14\n"
        ),
    )
    .unwrap();
    let log_path = tmp.path().join("daemon.log");
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(&dir)
        .args(["run", "--radio", "sim"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let daemon_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // Generous: startup, matching and the hook's start on a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(120);
    let pgid: i32 = loop {
        if let Some(p) = std::fs::read_to_string(&marker)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break p;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "daemon exited ({status}) before the hook ran:\n{}",
                daemon_log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the hook did not start within 120 s:\n{}",
            daemon_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // The hook and its background child are running.
    let deadline = Instant::now() + Duration::from_secs(60);
    while live_members_of_group(pgid).len() < 2 {
        assert!(Instant::now() < deadline, "the hook's child never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }

    let sent = Instant::now();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if sent.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            panic!("daemon still running 60 s after SIGTERM:\n{}", daemon_log());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = sent.elapsed();
    // The issue's bound on shutdown during a hanging hook.
    assert!(
        took < Duration::from_secs(10),
        "exit took {took:?} after SIGTERM:\n{}",
        daemon_log()
    );
    assert!(status.success(), "{status}:\n{}", daemon_log());
    // The group was killed before the daemon exited; its members may take a moment to be
    // reaped by their new parent (zombies do not count).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = live_members_of_group(pgid);
        if left.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            panic!("the hook's process group outlived the daemon: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Interrupted, not delivered: still pending for the next start.
    let store = Store::open(&dir).unwrap();
    let x = store.exposures().unwrap();
    assert_eq!(x.exposures.len(), 1);
    assert_eq!(
        x.exposures[0].delivery.state,
        bluezoned::store::DeliveryState::Pending
    );
}
