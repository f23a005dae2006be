//! One publication, as the reference key server batches: the cases uploaded since the last
//! publication become this window's files; files whose keys all left the retention period drop
//! out of `index.txt` and are deleted after a grace period.
//!
//! Order of writes (a crash at any point leaves a valid published tree):
//! 1. the window's files (signed GAEN export zips, at most `max_keys_per_file` keys each with
//!    `batch_num`/`batch_size`; a signed F0 zip, whose `revoked` list names the daily keys of F0
//!    cases revoked since they were published), each written whole;
//! 2. `index.txt`, replaced by rename: devices see the old index or the new one;
//! 3. deletion of files unlisted more than `grace_s` ago, and of files a crashed run left behind;
//! 4. the database commit. Until it, the window counts as unpublished, so the next run publishes
//!    it again under new names (devices de-duplicate keys).

use anyhow::{bail, Context, Result};
use bluezone_protocol::bluezone::f0::write_f0_with_revocations;
use bluezone_protocol::bluezone::signed::write_signed_f0;
use bluezone_protocol::bluezone::F0List;
use bluezone_protocol::gaen::export::{write_export, ExportFile, ExportKey, ReportType};
use bluezone_protocol::gaen::TEK_ROLLING_PERIOD;
use bluezone_protocol::ids::{DailyKey, Tek};
use bluezone_protocol::time::DAY_SECONDS;
use rand::Rng;
use serde::Serialize;

use super::db::{Db, FileRow};
use super::output::Output;
use super::Authority;

/// The name of the index devices poll.
pub const INDEX: &str = "index.txt";

/// What a publication did (`authority publish --json`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct PublishReport {
    pub window_start: i64,
    pub window_end: i64,
    /// New files, in index order.
    pub files: Vec<String>,
    pub gaen_keys: usize,
    pub revised_keys: usize,
    pub padding_keys: usize,
    pub f0_entries: usize,
    /// Daily keys of revoked F0 cases in this publication's F0 revocation list.
    pub revoked_f0_keys: usize,
    /// Every file now listed in `index.txt`, newest last.
    pub index: Vec<String>,
    pub removed: Vec<String>,
}

/// A point inside a publication that a caller of [`publish_observed`] is told about.
///
/// This is how the crash test stops a publication at an exact point without a test switch in
/// the shipped program: it calls `publish_observed` from a child process and kills that process
/// (SIGKILL) when told [`Step::FilesWritten`]. `publish` passes an observer that does nothing.
/// (A `cfg(test)` hook is invisible to integration tests, a cargo feature would build a second
/// binary, and killing `authority publish` when its files appear races with its index write.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Every new file of the window is written; `index.txt` is not yet replaced.
    FilesWritten,
}

/// Publishes the window ending at `now`.
pub async fn publish(
    auth: &Authority,
    db: &std::sync::Mutex<Db>,
    out: &Output,
    now: i64,
) -> Result<PublishReport> {
    publish_observed(auth, db, out, now, |_| {}).await
}

/// [`publish`], telling `observe` each [`Step`] it reaches.
pub async fn publish_observed(
    auth: &Authority,
    db: &std::sync::Mutex<Db>,
    out: &Output,
    now: i64,
    mut observe: impl FnMut(Step),
) -> Result<PublishReport> {
    let cfg = &auth.config.publish;
    let lock = || db.lock().unwrap_or_else(|p| p.into_inner());
    let (from, to, keys, listed, expired, known) = {
        let db = lock();
        let from = db.last_publication()?;
        // Windows are bounded by row ids; times only name the files. Two publications in one
        // second get consecutive end times; a clock more than a minute behind the last window is
        // refused.
        if now < from.time - 60 {
            bail!(
                "the clock reads {now}, before the end of the last publication window ({}): \
                 refusing to publish until it is past it (did the clock jump back?)",
                from.time
            );
        }
        let to = db.head(now.max(from.time + 1))?;
        let not_before = now - cfg.retention_days * DAY_SECONDS;
        let keys = db.window_keys(&from, &to, not_before)?;
        let listed = db.listed_files()?;
        let expired = db.expired_files(now - cfg.grace_s)?;
        let known: std::collections::HashSet<String> = db
            .listed_files()?
            .into_iter()
            .chain(db.expired_files(i64::MAX)?)
            .map(|f| f.path)
            .collect();
        (from, to, keys, listed, expired, known)
    };
    let end = to.time;
    // The first window has no previous end: name it after one interval back.
    let shown_start = if from.time == 0 {
        end - cfg.interval_s as i64
    } else {
        from.time
    };
    let not_before = now - cfg.retention_days * DAY_SECONDS;
    let mut report = PublishReport {
        window_start: shown_start,
        window_end: end,
        gaen_keys: keys.gaen.len(),
        revised_keys: keys.revoked.len(),
        f0_entries: keys.f0.len(),
        ..PublishReport::default()
    };

    let mut new_files: Vec<(FileRow, Vec<u8>)> = Vec::new();
    if !keys.gaen.is_empty() || !keys.revoked.is_empty() {
        let mut gaen = keys.gaen;
        if cfg.padding_keys > 0 {
            report.padding_keys = cfg.padding_keys;
            gaen.extend(padding(cfg.padding_keys, now, cfg.retention_days));
        }
        gaen.sort_by(|a, b| a.tek.as_bytes().cmp(b.tek.as_bytes()));
        let batches: Vec<&[ExportKey]> = if gaen.is_empty() {
            vec![&[]]
        } else {
            gaen.chunks(cfg.max_keys_per_file).collect()
        };
        let batch_size = batches.len() as i32;
        for (i, batch) in batches.into_iter().enumerate() {
            let revised = if i == 0 {
                keys.revoked.clone()
            } else {
                Vec::new()
            };
            let keys_until = batch
                .iter()
                .chain(&revised)
                .map(|k| (k.rolling_start as i64 + k.rolling_period as i64) * 600)
                .max()
                .unwrap_or(now);
            let file = ExportFile {
                start_timestamp: shown_start.max(0) as u64,
                end_timestamp: end.max(0) as u64,
                region: auth.config.region.clone(),
                batch_num: i as i32 + 1,
                batch_size,
                signature_infos: vec![auth.signer.signature_info()],
                keys: batch.to_vec(),
                revised_keys: revised,
            };
            let bytes = write_export(&file, &auth.signer).context("writing a GAEN export")?;
            let path = format!("{shown_start}-{end}-{:05}.zip", i + 1);
            new_files.push((
                FileRow {
                    path,
                    publication: 0,
                    keys_until,
                    unlisted_at: None,
                },
                bytes,
            ));
        }
    }
    if !keys.f0.is_empty() || !keys.revoked_f0.is_empty() {
        let keys_until = keys
            .f0
            .iter()
            .chain(&keys.revoked_f0)
            .map(|e| e.time_end)
            .max()
            .unwrap_or(now);
        // Revoked F0 cases published earlier: their daily keys, once each, sorted.
        let mut revoked: Vec<DailyKey> = keys
            .revoked_f0
            .iter()
            .map(|e| e.daily_key.clone())
            .collect();
        revoked.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        revoked.dedup();
        report.revoked_f0_keys = revoked.len();
        let json = write_f0_with_revocations(&F0List { entries: keys.f0 }, &revoked);
        let bytes =
            write_signed_f0(json.as_bytes(), &auth.signer).context("signing the F0 list")?;
        let path = format!("{shown_start}-{end}.f0.zip");
        new_files.push((
            FileRow {
                path,
                publication: 0,
                keys_until,
                unlisted_at: None,
            },
            bytes,
        ));
    }

    // 1. Files.
    out.prepare().await?;
    for (row, bytes) in &new_files {
        out.put(&row.path, bytes).await?;
        report.files.push(row.path.clone());
    }
    observe(Step::FilesWritten);

    // 2. index.txt: files still holding a key inside the retention period, newest last.
    let (keep, unlisted): (Vec<FileRow>, Vec<FileRow>) =
        listed.into_iter().partition(|f| f.keys_until > not_before);
    report.index = keep
        .iter()
        .map(|f| f.path.clone())
        .chain(new_files.iter().map(|(r, _)| r.path.clone()))
        .collect();
    let mut index = report.index.join("\n");
    if !index.is_empty() {
        index.push('\n');
    }
    out.put(INDEX, index.as_bytes()).await?;

    // 3. Files whose grace period ended, and files a crashed publication left behind.
    let listed_now: std::collections::HashSet<&str> =
        report.index.iter().map(String::as_str).collect();
    for f in &expired {
        out.delete(&f.path).await?;
        report.removed.push(f.path.clone());
    }
    for (name, age) in out.list(now).await? {
        let ours = name.ends_with(".zip") && !name.starts_with('.');
        if ours
            && !known.contains(&name)
            && !listed_now.contains(name.as_str())
            && age > cfg.grace_s
        {
            out.delete(&name).await?;
            report.removed.push(name);
        }
    }

    // 4. Commit.
    let unlisted: Vec<String> = unlisted.into_iter().map(|f| f.path).collect();
    let rows: Vec<FileRow> = new_files.into_iter().map(|(r, _)| r).collect();
    let expired: Vec<String> = expired.into_iter().map(|f| f.path).collect();
    lock().record_publication(&from, &to, &rows, &unlisted, &expired, now)?;
    Ok(report)
}

/// Random keys shaped like real ones (whole days inside the retention period, confirmed test),
/// so that a file's size says nothing about how many cases it carries.
fn padding(n: usize, now: i64, retention_days: i64) -> Vec<ExportKey> {
    let mut rng = rand::rngs::OsRng;
    let today = now.div_euclid(DAY_SECONDS);
    (0..n)
        .map(|_| {
            let day = today - rng.gen_range(0..retention_days.max(1));
            ExportKey {
                report_type: ReportType::ConfirmedTest,
                ..ExportKey::new(Tek::random(&mut rng), (day * DAY_SECONDS / 600) as u32)
            }
        })
        .inspect(|k| debug_assert_eq!(k.rolling_period, TEK_ROLLING_PERIOD))
        .collect()
}
