//! One file per command family. Each returns `anyhow::Result` with context naming the file, field
//! and expectation; `main` turns an error into a message on stderr and a non-zero exit.

use std::path::Path;

use anyhow::{Context, Result};

use crate::cli::{Cli, Command};

mod authority;
mod cases;
mod demo;
mod ids;
mod keys;
mod run;
mod store_cmds;

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Ids(c) => ids::run(c),
        Command::Cases(c) => cases::run(cli.data_dir, c),
        Command::Init => store_cmds::init(cli.data_dir),
        Command::Log(c) => store_cmds::log(cli.data_dir, c),
        Command::Status { json } => store_cmds::status(cli.data_dir, json),
        Command::Check { json } => cases::check(cli.data_dir, json),
        Command::Keys(c) => keys::run(cli.data_dir, c),
        Command::Run(a) => run::run(cli.data_dir, a),
        Command::Demo(a) => demo::run(a),
        Command::Authority(c) => authority::run(c),
    }
}

/// Opens the store for `log import` (the command that adds contact data) and
/// applies retention first, with the configured `store.keep_days`: data past retention must
/// not outlive it just because the daemon is not running (L8). Read commands do not purge:
/// they write nothing.
pub(crate) fn open_store_for_write(dir: &Path) -> Result<crate::store::Store> {
    use crate::clock::{Clock, SystemClock};
    let keep_days = crate::config::Config::load(None, dir)?.store.keep_days;
    let mut store = open_store(dir)?;
    let today = bluezone_protocol::time::utc_day(SystemClock.now());
    store
        .purge_older_than(today, keep_days)
        .with_context(|| format!("applying retention to the store in {}", dir.display()))?;
    Ok(store)
}

/// Opens an existing store; the error names the directory (and the store's own error says to
/// run `init` when there is none).
pub(crate) fn open_store(dir: &Path) -> Result<crate::store::Store> {
    crate::store::Store::open(dir)
        .with_context(|| format!("opening the store in {}", dir.display()))
}
