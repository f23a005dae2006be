//! Notification delivery (issue 10 §1, security H1/M8): real hook processes in temp dirs, a
//! manual clock for the backoff, and files written by the hook as positive signals.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bluezoned::clock::Clock;
use bluezoned::config::Config;
use bluezoned::service::notify::{self, Hook, HookOutcome, BACKOFF_BASE_S, HOOK_ENV};
use bluezoned::service::Shared;
use bluezoned::store::{DeliveryState, ExposureKey, ExposureRecord, KeyLocation, Store};
use tokio_util::sync::CancellationToken;

const T0: i64 = 1_700_000_000;
const DAY: i64 = T0 / 86_400;

/// A clock the test moves by hand.
struct ManualClock(AtomicI64);

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst) * 1000
    }
}

struct Env {
    _dir: tempfile::TempDir,
    data: PathBuf,
    runs: PathBuf,
    clock: Arc<ManualClock>,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        drop(Store::init_at(&data, KeyLocation::resolve(&data, None)).unwrap());
        Env {
            runs: dir.path().join("runs"),
            data,
            _dir: dir,
            clock: Arc::new(ManualClock(AtomicI64::new(T0))),
        }
    }

    fn shared(&self, command: &str, timeout_s: u64) -> Arc<Shared> {
        let mut cfg = Config::default();
        cfg.hook.command = Some(command.to_string());
        cfg.hook.timeout_s = timeout_s;
        let store = Store::open_at(&self.data, KeyLocation::resolve(&self.data, None)).unwrap();
        Shared::new(store, cfg, self.clock.clone())
    }

    fn advance(&self, s: i64) {
        self.clock.0.fetch_add(s, Ordering::SeqCst);
    }

    /// One line per hook run: its stdin.
    fn runs(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.runs)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// A hook that records its stdin, then exits with the status in file `status` (0 if none).
    fn recording_hook(&self) -> String {
        let status = self.runs.with_extension("status");
        format!(
            "cat >> {runs}; echo >> {runs}; exit $(cat {status} 2>/dev/null || echo 0)",
            runs = self.runs.display(),
            status = status.display()
        )
    }

    fn set_status(&self, code: i32) {
        std::fs::write(self.runs.with_extension("status"), code.to_string()).unwrap();
    }
}

/// The record the daemon stores.
fn report(minutes: f64, notify: bool) -> ExposureRecord {
    ExposureRecord {
        protocol: "gaen".into(),
        case_key: "00112233445566778899aabbccddeeff".into(),
        day: DAY,
        weighted_minutes: minutes,
        notify,
        case_list: 1,
        ..Default::default()
    }
}

fn key() -> ExposureKey {
    ExposureKey {
        protocol: "gaen".into(),
        case_key: "00112233445566778899aabbccddeeff".into(),
        day: DAY,
    }
}

fn upsert(shared: &Shared, minutes: f64, notify: bool) -> bluezoned::store::UpsertOutcome {
    shared
        .lock_store()
        .upsert_exposure(&report(minutes, notify))
        .unwrap()
}

async fn deliver(shared: &Arc<Shared>) -> Option<i64> {
    let hook = Hook {
        command: shared.config.hook.command.clone().unwrap(),
        timeout: Duration::from_secs(shared.config.hook.timeout_s),
    };
    notify::deliver_due(shared, &hook, &CancellationToken::new())
        .await
        .unwrap()
}

fn state(shared: &Shared) -> DeliveryState {
    let x = shared.lock_store().exposures().unwrap();
    assert_eq!(x.exposures.len(), 1);
    x.exposures[0].delivery.state
}

#[tokio::test]
async fn crossing_the_threshold_later_fires_exactly_once() {
    let env = Env::new();
    let shared = env.shared(&env.recording_hook(), 60);
    // First stored below the threshold: nothing to deliver.
    let o = upsert(&shared, 7.0, false);
    assert!(o.inserted && !o.became_pending);
    deliver(&shared).await;
    assert!(env.runs().is_empty());
    assert_eq!(state(&shared), DeliveryState::NotNotifying);
    // The contact went on: it crosses the threshold.
    let o = upsert(&shared, 58.0, true);
    assert!(!o.inserted && o.became_pending);
    deliver(&shared).await;
    let runs = env.runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["event"], "exposure");
    assert_eq!(runs[0]["id"], o.id.as_str());
    assert_eq!(runs[0]["weighted_minutes"], 58.0);
    assert_eq!(runs[0]["notify"], true);
    assert_eq!(state(&shared), DeliveryState::Delivered);
    // More matching of the same exposure, more delivery rounds: no second run.
    let o2 = upsert(&shared, 70.0, true);
    assert!(!o2.became_pending);
    assert_eq!(o2.id, o.id, "the id is stable");
    deliver(&shared).await;
    deliver(&shared).await;
    assert_eq!(env.runs().len(), 1);
}

#[tokio::test]
async fn a_hook_failing_twice_then_succeeding_delivers_once_more_with_backoff() {
    let env = Env::new();
    let shared = env.shared(&env.recording_hook(), 60);
    upsert(&shared, 30.0, true);
    env.set_status(1);
    let retry = deliver(&shared).await.expect("a retry is scheduled");
    assert_eq!(retry, T0 + BACKOFF_BASE_S);
    assert_eq!(env.runs().len(), 1);
    // Not due yet: no run.
    assert_eq!(deliver(&shared).await, Some(retry));
    assert_eq!(env.runs().len(), 1);
    env.advance(BACKOFF_BASE_S);
    let retry2 = deliver(&shared).await.expect("second retry");
    assert_eq!(
        retry2,
        T0 + BACKOFF_BASE_S + 2 * BACKOFF_BASE_S,
        "backoff doubles"
    );
    assert_eq!(env.runs().len(), 2);
    assert_eq!(state(&shared), DeliveryState::Pending);
    env.set_status(0);
    env.advance(2 * BACKOFF_BASE_S);
    assert_eq!(deliver(&shared).await, None);
    assert_eq!(env.runs().len(), 3);
    assert_eq!(state(&shared), DeliveryState::Delivered);
    env.advance(86_400);
    deliver(&shared).await;
    assert_eq!(
        env.runs().len(),
        3,
        "delivered exactly once more, then never again"
    );
}

#[tokio::test]
async fn a_restart_between_failure_and_success_still_delivers() {
    let env = Env::new();
    {
        let shared = env.shared(&env.recording_hook(), 60);
        upsert(&shared, 30.0, true);
        env.set_status(3);
        assert!(deliver(&shared).await.is_some());
        assert_eq!(env.runs().len(), 1);
    } // The daemon stops: store closed.
    let shared = env.shared(&env.recording_hook(), 60);
    env.set_status(0);
    // The retry time survived the restart: not before it.
    assert_eq!(deliver(&shared).await, Some(T0 + BACKOFF_BASE_S));
    assert_eq!(env.runs().len(), 1);
    env.advance(BACKOFF_BASE_S);
    assert_eq!(deliver(&shared).await, None);
    assert_eq!(env.runs().len(), 2);
    assert_eq!(state(&shared), DeliveryState::Delivered);
}

#[tokio::test]
async fn withdrawal_of_a_delivered_exposure_is_delivered_as_an_event() {
    let env = Env::new();
    let shared = env.shared(&env.recording_hook(), 60);
    let o = upsert(&shared, 30.0, true);
    deliver(&shared).await;
    let n = shared
        .lock_store()
        .withdraw_exposure("gaen", &key().case_key.to_uppercase(), "key revoked")
        .unwrap();
    assert_eq!(n, 1);
    deliver(&shared).await;
    let runs = env.runs();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1]["event"], "withdrawal");
    assert_eq!(runs[1]["id"], o.id.as_str());
    assert_eq!(
        runs[1]["notify"], false,
        "a withdrawn exposure does not notify"
    );
    assert_eq!(runs[1]["state"], "withdrawn");
    assert_eq!(runs[1]["withdrawn_reason"], "key revoked");
    // Kept, never deleted; a later match does not revive it.
    let o2 = upsert(&shared, 90.0, true);
    assert_eq!(o2.delivery.state, DeliveryState::Withdrawn);
    assert!(!o2.became_pending);
    deliver(&shared).await;
    assert_eq!(env.runs().len(), 2);
    assert_eq!(state(&shared), DeliveryState::Withdrawn);
}

#[tokio::test]
async fn withdrawing_a_pending_exposure_owes_the_hook_nothing() {
    let env = Env::new();
    let shared = env.shared(&env.recording_hook(), 60);
    upsert(&shared, 30.0, true);
    shared
        .lock_store()
        .withdraw_exposure("gaen", &key().case_key, "key revoked")
        .unwrap();
    deliver(&shared).await;
    assert!(env.runs().is_empty());
}

fn pid_gone(pid: i32) -> bool {
    // A killed process may linger as a zombie until its (new) parent reaps it: that is gone too.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

async fn wait_for_file(p: &Path) -> String {
    // Bounded only against a hang of the test itself; the hook writes it at once.
    for _ in 0..6000 {
        if let Ok(s) = std::fs::read_to_string(p) {
            if s.ends_with('\n') {
                return s;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} never appeared", p.display());
}

#[tokio::test]
async fn a_hanging_hook_is_killed_with_its_whole_process_group_on_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("bg.pid");
    let hook = Hook {
        command: format!("sleep 1000 & echo $! > {}; wait", pidfile.display()),
        timeout: Duration::from_secs(1),
    };
    let outcome = notify::run_hook(&hook, b"{}", &CancellationToken::new()).await;
    assert_eq!(outcome, HookOutcome::TimedOut);
    let pid: i32 = wait_for_file(&pidfile).await.trim().parse().unwrap();
    let mut gone = false;
    for _ in 0..3000 {
        if pid_gone(pid) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if !gone {
        // SAFETY: best-effort cleanup of the orphan this test is about.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        panic!("the hook's background child {pid} survived the timeout (orphaned)");
    }
}

#[tokio::test]
async fn shutdown_during_a_hanging_hook_returns_promptly() {
    let env = Env::new();
    let started = env.runs.with_extension("started");
    let pidfile = env.runs.with_extension("pid");
    let cmd = format!(
        "sleep 1000 & echo $! > {}; echo up > {}; wait",
        pidfile.display(),
        started.display()
    );
    let shared = env.shared(&cmd, 3600);
    upsert(&shared, 30.0, true);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(notify::run(shared.clone(), shutdown.clone()));
    wait_for_file(&started).await;
    let pid: i32 = wait_for_file(&pidfile).await.trim().parse().unwrap();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the notification task ends within 10 s of shutdown")
        .unwrap()
        .unwrap();
    // Interrupted, not failed: still pending for the next start, no attempt counted.
    let x = shared.lock_store().exposures().unwrap();
    assert_eq!(x.exposures[0].delivery.state, DeliveryState::Pending);
    assert_eq!(x.exposures[0].delivery.attempts, 0);
    for _ in 0..3000 {
        if pid_gone(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    unsafe { libc::kill(pid, libc::SIGKILL) };
    panic!("the hook's process group survived shutdown");
}

#[tokio::test]
async fn the_hook_sees_only_the_allowed_environment() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("env");
    let hook = Hook {
        command: format!("env > {}", out.display()),
        timeout: Duration::from_secs(60),
    };
    assert_eq!(
        notify::run_hook(&hook, b"{}", &CancellationToken::new()).await,
        HookOutcome::Success
    );
    let env = std::fs::read_to_string(&out).unwrap();
    // `sh` itself adds PWD, SHLVL and `_`.
    for line in env.lines() {
        let name = line.split('=').next().unwrap();
        assert!(
            HOOK_ENV.contains(&name) || ["PWD", "SHLVL", "_", "OLDPWD"].contains(&name),
            "hook inherited {name}"
        );
    }
}
