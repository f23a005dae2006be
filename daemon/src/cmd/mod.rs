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

/// Opens an existing store; the error names the directory (and the store's own error says to
/// run `init` when there is none).
pub(crate) fn open_store(dir: &Path) -> Result<crate::store::Store> {
    crate::store::Store::open(dir)
        .with_context(|| format!("opening the store in {}", dir.display()))
}
