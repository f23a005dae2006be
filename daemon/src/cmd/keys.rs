//! `bluezoned keys export`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use bluezone_protocol::bluezone::f0::write_f0;
use bluezone_protocol::gaen::export::ExportSigner;
use bluezone_protocol::time::utc_day;

use super::open_store;
use crate::cli::{KeyFormat, KeysCommand};
use crate::keyexport;
use crate::store::resolve_data_dir;

pub fn run(data_dir: Option<PathBuf>, cmd: KeysCommand) -> Result<()> {
    let KeysCommand::Export {
        days,
        format,
        sign,
        key_id,
        key_version,
        region,
        out,
        yes,
    } = cmd;
    if days == 0 || days > 30 {
        bail!("--days: expected 1 to 30, got {days}");
    }
    let what = match format {
        KeyFormat::BluezoneF0 => "your Bluezone daily keys (one per day)",
        KeyFormat::GaenZip => "your Exposure Notification keys (one per day)",
    };
    if !yes {
        eprintln!(
            "This would export {what} for the last {days} days, today included.\n\
             Anyone holding the published file can recognise the IDs your device broadcast on\n\
             those days — that is how others learn they were near you. It reveals nothing about\n\
             other days or about whom you met, and your device switches to new keys right after.\n\
             Nothing was exported. Run again with --yes to export."
        );
        bail!("not confirmed: pass --yes to export");
    }
    let signer = match (format, &sign) {
        (KeyFormat::GaenZip, None) => {
            bail!("--sign: a GAEN export must be signed; pass a PKCS#8 PEM P-256 private key")
        }
        (KeyFormat::GaenZip, Some(p)) => {
            let pem =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Some(
                ExportSigner::from_pkcs8_pem(key_id, key_version, &pem).with_context(|| {
                    format!("{}: expected a PKCS#8 PEM P-256 private key", p.display())
                })?,
            )
        }
        (KeyFormat::BluezoneF0, _) => None,
    };
    let dir = resolve_data_dir(data_dir);
    let mut store = open_store(&dir)?;
    let today = utc_day(crate::clock::Clock::now(&crate::clock::SystemClock));
    let own = store.own_keys_in_days(today - (days as i64 - 1)..=today)?;
    if own.is_empty() {
        bail!("no own keys stored for the last {days} days: the daemon has not broadcast in that time");
    }
    let bytes = match (&signer, format) {
        (Some(s), KeyFormat::GaenZip) => keyexport::gaen_zip(&own, s, &region)?,
        _ => write_f0(&keyexport::f0_list(&own)).into_bytes(),
    };
    match &out {
        Some(p) => std::fs::write(p, &bytes).with_context(|| format!("writing {}", p.display()))?,
        None => std::io::stdout().write_all(&bytes)?,
    }
    // Published keys must not be linkable to what the device broadcasts from now on.
    store.rotate_own_keys(today, &mut rand::rngs::OsRng)?;
    eprintln!(
        "exported {} day(s); the device now broadcasts from fresh keys",
        own.len()
    );
    Ok(())
}
