//! Where a publication goes: a local directory served by any static HTTP server, or (for a
//! country, behind a CDN) an S3-compatible bucket. Every file is written whole before it becomes
//! visible: by rename in a directory, by a single PUT in a bucket.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// A publication target.
#[derive(Debug)]
pub enum Output {
    Dir(PathBuf),
}

impl Output {
    /// `s3://bucket/prefix` or a directory path.
    pub fn parse(location: &str) -> Result<Output> {
        if location.starts_with("s3://") {
            bail!("--out {location}: S3 output is not built into this version; publish to a directory and sync it");
        }
        if location.contains("://") {
            bail!("--out {location}: expected a directory or s3://bucket/prefix");
        }
        Ok(Output::Dir(PathBuf::from(location)))
    }

    /// Makes sure the target exists.
    pub async fn prepare(&self) -> Result<()> {
        match self {
            Output::Dir(d) => std::fs::create_dir_all(d)
                .with_context(|| format!("creating the publication directory {}", d.display())),
        }
    }

    /// Writes `name` (a flat file name) whole: readers see the old content or the new one.
    pub async fn put(&self, name: &str, data: &[u8]) -> Result<()> {
        match self {
            Output::Dir(d) => put_file(d, name, data),
        }
    }

    pub async fn delete(&self, name: &str) -> Result<()> {
        match self {
            Output::Dir(d) => match std::fs::remove_file(d.join(name)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e).with_context(|| format!("removing {}", d.join(name).display())),
            },
        }
    }

    /// Published file names with their age in seconds at `now` (for sweeping files a crashed
    /// publication left behind).
    pub async fn list(&self, now: i64) -> Result<Vec<(String, i64)>> {
        match self {
            Output::Dir(d) => {
                let mut out = Vec::new();
                for entry in
                    std::fs::read_dir(d).with_context(|| format!("listing {}", d.display()))?
                {
                    let entry = entry?;
                    let Ok(name) = entry.file_name().into_string() else {
                        continue;
                    };
                    let modified = entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(now, |d| d.as_secs() as i64);
                    out.push((name, now.saturating_sub(modified)));
                }
                Ok(out)
            }
        }
    }
}

fn put_file(dir: &Path, name: &str, data: &[u8]) -> Result<()> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(data)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", dir.join(name).display()))?;
    // Published files are public: readable by the static server's user.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))?;
    tmp.persist(dir.join(name))
        .with_context(|| format!("renaming into {}", dir.join(name).display()))?;
    super::sync_dir(dir)
}
