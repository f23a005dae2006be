//! Where a publication goes: a local directory served by any static HTTP server, or (for a
//! country, behind a CDN) an S3-compatible bucket. Every file is written whole before it becomes
//! visible: by rename in a directory, by a single PUT in a bucket.
//!
//! A bucket is named `s3://bucket/prefix` and reached through the `object_store` crate with the
//! standard AWS environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_DEFAULT_REGION`/`AWS_REGION`, `AWS_ENDPOINT_URL` for another S3-compatible service (MinIO,
//! Ceph, Garage…), or instance/web-identity credentials. Plain `http` endpoints are accepted only
//! on a loopback host.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{Attribute, Attributes, ObjectStore, PutOptions, PutPayload};

/// A publication target.
#[derive(Debug)]
pub enum Output {
    Dir(PathBuf),
    S3(Bucket),
}

/// An S3-compatible bucket and the prefix publications go under.
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    /// `s3://bucket/prefix`, for messages.
    shown: String,
    prefix: ObjectPath,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The store's Debug would show its configuration, credentials included.
        f.debug_struct("Bucket").field("url", &self.shown).finish()
    }
}

impl Output {
    /// `s3://bucket/prefix` or a directory path.
    pub fn parse(location: &str) -> Result<Output> {
        if let Some(rest) = location.strip_prefix("s3://") {
            return Ok(Output::S3(Bucket::from_env(location, rest)?));
        }
        if location.contains("://") {
            bail!("--out {location}: expected a directory or s3://bucket/prefix");
        }
        Ok(Output::Dir(PathBuf::from(location)))
    }

    /// Makes sure the target exists (a bucket must exist already: creating one is the operator's
    /// decision, with its access policy).
    pub async fn prepare(&self) -> Result<()> {
        match self {
            Output::Dir(d) => std::fs::create_dir_all(d)
                .with_context(|| format!("creating the publication directory {}", d.display())),
            Output::S3(_) => Ok(()),
        }
    }

    /// Writes `name` (a flat file name) whole: readers see the old content or the new one.
    pub async fn put(&self, name: &str, data: &[u8]) -> Result<()> {
        match self {
            Output::Dir(d) => put_file(d, name, data),
            Output::S3(b) => b.put(name, data).await,
        }
    }

    pub async fn delete(&self, name: &str) -> Result<()> {
        match self {
            Output::Dir(d) => match std::fs::remove_file(d.join(name)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e).with_context(|| format!("removing {}", d.join(name).display())),
            },
            Output::S3(b) => match b.store.delete(&b.path(name)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e).with_context(|| format!("deleting {}/{name}", b.shown)),
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
            Output::S3(b) => {
                let prefix = (!b.prefix.as_ref().is_empty()).then_some(&b.prefix);
                let listing = b
                    .store
                    .list_with_delimiter(prefix)
                    .await
                    .with_context(|| format!("listing {}", b.shown))?;
                Ok(listing
                    .objects
                    .into_iter()
                    .filter_map(|o| {
                        let name = o.location.filename()?.to_string();
                        Some((name, now.saturating_sub(o.last_modified.timestamp())))
                    })
                    .collect())
            }
        }
    }
}

impl Bucket {
    fn from_env(shown: &str, rest: &str) -> Result<Bucket> {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            bail!("--out {shown}: expected s3://bucket/prefix (no bucket name)");
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|s| s == ".." || s == ".") {
            bail!("--out {shown}: the prefix must not contain `.` or `..` segments");
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if builder
            .get_config_value(&AmazonS3ConfigKey::Region)
            .is_none()
        {
            // AWS_REGION is what the AWS CLI and SDKs read first.
            if let Ok(r) = std::env::var("AWS_REGION") {
                builder = builder.with_region(r);
            }
        }
        if let Some(endpoint) = builder.get_config_value(&AmazonS3ConfigKey::Endpoint) {
            let url = reqwest::Url::parse(&endpoint)
                .with_context(|| format!("AWS_ENDPOINT_URL {endpoint:?}: not a URL"))?;
            match url.scheme() {
                "https" => {}
                "http" if host_is_loopback(&url) => builder = builder.with_allow_http(true),
                "http" => bail!(
                    "AWS_ENDPOINT_URL {endpoint}: plain http is allowed only for a loopback host \
                     (credentials and publications would travel in clear); use https"
                ),
                other => bail!("AWS_ENDPOINT_URL {endpoint}: expected an https URL, got {other}"),
            }
        }
        let store = builder
            .build()
            .with_context(|| format!("--out {shown}: configuring the S3 client"))?;
        Ok(Bucket {
            store: Arc::new(store),
            shown: shown.trim_end_matches('/').to_string(),
            prefix: ObjectPath::from(prefix),
        })
    }

    fn path(&self, name: &str) -> ObjectPath {
        self.prefix.child(name)
    }

    async fn put(&self, name: &str, data: &[u8]) -> Result<()> {
        // index.txt changes every publication: CDNs and devices must revalidate it; a published
        // file never changes under its name.
        let (content_type, cache) = if name.ends_with(".txt") {
            ("text/plain; charset=utf-8", "public, max-age=60")
        } else {
            ("application/zip", "public, max-age=86400, immutable")
        };
        let attributes = Attributes::from_iter([
            (Attribute::ContentType, content_type),
            (Attribute::CacheControl, cache),
        ]);
        let opts = PutOptions {
            attributes,
            ..PutOptions::default()
        };
        self.store
            .put_opts(&self.path(name), PutPayload::from(data.to_vec()), opts)
            .await
            .with_context(|| format!("uploading {}/{name}", self.shown))?;
        Ok(())
    }
}

fn host_is_loopback(u: &reqwest::Url) -> bool {
    let h = u.host_str().unwrap_or_default();
    let h = h.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback())
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
