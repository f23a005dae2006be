//! Daemon configuration: a TOML file (`--config`, default `<data dir>/bluezoned.toml` if it
//! exists), then command-line flags or their `BLUEZONED_*` environment variables (clap resolves
//! flag over environment, see [`ConfigArgs`]). Every command that matches or writes state loads
//! it through [`Config::load`], so `check` decides exactly as the daemon does. Every key and its
//! default is listed in the README; an unknown key or a value out of range stops startup with an
//! error naming the key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bluezone_protocol::matching::{MatchConfig, ScoringConfig};
use serde::Deserialize;

use crate::cli::ConfigArgs;

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

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, clap::ValueEnum)]
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
    /// bluetoothd's configuration file, read at start for its `[General] Privacy=` setting
    /// (whether our adverts go out from a fixed, linkable address).
    pub bluez_main_conf: PathBuf,
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
            bluez_main_conf: PathBuf::from("/etc/bluetooth/main.conf"),
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
    /// Host names (beyond `localhost` and IP addresses) that clients may use to reach the API,
    /// e.g. a gateway's LAN name; any other `Host` gets 421 (DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// On a `unix:` listen address, the peer user ids (`SO_PEERCRED`) served; empty: whoever
    /// the socket's mode (0660, owner and group) lets connect.
    pub unix_allowed_uids: Vec<u32>,
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
    /// PEM file of CA certificates trusted for the key server's TLS, besides `tls_roots`
    /// (a private or enterprise CA).
    pub ca_file: Option<PathBuf>,
    /// Which root certificates the poller trusts besides `ca_file`.
    pub tls_roots: TlsRoots,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            url: None,
            interval_s: 3600,
            ca_file: None,
            tls_roots: TlsRoots::Builtin,
        }
    }
}

/// Root certificates for the poller's TLS (`poll.tls_roots`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TlsRoots {
    /// The Mozilla roots compiled into the binary (webpki-roots): updated only by a rebuild.
    #[default]
    Builtin,
    /// The operating system's trust store (`/etc/ssl/certs`, or `SSL_CERT_FILE` /
    /// `SSL_CERT_DIR`), read at startup.
    System,
    /// None: only `poll.ca_file`.
    None,
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

/// A configuration that cannot be used; the message names the file or key and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    InFile { path: PathBuf, message: String },
    /// TOML syntax, an unknown key or a value of the wrong type (toml's message names the key).
    #[error("{0}")]
    Syntax(String),
    /// A `[scoring]` value out of range (the message names the key).
    #[error("{0}")]
    Scoring(String),
    #[error("{key}: expected {expected}, got {got}")]
    Invalid {
        key: &'static str,
        expected: String,
        got: String,
    },
}

fn invalid(
    key: &'static str,
    expected: impl Into<String>,
    got: impl std::fmt::Display,
) -> ConfigError {
    ConfigError::Invalid {
        key,
        expected: expected.into(),
        got: got.to_string(),
    }
}

/// Longest accepted dedup window: beyond an hour one sighting would stand for a whole contact.
const MAX_DEDUP_S: u64 = 3600;
/// Longest accepted discovery stall timeout: a stalled scan must be noticed within a day.
const MAX_STALL_TIMEOUT_S: u64 = 86_400;
/// Longest accepted flush interval: an unwritten sighting is lost on power failure.
const MAX_FLUSH_INTERVAL_MS: u64 = 60_000;

impl Config {
    /// The one way every command reads its configuration: the file (`--config`, else
    /// `<data dir>/bluezoned.toml` if present), then the flags and environment in `args`.
    pub fn load(args: &ConfigArgs, data_dir: &Path) -> Result<Config, ConfigError> {
        let default_path = data_dir.join("bluezoned.toml");
        let path = match &args.config {
            Some(p) => Some(p.clone()),
            None if default_path.exists() => Some(default_path),
            None => None,
        };
        let mut cfg = match &path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.clone(),
                    source,
                })?;
                Self::parse(&text).map_err(|e| ConfigError::InFile {
                    path: p.clone(),
                    message: e.to_string(),
                })?
            }
            None => Config::default(),
        };
        cfg.migrate();
        cfg.apply(args);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses and validates a configuration file's text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Syntax(e.to_string().trim().to_string()))?;
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

    /// Flags (or their environment variables) override the file.
    fn apply(&mut self, args: &ConfigArgs) {
        if let Some(b) = args.radio {
            self.radio.backend = b;
        }
        if let Some(a) = &args.adapter {
            self.radio.adapter = Some(a.clone());
        }
        if let Some(d) = args.keep_days {
            self.store.keep_days = d;
        }
        if let Some(a) = &args.api {
            self.api.listen = Some(a.clone());
        }
        if let Some(f) = &args.api_token_file {
            self.api.token_file = Some(f.clone());
        }
        if let Some(u) = &args.poll_url {
            self.poll.url = Some(u.clone());
        }
        if let Some(h) = &args.hook {
            self.hook.command = Some(h.clone());
        }
    }

    /// Ranges and cross-field checks serde cannot express; each error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let a = &self.api;
        if !a.unix_allowed_uids.is_empty()
            && !a.listen.as_deref().is_some_and(|l| l.starts_with("unix:"))
        {
            return Err(invalid(
                "api.unix_allowed_uids",
                "only with a unix: api.listen (peer uids exist only on a Unix socket)",
                format!("{:?}", a.unix_allowed_uids),
            ));
        }
        let r = &self.radio;
        if r.protocols.is_empty() {
            return Err(invalid(
                "radio.protocols",
                "at least one of \"bluezone\", \"gaen\"",
                "[]",
            ));
        }
        if r.scan_interval_ms == 0 || r.scan_interval_ms > 600_000 {
            return Err(invalid(
                "radio.scan_interval_ms",
                "1 to 600000",
                r.scan_interval_ms,
            ));
        }
        if r.scan_window_ms == 0 || r.scan_window_ms > r.scan_interval_ms {
            return Err(invalid(
                "radio.scan_window_ms",
                format!("1 to radio.scan_interval_ms ({})", r.scan_interval_ms),
                r.scan_window_ms,
            ));
        }
        if r.rssi_correction_db.unsigned_abs() > MAX_RSSI_CORRECTION_DB.unsigned_abs() {
            return Err(invalid(
                "radio.rssi_correction_db",
                format!("-{MAX_RSSI_CORRECTION_DB} to {MAX_RSSI_CORRECTION_DB} dB"),
                r.rssi_correction_db,
            ));
        }
        if !(1..=MAX_DEDUP_S).contains(&r.dedup_s) {
            return Err(invalid(
                "radio.dedup_s",
                format!("1 to {MAX_DEDUP_S}"),
                r.dedup_s,
            ));
        }
        if !(1..=MAX_STALL_TIMEOUT_S).contains(&r.stall_timeout_s) {
            return Err(invalid(
                "radio.stall_timeout_s",
                format!("1 to {MAX_STALL_TIMEOUT_S}"),
                r.stall_timeout_s,
            ));
        }
        let s = &self.store;
        if !(1..=3650).contains(&s.keep_days) {
            return Err(invalid("store.keep_days", "1 to 3650", s.keep_days));
        }
        if !(1..=MAX_FLUSH_INTERVAL_MS).contains(&s.flush_interval_ms) {
            return Err(invalid(
                "store.flush_interval_ms",
                format!("1 to {MAX_FLUSH_INTERVAL_MS}"),
                s.flush_interval_ms,
            ));
        }
        if !(1..=1_000_000).contains(&s.batch_max) {
            return Err(invalid("store.batch_max", "1 to 1000000", s.batch_max));
        }
        self.scoring
            .validate()
            .map_err(|e| ConfigError::Scoring(e.to_string()))?;
        // Replay resistance cannot be switched off (security L2).
        if self.scoring.min_distinct_ids == 0 {
            return Err(ConfigError::Scoring(
                "scoring.min_distinct_ids: expected at least 1, got 0".into(),
            ));
        }
        if !(0.0..=24.0 * 60.0).contains(&self.scoring.notify_weighted_minutes) {
            return Err(ConfigError::Scoring(format!(
                "scoring.notify_weighted_minutes: expected 0 to 1440, got {}",
                self.scoring.notify_weighted_minutes
            )));
        }
        if !(0..=3600).contains(&self.matching.skew_s) {
            return Err(invalid(
                "matching.skew_s",
                "0 to 3600 seconds",
                self.matching.skew_s,
            ));
        }
        if self.cases.max_bytes == 0 {
            return Err(invalid("cases.max_bytes", "at least 1", 0));
        }
        if self.poll.tls_roots == TlsRoots::None && self.poll.ca_file.is_none() {
            return Err(invalid(
                "poll.tls_roots",
                "\"builtin\" or \"system\" unless poll.ca_file names the CA certificates",
                "\"none\"",
            ));
        }
        if self.poll.interval_s < 60 {
            return Err(invalid(
                "poll.interval_s",
                "at least 60 seconds",
                self.poll.interval_s,
            ));
        }
        Ok(())
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
    fn syntax_errors_name_the_key() {
        for (text, key) in [
            ("[store]\nkeep_dayz = 3", "keep_dayz"),
            ("[radio]\nbackend = \"usb\"", "usb"),
            ("[store]\nkeep_days = -1", "keep_days"),
            (
                "[scoring]\nattenuation_bucket_weights = [1.0, \"x\", 0.0, 0.0]",
                "attenuation_bucket_weights",
            ),
        ] {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text:?}: {e}");
        }
    }

    /// Each out-of-range value is refused with an error naming its key; the values just inside
    /// the range are accepted.
    #[test]
    fn scoring_ranges_are_checked_and_errors_name_the_key() {
        for (text, key) in [
            ("[scoring]\nmin_distinct_ids = 0", "min_distinct_ids"),
            (
                "[scoring]\nnotify_weighted_minutes = nan",
                "notify_weighted_minutes",
            ),
            (
                "[scoring]\nnotify_weighted_minutes = -1.0",
                "notify_weighted_minutes",
            ),
            (
                "[scoring]\nattenuation_bucket_weights = [1.0, -0.5, 0.0, 0.0]",
                "attenuation_bucket_weights",
            ),
            // Security L2: a negative or absurd window length was accepted silently.
            ("[scoring]\nwindow_max_s = -60", "window_max_s"),
            (
                "[scoring]\nwindow_max_s = 9223372036854775807",
                "window_max_s",
            ),
            ("[scoring]\nscan_period_s = 0", "scan_period_s"),
        ] {
            let e = Config::parse(text).unwrap_err();
            assert!(matches!(e, ConfigError::Scoring(_)), "{text:?}: {e}");
            assert!(e.to_string().contains(key), "{text:?}: {e}");
        }
    }

    #[test]
    fn ranges_are_checked_and_errors_name_the_key() {
        let refused = [
            ("[store]\nflush_interval_ms = 0", "store.flush_interval_ms"),
            (
                "[api]\nlisten = \"127.0.0.1:8421\"\nunix_allowed_uids = [1000]",
                "api.unix_allowed_uids",
            ),
            (
                "[store]\nflush_interval_ms = 3600000",
                "store.flush_interval_ms",
            ),
            ("[store]\nkeep_days = 0", "store.keep_days"),
            ("[store]\nkeep_days = 3651", "store.keep_days"),
            ("[store]\nbatch_max = 0", "store.batch_max"),
            ("[radio]\nscan_window_ms = 20000", "radio.scan_window_ms"),
            ("[radio]\nscan_window_ms = 0", "radio.scan_window_ms"),
            (
                "[radio]\nscan_interval_ms = 0\nscan_window_ms = 0",
                "radio.scan_interval_ms",
            ),
            ("[radio]\nprotocols = []", "radio.protocols"),
            ("[radio]\ndedup_s = 0", "radio.dedup_s"),
            ("[radio]\ndedup_s = 86400", "radio.dedup_s"),
            ("[radio]\nstall_timeout_s = 0", "radio.stall_timeout_s"),
            (
                "[radio]\nstall_timeout_s = 999999999",
                "radio.stall_timeout_s",
            ),
            ("[matching]\nskew_s = -1", "matching.skew_s"),
            ("[poll]\ninterval_s = 1", "poll.interval_s"),
            ("[poll]\ntls_roots = \"none\"", "poll.tls_roots"),
        ];
        for (text, key) in refused {
            let e = Config::parse(text).unwrap_err();
            assert!(
                matches!(&e, ConfigError::Invalid { key: k, .. } if *k == key),
                "{text:?}: {e}"
            );
            assert!(e.to_string().starts_with(key), "{text:?}: {e}");
        }
        for text in [
            "[store]\nflush_interval_ms = 1\nkeep_days = 1",
            "[store]\nkeep_days = 3650\nflush_interval_ms = 60000",
            "[radio]\ndedup_s = 1\nstall_timeout_s = 1",
            "[scoring]\nmin_distinct_ids = 1",
            "[scoring]\nnotify_weighted_minutes = 0.0",
            "[poll]\ntls_roots = \"system\"",
            "[poll]\ntls_roots = \"none\"\nca_file = \"/etc/bluezoned/ca.pem\"",
        ] {
            Config::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        }
    }

    /// Security L12: the poller's TLS roots are configurable; an unknown value names the key.
    #[test]
    fn poll_tls_roots() {
        assert_eq!(Config::default().poll.tls_roots, TlsRoots::Builtin);
        let c = Config::parse("[poll]\ntls_roots = \"system\"\nca_file = \"/x.pem\"").unwrap();
        assert_eq!(c.poll.tls_roots, TlsRoots::System);
        assert_eq!(c.poll.ca_file.as_deref(), Some(Path::new("/x.pem")));
        let e = Config::parse("[poll]\ntls_roots = \"os\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls_roots"), "{e}");
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
