//! `init`, `log import|export` and `status`: the commands that work on the encrypted store.
//!
//! Contracts (README, CI and other tools rely on them):
//! - `bluezoned --data-dir DIR init` creates DIR (0700), its key (0600) and the store; run again
//!   it changes nothing and says so; exit 0 either way.
//! - `log import --format bluezone-trace|tsv FILE`: all or nothing; a bad line rejects the whole
//!   file, naming its line and column, before the store is opened. Sighting times must lie
//!   between 2000-01-01 and one day after now.
//! - `log export --format bluezone-trace|tsv [--days N]` writes to stdout.
//! - `status [--json]`: counts only, never a key or an identifier.

use std::collections::hash_map::{Entry, HashMap};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::open_store;
use anyhow::{anyhow, bail, Context, Result};
use bluezone_protocol::bluezone::trace::{self, TraceRow};
use bluezone_protocol::bluezone::SlotsPerDay;
use bluezone_protocol::time::utc_day;
use bluezone_protocol::{PeerId, RollingId};

use crate::cli::{LogCommand, LogFormat};
use crate::clock::{Clock, SystemClock};
use crate::logfile;
use crate::store::{resolve_data_dir, Store, StoreStats};

/// `init`: the data directory `run` would use, after the configuration `run` would read
/// validated (a file, variable or flag the daemon would refuse stops `init` before it creates
/// anything).
pub(super) fn init(env: &super::Env) -> Result<()> {
    let dir = env.dir.as_path();
    let (store, report) = Store::init(dir)
        .with_context(|| format!("initialising data directory {}", dir.display()))?;
    let key = format!("{} {}", store.key_source(), store.key_path().display());
    if report.nothing_changed() {
        println!(
            "already initialised: {} (store {}, master key from {key}); nothing changed",
            dir.display(),
            store.path().display()
        );
        return Ok(());
    }
    println!("initialised {}", dir.display());
    if report.created_dir {
        println!("  created directory {} (mode 0700)", dir.display());
    }
    if report.created_key {
        println!(
            "  created master key {} (mode 0600)",
            store.key_path().display()
        );
    } else {
        println!("  master key from {key}");
    }
    if report.created_store {
        println!("  created store {}", store.path().display());
    }
    Ok(())
}

pub(super) fn log(
    data_dir: Option<PathBuf>,
    env: impl FnOnce() -> Result<super::Env>,
    cmd: LogCommand,
) -> Result<()> {
    let dir = resolve_data_dir(data_dir);
    match cmd {
        // Writing contact data reads the configuration (retention) as `run` does.
        LogCommand::Import { format, file } => import(&env()?, format, &file),
        LogCommand::Export { format, days } => export(&dir, format, days),
    }
}

pub(super) fn status(data_dir: Option<PathBuf>, json: bool) -> Result<()> {
    let dir = resolve_data_dir(data_dir);
    let store = open_store(&dir)?;
    let st = store
        .stats()
        .with_context(|| format!("reading statistics of {}", store.path().display()))?;
    let mut out = io::stdout().lock();
    if json {
        writeln!(out, "{}", status_json(&store, &st))?;
    } else {
        write_status_table(&mut out, &store, &st)?;
    }
    Ok(())
}

fn import(env: &super::Env, format: LogFormat, file: &Path) -> Result<()> {
    // The whole file is checked before the store is opened: a bad file leaves the store as it
    // was, byte for byte (opening for write may purge or migrate).
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let window = logfile::TimeWindow::until(env.clock.now());
    let sightings = logfile::parse_log(format, &bytes, window)
        .with_context(|| format!("{}", file.display()))?;
    let mut store = super::open_store_for_write(env)?;
    // One call, one transaction: the file is stored whole or not at all.
    store
        .insert_sightings(&sightings)
        .with_context(|| format!("storing the sightings of {}", file.display()))?;
    println!(
        "imported {} sightings from {}",
        sightings.len(),
        file.display()
    );
    Ok(())
}

fn export(dir: &Path, format: LogFormat, days: Option<u32>) -> Result<()> {
    let store = open_store(dir)?;
    let first = match days {
        None => i64::MIN,
        Some(0) => bail!("--days: expected at least 1 (the last N UTC days, today included)"),
        Some(n) => utc_day(SystemClock.now()) - (i64::from(n) - 1),
    };
    let read = store
        .sightings_in_days(first, i64::MAX)
        .with_context(|| format!("reading sightings from {}", store.path().display()))?;
    if read.corrupt > 0 {
        eprintln!(
            "bluezoned: warning: {} sealed chunks failed to open (corrupt) and were skipped",
            read.corrupt
        );
    }
    let mut sightings = read.sightings;
    sightings.sort_by_key(|s| s.time);
    let mut out = BufWriter::new(io::stdout().lock());
    let mut written = 0usize;
    let mut line = String::new();
    match format {
        LogFormat::BluezoneTrace => {
            // The device's own ID at each sighting: its own key of that day, slot by slot. A
            // day without own keys gets an empty own-ID column (as iOS writes it): a read
            // command never creates keys.
            let mut own: HashMap<i64, Vec<RollingId>> = HashMap::new();
            let mut gaen = 0usize;
            for s in &sightings {
                let PeerId::Bluezone(peer) = s.peer else {
                    gaen += 1;
                    continue;
                };
                let day = utc_day(s.time);
                let ids = match own.entry(day) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(v) => {
                        let own = store
                            .own_keys(day)
                            .with_context(|| format!("own keys of UTC day {day}"))?;
                        let slots = SlotsPerDay::DEFAULT.get() as usize;
                        v.insert(
                            own.map_or_else(Vec::new, |k| k.daily_key.ids().take(slots).collect()),
                        )
                    }
                };
                let slot = SlotsPerDay::DEFAULT.slot(s.time) as usize;
                let own = match ids.get(slot) {
                    Some(id) => Some(*id),
                    // A day without own keys: an empty own-ID column (as iOS writes it); a read
                    // command never creates keys.
                    None if ids.is_empty() => None,
                    None => return Err(anyhow!("no own ID for slot {slot} of day {day}")),
                };
                line.clear();
                let row = TraceRow {
                    own,
                    contact: PeerId::Bluezone(peer),
                    rssi: s.rssi,
                    time: s.time,
                };
                trace::write_trace_row(&mut line, &row).context("formatting a trace row")?;
                out.write_all(line.as_bytes())?;
                written += 1;
            }
            if gaen > 0 {
                eprintln!(
                    "bluezoned: skipped {gaen} GAEN sightings: the bluezone-trace format carries \
                     Bluezone IDs only (use --format tsv for all)"
                );
            }
        }
        LogFormat::Tsv => {
            for s in &sightings {
                line.clear();
                logfile::write_tsv_line(&mut line, s).context("formatting a log line")?;
                out.write_all(line.as_bytes())?;
                written += 1;
            }
        }
    }
    out.flush().context("writing to stdout")?;
    eprintln!("bluezoned: exported {written} sightings");
    Ok(())
}

/// `YYYY-MM-DD` of a UTC day number (proleptic Gregorian; H. Hinnant's civil_from_days).
fn date(day: i64) -> String {
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn status_json(store: &Store, st: &StoreStats) -> serde_json::Value {
    // What the running daemon's radio reported at start (BlueZ only), if it did.
    let radio_privacy = store
        .path()
        .parent()
        .and_then(|d| std::fs::read(d.join(super::run::RADIO_STATUS_FILE)).ok())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    serde_json::json!({
        "radio_privacy": radio_privacy,
        "store": store.path().display().to_string(),
        "store_bytes": st.store_bytes,
        "schema_version": st.schema_version,
        "key_source": st.key_source.as_str(),
        "oldest_day": st.oldest_day,
        "oldest_date": st.oldest_day.map(date),
        "sightings": st.sightings,
        "distinct_ids": st.distinct_ids,
        "corrupt_chunks": st.corrupt_chunks,
        "days": st.days.iter().map(|d| serde_json::json!({
            "day": d.day,
            "date": date(d.day),
            "sightings": d.sightings,
            "distinct_ids": d.distinct_ids,
        })).collect::<Vec<_>>(),
        "own_key_days": st.own_key_days,
        "case_lists": st.case_lists,
        "exposures": st.exposures,
    })
}

fn write_status_table(out: &mut impl Write, store: &Store, st: &StoreStats) -> io::Result<()> {
    writeln!(
        out,
        "store       {} ({} bytes, schema v{})",
        store.path().display(),
        st.store_bytes,
        st.schema_version
    )?;
    writeln!(out, "key source  {}", st.key_source)?;
    match st.oldest_day {
        Some(d) => writeln!(out, "oldest day  {} (day {d})", date(d))?,
        None => writeln!(out, "oldest day  -")?,
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<12} {:>10} {:>13}",
        "day", "sightings", "distinct ids"
    )?;
    for d in &st.days {
        writeln!(
            out,
            "{:<12} {:>10} {:>13}",
            date(d.day),
            d.sightings,
            d.distinct_ids
        )?;
    }
    writeln!(
        out,
        "{:<12} {:>10} {:>13}",
        "total", st.sightings, st.distinct_ids
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "own keys: {} days, case lists: {}, exposures: {}",
        st.own_key_days, st.case_lists, st.exposures
    )?;
    if st.corrupt_chunks > 0 {
        writeln!(
            out,
            "WARNING: {} corrupt sealed chunks were skipped",
            st.corrupt_chunks
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(18_482), "2020-08-08");
        assert_eq!(date(-1), "1969-12-31");
        assert_eq!(date(11_016), "2000-02-29");
    }
}
