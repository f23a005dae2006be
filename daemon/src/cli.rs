//! Command-line interface. The sub-command names and flags are contracts (README, CI and other
//! tools rely on them); the work itself lives in `cmd/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(name = "bluezoned", version, about = "Bluetooth proximity contact-logging daemon (Bluezone v3 + GAEN v1.2)")]
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
