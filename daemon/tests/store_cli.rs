//! Contract tests of `bluezoned init`, `log import|export` and `status`, run on the built binary.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use bluezone_protocol::bluezone::SlotsPerDay;
use bluezone_protocol::time::utc_day;
use bluezoned::store::{KeyLocation, Store, DB_FILE, KEY_FILE};

mod support;
use support::{fails, now, ok, Cli};

fn bluezoned(data: &Path, args: &[&str]) -> Output {
    Cli::at(data).run(args)
}

fn bluezoned_env(data: &Path, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut c = Cli::at(data).cmd(args);
    c.envs(env.iter().copied());
    c.output().unwrap()
}

fn status_json(data: &Path) -> serde_json::Value {
    Cli::at(data).json(&["status", "--json"])
}

#[test]
fn init_creates_dir_key_and_store_and_is_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("state");
    let out = ok(&bluezoned(&data, &["init"]));
    assert!(out.contains("created master key"), "{out}");
    assert_eq!(
        fs::metadata(&data).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        fs::metadata(data.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(fs::metadata(data.join(KEY_FILE)).unwrap().len(), 32);
    assert!(data.join(DB_FILE).exists());
    let key = fs::read(data.join(KEY_FILE)).unwrap();
    let db = fs::read(data.join(DB_FILE)).unwrap();

    let out = ok(&bluezoned(&data, &["init"]));
    assert!(
        out.contains("already initialised") && out.contains("nothing changed"),
        "{out}"
    );
    assert!(!out.contains(&hex::encode(&key)));
    assert_eq!(fs::read(data.join(KEY_FILE)).unwrap(), key);
    assert_eq!(fs::read(data.join(DB_FILE)).unwrap(), db);
}

#[test]
fn commands_on_a_missing_store_say_run_init() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("none");
    let trace = tmp.path().join("t.txt");
    fs::write(&trace, "").unwrap();
    for args in [
        vec!["status"],
        vec!["status", "--json"],
        vec!["log", "export", "--format", "tsv"],
        vec!["log", "import", "--format", "tsv", trace.to_str().unwrap()],
    ] {
        let err = fails(&bluezoned(&data, &args));
        assert!(
            err.contains("run `bluezoned init` first"),
            "{args:?}: {err}"
        );
    }
    assert!(!data.exists(), "nothing created");
}

#[test]
fn bluezone_trace_import_export_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    ok(&bluezoned(&data, &["init"]));
    let t = now() - 3600;
    let trace = tmp.path().join("data_trace.txt");
    fs::write(
        &trace,
        format!(
            "130CEA6472130C185D8643DF\tA1A2A3A4A5A6A7A8A9AAABAC\t-67\t{}123\n\
             130CEA6472130C185D8643DF\tB1B2B3B4B5B6B7B8B9BABBBC\t-80\t{}\n\
             130CEA6472130C185D8643DF\tA1A2A3A4A5A6A7A8A9AAABAC\t-61\t{}000\n",
            t,
            t + 60,
            t + 900
        ),
    )
    .unwrap();
    let out = ok(&bluezoned(
        &data,
        &[
            "log",
            "import",
            "--format",
            "bluezone-trace",
            trace.to_str().unwrap(),
        ],
    ));
    assert!(out.contains("imported 3 sightings"), "{out}");

    let st = status_json(&data);
    assert_eq!(st["sightings"], 3);
    assert_eq!(st["distinct_ids"], 2);
    assert_eq!(st["key_source"], "file");

    let o = bluezoned(&data, &["log", "export", "--format", "bluezone-trace"]);
    let text = ok(&o);
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), 3, "{text}");
    let rows: Vec<(&str, &str, &str)> = lines.iter().map(|c| (c[1], c[2], c[3])).collect();
    let (ts0, ts1, ts2) = (
        (t * 1000).to_string(),
        ((t + 60) * 1000).to_string(),
        ((t + 900) * 1000).to_string(),
    );
    assert_eq!(
        rows,
        vec![
            ("A1A2A3A4A5A6A7A8A9AAABAC", "-67", ts0.as_str()),
            ("B1B2B3B4B5B6B7B8B9BABBBC", "-80", ts1.as_str()),
            ("A1A2A3A4A5A6A7A8A9AAABAC", "-61", ts2.as_str()),
        ]
    );
    // L4: a read command creates nothing: with no own keys for those days the own-ID column
    // is empty (as iOS writes it), and the store still has no own keys.
    let days = utc_day(t)..=utc_day(t + 900);
    let mut store = Store::open_at(&data, KeyLocation::resolve(&data, None)).unwrap();
    assert!(lines.iter().all(|c| c[0].is_empty()), "{text}");
    assert!(
        store.own_keys_in_days(days.clone()).unwrap().is_empty(),
        "export created own keys"
    );
    // Column 1: the device's own Bluezone ID at that moment, from its own key of that day
    // (created here as the daemon's advertiser does).
    for day in days.clone() {
        store.own_keys_for_day(day, &mut rand::rngs::OsRng).unwrap();
    }
    drop(store);
    let text = ok(&bluezoned(
        &data,
        &["log", "export", "--format", "bluezone-trace"],
    ));
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    let store = Store::open_at(&data, KeyLocation::resolve(&data, None)).unwrap();
    let own = store.own_keys_in_days(days).unwrap();
    for (cols, time) in lines.iter().zip([t, t + 60, t + 900]) {
        let day_keys = own.iter().find(|k| k.day == utc_day(time)).unwrap();
        let expect = day_keys
            .daily_key
            .id(SlotsPerDay::DEFAULT.slot(time))
            .to_hex()
            .to_uppercase();
        assert_eq!(cols[0], expect);
    }
    drop(store);
    // Stable: exporting again gives the same own IDs.
    assert_eq!(
        ok(&bluezoned(
            &data,
            &["log", "export", "--format", "bluezone-trace"]
        )),
        text
    );
}

#[test]
fn a_bad_line_rejects_the_whole_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    ok(&bluezoned(&data, &["init"]));
    let file = tmp.path().join("log.tsv");
    fs::write(
        &file,
        "0102030405060708090a0b0c -60 1700000000\n\
         0102030405060708090a0b0c -61 1700000001\n\
         0102030405060708090a0b0c loud 1700000002\n",
    )
    .unwrap();
    let err = fails(&bluezoned(
        &data,
        &["log", "import", "--format", "tsv", file.to_str().unwrap()],
    ));
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(
        err.contains("line 3: column 2 (rssi): expected an integer"),
        "{err}"
    );
    assert_eq!(status_json(&data)["sightings"], 0, "store unchanged");

    fs::write(tmp.path().join("t.txt"), "AB\tCD\n").unwrap();
    let err = fails(&bluezoned(
        &data,
        &[
            "log",
            "import",
            "--format",
            "bluezone-trace",
            tmp.path().join("t.txt").to_str().unwrap(),
        ],
    ));
    assert!(
        err.contains("line 1: expected 4 tab-separated columns"),
        "{err}"
    );
}

/// Every file of the data directory, by name.
fn dir_bytes(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Security L1 (log import): a far-future, far-past or negative sighting time rejects the whole
/// file with an error naming the line and the field, and the data directory stays byte for byte
/// as it was; a time up to a day ahead (another phone's clock) is accepted.
#[test]
fn far_future_and_far_past_times_reject_the_file_and_leave_the_store_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    ok(&bluezoned(&data, &["init"]));
    let t = now();
    let good = tmp.path().join("good.tsv");
    fs::write(
        &good,
        format!(
            "0102030405060708090a0b0c -60 {}\n0102030405060708090a0b0d -60 {}\n",
            t - 600,
            t + 3600
        ),
    )
    .unwrap();
    let out = ok(&bluezoned(
        &data,
        &["log", "import", "--format", "tsv", good.to_str().unwrap()],
    ));
    assert!(out.contains("imported 2 sightings"), "{out}");
    let before = dir_bytes(&data);

    let id = "0102030405060708090a0b0e";
    let cases = [
        (
            "tsv",
            format!("{id} -60 {}", t + 3 * 86_400),
            "line 2: column 3 (time)",
            "in the future",
        ),
        (
            "tsv",
            format!("{id} -60 9223372036854775000"),
            "line 2: column 3 (time)",
            "in the future",
        ),
        (
            "tsv",
            format!("{id} -60 86400"),
            "line 2: column 3 (time)",
            "before 946684800 (2000-01-01)",
        ),
        (
            "tsv",
            format!("{id} -60 -5"),
            "line 2: column 3 (time)",
            "non-negative",
        ),
        (
            "bluezone-trace",
            format!("\t{id}\t-60\t{}", (t + 400 * 86_400) * 1000),
            "line 2: column 4 (timestamp)",
            "in the future",
        ),
        (
            "bluezone-trace",
            format!("\t{id}\t-60\t1000"),
            "line 2: column 4 (timestamp)",
            "before",
        ),
    ];
    for (format, bad, place, what) in cases {
        let first = if format == "tsv" {
            format!("{id} -60 {t}")
        } else {
            format!("\t{id}\t-60\t{t}")
        };
        let file = tmp.path().join("bad.txt");
        fs::write(&file, format!("{first}\n{bad}\n")).unwrap();
        let err = fails(&bluezoned(
            &data,
            &["log", "import", "--format", format, file.to_str().unwrap()],
        ));
        assert!(
            err.contains(place) && err.contains(what),
            "{format} {bad:?}: {err}"
        );
        assert!(err.contains(&file.display().to_string()), "{err}");
        assert_eq!(
            dir_bytes(&data),
            before,
            "{format} {bad:?}: the data directory changed"
        );
    }
    assert_eq!(status_json(&data)["sightings"], 2);
}

#[test]
fn tsv_round_trip_and_gaen_skipped_in_bluezone_trace() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    ok(&bluezoned(&data, &["init"]));
    let t = now() - 600;
    let input = format!(
        "0102030405060708090a0b0c\t-60\t{t}\n\
         000102030405060708090a0b0c0d0e0f\t-80\t{}\t-12\n\
         00112233445566778899aabbccddeeff -81 {}\n",
        t + 1,
        t + 2
    );
    let file = tmp.path().join("in.tsv");
    fs::write(&file, &input).unwrap();
    let out = ok(&bluezoned(
        &data,
        &["log", "import", "--format", "tsv", file.to_str().unwrap()],
    ));
    assert!(out.contains("imported 3 sightings"), "{out}");
    let exported = ok(&bluezoned(&data, &["log", "export", "--format", "tsv"]));
    assert_eq!(exported, input.replace(' ', "\t"));

    let o = bluezoned(&data, &["log", "export", "--format", "bluezone-trace"]);
    let text = ok(&o);
    assert_eq!(text.lines().count(), 1);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("skipped 2 GAEN sightings"), "{stderr}");
}

#[test]
fn export_days_limits_to_the_last_n_utc_days() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    ok(&bluezoned(&data, &["init"]));
    let today_noon = utc_day(now()) * 86_400 + 43_200;
    let file = tmp.path().join("in.tsv");
    fs::write(
        &file,
        format!(
            "0102030405060708090a0b0c -60 {}\n0102030405060708090a0b0d -60 {}\n0102030405060708090a0b0e -60 {}\n",
            today_noon - 10 * 86_400,
            today_noon - 86_400,
            today_noon
        ),
    )
    .unwrap();
    ok(&bluezoned(
        &data,
        &["log", "import", "--format", "tsv", file.to_str().unwrap()],
    ));
    let count = |days: &str| {
        ok(&bluezoned(
            &data,
            &["log", "export", "--format", "tsv", "--days", days],
        ))
        .lines()
        .count()
    };
    assert_eq!(count("1"), 1);
    assert_eq!(count("2"), 2);
    assert_eq!(count("30"), 3);
    let err = fails(&bluezoned(
        &data,
        &["log", "export", "--format", "tsv", "--days", "0"],
    ));
    assert!(err.contains("--days"), "{err}");
}

#[test]
fn status_shows_counts_never_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    ok(&bluezoned(&data, &["init"]));
    let key = hex::encode(fs::read(data.join(KEY_FILE)).unwrap());
    let st = status_json(&data);
    for field in [
        "store_bytes",
        "oldest_day",
        "sightings",
        "distinct_ids",
        "days",
        "key_source",
    ] {
        assert!(st.get(field).is_some(), "{field} missing: {st}");
    }
    assert!(st["store_bytes"].as_u64().unwrap() > 0);
    assert!(st["oldest_day"].is_null());
    let human = ok(&bluezoned(&data, &["status"]));
    assert!(human.contains("key source  file"), "{human}");
    assert!(human.contains("total"), "{human}");
    assert!(!human.contains(&key) && !st.to_string().contains(&key));
}

#[test]
fn credentials_directory_key_and_bad_key_files() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    let creds = tmp.path().join("creds");
    fs::create_dir(&creds).unwrap();
    let cred = creds.join(KEY_FILE);
    fs::write(&cred, [9u8; 32]).unwrap();
    fs::set_permissions(&cred, fs::Permissions::from_mode(0o400)).unwrap();
    let env = [("CREDENTIALS_DIRECTORY", creds.as_path())];
    let out = ok(&bluezoned_env(&data, &["init"], &env));
    assert!(out.contains("credential"), "{out}");
    assert!(!data.join(KEY_FILE).exists());
    let st: serde_json::Value =
        serde_json::from_str(&ok(&bluezoned_env(&data, &["status", "--json"], &env))).unwrap();
    assert_eq!(st["key_source"], "credential");
    // Without the credential there is no key: clear error.
    let err = fails(&bluezoned(&data, &["status"]));
    assert!(
        err.contains(KEY_FILE) && err.contains("run `bluezoned init` first"),
        "{err}"
    );
    // H3: a credential's mode bits are systemd's business (it grants the file by ACL, so it
    // shows 0440): accepted whatever they are.
    fs::set_permissions(&cred, fs::Permissions::from_mode(0o444)).unwrap();
    ok(&bluezoned_env(&data, &["status"], &env));
    // A credential of the wrong size: refused, naming the file.
    fs::set_permissions(&cred, fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(&cred, [9u8; 16]).unwrap();
    let err = fails(&bluezoned_env(&data, &["status"], &env));
    assert!(err.contains("expected exactly 32 bytes, found 16"), "{err}");
    assert!(!err.contains("0909"), "{err}");
    // Another key of the right size: wrong key, clear error.
    fs::write(&cred, [8u8; 32]).unwrap();
    let err = fails(&bluezoned_env(&data, &["status"], &env));
    assert!(err.contains("does not match this store"), "{err}");
}

/// L8: a writing command applies retention when it opens the store, so data past
/// `store.keep_days` does not outlive it just because the daemon is not running.
#[test]
fn a_writing_command_purges_data_past_retention() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    ok(&bluezoned(&data, &["init"]));
    let old_day = utc_day(now()) - 30;
    {
        let mut store = Store::open_at(&data, KeyLocation::resolve(&data, None)).unwrap();
        store
            .own_keys_for_day(old_day, &mut rand::rngs::OsRng)
            .unwrap();
    }
    let file = tmp.path().join("old.tsv");
    fs::write(
        &file,
        format!("0102030405060708090a0b0c -60 {}\n", old_day * 86_400 + 60),
    )
    .unwrap();
    ok(&bluezoned(
        &data,
        &["log", "import", "--format", "tsv", file.to_str().unwrap()],
    ));
    // A read command leaves it.
    assert_eq!(status_json(&data)["sightings"], 1);
    let fresh = tmp.path().join("new.tsv");
    fs::write(
        &fresh,
        format!("0102030405060708090a0b0d -60 {}\n", now() - 60),
    )
    .unwrap();
    ok(&bluezoned(
        &data,
        &["log", "import", "--format", "tsv", fresh.to_str().unwrap()],
    ));
    let st = status_json(&data);
    assert_eq!(st["sightings"], 1, "{st}");
    let store = Store::open_at(&data, KeyLocation::resolve(&data, None)).unwrap();
    assert!(store
        .own_keys_in_days(old_day..=old_day)
        .unwrap()
        .is_empty());
}

/// `init` reads the configuration `run` reads (`<data dir>/bluezoned.toml`, `--config` /
/// `BLUEZONED_CONFIG`, `BLUEZONED_*` variables and flags) and the same data directory (`--data-dir`
/// or `BLUEZONED_DATA_DIR`): a configuration the daemon would refuse stops `init`, naming the key,
/// before any key or store is created; a valid one initialises the directory `run` then uses.
#[test]
fn init_reads_the_same_configuration_and_data_directory_as_run() {
    let tmp = tempfile::tempdir().unwrap();
    let nothing_created = |data: &Path| {
        assert!(
            !data.join(KEY_FILE).exists(),
            "no key in {}",
            data.display()
        );
        assert!(
            !data.join(DB_FILE).exists(),
            "no store in {}",
            data.display()
        );
    };

    // The data directory's own bluezoned.toml.
    let data = tmp.path().join("a");
    Cli::at(&data).config("[store]\nkeep_days = 0\n");
    let err = fails(&bluezoned(&data, &["init"]));
    assert!(err.contains("store.keep_days"), "{err}");
    assert!(err.contains("bluezoned.toml"), "names the file: {err}");
    nothing_created(&data);
    // Fixed, it initialises that directory.
    Cli::at(&data).config("[store]\nkeep_days = 14\n");
    ok(&bluezoned(&data, &["init"]));
    assert!(data.join(KEY_FILE).exists() && data.join(DB_FILE).exists());

    // `--config FILE` and `BLUEZONED_CONFIG`, as for `run`.
    let bad = tmp.path().join("bad.toml");
    fs::write(&bad, "[radio]\nno_such_key = 1\n").unwrap();
    let data = tmp.path().join("b");
    let err = fails(&bluezoned(
        &data,
        &["init", "--config", bad.to_str().unwrap()],
    ));
    assert!(err.contains("no_such_key"), "{err}");
    nothing_created(&data);
    let err = fails(&bluezoned_env(
        &data,
        &["init"],
        &[("BLUEZONED_CONFIG", &bad)],
    ));
    assert!(err.contains("no_such_key"), "{err}");
    nothing_created(&data);

    // A variable standing in for a flag is validated as `run` validates it.
    let err = fails(
        &Cli::at(&data)
            .cmd(&["init"])
            .env("BLUEZONED_KEEP_DAYS", "0")
            .output()
            .unwrap(),
    );
    assert!(err.contains("store.keep_days"), "{err}");
    nothing_created(&data);

    // The data directory from BLUEZONED_DATA_DIR, whose bluezoned.toml is the one read.
    let data = tmp.path().join("c");
    fs::create_dir_all(&data).unwrap();
    fs::write(
        data.join("bluezoned.toml"),
        "[scoring]\nmin_distinct_ids = 0\n",
    )
    .unwrap();
    let from_env = |args: &[&str]| {
        support::bin()
            .args(args)
            .env("BLUEZONED_DATA_DIR", &data)
            .current_dir(tmp.path())
            .output()
            .unwrap()
    };
    let err = fails(&from_env(&["init"]));
    assert!(err.contains("scoring.min_distinct_ids"), "{err}");
    nothing_created(&data);
    fs::write(
        data.join("bluezoned.toml"),
        "[scoring]\nmin_distinct_ids = 2\n",
    )
    .unwrap();
    let out = ok(&from_env(&["init"]));
    assert!(out.contains(&data.display().to_string()), "{out}");
    assert!(data.join(KEY_FILE).exists() && data.join(DB_FILE).exists());
    // `status` on the same variable finds the store `init` made.
    ok(&from_env(&["status"]));
}
