//! `bluezoned cases` (inspect, import, list) and `bluezoned check`.

use std::path::{Path, PathBuf};

use super::{open_store, Env};
use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::caselist::{self, CaseList, Limits};
use crate::check::run_check;
use crate::cli::CasesCommand;
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
        CasesCommand::Import { file, trust } => import(&env()?.dir, &file, &trust),
        CasesCommand::List { json } => list(&resolve_data_dir(data_dir), json),
    }
}

fn read_file(file: &Path, limits: &Limits) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(file).with_context(|| format!("reading {}", file.display()))?;
    if meta.len() > limits.export.max_export_bin_bytes {
        bail!(
            "{}: {} bytes is over the {}-byte limit for a case list",
            file.display(),
            meta.len(),
            limits.export.max_export_bin_bytes
        );
    }
    std::fs::read(file).with_context(|| format!("reading {}", file.display()))
}

fn inspect(file: &Path, trust: &[PathBuf]) -> Result<()> {
    let trusted = caselist::load_trusts(trust)?;
    let limits = Limits::default();
    let bytes = read_file(file, &limits)?;
    let list = caselist::parse(&bytes, &trusted, &limits)
        .with_context(|| format!("{}", file.display()))?;
    println!("{}", list.summary());
    Ok(())
}

fn import(dir: &Path, file: &Path, trust: &[PathBuf]) -> Result<()> {
    let trusted = caselist::load_trusts(trust)?;
    let limits = Limits::default();
    let bytes = read_file(file, &limits)?;
    let list = caselist::parse(&bytes, &trusted, &limits)
        .with_context(|| format!("{}", file.display()))?;
    if let CaseList::GaenExport(x) = &list {
        if !x.is_verified() {
            bail!(
                "{}: a GAEN export must verify under a trusted key before it is imported: pass --trust PEM",
                file.display()
            );
        }
    }
    let mut store = open_store(dir)?;
    let (id, inserted) = store
        .insert_case_list(list.format().as_str(), list.entries() as u64, &bytes)
        .with_context(|| format!("storing {}", file.display()))?;
    let mut summary = list.summary();
    summary["id"] = json!(id);
    summary["imported"] = json!(inserted);
    println!("{summary}");
    if !inserted {
        eprintln!(
            "{} was imported before (case list {id}); nothing changed",
            file.display()
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
                l.id, l.format, l.entries, l.imported_day
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
    let report = run_check(&mut store, &env.config)?;
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
    for e in &report.exposures {
        println!(
            "{} {}…  day {}  {} sightings  {} s  min {} dB  {:.1} weighted min  {}",
            e.protocol,
            &e.case_key[..8],
            e.day,
            e.sightings,
            e.duration_s,
            e.min_attenuation_db,
            e.weighted_minutes,
            if e.notify { "NOTIFY" } else { "-" }
        );
    }
    Ok(())
}
