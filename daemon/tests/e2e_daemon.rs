//! The `bluezoned` binary as a process: `run --radio sim` in real time, killed and stopped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bluezoned::store::Store;

const BIN: &str = env!("CARGO_BIN_EXE_bluezoned");

/// A fast-cycling configuration so a few seconds produce many acknowledged batches.
const FAST: &str = r#"
[radio]
scan_interval_ms = 500
scan_window_ms = 250
dedup_s = 1
[store]
flush_interval_ms = 100
"#;

struct Daemon {
    child: Child,
    /// `total` of every "sightings stored" line, in order.
    acks: mpsc::Receiver<u64>,
}

fn start(dir: &std::path::Path) -> Daemon {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("bluezoned.toml"), FAST).unwrap();
    let mut child = Command::new(BIN)
        .args(["--data-dir", dir.to_str().unwrap(), "run", "--radio", "sim"])
        .env("RUST_LOG", "bluezoned=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, acks) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("sightings stored") {
                if let Some(t) = line
                    .split("total=")
                    .nth(1)
                    .and_then(|v| v.split_whitespace().next())
                {
                    let _ = tx.send(t.parse().unwrap_or(0));
                }
            }
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
        // Lines printed after the last one read above can only raise the bar.
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
    let out = Command::new(BIN)
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
        let out = Command::new(BIN)
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
