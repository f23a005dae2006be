//! `bluezoned ids`: print what a key broadcasts, for checking against phones and vectors.

use std::io::{Read, Write};

use anyhow::{bail, Context, Result};
use bluezone_protocol::bluezone::f0::{EARLIEST_TIME, LATEST_TIME};
use bluezone_protocol::bluezone::SlotsPerDay;
use bluezone_protocol::gaen::{self, Enin, Metadata};
use bluezone_protocol::time::utc_midnight;
use bluezone_protocol::{DailyKey, Tek};
use zeroize::Zeroizing;

use crate::cli::IdsCommand;

pub fn run(cmd: IdsCommand) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match cmd {
        IdsCommand::Bluezone {
            daily_key,
            daily_key_file,
            day,
            max,
        } => {
            let (hex, from) = secret(daily_key, daily_key_file, "--daily-key")?;
            let key = DailyKey::from_hex(&hex).context(from)?;
            let max = SlotsPerDay::new(max).context("--max")?;
            if !(EARLIEST_TIME..=LATEST_TIME).contains(&day) {
                bail!(
                    "--day: expected a unix time from {EARLIEST_TIME} (2000-01-01) to \
                     {LATEST_TIME} (2100-12-31), as F0 lists allow, got {day}"
                );
            }
            for (start, id) in key.day_schedule(utc_midnight(day), max) {
                writeln!(out, "{start} {id}")?;
            }
        }
        IdsCommand::Gaen {
            tek,
            tek_file,
            enin,
            metadata,
        } => {
            let (hex, from) = secret(tek, tek_file, "--tek")?;
            let tek = Tek::from_hex(&hex).context(from)?;
            let md = bluezone_protocol::Aem::from_hex(&metadata).context("--metadata")?;
            let md = Metadata::from_bytes(md.0);
            for (enin, rpi, aem) in
                gaen::key_schedule(&tek, Enin(enin), gaen::TEK_ROLLING_PERIOD, md)
            {
                writeln!(out, "{} {rpi} {aem}", enin.0)?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// The largest secret file read: a key is 64 hex characters, whitespace aside.
const MAX_SECRET_BYTES: u64 = 4096;

/// A key given as `FLAG HEX` (on the command line, visible to other users), `FLAG -` (standard
/// input) or `FLAG-file PATH`; returns its trimmed text and where it came from, for errors
/// (which never include the text).
fn secret(
    arg: Option<String>,
    file: Option<std::path::PathBuf>,
    flag: &'static str,
) -> Result<(Zeroizing<String>, String)> {
    let arg = arg.map(Zeroizing::new);
    match (arg, file) {
        (Some(a), None) if a.as_str() == "-" => {
            let from = format!("{flag} - (standard input)");
            let text = read_secret(std::io::stdin().lock(), &from)?;
            Ok((text, from))
        }
        (Some(a), None) => Ok((a, flag.to_string())),
        (None, Some(p)) => {
            let from = format!("{flag}-file {}", p.display());
            let f = std::fs::File::open(&p).with_context(|| format!("{from}: opening"))?;
            let text = read_secret(f, &from)?;
            Ok((text, from))
        }
        _ => bail!("give exactly one of {flag} HEX, {flag} - (standard input) or {flag}-file FILE"),
    }
}

fn read_secret(r: impl Read, from: &str) -> Result<Zeroizing<String>> {
    let mut buf = Zeroizing::new(Vec::new());
    r.take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("{from}: reading"))?;
    if buf.len() as u64 > MAX_SECRET_BYTES {
        bail!("{from}: more than {MAX_SECRET_BYTES} bytes; expected one hex key");
    }
    let Ok(text) = std::str::from_utf8(&buf) else {
        bail!("{from}: not text; expected one hex key");
    };
    let text = text.trim();
    if text.is_empty() {
        bail!("{from}: empty; expected one hex key");
    }
    Ok(Zeroizing::new(text.to_string()))
}
