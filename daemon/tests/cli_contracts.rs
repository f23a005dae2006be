//! The command-line contracts of issues 2, 4 and 7: `ids`, `cases inspect|import|list`, `check`,
//! `keys export`, run as a user would run them.

use bluezone_protocol::bluezone::SlotsPerDay;
use bluezone_protocol::gaen::export::{parse_export, ExportLimits, TrustedKey};
use bluezone_protocol::gaen::{self, Metadata};
use bluezone_protocol::DailyKey;

mod support;
use support::{bin, fails, ok, run, testdata};

#[test]
fn ids_bluezone_equals_the_vector_file_line_for_line() {
    let text = std::fs::read_to_string(testdata("bluezone/rolling-id-vectors.txt")).unwrap();
    let base = text
        .lines()
        .find_map(|l| l.strip_prefix("base_key "))
        .unwrap();
    for (day, key) in text
        .lines()
        .filter_map(|l| l.strip_prefix("daily_key "))
        .filter_map(|l| l.split_once(' '))
    {
        let day: i64 = day.parse().unwrap();
        let expected: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("id "))
            .map(|l| l.split(' ').collect::<Vec<_>>())
            .filter(|c| c[0] == day.to_string())
            .map(|c| format!("{} {}", c[2], c[3]))
            .collect();
        if expected.is_empty() {
            continue; // the vectors list IDs for days 0 and 1
        }
        let out = ok(&run(&[
            "ids",
            "bluezone",
            "--daily-key",
            key,
            "--day",
            &(1596844800 + day * 86400 + 4321).to_string(),
        ]));
        assert_eq!(out.lines().collect::<Vec<_>>(), expected, "day {day}");
        let _ = base;
    }
    let out = ok(&run(&[
        "ids",
        "bluezone",
        "--daily-key",
        base,
        "--day",
        "1596844800",
        "--max",
        "144",
    ]));
    assert_eq!(out.lines().count(), 144);
    assert!(fails(&run(&[
        "ids",
        "bluezone",
        "--daily-key",
        "00",
        "--day",
        "0"
    ]))
    .contains("expected 64 hex characters, got 2"));
    assert!(fails(&run(&[
        "ids",
        "bluezone",
        "--daily-key",
        base,
        "--day",
        "0",
        "--max",
        "97"
    ]))
    .contains("max"));
    // Security L1: a day outside 2000..=2100 is refused naming --day (it printed negative slot
    // times near i64::MAX); the window's ends are accepted.
    for day in [
        "9223372036854775000",
        "-9223372036854775808",
        "-1",
        "0",
        "946684799",
        "4133980800",
    ] {
        let e = fails(&run(&[
            "ids",
            "bluezone",
            "--daily-key",
            base,
            &format!("--day={day}"),
        ]));
        assert!(e.contains("2000-01-01"), "{day}: {e}");
        assert!(e.contains("--day") && e.contains(day), "{day}: {e}");
    }
    for day in ["946684800", "4133980799"] {
        let out = ok(&run(&[
            "ids",
            "bluezone",
            "--daily-key",
            base,
            "--day",
            day,
        ]));
        let first: i64 = out.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(first, day.parse::<i64>().unwrap() / 86400 * 86400, "{out}");
        assert_eq!(out.lines().count(), 96);
    }
}

fn run_with_stdin(args: &[&str], input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = bin()
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run bluezoned");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Security L15: a daily key or TEK need not be on the command line (`/proc/PID/cmdline`, shell
/// history): `-` reads it from standard input, `--daily-key-file`/`--tek-file` from a file. Each
/// prints exactly what the key on the command line prints; errors never echo the key.
#[test]
fn ids_secrets_from_stdin_or_a_file() {
    let key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    let tek = "75c734c6dd1a782de7a965da5eb93125";
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("daily.key");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let tek_file = dir.path().join("tek");
    std::fs::write(&tek_file, format!("  {tek}\n")).unwrap();

    let bz = |k: &[&str]| -> Vec<String> {
        ["ids", "bluezone"]
            .iter()
            .chain(k)
            .chain(&["--day", "1596844800"])
            .map(|s| s.to_string())
            .collect()
    };
    fn argv(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let on_argv = ok(&run(&argv(&bz(&["--daily-key", key]))));
    assert_eq!(on_argv.lines().count(), 96);
    let stdin = ok(&run_with_stdin(
        &argv(&bz(&["--daily-key", "-"])),
        format!("{key}\n").as_bytes(),
    ));
    assert_eq!(stdin, on_argv);
    let file = ok(&run(&argv(&bz(&[
        "--daily-key-file",
        key_file.to_str().unwrap(),
    ]))));
    assert_eq!(file, on_argv);

    let on_argv = ok(&run(&["ids", "gaen", "--tek", tek, "--enin", "2642976"]));
    assert_eq!(on_argv.lines().count(), 144);
    let stdin = ok(&run_with_stdin(
        &["ids", "gaen", "--tek", "-", "--enin", "2642976"],
        tek.as_bytes(),
    ));
    assert_eq!(stdin, on_argv);
    let file = ok(&run(&[
        "ids",
        "gaen",
        "--tek-file",
        tek_file.to_str().unwrap(),
        "--enin",
        "2642976",
    ]));
    assert_eq!(file, on_argv);

    // Bad input: a clear error naming the source, never the secret's text.
    let e = fails(&run_with_stdin(&argv(&bz(&["--daily-key", "-"])), b""));
    assert!(e.contains("--daily-key - (standard input): empty"), "{e}");
    let e = fails(&run_with_stdin(
        &argv(&bz(&["--daily-key", "-"])),
        format!("{}\n", &key[..62]).as_bytes(),
    ));
    assert!(e.contains("standard input") && e.contains("64 hex"), "{e}");
    assert!(!e.contains(&key[..62]), "the key was echoed: {e}");
    let missing = dir.path().join("missing");
    let e = fails(&run(&argv(&bz(&[
        "--daily-key-file",
        missing.to_str().unwrap(),
    ]))));
    assert!(
        e.contains("--daily-key-file") && e.contains("missing"),
        "{e}"
    );
    let e = fails(&run(&argv(&bz(&[
        "--daily-key",
        key,
        "--daily-key-file",
        key_file.to_str().unwrap(),
    ]))));
    assert!(e.contains("cannot be used with"), "{e}");
    let e = fails(&run(&["ids", "gaen", "--enin", "1"]));
    assert!(e.contains("--tek"), "{e}");
}

#[test]
fn ids_gaen_equals_the_official_vectors_line_for_line() {
    let text = std::fs::read_to_string(testdata("gaen/en-v1.2-vectors.txt")).unwrap();
    let tek = text.lines().find_map(|l| l.strip_prefix("tek ")).unwrap();
    let md = text
        .lines()
        .find_map(|l| l.strip_prefix("metadata "))
        .unwrap();
    let expected: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .map(|l| l.split_once(' ').unwrap().1.to_string())
        .collect();
    let out = ok(&run(&[
        "ids",
        "gaen",
        "--tek",
        tek,
        "--enin",
        "2642976",
        "--metadata",
        md,
    ]));
    assert_eq!(out.lines().collect::<Vec<_>>(), expected);
    assert_eq!(expected.len(), 144);
    // Default metadata is 40000000: same RPIs, other AEMs.
    let out = ok(&run(&["ids", "gaen", "--tek", tek, "--enin", "2642976"]));
    let first = out.lines().next().unwrap();
    assert!(first.starts_with(&expected[0][..40]) && first != expected[0]);
    assert!(fails(&run(&["ids", "gaen", "--tek", &tek[..30], "--enin", "1"])).contains("--tek"));
}

#[test]
fn cases_inspect_verifies_each_sample_with_its_own_key_only() {
    let two = testdata("gaen/google-server-example-2keys.zip");
    let two_pem = testdata("gaen/google-server-example-2keys.pub.pem");
    let many = testdata("gaen/google-internals-sample-140keys.zip");
    let many_pem = testdata("gaen/google-internals-sample-140keys.pub.pem");
    for (zip, pem, other, n, id, ver) in [
        (&two, &two_pem, &many_pem, 2, "some_id", "1"),
        (&many, &many_pem, &two_pem, 140, "310", "v1"),
    ] {
        let out = ok(&run(&[
            "cases",
            "inspect",
            zip.to_str().unwrap(),
            "--trust",
            pem.to_str().unwrap(),
        ]));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["format"], "gaen-export");
        assert_eq!(v["entries"], n);
        assert_eq!(v["signature"], "verified");
        assert_eq!(v["key_id"], id);
        assert_eq!(v["key_version"], ver);
        assert_eq!(v["region"], "US");
        let err = fails(&run(&[
            "cases",
            "inspect",
            zip.to_str().unwrap(),
            "--trust",
            other.to_str().unwrap(),
        ]));
        assert!(err.contains("signature"), "{err}");
        // Bound to the right id but the wrong key, and to the wrong id.
        let bound = format!("{id}:{ver}={}", other.display());
        assert!(fails(&run(&[
            "cases",
            "inspect",
            zip.to_str().unwrap(),
            "--trust",
            &bound
        ]))
        .contains("did not verify"));
        let wrong_id = format!("nobody:{ver}={}", pem.display());
        assert!(fails(&run(&[
            "cases",
            "inspect",
            zip.to_str().unwrap(),
            "--trust",
            &wrong_id
        ]))
        .contains("no trusted key"));
        // Without a trusted key the summary is still printed, and the exit status says the
        // file is not to be acted on.
        let o = run(&["cases", "inspect", zip.to_str().unwrap()]);
        let err = fails(&o);
        assert!(err.contains("no signature verifies"), "{err}");
        let out = String::from_utf8_lossy(&o.stdout);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["signature"], "unverified");
        assert_eq!(v["entries"], n);
    }
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("f0.json");
    std::fs::write(
        &bad,
        r#"{"data":[{"daily_key":"zz","time_start":1,"time_end":2}]}"#,
    )
    .unwrap();
    let err = fails(&run(&["cases", "inspect", bad.to_str().unwrap()]));
    assert!(
        err.contains("f0.json") && err.contains("entry 0") && err.contains("daily_key"),
        "{err}"
    );
    let trunc = tmp.path().join("t.zip");
    std::fs::write(&trunc, &std::fs::read(&two).unwrap()[..200]).unwrap();
    assert!(fails(&run(&["cases", "inspect", trunc.to_str().unwrap()])).contains("zip"));
}

/// Lists as real phones accept them: a 36-day entry, a float `time_start`, and one bad entry
/// among good ones (the good ones are imported, the bad one is named).
#[test]
fn cases_import_accepts_real_phone_lists() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    let dir = d.to_str().unwrap();
    ok(&run(&["--data-dir", dir, "init"]));
    let day0 = 1_596_844_800i64;
    let key = |b: u8| DailyKey::from_bytes([b; 32]).to_hex();
    let f0 = tmp.path().join("real.json");
    std::fs::write(
        &f0,
        format!(
            r#"{{"data":[
            {{"daily_key":"{}","time_start":{day0},"time_end":{}}},
            {{"daily_key":"{}","time_start":{day0}.0,"max":96,"time_end":{}}},
            {{"daily_key":"{}","time_start":{day0},"max":96,"time_end":"tomorrow"}}
            ]}}"#,
            key(1).to_uppercase(),
            day0 + 36 * 86400 + 43200,
            key(2),
            day0 + 86399,
            key(3),
        ),
    )
    .unwrap();
    let o = run(&["--data-dir", dir, "cases", "import", f0.to_str().unwrap()]);
    let out = ok(&o);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["imported"], true);
    assert_eq!(v["entries"], 2);
    assert_eq!(v["days"], 37 + 1);
    assert_eq!(v["skipped_total"], 1);
    assert_eq!(v["skipped"][0]["index"], 2);
    assert_eq!(v["skipped"][0]["field"], "time_end");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("skipped entry 2: field `time_end`"), "{err}");
    let lists: serde_json::Value =
        serde_json::from_str(&ok(&run(&["--data-dir", dir, "cases", "list", "--json"]))).unwrap();
    assert_eq!(lists["case_lists"][0]["entries"], 2);

    // A float with a fraction is not a time: with nothing else valid, the list is refused.
    let half = tmp.path().join("half.json");
    std::fs::write(
        &half,
        format!(
            r#"{{"data":[{{"daily_key":"{}","time_start":{day0}.5,"time_end":{}}}]}}"#,
            key(4),
            day0 + 10
        ),
    )
    .unwrap();
    let err = fails(&run(&[
        "--data-dir",
        dir,
        "cases",
        "import",
        half.to_str().unwrap(),
    ]));
    assert!(
        err.contains("time_start") && err.contains("1596844800.5"),
        "{err}"
    );
}

/// A log with 20 minutes of sightings of one F0 key's IDs and of one sample-zip key's RPIs; both
/// lists imported; `check --json` reports both exposures and nothing else.
#[test]
fn import_and_check_report_the_right_exposures() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    let dir = d.to_str().unwrap();
    ok(&run(&["--data-dir", dir, "init"]));
    let day0 = 1_596_844_800i64;
    let key = DailyKey::from_bytes([0x42; 32]);
    let mut log = String::new();
    // Slots 40–41 (10:00–10:30 UTC): a sighting a minute, 1 m away.
    for m in 0..21 {
        let t = day0 + 40 * 900 + m * 60;
        log += &format!("{}\t-55\t{t}\n", key.id(SlotsPerDay::DEFAULT.slot(t)));
    }
    // A GAEN key of the 2-key sample: 20 minutes across two of its intervals.
    let zip = testdata("gaen/google-server-example-2keys.zip");
    let pem = testdata("gaen/google-server-example-2keys.pub.pem");
    let trust =
        TrustedKey::from_pem("some_id", "1", &std::fs::read_to_string(&pem).unwrap()).unwrap();
    let export = parse_export(
        &std::fs::read(&zip).unwrap(),
        &[trust],
        &ExportLimits::default(),
    )
    .unwrap();
    let k = export
        .file
        .keys
        .iter()
        .find(|k| k.rolling_period == 114)
        .unwrap();
    let sched = gaen::key_schedule(
        &k.tek,
        gaen::Enin(k.rolling_start),
        k.rolling_period,
        Metadata::v1_0(-20),
    );
    for m in 0..21 {
        let (enin, rpi, aem) = sched[10 + (m / 10) as usize];
        let t = enin.to_unix() + (m % 10) * 60;
        let _ = aem;
        log += &format!("{rpi} -60 {t}\n");
    }
    let f = tmp.path().join("log.tsv");
    std::fs::write(&f, log).unwrap();
    ok(&run(&[
        "--data-dir",
        dir,
        "log",
        "import",
        "--format",
        "tsv",
        f.to_str().unwrap(),
    ]));
    let f0 = tmp.path().join("f0.json");
    std::fs::write(
        &f0,
        format!(r#"{{"data":[{{"daily_key":"{}","time_start":{day0},"max":96,"time_end":{}}},{{"daily_key":"{}","time_start":{day0},"max":96,"time_end":{}}}]}}"#,
            key.to_hex().to_uppercase(), day0 + 86399, DailyKey::from_bytes([7; 32]).to_hex(), day0 + 86399),
    )
    .unwrap();
    let out = ok(&run(&[
        "--data-dir",
        dir,
        "cases",
        "import",
        f0.to_str().unwrap(),
    ]));
    assert!(out.contains("\"imported\":true"));
    let again = run(&["--data-dir", dir, "cases", "import", f0.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("imported before"));
    assert!(ok(&again).contains("\"imported\":false"));
    // A GAEN file must verify before it is stored.
    assert!(fails(&run(&[
        "--data-dir",
        dir,
        "cases",
        "import",
        zip.to_str().unwrap()
    ]))
    .contains("--trust"));
    ok(&run(&[
        "--data-dir",
        dir,
        "cases",
        "import",
        zip.to_str().unwrap(),
        "--trust",
        pem.to_str().unwrap(),
    ]));
    // A bad file changes nothing.
    let bad = tmp.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"data":[{"daily_key":"00","time_start":1,"time_end":2}]}"#,
    )
    .unwrap();
    let before = ok(&run(&["--data-dir", dir, "cases", "list", "--json"]));
    fails(&run(&[
        "--data-dir",
        dir,
        "cases",
        "import",
        bad.to_str().unwrap(),
    ]));
    assert_eq!(
        ok(&run(&["--data-dir", dir, "cases", "list", "--json"])),
        before
    );
    let lists: serde_json::Value = serde_json::from_str(&before).unwrap();
    assert_eq!(lists["case_lists"].as_array().unwrap().len(), 2);

    let out = ok(&run(&["--data-dir", dir, "check", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["keys_checked"], 4);
    let ex = v["exposures"].as_array().unwrap();
    assert_eq!(ex.len(), 2, "{out}");
    let bz = ex.iter().find(|e| e["protocol"] == "bluezone").unwrap();
    assert_eq!(bz["case_key"], key.to_hex());
    assert_eq!(bz["sightings"], 21);
    assert_eq!(bz["first_seen"], day0 + 40 * 900);
    assert_eq!(bz["last_seen"], day0 + 40 * 900 + 20 * 60);
    // GAEN v2 scan instances: the first counts its default 120 s, each later one the 60 s since
    // the previous.
    assert_eq!(bz["duration_s"], 120 + 20 * 60);
    assert_eq!(bz["min_attenuation_db"], 30); // -25 dBm assumed tx, -55 dBm received
    assert_eq!(bz["notify"], true);
    let ga = ex.iter().find(|e| e["protocol"] == "gaen").unwrap();
    assert_eq!(ga["case_key"], k.tek.to_hex());
    assert_eq!(ga["sightings"], 21);
    assert_eq!(ga["notify"], true);

    // `check` decides with the daemon's configuration: the data directory's bluezoned.toml, or
    // the file named by --config / BLUEZONED_CONFIG. A raised threshold makes the same log
    // non-notifying.
    let notifying = |out: &str| -> Vec<bool> {
        let v: serde_json::Value = serde_json::from_str(out).unwrap();
        v["exposures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["notify"].as_bool().unwrap())
            .collect()
    };
    let strict = "[scoring]\nnotify_weighted_minutes = 1000.0\n";
    std::fs::write(d.join("bluezoned.toml"), strict).unwrap();
    let out = ok(&run(&["--data-dir", dir, "check", "--json"]));
    assert_eq!(notifying(&out), [false, false], "{out}");
    std::fs::remove_file(d.join("bluezoned.toml")).unwrap();
    assert_eq!(
        notifying(&ok(&run(&["--data-dir", dir, "check", "--json"]))),
        [true, true]
    );
    let cfg = tmp.path().join("strict.toml");
    std::fs::write(&cfg, strict).unwrap();
    let out = ok(&run(&[
        "--data-dir",
        dir,
        "check",
        "--json",
        "--config",
        cfg.to_str().unwrap(),
    ]));
    assert_eq!(notifying(&out), [false, false], "{out}");
    let out = bin()
        .args(["--data-dir", dir, "check", "--json"])
        .env("BLUEZONED_CONFIG", &cfg)
        .output()
        .unwrap();
    assert_eq!(notifying(&ok(&out)), [false, false]);
    // A bad configuration stops `check` as it stops the daemon, naming the key.
    std::fs::write(&cfg, "[scoring]\nmin_distinct_ids = 0\n").unwrap();
    let err = fails(&run(&[
        "--data-dir",
        dir,
        "check",
        "--config",
        cfg.to_str().unwrap(),
    ]));
    assert!(err.contains("scoring.min_distinct_ids"), "{err}");
}

#[test]
fn keys_export_needs_yes_writes_one_day_entries_and_rotates() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    let dir = d.to_str().unwrap();
    ok(&run(&["--data-dir", dir, "init"]));
    // Today's own keys exist once the daemon has broadcast; create them as it would.
    let today = {
        let mut store = bluezoned::store::Store::open(&d).unwrap();
        let today = bluezone_protocol::time::utc_day(bluezoned::clock::Clock::now(
            &bluezoned::clock::SystemClock,
        ));
        store
            .own_keys_for_day(today, &mut rand::rngs::OsRng)
            .unwrap();
        store
            .own_keys_for_day(today - 1, &mut rand::rngs::OsRng)
            .unwrap();
        today
    };
    let err = fails(&run(&[
        "--data-dir",
        dir,
        "keys",
        "export",
        "--days",
        "14",
        "--format",
        "bluezone-f0",
    ]));
    assert!(
        err.contains("--yes") && err.contains("Nothing was exported"),
        "{err}"
    );
    let out = ok(&run(&[
        "--data-dir",
        dir,
        "keys",
        "export",
        "--days",
        "14",
        "--format",
        "bluezone-f0",
        "--yes",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let entries = v["data"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    for e in entries {
        assert_eq!(
            e["time_end"].as_i64().unwrap(),
            e["time_start"].as_i64().unwrap() + 86399
        );
        assert_eq!(e["time_start"].as_i64().unwrap() % 86400, 0);
    }
    let exported_today = entries
        .iter()
        .find(|e| e["time_start"] == today * 86400)
        .unwrap()["daily_key"]
        .clone();
    let store = bluezoned::store::Store::open(&d).unwrap();
    let now = store.own_keys_in_days(today..=today).unwrap();
    assert_ne!(
        serde_json::json!(now[0].daily_key.to_hex()),
        exported_today,
        "keys rotate after an export"
    );
    // Without --sign a GAEN export is unsigned: the day's keys in export.bin, no signature
    // (the health authority signs what it publishes), so it cannot be imported as a case list.
    let unsigned = tmp.path().join("unsigned.zip");
    ok(&run(&[
        "--data-dir",
        dir,
        "keys",
        "export",
        "--format",
        "gaen-zip",
        "--out",
        unsigned.to_str().unwrap(),
        "--yes",
    ]));
    let mut z = zip::ZipArchive::new(std::fs::File::open(&unsigned).unwrap()).unwrap();
    let mut bin = Vec::new();
    std::io::Read::read_to_end(&mut z.by_name("export.bin").unwrap(), &mut bin).unwrap();
    assert!(bin.starts_with(b"EK Export v1    "));
    assert_eq!(z.by_name("export.sig").unwrap().size(), 0, "no signature");
    // `inspect` prints the summary of an unverified file and exits non-zero.
    let o = run(&["cases", "inspect", unsigned.to_str().unwrap()]);
    assert!(!o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["signature"], "unverified", "{v}");
    assert_eq!(v["key_id"], serde_json::Value::Null, "{v}");
    assert!(fails(&run(&[
        "--data-dir",
        dir,
        "cases",
        "import",
        unsigned.to_str().unwrap()
    ]))
    .contains("--trust"));
    // The signed zip verifies under the signer's public key.
    let signer = bluezone_protocol::gaen::export::ExportSigner::new(
        "auth",
        "v1",
        p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng),
    );
    let key = tmp.path().join("sign.pem");
    std::fs::write(&key, signer.to_pkcs8_pem().unwrap().as_bytes()).unwrap();
    let public = tmp.path().join("public.pem");
    std::fs::write(&public, signer.public_key_pem().unwrap()).unwrap();
    let zip = tmp.path().join("keys.zip");
    ok(&run(&[
        "--data-dir",
        dir,
        "keys",
        "export",
        "--format",
        "gaen-zip",
        "--sign",
        key.to_str().unwrap(),
        "--key-id",
        "auth",
        "--key-version",
        "v1",
        "--out",
        zip.to_str().unwrap(),
        "--yes",
    ]));
    let out = ok(&run(&[
        "cases",
        "inspect",
        zip.to_str().unwrap(),
        "--trust",
        public.to_str().unwrap(),
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["signature"], "verified");
    assert_eq!(v["entries"], 2);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&zip).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    // An existing --out is refused (and nothing rotates) unless --force replaces it; a symbolic
    // link is never written through.
    let f0 = |out: &std::path::Path, force: bool| {
        let mut a = vec![
            "--data-dir",
            dir,
            "keys",
            "export",
            "--format",
            "bluezone-f0",
            "--yes",
            "--out",
            out.to_str().unwrap(),
        ];
        if force {
            a.push("--force");
        }
        run(&a)
    };
    let today_key = || {
        let store = bluezoned::store::Store::open(&d).unwrap();
        store.own_keys_in_days(today..=today).unwrap()[0]
            .daily_key
            .to_hex()
    };
    let before = today_key();
    let err = fails(&f0(&zip, false));
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(today_key(), before, "a refused export rotated the keys");
    ok(&f0(&zip, true));
    assert!(std::fs::read_to_string(&zip).unwrap().contains(&before));
    assert_ne!(today_key(), before);
    let target = tmp.path().join("target");
    std::fs::write(&target, "precious").unwrap();
    let link = tmp.path().join("link.json");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    for force in [false, true] {
        fails(&f0(&link, force));
    }
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
}
