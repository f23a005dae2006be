//! One file per command family. Each returns `anyhow::Result` with context naming the file, field
//! and expectation; `main` turns an error into a message on stderr and a non-zero exit.
//!
//! The commands that match or write state (`init` included) get their data directory and
//! configuration from [`Env::load`] (the same file, environment and flags as `run`) and the time
//! from its one clock, so a command decides exactly as the daemon would, and a configuration the
//! daemon would refuse is refused before anything is written.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::cli::{Cli, Command, ConfigArgs};
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::store::resolve_data_dir;

mod authority;
mod cases;
mod demo;
mod ids;
mod keys;
mod run;
mod store_cmds;

/// What a command that touches the store works with.
pub(crate) struct Env {
    pub dir: PathBuf,
    pub config: Config,
    pub clock: SharedClock,
}

impl Env {
    pub(crate) fn load(data_dir: Option<PathBuf>, args: &ConfigArgs) -> Result<Env> {
        let dir = resolve_data_dir(data_dir);
        let config = Config::load(args, &dir)?;
        Ok(Env {
            dir,
            config,
            clock: Arc::new(SystemClock),
        })
    }
}

pub fn run(cli: Cli) -> Result<()> {
    let env = || Env::load(cli.data_dir.clone(), &cli.config);
    match cli.command {
        Command::Ids(c) => ids::run(c),
        Command::Cases(c) => cases::run(cli.data_dir.clone(), env, c),
        Command::Init => store_cmds::init(&env()?),
        Command::Log(c) => store_cmds::log(cli.data_dir.clone(), env, c),
        Command::Status { json } => store_cmds::status(cli.data_dir.clone(), json),
        Command::Check { json } => cases::check(&env()?, json),
        Command::Keys(c) => keys::run(&env()?, c),
        Command::Run(a) => run::run(env()?, a),
        Command::Demo(a) => demo::run(a),
        Command::Authority(c) => authority::run(c),
    }
}

/// Opens the store for `log import` (the command that adds contact data) and
/// applies retention first, with the configured `store.keep_days`: data past retention must
/// not outlive it just because the daemon is not running (L8). Read commands do not purge:
/// they write nothing.
pub(crate) fn open_store_for_write(env: &Env) -> Result<crate::store::Store> {
    let dir = env.dir.as_path();
    let keep_days = env.config.store.keep_days;
    let mut store = open_store(dir)?;
    let today = bluezone_protocol::time::utc_day(env.clock.now());
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
