//! `bluezoned ids`: print what a key broadcasts, for checking against phones and vectors.

use std::io::Write;

use anyhow::{Context, Result};
use bluezone_protocol::bluezone::SlotsPerDay;
use bluezone_protocol::gaen::{self, Enin, Metadata};
use bluezone_protocol::time::utc_midnight;
use bluezone_protocol::{DailyKey, Tek};

use crate::cli::IdsCommand;

pub fn run(cmd: IdsCommand) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match cmd {
        IdsCommand::Bluezone {
            daily_key,
            day,
            max,
        } => {
            let key = DailyKey::from_hex(&daily_key).context("--daily-key")?;
            let max = SlotsPerDay::new(max).context("--max")?;
            for (start, id) in key.day_schedule(utc_midnight(day), max) {
                writeln!(out, "{start} {id}")?;
            }
        }
        IdsCommand::Gaen {
            tek,
            enin,
            metadata,
        } => {
            let tek = Tek::from_hex(&tek).context("--tek")?;
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
