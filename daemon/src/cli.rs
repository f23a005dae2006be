//! Command-line interface. The sub-command names and flags are contracts (README, CI and other
//! tools rely on them); the work itself lives in `cmd/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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

    /// Log as JSON lines (for log collectors) instead of human-readable text.
    #[arg(long, global = true)]
    pub log_json: bool,

    #[command(subcommand)]
    pub command: Command,
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
        /// PKCS#8 PEM private key (P-256) that signs a GAEN export.
        #[arg(long, value_name = "PEM")]
        sign: Option<PathBuf>,
        #[arg(long, default_value = "bluezoned")]
        key_id: String,
        #[arg(long, default_value = "v1")]
        key_version: String,
        #[arg(long, default_value = "VN")]
        region: String,
        /// Write here instead of standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
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
    /// Radio backend (overrides `radio.backend`).
    #[arg(long, value_enum)]
    pub radio: Option<RadioArg>,
    /// Config file (default: `<data dir>/bluezoned.toml` if present).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// HTTP API address (overrides `api.listen`), e.g. 127.0.0.1:8421 or unix:/path.
    #[arg(long, value_name = "ADDR")]
    pub api: Option<String>,
    /// Bearer tokens, one per line (overrides `api.owner_token_file`).
    #[arg(long, value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Trusted GAEN signing key (repeatable; overrides `cases.trust`).
    #[arg(long = "trust", value_name = "PEM")]
    pub trust: Vec<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RadioArg {
    Bluez,
    Sim,
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
        #[arg(long, value_name = "HEX64")]
        daily_key: String,
        /// Any unix time within the UTC day.
        #[arg(long, value_name = "UNIX_SECONDS")]
        day: i64,
        #[arg(long, default_value_t = 96)]
        max: i64,
    },
    /// 144 lines: `<enin> <rpi hex> <aem hex>`.
    Gaen {
        #[arg(long, value_name = "HEX32")]
        tek: String,
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
        /// Trusted GAEN signing key: PEM file. The key id and version are taken from
        /// `KEYID.VERSION.pem`-style names or from `--trust-id`; see README.
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

#[derive(Args, Debug)]
pub struct Nothing;

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
