//! Issue 7's round trip: a person's daemon exports its keys (`keys export`), an official
//! uploads the file to another daemon over HTTP, and that daemon, which logged the person,
//! reports a notifying exposure.

use std::sync::Arc;
use std::time::Duration;

use bluezoned::api::{self, Listen};
use bluezoned::clock::{SharedClock, SystemClock, VirtualClock};
use bluezoned::config::Config;
use bluezoned::radio::sim::{DeviceModel, DeviceSpec, Medium, MediumConfig, Mobility, ScanConfig};
use bluezoned::service::{self, maintenance, Shared};
use bluezoned::store::Store;
use tokio_util::sync::CancellationToken;

mod support;
use support::{http, write_private, Cli};

/// The owner's token, and the health official's (upload only).
const TOKEN: &str = "owner-e2e-token-0123456789abcdef01234";
const UPLOAD: &str = "official-e2e-token-0123456789abcdef0";

/// Two devices side by side for an hour, two days ago (virtual time), each with its own store.
fn meet(a: &std::path::Path, b: &std::path::Path) {
    let now = bluezoned::clock::Clock::now(&SystemClock);
    let start = (now.div_euclid(86_400) - 2) * 86_400 + 9 * 3600;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let clock: SharedClock = Arc::new(VirtualClock::new(start));
        let medium = Medium::new(
            MediumConfig {
                seed: 7,
                ..MediumConfig::default()
            },
            clock.clone(),
        );
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        for (dir, x) in [(a, 0.0), (b, 1.0)] {
            let handle = medium.add_device(DeviceSpec::new(
                "phone",
                DeviceModel::Bluezoned {
                    bluezone: true,
                    gaen: true,
                },
                Mobility::Fixed { x, y: 0.0, room: 0 },
            ));
            let (store, _) = Store::init(dir).unwrap();
            let radio = handle.radio(clock.clone(), ScanConfig::default()).unwrap();
            let shared = Shared::new(store, Config::default(), clock.clone());
            tasks.push(tokio::spawn(service::run(
                shared,
                Box::new(radio),
                stop.clone(),
            )));
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
        stop.cancel();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    });
}

#[test]
fn an_exported_f0_uploaded_to_another_daemon_notifies() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    meet(&a, &b);

    // The person who tested positive exports their keys.
    let f0 = tmp.path().join("f0.json");
    Cli::at(&a).ok(&[
        "keys",
        "export",
        "--days",
        "14",
        "--format",
        "bluezone-f0",
        "--out",
        f0.to_str().unwrap(),
        "--yes",
    ]);

    // An official uploads it to the other daemon's API.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let private = |name: &str, token: &str| {
            let p = tmp.path().join(name);
            write_private(&p, &format!("{token}\n"));
            p
        };
        let mut cfg = Config::default();
        cfg.api.owner_token_file = Some(private("owner-tokens", TOKEN));
        cfg.api.upload_token_file = Some(private("upload-tokens", UPLOAD));
        let shared = Shared::new(Store::open(&b).unwrap(), cfg, Arc::new(SystemClock));
        let stop = CancellationToken::new();
        let server = api::serve(shared.clone(), "127.0.0.1:0", stop.clone())
            .await
            .unwrap();
        let Listen::Tcp(addr) = server.local else {
            panic!("{}", server.local)
        };
        let http = http::client();
        let r = http
            .post(format!("http://{addr}/v1/case-lists"))
            .bearer_auth(UPLOAD)
            .body(std::fs::read(&f0).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
        // The upload woke the matcher; run it as the maintenance task would.
        maintenance::match_once(&shared).await.unwrap();
        let v: serde_json::Value = http
            .get(format!("http://{addr}/v1/exposures"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ex = v["exposures"].as_array().expect("exposures");
        assert!(
            ex.iter().any(|e| e["protocol"] == "bluezone"
                && e["notify"] == true
                && e["duration_s"].as_i64().unwrap() >= 45 * 60),
            "{v}"
        );
        stop.cancel();
        let _ = server.task.await;
    });
}
