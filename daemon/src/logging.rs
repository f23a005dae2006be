//! `tracing` setup: human-readable by default, JSON lines with `--log-json`; `RUST_LOG` filters.
//! Logs go to stderr so that command output on stdout stays machine-readable, and journald
//! picks stderr up as it is.

use tracing_subscriber::EnvFilter;

/// `default_level` applies when `RUST_LOG` is unset (the demo keeps its many devices quiet).
pub fn init(json: bool, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // A second init (tests calling in-process) is harmless: keep the first subscriber.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
