//! `tracing` setup: human-readable by default, JSON lines with `--log-json`; `RUST_LOG` filters.
//! Logs go to stderr so that command output on stdout stays machine-readable, and journald
//! picks stderr up as it is.

use tracing_subscriber::EnvFilter;

pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests calling in-process) is harmless: keep the first subscriber.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
