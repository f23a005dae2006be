//! The contact-log files `log import` reads and `log export` writes: Bluezone's `data_trace.txt`
//! (codec in `bluezone_protocol::bluezone::trace`) and this daemon's own TSV,
//! `<id hex> <rssi> <unix seconds> [tx power]` (tab or space separated, `#` comments).
//!
//! Every sighting's time must lie in a [`TimeWindow`]: from 2000-01-01 (as F0 entries) to one day
//! after now. A far-future sighting would stay in the store until that day passed retention, and
//! times near `i64::MAX` overflow the slot arithmetic.

use std::fmt;

use bluezone_protocol::bluezone::f0::EARLIEST_TIME;
use bluezone_protocol::bluezone::trace::{self, column, parse_peer, parse_rssi, LineProblem};
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

/// The sighting times a log file may hold: `earliest..=latest` unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeWindow {
    pub earliest: UnixSeconds,
    pub latest: UnixSeconds,
}

impl TimeWindow {
    /// How far ahead of this machine's clock a sighting may be (another phone's clock).
    pub const FUTURE_SLACK_S: i64 = 86_400;

    /// 2000-01-01T00:00:00Z to one day after `now`.
    pub fn until(now: UnixSeconds) -> TimeWindow {
        TimeWindow {
            earliest: EARLIEST_TIME,
            latest: now.saturating_add(Self::FUTURE_SLACK_S),
        }
    }

    fn check(
        &self,
        column_no: usize,
        name: &'static str,
        time: UnixSeconds,
    ) -> Result<(), LineProblem> {
        if time < self.earliest {
            return Err(column(
                column_no,
                name,
                format!(
                    "{time} is before {} (2000-01-01), the earliest sighting time accepted",
                    self.earliest
                ),
            ));
        }
        if time > self.latest {
            return Err(column(
                column_no,
                name,
                format!(
                    "{time} is in the future: more than {} s after this machine's clock (latest accepted {})",
                    Self::FUTURE_SLACK_S,
                    self.latest
                ),
            ));
        }
        Ok(())
    }
}

/// Parses a whole log file; the first bad line fails it, naming line, column and problem. A
/// time outside `window` is a bad line.
pub fn parse_log(
    format: LogFormat,
    bytes: &[u8],
    window: TimeWindow,
) -> Result<Vec<Sighting>, LogFileError> {
    let parse_line = |text: &str| match format {
        LogFormat::BluezoneTrace => {
            let s = trace::parse_trace_line(text)?.sighting();
            window.check(4, "timestamp", s.time).map(|()| s)
        }
        LogFormat::Tsv => {
            let s = parse_tsv_line(text)?;
            window.check(3, "time", s.time).map(|()| s)
        }
    };
    trace::lines(bytes)
        .filter(|(_, l)| {
            !(format == LogFormat::Tsv && matches!(l, Ok(l) if l.trim_start().starts_with('#')))
        })
        .map(|(line, text)| {
            text.and_then(parse_line)
                .map_err(|problem| LogFileError { line, problem })
        })
        .collect()
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

    /// A window that holds every time these tests use.
    const W: TimeWindow = TimeWindow {
        earliest: EARLIEST_TIME,
        latest: 2_000_000_000,
    };

    #[test]
    fn trace_lines() {
        let text = b"130CEA6472130C185D8643DF\t0102030405060708090A0B0C\t-67\t1596844800123\r\n\
                     130CEA6472130C185D8643DF\t0102030405060708090a0b0c\t-70\t1596844801\n\n";
        let v = parse_log(LogFormat::BluezoneTrace, text, W).unwrap();
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
        let v = parse_log(LogFormat::Tsv, text.as_bytes(), W).unwrap();
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
        assert_eq!(parse_log(LogFormat::Tsv, back.as_bytes(), W).unwrap(), v);
        let e = parse_log(
            LogFormat::Tsv,
            b"0102030405060708090a0b0c -60 1700000000 9999\n",
            W,
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("line 1: column 4 (tx power)"),
            "{e}"
        );
        let e = parse_log(LogFormat::Tsv, b"\n\n0102 -60\n", W).unwrap_err();
        assert!(
            e.to_string().starts_with("line 3: expected 3 or 4 columns"),
            "{e}"
        );
        let e = parse_log(LogFormat::Tsv, b"0102030405060708090a0b0c -60 \xff\n", W).unwrap_err();
        assert!(e.to_string().starts_with("line 1: not UTF-8"), "{e}");
    }

    /// Security L1 (log import): a time before 2000-01-01, after the window's end, negative or
    /// near `i64::MAX` fails its line, naming line, column and field; the window's ends pass.
    #[test]
    fn times_outside_the_window_are_refused_naming_line_and_field() {
        let w = TimeWindow::until(1_700_000_000);
        assert_eq!(w.latest, 1_700_086_400);
        let id = "0102030405060708090a0b0c";
        for t in [w.earliest, w.latest] {
            let line = format!("{id} -60 {t}\n");
            assert_eq!(
                parse_log(LogFormat::Tsv, line.as_bytes(), w).unwrap()[0].time,
                t
            );
        }
        for (t, what) in [
            (w.latest + 1, "in the future"),
            (i64::MAX, "in the future"),
            (4_102_444_800, "in the future"),
            (w.earliest - 1, "before 946684800 (2000-01-01)"),
            (0, "before"),
        ] {
            let text = format!("# c\n{id} -60 1700000000\n\n{id} -60 {t}\n");
            let e = parse_log(LogFormat::Tsv, text.as_bytes(), w)
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!("line 4: column 3 (time): {t} is ")),
                "{e}"
            );
            assert!(e.contains(what), "{e}");
        }
        let e = parse_log(LogFormat::Tsv, format!("{id} -60 -1\n").as_bytes(), w).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("line 1: column 3 (time): expected a non-negative"),
            "{e}"
        );

        let own = "130CEA6472130C185D8643DF";
        for (ts, what) in [
            ("1800000000000", "in the future"),
            ("9223372036854775807", "in the future"),
            ("946684799", "before"),
            ("946684799999", "before"),
        ] {
            let text = format!("{own}\t{id}\t-60\t1700000000\n{own}\t{id}\t-60\t{ts}\n");
            let e = parse_log(LogFormat::BluezoneTrace, text.as_bytes(), w)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("line 2: column 4 (timestamp): "), "{ts}: {e}");
            assert!(e.contains(what), "{ts}: {e}");
        }
    }
}
