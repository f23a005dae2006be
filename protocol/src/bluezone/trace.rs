//! Bluezone's contact log `data_trace.txt` (`docs/bluezone.md` §4): one sighting per line,
//! tab-separated, no header:
//!
//! ```text
//! <own id hex>\t<contact id hex>\t<rssi dBm>\t<timestamp>
//! ```
//! Android writes upper-case hex and milliseconds; iOS writes seconds (a timestamp below 10^11 is
//! seconds) and may leave the own-ID column empty. The own ID is never used (a sighting is about
//! the contact), so an empty one is accepted; a present one must still be a valid ID. Lines may
//! end in CRLF. Vectors: `testdata/bluezone/trace/`.

use std::fmt;

use crate::ids::{HexError, PeerId, RollingId};
use crate::sighting::Sighting;
use crate::time::UnixSeconds;

/// Timestamps below this are seconds, others milliseconds (iOS vs Android).
pub const MS_THRESHOLD: i64 = 100_000_000_000;

/// One line of a trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceRow {
    /// The logging phone's own ID at the time; `None` when the column was empty.
    pub own: Option<RollingId>,
    /// The ID heard. Bluezone IDs in real logs; a GAEN RPI is accepted too.
    pub contact: PeerId,
    pub rssi: i8,
    /// Unix seconds (milliseconds are cut to seconds).
    pub time: UnixSeconds,
}

impl TraceRow {
    pub fn sighting(&self) -> Sighting {
        Sighting {
            peer: self.contact,
            time: self.time,
            rssi: self.rssi,
            tx_power: None,
            aem: None,
        }
    }
}

/// What is wrong with one line of a line-based log (this trace, or the daemon's TSV log).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineProblem {
    #[error("not UTF-8 text (byte {byte})")]
    NotUtf8 { byte: usize },
    #[error("expected {expected}, found {found}")]
    Columns {
        expected: &'static str,
        found: usize,
    },
    #[error("column {column} ({name}): {problem}")]
    Column {
        column: usize,
        name: &'static str,
        problem: String,
    },
}

/// A trace refused at its first bad line (lines count from 1).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct TraceError {
    pub line: usize,
    pub problem: LineProblem,
}

/// The non-empty lines of a log file, CR stripped, numbered from 1; a line that is not UTF-8 is
/// an error naming its first bad byte.
pub fn lines(bytes: &[u8]) -> impl Iterator<Item = (usize, Result<&str, LineProblem>)> {
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, raw)| {
            let line = std::str::from_utf8(raw)
                .map(|l| l.strip_suffix('\r').unwrap_or(l))
                .map_err(|e| LineProblem::NotUtf8 {
                    byte: e.valid_up_to() + 1,
                });
            (i + 1, line)
        })
        .filter(|(_, l)| !matches!(l, Ok(l) if l.trim().is_empty()))
}

/// Parses a whole trace; the first bad line fails it.
pub fn parse_trace(bytes: &[u8]) -> Result<Vec<TraceRow>, TraceError> {
    lines(bytes)
        .map(|(line, text)| {
            text.and_then(parse_trace_line)
                .map_err(|problem| TraceError { line, problem })
        })
        .collect()
}

/// One line: `<own id>\t<contact id>\t<rssi>\t<timestamp ms or s>`.
pub fn parse_trace_line(line: &str) -> Result<TraceRow, LineProblem> {
    let cols: Vec<&str> = line.split('\t').map(str::trim).collect();
    let [own, contact, rssi, ts] = cols[..] else {
        return Err(LineProblem::Columns {
            expected: "4 tab-separated columns (own id, contact id, rssi, timestamp)",
            found: cols.len(),
        });
    };
    let own = if own.is_empty() {
        None
    } else {
        Some(RollingId::from_hex(own).map_err(|e| column(1, "own id", hex_problem(e, own)))?)
    };
    let contact = parse_peer(2, "contact id", contact)?;
    let rssi = parse_rssi(3, rssi)?;
    let ts: i64 = ts.parse().map_err(|_| {
        column(
            4,
            "timestamp",
            format!("expected unix seconds or milliseconds, got {ts:?}"),
        )
    })?;
    if ts < 0 {
        return Err(column(
            4,
            "timestamp",
            format!("expected a non-negative unix time, got {ts}"),
        ));
    }
    let time = if ts < MS_THRESHOLD {
        ts
    } else {
        ts.div_euclid(1000)
    };
    Ok(TraceRow {
        own,
        contact,
        rssi,
        time,
    })
}

/// Writes one row in the Android layout (upper-case hex, milliseconds), newline included.
pub fn write_trace_row(out: &mut impl fmt::Write, row: &TraceRow) -> fmt::Result {
    let own = row
        .own
        .map(|id| id.to_hex().to_uppercase())
        .unwrap_or_default();
    writeln!(
        out,
        "{own}\t{}\t{}\t{}",
        row.contact.to_hex().to_uppercase(),
        row.rssi,
        row.time.saturating_mul(1000)
    )
}

/// A column error, for the line codecs.
pub fn column(column: usize, name: &'static str, problem: String) -> LineProblem {
    LineProblem::Column {
        column,
        name,
        problem,
    }
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

/// A Bluezone ID (24 hex) or a GAEN RPI (32 hex).
pub fn parse_peer(col: usize, name: &'static str, s: &str) -> Result<PeerId, LineProblem> {
    PeerId::from_hex(s).map_err(|e| {
        let problem = match e {
            HexError::Length { got, .. } => {
                format!("expected 24 (Bluezone) or 32 (GAEN RPI) hex characters, got {got} ({s:?})")
            }
            other => hex_problem(other, s),
        };
        column(col, name, problem)
    })
}

/// Received signal strength in dBm.
pub fn parse_rssi(col: usize, s: &str) -> Result<i8, LineProblem> {
    s.parse::<i8>().map_err(|_| {
        column(
            col,
            "rssi",
            format!("expected an integer from -128 to 127 (dBm), got {s:?}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_line_and_column() {
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
            let e = parse_trace(text.as_bytes()).unwrap_err();
            assert_eq!(e.line, 2);
            let msg = e.to_string();
            assert!(msg.starts_with(want), "{msg:?} should start with {want:?}");
        }
        let e = parse_trace(b"\n\xff\n").unwrap_err();
        assert_eq!(e.problem, LineProblem::NotUtf8 { byte: 1 });
        assert_eq!(e.line, 2);
    }

    #[test]
    fn write_then_parse_round_trips() {
        let row = TraceRow {
            own: Some(RollingId([0xab; 12])),
            contact: PeerId::Bluezone(RollingId([1; 12])),
            rssi: -70,
            time: 1_596_844_801,
        };
        let mut text = String::new();
        write_trace_row(&mut text, &row).unwrap();
        assert_eq!(
            text,
            "ABABABABABABABABABABABAB\t010101010101010101010101\t-70\t1596844801000\n"
        );
        assert_eq!(parse_trace(text.as_bytes()).unwrap(), [row]);
    }
}
