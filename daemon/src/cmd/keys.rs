//! `bluezoned keys export`.
//!
//! The export and the rotation are one unit of work: keys that left the device must not stay
//! the ones it broadcasts. The output is written (and synced) first, then the keys rotate; if
//! the rotation fails the written file is removed and the command fails. Written to standard
//! output, the bytes cannot be taken back, so there the rotation comes first.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use bluezone_protocol::bluezone::f0::write_f0;
use bluezone_protocol::gaen::export::ExportSigner;
use bluezone_protocol::time::utc_day;

use super::{open_store, Env};
use crate::cli::{KeyFormat, KeysCommand};
use crate::keyexport;

pub fn run(env: &Env, cmd: KeysCommand) -> Result<()> {
    let KeysCommand::Export {
        days,
        format,
        sign,
        key_id,
        key_version,
        region,
        out,
        force,
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
        (KeyFormat::GaenZip, Some(p)) => {
            let pem =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Some(
                ExportSigner::from_pkcs8_pem(key_id, key_version, &pem).with_context(|| {
                    format!("{}: expected a PKCS#8 PEM P-256 private key", p.display())
                })?,
            )
        }
        (KeyFormat::GaenZip, None) | (KeyFormat::BluezoneF0, _) => None,
    };
    // Refuse an unusable destination before anything is read or rotated.
    let file = match &out {
        Some(p) => Some(create_private(p, force)?),
        None => None,
    };
    let mut store = open_store(&env.dir)?;
    let today = utc_day(env.clock.now());
    let own = store.own_keys_in_days(today - (days as i64 - 1)..=today)?;
    let built = if own.is_empty() {
        Err(anyhow::anyhow!(
            "no own keys stored for the last {days} days: the daemon has not broadcast in that time"
        ))
    } else {
        match format {
            KeyFormat::GaenZip => {
                keyexport::gaen_zip(&own, signer.as_ref(), &region).map_err(Into::into)
            }
            KeyFormat::BluezoneF0 => Ok(write_f0(&keyexport::f0_list(&own)).into_bytes()),
        }
    };
    // Published keys must not be linkable to what the device broadcasts from now on.
    let mut rotate = || -> Result<()> {
        store
            .rotate_own_keys(today, &mut rand::rngs::OsRng)
            .context("rotating own keys after the export")?;
        Ok(())
    };
    match (file, &out) {
        (Some(f), Some(p)) => {
            let bytes = match built {
                Ok(b) => b,
                Err(e) => {
                    remove_quietly(p);
                    return Err(e);
                }
            };
            write_then(f, p, &bytes, rotate)?
        }
        _ => {
            let bytes = built?;
            rotate()?;
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&bytes)
                .and_then(|()| stdout.flush())
                .context("writing the export to standard output")?;
        }
    }
    eprintln!(
        "exported {} day(s); the device now broadcasts from fresh keys",
        own.len()
    );
    Ok(())
}

/// Creates `path` for the export: mode 0600, never through a symbolic link (`O_NOFOLLOW`), and
/// only if it does not exist (`O_EXCL`) unless `force` allows replacing a regular file.
fn create_private(path: &Path, force: bool) -> Result<File> {
    if force {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => bail!(
                "--out {}: is a symbolic link; refusing to write through it",
                path.display()
            ),
            Ok(m) if m.is_file() => std::fs::remove_file(path)
                .with_context(|| format!("--out {}: removing the old file", path.display()))?,
            Ok(_) => bail!("--out {}: exists and is not a regular file", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("--out {}", path.display()));
            }
        }
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => anyhow::anyhow!(
                "--out {}: already exists; pass --force to replace it",
                path.display()
            ),
            _ => anyhow::Error::new(e).context(format!("--out {}: creating", path.display())),
        })
}

/// Writes and syncs `bytes` to the freshly created `file`, then runs `after` (the rotation).
/// If either fails the file is removed, so an export never outlives a failed rotation.
fn write_then(
    mut file: File,
    path: &Path,
    bytes: &[u8],
    after: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let result = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
        .and_then(|()| after());
    drop(file);
    if result.is_err() {
        remove_quietly(path);
    }
    result
}

fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::error!(path = %path.display(), error = %e, "cannot remove the unfinished export");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn out_is_private_exclusive_and_never_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("keys.json");
        drop(create_private(&p, false).unwrap());
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let e = create_private(&p, false).unwrap_err().to_string();
        assert!(e.contains("already exists") && e.contains("--force"), "{e}");
        std::fs::write(&p, b"old").unwrap();
        drop(create_private(&p, true).unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), b"");

        let target = tmp.path().join("elsewhere");
        std::fs::write(&target, b"precious").unwrap();
        let link = tmp.path().join("link.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        for force in [false, true] {
            assert!(create_private(&link, force).is_err(), "force={force}");
        }
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        // A dangling link must not be followed to create its target either.
        let dangling = tmp.path().join("dangling.json");
        std::os::unix::fs::symlink(tmp.path().join("new-target"), &dangling).unwrap();
        assert!(create_private(&dangling, false).is_err());
        assert!(!tmp.path().join("new-target").exists());
    }

    #[test]
    fn a_failed_rotation_removes_the_written_export() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("keys.json");
        let f = create_private(&p, false).unwrap();
        let e = write_then(f, &p, b"{}", || anyhow::bail!("store is read-only")).unwrap_err();
        assert!(e.to_string().contains("read-only"), "{e}");
        assert!(!p.exists(), "the export outlived a failed rotation");

        let f = create_private(&p, false).unwrap();
        write_then(f, &p, b"{}", || Ok(())).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"{}");
    }
}
