//! Daemon configuration: a TOML file (`--config`, default `<data dir>/bluezoned.toml` if it
//! exists), then `BLUEZONED_*` environment variables, then command-line flags, each overriding
//! the one before. Every key and its default is listed in the README; an unknown key or a bad
//! value stops startup with an error naming it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bluezone_protocol::matching::{MatchConfig, ScoringConfig};
use serde::Deserialize;

use crate::check::CheckConfig;

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub store: StoreConfig,
    pub radio: RadioConfig,
    pub matching: MatchConfig,
    pub scoring: ScoringConfig,
    pub cases: CasesConfig,
    pub api: ApiConfig,
    pub poll: PollConfig,
    pub hook: HookConfig,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Days of sightings, keys and case lists kept (spec bluezone §5.3).
    pub keep_days: u32,
    /// Longest a heard sighting waits in memory before it is written (and acknowledged).
    pub flush_interval_ms: u64,
    /// A batch is written at once when it reaches this many sightings.
    pub batch_max: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            keep_days: 21,
            flush_interval_ms: 2000,
            batch_max: 512,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Bluez,
    Sim,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Bluezone,
    Gaen,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RadioConfig {
    pub backend: Backend,
    /// Protocols advertised and scanned for.
    pub protocols: Vec<Protocol>,
    /// BlueZ adapter name (e.g. "hci0"); the first powered adapter when absent.
    pub adapter: Option<String>,
    /// Calibrated tx power written in our GAEN metadata, dBm.
    pub tx_power_dbm: i8,
    /// Scan duty cycle: a window of `scan_window_ms` every `scan_interval_ms`.
    pub scan_interval_ms: u64,
    pub scan_window_ms: u64,
    /// A peer heard again within this many seconds is not logged again.
    pub dedup_s: u64,
    /// Restart discovery when no advert arrived for this long (BlueZ stall bug).
    pub stall_timeout_s: u64,
    /// This adapter's receive correction, dB, added to a received RSSI before attenuation is
    /// computed (GAEN's per-device RSSI correction). The store keeps the raw RSSI; scoring
    /// applies this, so a corrected value takes effect on stored sightings too.
    pub rssi_correction_db: i8,
}

/// The largest receive correction accepted, dB: calibration tables stay well within it, and a
/// larger value is a typo that would move every sighting across attenuation buckets.
pub const MAX_RSSI_CORRECTION_DB: i8 = 40;

impl Default for RadioConfig {
    fn default() -> Self {
        RadioConfig {
            backend: Backend::Bluez,
            protocols: vec![Protocol::Bluezone, Protocol::Gaen],
            adapter: None,
            tx_power_dbm: -15,
            scan_interval_ms: 10_000,
            scan_window_ms: 2_000,
            dedup_s: 30,
            stall_timeout_s: 120,
            rssi_correction_db: 0,
        }
    }
}

/// Case lists however they arrive (`cases import`, the HTTP API, the key-server poller).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CasesConfig {
    /// Trusted GAEN signing keys: `PATH` or `KEY_ID:VERSION=PATH` (see `cases inspect`).
    pub trust: Vec<PathBuf>,
    /// Largest case list accepted, bytes (an upload, a polled file, an imported file).
    pub max_bytes: usize,
}

impl Default for CasesConfig {
    fn default() -> Self {
        CasesConfig {
            trust: Vec::new(),
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Listen address, e.g. "127.0.0.1:8421", or "unix:/run/bluezoned/api.sock". Off when absent.
    pub listen: Option<String>,
    /// A listen address beyond loopback is refused unless this is set (tokens cross in clear).
    pub allow_remote: bool,
    /// Owner tokens (exposures, status details), one per line.
    pub owner_token_file: Option<PathBuf>,
    /// Upload tokens (health officials: `POST /v1/case-lists` only), one per line.
    pub upload_token_file: Option<PathBuf>,
    /// Deprecated name of `owner_token_file`.
    pub token_file: Option<PathBuf>,
    /// Deprecated: moved to `cases.trust` (still read, with a warning).
    pub trust: Vec<PathBuf>,
    /// Deprecated: moved to `cases.max_bytes` (still read, with a warning).
    pub max_upload_bytes: Option<usize>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PollConfig {
    /// Base URL of a GAEN-style key server (serving `index.txt` and the zips it lists).
    pub url: Option<String>,
    pub interval_s: u64,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            url: None,
            interval_s: 3600,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HookConfig {
    /// Run once per notification event (a new notifying exposure, or the withdrawal of a
    /// delivered one), with its JSON on stdin (`sh -c COMMAND`); retried until it exits 0.
    pub command: Option<String>,
    /// Seconds before a running hook is killed, with its whole process group.
    pub timeout_s: u64,
}

impl Default for HookConfig {
    fn default() -> Self {
        HookConfig {
            command: None,
            timeout_s: 60,
        }
    }
}

impl Config {
    /// Reads the file (if any), then applies `BLUEZONED_*` environment overrides.
    pub fn load(explicit: Option<&Path>, data_dir: &Path) -> Result<Config> {
        let default_path = data_dir.join("bluezoned.toml");
        let path = match explicit {
            Some(p) => Some(p.to_path_buf()),
            None if default_path.exists() => Some(default_path),
            None => None,
        };
        let mut cfg = match &path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading config {}", p.display()))?;
                Self::parse(&text).with_context(|| format!("config {}", p.display()))?
            }
            None => Config::default(),
        };
        cfg.apply_env(|k| std::env::var(k).ok())?;
        cfg.migrate();
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn parse(text: &str) -> Result<Config> {
        let mut cfg: Config =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim()))?;
        cfg.migrate();
        cfg.validate()?;
        Ok(cfg)
    }

    /// Keys that moved: read from the old place with a warning, so an old file keeps working.
    pub fn migrate(&mut self) {
        if !self.api.trust.is_empty() {
            tracing::warn!("api.trust is deprecated: use cases.trust");
            let old = std::mem::take(&mut self.api.trust);
            self.cases.trust.extend(old);
        }
        if let Some(n) = self.api.max_upload_bytes.take() {
            tracing::warn!("api.max_upload_bytes is deprecated: use cases.max_bytes");
            self.cases.max_bytes = n;
        }
        if let Some(f) = self.api.token_file.take() {
            if self.api.owner_token_file.is_none() {
                self.api.owner_token_file = Some(f);
            } else {
                tracing::warn!("api.token_file is ignored: api.owner_token_file is set");
            }
        }
    }

    fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<()> {
        fn num<T: std::str::FromStr>(k: &str, v: &str) -> Result<T> {
            v.trim().parse().map_err(|_| {
                anyhow::anyhow!("environment variable {k}: {v:?} is not a valid number")
            })
        }
        if let Some(v) = get("BLUEZONED_KEEP_DAYS") {
            self.store.keep_days = num("BLUEZONED_KEEP_DAYS", &v)?;
        }
        if let Some(v) = get("BLUEZONED_API") {
            self.api.listen = Some(v);
        }
        if let Some(v) = get("BLUEZONED_API_TOKEN_FILE") {
            self.api.owner_token_file = Some(v.into());
        }
        if let Some(v) = get("BLUEZONED_RADIO") {
            self.radio.backend = match v.as_str() {
                "bluez" => Backend::Bluez,
                "sim" => Backend::Sim,
                other => bail!(
                    "environment variable BLUEZONED_RADIO: expected bluez or sim, got {other:?}"
                ),
            };
        }
        if let Some(v) = get("BLUEZONED_ADAPTER") {
            self.radio.adapter = Some(v);
        }
        if let Some(v) = get("BLUEZONED_POLL_URL") {
            self.poll.url = Some(v);
        }
        if let Some(v) = get("BLUEZONED_HOOK") {
            self.hook.command = Some(v);
        }
        Ok(())
    }

    /// Cross-field checks serde cannot express; messages name the key.
    pub fn validate(&self) -> Result<()> {
        let r = &self.radio;
        if r.protocols.is_empty() {
            bail!("radio.protocols: at least one of \"bluezone\", \"gaen\" is needed");
        }
        if r.scan_window_ms == 0 || r.scan_window_ms > r.scan_interval_ms {
            bail!(
                "radio.scan_window_ms: must be between 1 and radio.scan_interval_ms ({}), got {}",
                r.scan_interval_ms,
                r.scan_window_ms
            );
        }
        if r.rssi_correction_db.unsigned_abs() > MAX_RSSI_CORRECTION_DB.unsigned_abs() {
            bail!(
                "radio.rssi_correction_db: must be between -{MAX_RSSI_CORRECTION_DB} and \
                 {MAX_RSSI_CORRECTION_DB} dB, got {}",
                r.rssi_correction_db
            );
        }
        if self.store.keep_days == 0 {
            bail!("store.keep_days: must be at least 1");
        }
        if self.store.batch_max == 0 {
            bail!("store.batch_max: must be at least 1");
        }
        self.scoring.validate()?;
        if !(0..=3600).contains(&self.matching.skew_s) {
            bail!(
                "matching.skew_s: must be between 0 and 3600 seconds, got {}",
                self.matching.skew_s
            );
        }
        if self.cases.max_bytes == 0 {
            bail!("cases.max_bytes: must be at least 1");
        }
        if self.poll.interval_s < 60 {
            bail!(
                "poll.interval_s: must be at least 60 seconds, got {}",
                self.poll.interval_s
            );
        }
        Ok(())
    }

    pub fn check_config(&self) -> CheckConfig {
        CheckConfig {
            matching: self.matching,
            scoring: self.scoring.clone(),
            // `radio.rssi_correction_db` once the radio section has it.
            rssi_correction_db: 0,
            today: None,
        }
    }

    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.store.flush_interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c = Config::parse("").unwrap();
        assert_eq!(c, Config::default());
        let c = Config::parse(
            "[store]\nkeep_days = 14\n[radio]\nprotocols = [\"gaen\"]\nbackend = \"sim\"",
        )
        .unwrap();
        assert_eq!(c.store.keep_days, 14);
        assert_eq!(c.radio.protocols, vec![Protocol::Gaen]);
        assert_eq!(c.radio.backend, Backend::Sim);
    }

    #[test]
    fn moved_keys_are_still_read() {
        let c = Config::parse(
            "[api]\ntrust = [\"a.pem\"]\nmax_upload_bytes = 5\ntoken_file = \"t\"\n\
             [cases]\ntrust = [\"b.pem\"]",
        )
        .unwrap();
        assert_eq!(
            c.cases.trust,
            [PathBuf::from("b.pem"), PathBuf::from("a.pem")]
        );
        assert_eq!(c.cases.max_bytes, 5);
        assert_eq!(c.api.owner_token_file, Some(PathBuf::from("t")));
        assert!(c.api.trust.is_empty() && c.api.token_file.is_none());
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::parse("[store]\nkeep_dayz = 3")
            .unwrap_err()
            .to_string();
        assert!(e.contains("keep_dayz"), "{e}");
        let e = Config::parse("[radio]\nbackend = \"usb\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("backend") || e.contains("usb"), "{e}");
        let e = Config::parse("[radio]\nscan_window_ms = 20000")
            .unwrap_err()
            .to_string();
        assert!(e.contains("radio.scan_window_ms"), "{e}");
        let e = Config::parse("[store]\nkeep_days = -1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("keep_days"), "{e}");
        let mut c = Config::default();
        let e = c
            .apply_env(|k| (k == "BLUEZONED_KEEP_DAYS").then(|| "lots".to_string()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("BLUEZONED_KEEP_DAYS"), "{e}");
    }

    #[test]
    fn rssi_correction_defaults_to_zero_and_is_bounded() {
        assert_eq!(Config::default().radio.rssi_correction_db, 0);
        let c = Config::parse("[radio]\nrssi_correction_db = -7").unwrap();
        assert_eq!(c.radio.rssi_correction_db, -7);
        let e = Config::parse("[radio]\nrssi_correction_db = 41")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("radio.rssi_correction_db") && e.contains("41"),
            "{e}"
        );
        let e = Config::parse("[radio]\nrssi_correction_db = 300")
            .unwrap_err()
            .to_string();
        assert!(e.contains("rssi_correction_db"), "{e}");
    }
}
