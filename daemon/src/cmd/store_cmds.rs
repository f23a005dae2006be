//! `init`, `log import|export` and `status`: the commands that work on the encrypted store.
//!
//! Contracts (README, CI and other tools rely on them):
//! - `bluezoned --data-dir DIR init` creates DIR (0700), its key (0600) and the store; run again
//!   it changes nothing and says so; exit 0 either way.
//! - `log import --format bluezone-trace|tsv FILE`: all or nothing; a bad line rejects the whole
//!   file, naming its line and column.
//! - `log export --format bluezone-trace|tsv [--days N]` writes to stdout.
//! - `status [--json]`: counts only, never a key or an identifier.

use std::collections::hash_map::{Entry, HashMap};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::open_store;
use anyhow::{anyhow, bail, Context, Result};
use bluezone_protocol::bluezone::SlotsPerDay;
use bluezone_protocol::time::{utc_day, UnixSeconds};
use bluezone_protocol::{HexError, PeerId, RollingId, Sighting};

use crate::cli::{LogCommand, LogFormat};
use crate::clock::{Clock, SystemClock};
use crate::store::{resolve_data_dir, Store, StoreStats};

/// Timestamps below this are seconds, others milliseconds (Bluezone iOS vs Android, spec §4).
const MS_THRESHOLD: i64 = 100_000_000_000;

pub(super) fn init(data_dir: Option<PathBuf>) -> Result<()> {
    let dir = resolve_data_dir(data_dir);
    let (store, report) = Store::init(&dir)
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

pub(super) fn log(data_dir: Option<PathBuf>, cmd: LogCommand) -> Result<()> {
    let dir = resolve_data_dir(data_dir);
    match cmd {
        LogCommand::Import { format, file } => import(&dir, format, &file),
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

fn import(dir: &Path, format: LogFormat, file: &Path) -> Result<()> {
    let mut store = super::open_store_for_write(dir)?;
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let sightings = parse_log(format, &bytes).with_context(|| format!("{}", file.display()))?;
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
                let own_id = match ids.get(slot) {
                    Some(id) => id.to_hex().to_uppercase(),
                    None if ids.is_empty() => String::new(),
                    None => return Err(anyhow!("no own ID for slot {slot} of day {day}")),
                };
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}",
                    own_id,
                    peer.to_hex().to_uppercase(),
                    s.rssi,
                    s.time.saturating_mul(1000)
                )?;
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
                match s.tx_power {
                    Some(tx) => {
                        writeln!(out, "{}\t{}\t{}\t{}", s.peer.to_hex(), s.rssi, s.time, tx)?
                    }
                    None => writeln!(out, "{}\t{}\t{}", s.peer.to_hex(), s.rssi, s.time)?,
                }
                written += 1;
            }
        }
    }
    out.flush().context("writing to stdout")?;
    eprintln!("bluezoned: exported {written} sightings");
    Ok(())
}

/// Parses a whole log file; the first bad line fails it, naming line, column and problem.
pub(crate) fn parse_log(format: LogFormat, bytes: &[u8]) -> Result<Vec<Sighting>> {
    let mut out = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let n = i + 1;
        let line = std::str::from_utf8(raw)
            .map_err(|e| anyhow!("line {n}: not UTF-8 text (byte {})", e.valid_up_to() + 1))?;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty()
            || (format == LogFormat::Tsv && line.trim_start().starts_with('#'))
        {
            continue;
        }
        let s = match format {
            LogFormat::BluezoneTrace => parse_trace_line(line),
            LogFormat::Tsv => parse_tsv_line(line),
        }
        .with_context(|| format!("line {n}"))?;
        out.push(s);
    }
    Ok(out)
}

/// `<own id hex>\t<contact id hex>\t<rssi>\t<timestamp ms or s>`.
fn parse_trace_line(line: &str) -> Result<Sighting> {
    let cols: Vec<&str> = line.split('\t').map(str::trim).collect();
    let [own, contact, rssi, ts] = cols[..] else {
        bail!(
            "expected 4 tab-separated columns (own id, contact id, rssi, timestamp), found {}",
            cols.len()
        );
    };
    RollingId::from_hex(own).map_err(|e| column_error(1, "own id", &hex_problem(e, own)))?;
    let peer = parse_peer(2, "contact id", contact)?;
    let rssi = parse_rssi(3, rssi)?;
    let ts: i64 = ts.parse().map_err(|_| {
        column_error(
            4,
            "timestamp",
            &format!("expected unix seconds or milliseconds, got {ts:?}"),
        )
    })?;
    if ts < 0 {
        return Err(column_error(
            4,
            "timestamp",
            &format!("expected a non-negative unix time, got {ts}"),
        ));
    }
    let time = if ts < MS_THRESHOLD {
        ts
    } else {
        ts.div_euclid(1000)
    };
    Ok(Sighting {
        peer,
        time,
        rssi,
        tx_power: None,
        aem: None,
    })
}

/// `<id hex> <rssi> <unix seconds> [tx power]`, tab or space separated.
fn parse_tsv_line(line: &str) -> Result<Sighting> {
    let cols: Vec<&str> = line.split_whitespace().collect();
    let (id, rssi, time, tx) = match cols[..] {
        [id, rssi, time] => (id, rssi, time, None),
        [id, rssi, time, tx] => (id, rssi, time, Some(tx)),
        _ => bail!(
            "expected 3 or 4 columns (id, rssi, unix seconds, [tx power]), found {}",
            cols.len()
        ),
    };
    let peer = parse_peer(1, "id", id)?;
    let rssi = parse_rssi(2, rssi)?;
    let time: UnixSeconds = time.parse().map_err(|_| {
        column_error(
            3,
            "time",
            &format!("expected unix seconds (an integer), got {time:?}"),
        )
    })?;
    if time < 0 {
        return Err(column_error(
            3,
            "time",
            &format!("expected a non-negative unix time, got {time}"),
        ));
    }
    let tx_power = tx
        .map(|t| {
            t.parse::<i8>().map_err(|_| {
                column_error(
                    4,
                    "tx power",
                    &format!("expected an integer from -128 to 127 (dBm), got {t:?}"),
                )
            })
        })
        .transpose()?;
    Ok(Sighting {
        peer,
        time,
        rssi,
        tx_power,
        aem: None,
    })
}

fn column_error(col: usize, name: &str, problem: &str) -> anyhow::Error {
    anyhow!("column {col} ({name}): {problem}")
}

fn hex_problem(e: HexError, s: &str) -> String {
    match e {
        HexError::Length { expected, got } => {
            format!("expected {expected} hex characters, got {got} ({s:?})")
        }
        HexError::Character { position } => {
            format!("invalid hex character at position {} ({s:?})", position + 1)
        }
    }
}

fn parse_peer(col: usize, name: &str, s: &str) -> Result<PeerId> {
    PeerId::from_hex(s).map_err(|e| {
        let problem = match e {
            HexError::Length { got, .. } => {
                format!("expected 24 (Bluezone) or 32 (GAEN RPI) hex characters, got {got} ({s:?})")
            }
            other => hex_problem(other, s),
        };
        column_error(col, name, &problem)
    })
}

fn parse_rssi(col: usize, s: &str) -> Result<i8> {
    s.parse::<i8>().map_err(|_| {
        column_error(
            col,
            "rssi",
            &format!("expected an integer from -128 to 127 (dBm), got {s:?}"),
        )
    })
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
    serde_json::json!({
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
    use bluezone_protocol::Rpi;

    #[test]
    fn civil_dates() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(18_482), "2020-08-08");
        assert_eq!(date(-1), "1969-12-31");
        assert_eq!(date(11_016), "2000-02-29");
    }

    #[test]
    fn trace_lines() {
        let text = b"130CEA6472130C185D8643DF\t0102030405060708090A0B0C\t-67\t1596844800123\r\n\
                     130CEA6472130C185D8643DF\t0102030405060708090a0b0c\t-70\t1596844801\n\n";
        let v = parse_log(LogFormat::BluezoneTrace, text).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].time, 1_596_844_800, "milliseconds");
        assert_eq!(v[1].time, 1_596_844_801, "seconds");
        assert_eq!(v[0].rssi, -67);
        assert_eq!(
            v[0].peer,
            PeerId::Bluezone(RollingId([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]))
        );
    }

    #[test]
    fn trace_errors_name_line_and_column() {
        let good = "130CEA6472130C185D8643DF\t0102030405060708090A0B0C\t-67\t1596844800123\n";
        let cases = [
            (
                "130CEA6472130C185D8643DF\t0102\t-67\t1",
                "line 2: column 2 (contact id): expected 24 (Bluezone) or 32",
            ),
            (
                "130CEA6472130C185D8643DF\t0102030405060708090A0B0C\t-300\t1",
                "line 2: column 3 (rssi)",
            ),
            (
                "130CEA6472130C185D8643DF\t0102030405060708090A0B0C\t-67\tx",
                "line 2: column 4 (timestamp)",
            ),
            (
                "130CEA6472130C185D8643DF\t0102030405060708090A0B0C\t-67\t-5",
                "line 2: column 4 (timestamp): expected a non-negative",
            ),
            (
                "ZZ0CEA6472130C185D8643DF\t0102030405060708090A0B0C\t-67\t1",
                "line 2: column 1 (own id): invalid hex character at position 1",
            ),
            ("a b c d", "line 2: expected 4 tab-separated columns"),
        ];
        for (bad, want) in cases {
            let text = format!("{good}{bad}\n{good}");
            let e = parse_log(LogFormat::BluezoneTrace, text.as_bytes()).unwrap_err();
            let msg = format!("{e:#}");
            assert!(msg.starts_with(want), "{msg:?} should start with {want:?}");
        }
    }

    #[test]
    fn tsv_lines() {
        let text = "# comment\n0102030405060708090a0b0c -60 1700000000\n\
                    000102030405060708090a0b0c0d0e0f\t-80\t1700000001\t-12\n";
        let v = parse_log(LogFormat::Tsv, text.as_bytes()).unwrap();
        assert_eq!(v.len(), 2);
        assert!(matches!(v[0].peer, PeerId::Bluezone(_)));
        assert_eq!(v[0].tx_power, None);
        assert_eq!(
            v[1].peer,
            PeerId::Gaen(Rpi(std::array::from_fn(|i| i as u8)))
        );
        assert_eq!(v[1].tx_power, Some(-12));
        let e = parse_log(
            LogFormat::Tsv,
            b"0102030405060708090a0b0c -60 1700000000 9999\n",
        )
        .unwrap_err();
        assert!(
            format!("{e:#}").starts_with("line 1: column 4 (tx power)"),
            "{e:#}"
        );
        let e = parse_log(LogFormat::Tsv, b"\n\n0102 -60\n").unwrap_err();
        assert!(
            format!("{e:#}").starts_with("line 3: expected 3 or 4 columns"),
            "{e:#}"
        );
        let e = parse_log(LogFormat::Tsv, b"0102030405060708090a0b0c -60 \xff\n").unwrap_err();
        assert!(format!("{e:#}").starts_with("line 1: not UTF-8"), "{e:#}");
    }
}
