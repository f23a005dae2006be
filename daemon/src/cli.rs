//! Command-line interface. The sub-command names and flags are contracts (README, CI and other
//! tools rely on them); the work itself lives in `cmd/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::Backend;

#[derive(Parser, Debug)]
#[command(
    name = "bluezoned",
    version,
    about = "Bluetooth proximity contact-logging daemon (Bluezone v3 + GAEN v1.2)"
)]
pub struct Cli {
    /// Where the encrypted store and its key live. Defaults to $STATE_DIRECTORY (systemd) or
    /// ./bluezoned-data.
    #[arg(long, global = true, env = "BLUEZONED_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    #[command(flatten)]
    pub config: ConfigArgs,

    /// Log as JSON lines (for log collectors) instead of human-readable text.
    #[arg(long, global = true)]
    pub log_json: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// The configuration every command reads (see [`crate::config::Config::load`]): each flag
/// overrides the config file, and its `BLUEZONED_*` environment variable stands in for the flag.
/// They are global so that `check`, `cases import` and `run` accept the same ones.
#[derive(Args, Clone, Debug, Default)]
pub struct ConfigArgs {
    /// Config file (default: `<data dir>/bluezoned.toml` if present).
    #[arg(long, global = true, env = "BLUEZONED_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Radio backend (overrides `radio.backend`).
    #[arg(long, global = true, env = "BLUEZONED_RADIO", value_enum)]
    pub radio: Option<Backend>,
    /// BlueZ adapter, e.g. hci0 (overrides `radio.adapter`).
    #[arg(long, global = true, env = "BLUEZONED_ADAPTER", value_name = "NAME")]
    pub adapter: Option<String>,
    /// Days of log kept (overrides `store.keep_days`).
    #[arg(long, global = true, env = "BLUEZONED_KEEP_DAYS", value_name = "DAYS")]
    pub keep_days: Option<u32>,
    /// HTTP API address (overrides `api.listen`), e.g. 127.0.0.1:8421 or unix:/path.
    #[arg(long, global = true, env = "BLUEZONED_API", value_name = "ADDR")]
    pub api: Option<String>,
    /// Bearer tokens, one per line (overrides `api.token_file`).
    #[arg(
        long,
        global = true,
        env = "BLUEZONED_API_TOKEN_FILE",
        value_name = "FILE"
    )]
    pub api_token_file: Option<PathBuf>,
    /// Key server base URL (overrides `poll.url`).
    #[arg(long, global = true, env = "BLUEZONED_POLL_URL", value_name = "URL")]
    pub poll_url: Option<String>,
    /// Exposure hook command (overrides `hook.command`).
    #[arg(long, global = true, env = "BLUEZONED_HOOK", value_name = "COMMAND")]
    pub hook: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the identifiers a key broadcasts (inspection; touches no store).
    #[command(subcommand)]
    Ids(IdsCommand),
    /// Inspect or import positive-case lists.
    #[command(subcommand)]
    Cases(CasesCommand),
    /// Create the data directory, its master key and the store. Safe to run again.
    Init,
    /// Import or export the contact log.
    #[command(subcommand)]
    Log(LogCommand),
    /// Store statistics (counts only, never a key).
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Match every imported case list against the log.
    Check {
        #[arg(long)]
        json: bool,
    },
    /// Export the device's own keys after a positive test.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Run the daemon: advertise, scan, log, match.
    Run(RunArgs),
    /// A simulated office: devices meet, one tests positive, everyone checks.
    Demo(DemoArgs),
    /// The health authority's side: officials upload cases, the authority publishes signed files.
    #[command(subcommand)]
    Authority(AuthorityCommand),
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Write the file a health authority would publish, then rotate the device's keys.
    Export {
        /// How many UTC days back, today included.
        #[arg(long, default_value_t = 14)]
        days: u32,
        #[arg(long, value_enum)]
        format: KeyFormat,
        /// PKCS#8 PEM private key (P-256) that signs a GAEN export. Without it `gaen-zip` is
        /// UNSIGNED (an empty `export.sig`): the file an official uploads to the health
        /// authority, which signs what it publishes. Phones accept only signed files.
        #[arg(long, value_name = "PEM")]
        sign: Option<PathBuf>,
        #[arg(long, default_value = "bluezoned")]
        key_id: String,
        #[arg(long, default_value = "v1")]
        key_version: String,
        #[arg(long, default_value = "VN")]
        region: String,
        /// Write here instead of standard output. The file is created with mode 0600 and must
        /// not exist (see `--force`); a symbolic link is never followed.
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Replace an existing regular `--out` file (never a symbolic link).
        #[arg(long, requires = "out")]
        force: bool,
        /// Confirm: without it the command explains what would be shared and stops.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFormat {
    BluezoneF0,
    GaenZip,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Trusted GAEN signing key (repeatable; overrides `cases.trust`).
    #[arg(long = "trust", value_name = "PEM")]
    pub trust: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    #[arg(long, default_value_t = 12)]
    pub devices: usize,
    #[arg(long, default_value_t = 8)]
    pub hours: u32,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// One JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum IdsCommand {
    /// One line per slot of the day: `<slot start> <id hex>`.
    Bluezone {
        /// The daily key as hex, or `-` to read it from standard input. A key given on the
        /// command line is visible to other local users (`/proc/PID/cmdline`) and kept in shell
        /// history: prefer `-` or `--daily-key-file`.
        #[arg(
            long,
            value_name = "HEX64|-",
            required_unless_present = "daily_key_file",
            conflicts_with = "daily_key_file"
        )]
        daily_key: Option<String>,
        /// Read the daily key (hex, surrounding whitespace ignored) from this file.
        #[arg(long, value_name = "FILE")]
        daily_key_file: Option<PathBuf>,
        /// Any unix time within the UTC day, 2000-01-01 to 2100-12-31.
        #[arg(long, value_name = "UNIX_SECONDS")]
        day: i64,
        #[arg(long, default_value_t = 96)]
        max: i64,
    },
    /// 144 lines: `<enin> <rpi hex> <aem hex>`.
    Gaen {
        /// The TEK as hex, or `-` to read it from standard input. A TEK given on the command
        /// line is visible to other local users (`/proc/PID/cmdline`) and kept in shell
        /// history: prefer `-` or `--tek-file`.
        #[arg(
            long,
            value_name = "HEX32|-",
            required_unless_present = "tek_file",
            conflicts_with = "tek_file"
        )]
        tek: Option<String>,
        /// Read the TEK (hex, surrounding whitespace ignored) from this file.
        #[arg(long, value_name = "FILE")]
        tek_file: Option<PathBuf>,
        #[arg(long, value_name = "N")]
        enin: u32,
        #[arg(long, value_name = "HEX8", default_value = "40000000")]
        metadata: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum CasesCommand {
    /// Detect the format, check the file, print a JSON summary.
    Inspect {
        file: PathBuf,
        /// Trusted signing key: `PATH` (a PEM public key, trusted whatever key id a file names)
        /// or `KEY_ID:VERSION=PATH` (only for files naming that id and version).
        #[arg(long = "trust", value_name = "PEM")]
        trust: Vec<PathBuf>,
    },
    /// Verify and store a case list (sealed). Importing the same content twice is a no-op.
    Import {
        file: PathBuf,
        #[arg(long = "trust", value_name = "PEM")]
        trust: Vec<PathBuf>,
    },
    /// The imported case lists.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum LogCommand {
    /// Import sightings from a file. A bad line rejects the whole file.
    Import {
        #[arg(long, value_enum)]
        format: LogFormat,
        file: PathBuf,
    },
    /// Export sightings (to stdout).
    Export {
        #[arg(long, value_enum)]
        format: LogFormat,
        /// Only the last N UTC days (default: everything retained).
        #[arg(long)]
        days: Option<u32>,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Bluezone's `data_trace.txt`: own id, contact id, rssi, timestamp (ms or s).
    BluezoneTrace,
    /// `<id hex> <rssi> <unix seconds> [tx power]`.
    Tsv,
}

/// `bluezoned authority …` (README "For health authorities").
#[derive(Subcommand, Debug)]
pub enum AuthorityCommand {
    /// Create DIR (0700) with a signing key, its public key, an official token and authority.toml.
    /// On an existing authority directory it changes nothing and says so.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// GAEN region code written into every export.
        #[arg(long, default_value = "VN")]
        region: String,
        /// The signature's key id (devices may pin it).
        #[arg(long, default_value = "452")]
        key_id: String,
        #[arg(long, default_value = "v1")]
        key_version: String,
    },
    /// Serve the officials' API (POST /v1/cases, POST /v1/cases/ID/revoke) and publish every
    /// publish.interval_s and on SIGHUP. Prints {"listening": ADDR} once it listens.
    Serve {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8420")]
        listen: String,
        /// Where publications go (default: publish.out, else DIR/public).
        #[arg(long)]
        out: Option<String>,
        /// Allow a listen address that is not loopback (put a TLS proxy in front).
        #[arg(long)]
        allow_remote: bool,
    },
    /// Publish once now, then exit.
    Publish {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        out: Option<String>,
        #[arg(long)]
        json: bool,
    },
}
