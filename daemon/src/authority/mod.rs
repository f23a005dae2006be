//! The health authority's side: officials upload a case once, the authority publishes signed files
//! that every device polls (README "For health authorities", `docs/authority.md`).
//!
//! ```text
//! official ──POST /v1/cases──▶ authority serve ──publish──▶ DIR/public or s3://… ──▶ CDN ──▶ devices (poll.url)
//! ```
//!
//! - this file: the authority directory (`authority init`), its configuration and signing key;
//! - [`upload`]: what an official may upload (a device's `keys export` output, or the reference
//!   key server's publish JSON), parsed into keys;
//! - [`db`]: cases, revocations, publications and the audit log in the authority's own SQLite;
//! - [`publish`]: batching, signing and writing export files and `index.txt`, atomically;
//! - [`output`]: where the public tree goes (a directory, or an S3-compatible bucket);
//! - [`serve`]: the officials' HTTP API and the publication schedule.

pub mod db;
pub mod output;
pub mod publish;
pub mod serve;
pub mod tokens;
pub mod upload;

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bluezone_protocol::gaen::export::ExportSigner;
use p256::ecdsa::SigningKey;
use serde::{Deserialize, Serialize};

/// File names inside the authority directory.
pub const CONFIG_FILE: &str = "authority.toml";
pub const SIGNING_KEY: &str = "signing-key.pem";
pub const PUBLIC_KEY: &str = "signing-key.pub.pem";
pub const TOKENS_FILE: &str = "official-tokens";
pub const DATABASE: &str = "authority.sqlite3";
pub const PUBLIC_DIR: &str = "public";

/// `authority.toml`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthorityConfig {
    /// GAEN region code written into every export (ISO 3166 alpha-2).
    pub region: String,
    /// The signature's `verification_key_id` (devices may pin it: `--trust ID:VERSION=PEM`).
    pub key_id: String,
    pub key_version: String,
    #[serde(default)]
    pub publish: PublishConfig,
    #[serde(default)]
    pub api: AuthorityApiConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PublishConfig {
    /// Seconds between scheduled publications (`serve`); `SIGHUP` publishes at once.
    pub interval_s: u64,
    /// Random keys added to every GAEN file so that file sizes do not reveal daily case counts.
    pub padding_keys: usize,
    /// Keys whose validity ended longer ago than this are no longer published.
    pub retention_days: i64,
    /// Most keys in one GAEN export file (the reference server's limit).
    pub max_keys_per_file: usize,
    /// Seconds a file stays on the server after it left `index.txt` (devices mid-download).
    pub grace_s: i64,
    /// Where publications go: a directory, or `s3://bucket/prefix`. Default: `DIR/public`.
    pub out: Option<String>,
}

impl Default for PublishConfig {
    fn default() -> Self {
        PublishConfig {
            interval_s: 3600,
            padding_keys: 0,
            retention_days: 14,
            max_keys_per_file: 750_000,
            grace_s: 86_400,
            out: None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthorityApiConfig {
    /// Largest upload body; larger ones get 413 before they are read.
    pub max_upload_bytes: usize,
    /// Most keys (GAEN keys + F0 entries) in one upload.
    pub max_keys_per_upload: usize,
    /// A listen address that is not loopback must be allowed explicitly (tokens travel in clear
    /// unless a TLS proxy fronts the server).
    pub allow_remote: bool,
    /// Host names (beyond `localhost` and IP addresses) that clients may use to reach the API,
    /// e.g. the name a TLS proxy forwards; any other `Host` gets 421 (DNS rebinding).
    pub allowed_hosts: Vec<String>,
}

impl Default for AuthorityApiConfig {
    fn default() -> Self {
        AuthorityApiConfig {
            max_upload_bytes: 16 << 20,
            max_keys_per_upload: 100_000,
            allow_remote: false,
            allowed_hosts: Vec::new(),
        }
    }
}

impl AuthorityConfig {
    pub fn validate(&self) -> Result<()> {
        if self.region.len() != 2 || !self.region.bytes().all(|b| b.is_ascii_uppercase()) {
            bail!(
                "{CONFIG_FILE}: region: expected a two-letter upper-case code such as VN, got {:?}",
                self.region
            );
        }
        if self.key_id.is_empty() || self.key_version.is_empty() {
            bail!("{CONFIG_FILE}: key_id and key_version must not be empty");
        }
        let p = &self.publish;
        if p.interval_s == 0 || p.interval_s > 7 * 86_400 {
            bail!(
                "{CONFIG_FILE}: publish.interval_s: expected 1..=604800, got {}",
                p.interval_s
            );
        }
        if !(1..=90).contains(&p.retention_days) {
            bail!(
                "{CONFIG_FILE}: publish.retention_days: expected 1..=90, got {}",
                p.retention_days
            );
        }
        if !(1..=750_000).contains(&p.max_keys_per_file) {
            bail!(
                "{CONFIG_FILE}: publish.max_keys_per_file: expected 1..=750000, got {}",
                p.max_keys_per_file
            );
        }
        if p.padding_keys > 100_000 {
            bail!(
                "{CONFIG_FILE}: publish.padding_keys: expected at most 100000, got {}",
                p.padding_keys
            );
        }
        if p.grace_s < 0 {
            bail!(
                "{CONFIG_FILE}: publish.grace_s: expected ≥ 0, got {}",
                p.grace_s
            );
        }
        if self.api.max_upload_bytes < 1024 {
            bail!(
                "{CONFIG_FILE}: api.max_upload_bytes: expected at least 1024, got {}",
                self.api.max_upload_bytes
            );
        }
        if self.api.max_keys_per_upload == 0 {
            bail!("{CONFIG_FILE}: api.max_keys_per_upload: expected at least 1");
        }
        Ok(())
    }
}

/// An initialised authority directory.
pub struct Authority {
    pub dir: PathBuf,
    pub config: AuthorityConfig,
    pub signer: ExportSigner,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("dir", &self.dir)
            .field("region", &self.config.region)
            .field("signer", &self.signer)
            .finish()
    }
}

impl Authority {
    /// Opens `dir` as created by [`init`]; errors name the file and what to do.
    pub fn open(dir: &Path) -> Result<Authority> {
        let config_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&config_path).with_context(|| {
            format!(
                "reading {} (create the directory with `bluezoned authority init --dir {}`)",
                config_path.display(),
                dir.display()
            )
        })?;
        let config: AuthorityConfig =
            toml::from_str(&text).with_context(|| format!("parsing {}", config_path.display()))?;
        config.validate()?;
        let key_path = dir.join(SIGNING_KEY);
        check_private(&key_path)?;
        let pem = zeroize::Zeroizing::new(
            std::fs::read_to_string(&key_path)
                .with_context(|| format!("reading {}", key_path.display()))?,
        );
        let signer = ExportSigner::from_pkcs8_pem(&config.key_id, &config.key_version, &pem)
            .with_context(|| {
                format!(
                    "{}: expected a PKCS#8 P-256 private key",
                    key_path.display()
                )
            })?;
        Ok(Authority {
            dir: dir.to_path_buf(),
            config,
            signer,
        })
    }

    pub fn tokens_path(&self) -> PathBuf {
        self.dir.join(TOKENS_FILE)
    }

    pub fn database_path(&self) -> PathBuf {
        self.dir.join(DATABASE)
    }

    /// Where publications are written: `--out`, else `publish.out`, else `DIR/public`.
    pub fn out_location(&self, flag: Option<&str>) -> String {
        flag.map(str::to_owned)
            .or_else(|| self.config.publish.out.clone())
            .unwrap_or_else(|| self.dir.join(PUBLIC_DIR).display().to_string())
    }
}

/// Refuses a secret file that group or others may access.
pub(crate) fn check_private(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{} is accessible by group or others (mode {mode:04o}); expected 0600 (fix with `chmod 600 {}`)",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

/// What `init` did.
#[derive(Debug, PartialEq, Eq)]
pub enum InitOutcome {
    Created,
    AlreadyInitialised,
}

/// Settings `init` writes into a new `authority.toml`.
#[derive(Clone, Debug)]
pub struct InitSettings {
    pub region: String,
    pub key_id: String,
    pub key_version: String,
}

impl Default for InitSettings {
    fn default() -> Self {
        InitSettings {
            region: "VN".into(),
            key_id: "452".into(),
            key_version: "v1".into(),
        }
    }
}

/// Creates `dir` (0700) with a new P-256 signing key (0600), its public key, one official token
/// (0600) and `authority.toml`. On a directory that already holds an authority it changes nothing.
pub fn init(dir: &Path, settings: &InitSettings) -> Result<InitOutcome> {
    if dir.join(CONFIG_FILE).exists() {
        return Ok(InitOutcome::AlreadyInitialised);
    }
    if dir.exists() {
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .count();
        if entries > 0 {
            bail!(
                "{} exists and is not empty but holds no {CONFIG_FILE}: refusing to create an authority there",
                dir.display()
            );
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("setting {} to mode 0700", dir.display()))?;
    } else {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let config = AuthorityConfig {
        region: settings.region.clone(),
        key_id: settings.key_id.clone(),
        key_version: settings.key_version.clone(),
        publish: PublishConfig::default(),
        api: AuthorityApiConfig::default(),
    };
    config.validate()?;

    let key = SigningKey::random(&mut rand::rngs::OsRng);
    let signer = ExportSigner::new(&config.key_id, &config.key_version, key);
    let private = signer
        .to_pkcs8_pem()
        .context("encoding the new signing key")?;
    write_new(&dir.join(SIGNING_KEY), private.as_bytes(), 0o600)?;
    let public = signer
        .public_key_pem()
        .context("encoding the new public key")?;
    write_new(&dir.join(PUBLIC_KEY), public.as_bytes(), 0o644)?;
    let token = zeroize::Zeroizing::new(tokens::new_token());
    write_new(
        &dir.join(TOKENS_FILE),
        format!(
            "# one bearer token per line for health officials (POST /v1/cases)\n{}\n",
            *token
        )
        .as_bytes(),
        0o600,
    )?;
    let text = toml::to_string_pretty(&config).context("writing authority.toml")?;
    // The config is written last: its presence is what marks the directory as initialised.
    write_new(&dir.join(CONFIG_FILE), text.as_bytes(), 0o600)?;
    sync_dir(dir)?;
    Ok(InitOutcome::Created)
}

fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}
