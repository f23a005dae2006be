//! The contact-log files `log import` reads and `log export` writes: Bluezone's `data_trace.txt`
//! (codec in `bluezone_protocol::bluezone::trace`) and this daemon's own TSV,
//! `<id hex> <rssi> <unix seconds> [tx power]` (tab or space separated, `#` comments).

use std::fmt;

use bluezone_protocol::bluezone::trace::{
    self, column, parse_peer, parse_rssi, LineProblem, TraceError,
};
use bluezone_protocol::time::UnixSeconds;
use bluezone_protocol::Sighting;

use crate::cli::LogFormat;

/// A log file refused at its first bad line (lines count from 1).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct LogFileError {
    pub line: usize,
    pub problem: LineProblem,
}

impl From<TraceError> for LogFileError {
    fn from(e: TraceError) -> Self {
        LogFileError {
            line: e.line,
            problem: e.problem,
        }
    }
}

/// Parses a whole log file; the first bad line fails it, naming line, column and problem.
pub fn parse_log(format: LogFormat, bytes: &[u8]) -> Result<Vec<Sighting>, LogFileError> {
    match format {
        LogFormat::BluezoneTrace => Ok(trace::parse_trace(bytes)?
            .iter()
            .map(trace::TraceRow::sighting)
            .collect()),
        LogFormat::Tsv => trace::lines(bytes)
            .filter(|(_, l)| !matches!(l, Ok(l) if l.trim_start().starts_with('#')))
            .map(|(line, text)| {
                text.and_then(parse_tsv_line)
                    .map_err(|problem| LogFileError { line, problem })
            })
            .collect(),
    }
}

/// `<id hex> <rssi> <unix seconds> [tx power]`, tab or space separated.
pub fn parse_tsv_line(line: &str) -> Result<Sighting, LineProblem> {
    let cols: Vec<&str> = line.split_whitespace().collect();
    let (id, rssi, time, tx) = match cols[..] {
        [id, rssi, time] => (id, rssi, time, None),
        [id, rssi, time, tx] => (id, rssi, time, Some(tx)),
        _ => {
            return Err(LineProblem::Columns {
                expected: "3 or 4 columns (id, rssi, unix seconds, [tx power])",
                found: cols.len(),
            })
        }
    };
    let peer = parse_peer(1, "id", id)?;
    let rssi = parse_rssi(2, rssi)?;
    let time: UnixSeconds = time.parse().map_err(|_| {
        column(
            3,
            "time",
            format!("expected unix seconds (an integer), got {time:?}"),
        )
    })?;
    if time < 0 {
        return Err(column(
            3,
            "time",
            format!("expected a non-negative unix time, got {time}"),
        ));
    }
    let tx_power = tx
        .map(|t| {
            t.parse::<i8>().map_err(|_| {
                column(
                    4,
                    "tx power",
                    format!("expected an integer from -128 to 127 (dBm), got {t:?}"),
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

/// One TSV line, newline included.
pub fn write_tsv_line(out: &mut impl fmt::Write, s: &Sighting) -> fmt::Result {
    match s.tx_power {
        Some(tx) => writeln!(out, "{}\t{}\t{}\t{}", s.peer.to_hex(), s.rssi, s.time, tx),
        None => writeln!(out, "{}\t{}\t{}", s.peer.to_hex(), s.rssi, s.time),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluezone_protocol::{PeerId, RollingId, Rpi};

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
        let mut back = String::new();
        for s in &v {
            write_tsv_line(&mut back, s).unwrap();
        }
        assert_eq!(parse_log(LogFormat::Tsv, back.as_bytes()).unwrap(), v);
        let e = parse_log(
            LogFormat::Tsv,
            b"0102030405060708090a0b0c -60 1700000000 9999\n",
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("line 1: column 4 (tx power)"),
            "{e}"
        );
        let e = parse_log(LogFormat::Tsv, b"\n\n0102 -60\n").unwrap_err();
        assert!(
            e.to_string().starts_with("line 3: expected 3 or 4 columns"),
            "{e}"
        );
        let e = parse_log(LogFormat::Tsv, b"0102030405060708090a0b0c -60 \xff\n").unwrap_err();
        assert!(e.to_string().starts_with("line 1: not UTF-8"), "{e}");
    }
}
