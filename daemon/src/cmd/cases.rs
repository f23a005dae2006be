//! `bluezoned cases` (inspect, import, list) and `bluezoned check`.

use std::path::{Path, PathBuf};

use super::{open_store, Env};
use anyhow::{bail, Context, Result};
use serde_json::json;

use bluezone_protocol::time::utc_day;

use crate::caselist::{self, CaseList, Limits};
use crate::check::run_check;
use crate::cli::CasesCommand;
use crate::ingest::{self, Ingest};
use crate::store::resolve_data_dir;

/// `inspect` reads only the file; `import` writes state, so it loads the configuration as `run`
/// does (a bad configuration fails here, not later in the daemon).
pub fn run(
    data_dir: Option<PathBuf>,
    env: impl FnOnce() -> Result<Env>,
    cmd: CasesCommand,
) -> Result<()> {
    match cmd {
        CasesCommand::Inspect { file, trust } => inspect(&file, &trust),
        CasesCommand::Import { file, trust } => import(env()?, &file, &trust),
        CasesCommand::List { json } => list(&resolve_data_dir(data_dir), json),
    }
}

fn read_file(file: &Path, limit: usize) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(file).with_context(|| format!("reading {}", file.display()))?;
    if meta.len() > limit as u64 {
        bail!(
            "{}: {} bytes is over the {}-byte limit for a case list",
            file.display(),
            meta.len(),
            limit
        );
    }
    std::fs::read(file).with_context(|| format!("reading {}", file.display()))
}

fn inspect(file: &Path, trust: &[PathBuf]) -> Result<()> {
    let trusted = caselist::load_trusts(trust)?;
    let limits = Limits::default();
    let bytes = read_file(file, limits.export.max_export_bin_bytes as usize)?;
    let list = caselist::parse(&bytes, &trusted, &limits)
        .with_context(|| format!("{}", file.display()))?;
    println!("{}", list.summary());
    report_skipped(file, &list);
    // The summary is printed either way (it says "unverified"); the exit status lets a script
    // tell a file it may act on from one it may not (security review L7).
    if let CaseList::GaenExport(x) = &list {
        if !x.is_verified() {
            return Err(caselist::Error::Unverified).with_context(|| format!("{}", file.display()));
        }
    }
    Ok(())
}

/// One stderr line per skipped entry, so a person sees what was left out.
fn report_skipped(file: &Path, list: &CaseList) {
    match list {
        CaseList::BluezoneF0(l) => {
            for s in &l.skipped {
                eprintln!("{}: skipped {s}", file.display());
            }
            let untold = l.skipped_total - l.skipped.len();
            if untold > 0 {
                eprintln!("{}: skipped {untold} more entries", file.display());
            }
        }
        CaseList::GaenExport(x) => {
            for s in &x.skipped {
                eprintln!("{}: skipped key {s}", file.display());
            }
        }
    }
}

fn import(env: Env, file: &Path, trust: &[PathBuf]) -> Result<()> {
    let Env {
        dir,
        mut config,
        clock,
        ..
    } = env;
    let dir = dir.as_path();
    // `--trust` flags, else the daemon's own `cases.trust`: the same anchors as the API's.
    if !trust.is_empty() {
        config.cases.trust = trust.to_vec();
    }
    let cases = Ingest::from_config(&config.cases)?;
    let bytes = read_file(file, config.cases.max_bytes)?;
    let list = cases.accept(bytes, None).map_err(|e| match e {
        ingest::Error::NoTrustAnchor | ingest::Error::Unverified => anyhow::anyhow!(
            "{}: a GAEN export must verify under a trusted key before it is imported: pass --trust PEM",
            file.display()
        ),
        e => anyhow::Error::new(e).context(format!("{}", file.display())),
    })?;
    report_skipped(file, &list.list);
    let mut store = open_store(dir)?;
    let stored = ingest::store(&mut store, &list, utc_day(clock.now()))
        .with_context(|| format!("storing {}", file.display()))?;
    let mut summary = list.summary();
    summary["id"] = json!(stored.id);
    summary["imported"] = json!(stored.new);
    println!("{summary}");
    if !stored.new {
        eprintln!(
            "{} was imported before (case list {}); nothing changed",
            file.display(),
            stored.id
        );
    }
    Ok(())
}

fn list(dir: &Path, as_json: bool) -> Result<()> {
    let store = open_store(dir)?;
    let lists = store.case_lists()?;
    if as_json {
        let v: Vec<_> = lists
            .iter()
            .map(|l| {
                json!({
                    "id": l.id,
                    "format": l.format,
                    "entries": l.entries,
                    "imported_day": l.imported_day,
                })
            })
            .collect();
        println!("{}", json!({ "case_lists": v }));
    } else {
        println!(
            "{:>4}  {:<12}  {:>9}  imported (UTC day)",
            "id", "format", "entries"
        );
        for l in &lists {
            println!(
                "{:>4}  {:<12}  {:>9}  {}",
                l.id,
                l.format.as_str(),
                l.entries,
                l.imported_day
            );
        }
    }
    Ok(())
}

/// `bluezoned check`: match every imported list against the log.
/// It reads the same configuration as the daemon: it writes exposures (and their `notify`
/// decision) to the same store.
pub fn check(env: &Env, as_json: bool) -> Result<()> {
    let mut store = open_store(&env.dir)?;
    let report = run_check(&mut store, &env.config, utc_day(env.clock.now()))?;
    if as_json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    println!(
        "{} keys checked, {} IDs derived, {} sightings of {} distinct IDs",
        report.keys_checked, report.ids_derived, report.sightings, report.distinct_ids
    );
    if report.exposures.is_empty() {
        println!("no exposures");
    }
    for x in &report.exposures {
        let e = &x.record;
        println!(
            "{} {}…  day {}  {} sightings  {} s  min {} dB  {:.1} weighted min  {}  {}",
            e.protocol,
            &e.case_key[..8],
            e.day,
            e.sightings,
            e.duration_s,
            e.min_attenuation_db,
            e.weighted_minutes,
            if x.notifies() { "NOTIFY" } else { "-" },
            x.delivery.state.as_str()
        );
    }
    Ok(())
}
