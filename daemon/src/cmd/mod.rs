//! One file per command family. Each returns `anyhow::Result` with context naming the file, field
//! and expectation; `main` turns an error into a message on stderr and a non-zero exit.

use anyhow::Result;

use crate::cli::{Cli, Command};

mod cases;
mod ids;

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Ids(c) => ids::run(c),
        Command::Cases(c) => cases::run(cli.data_dir, c),
        Command::Init | Command::Log(_) | Command::Status { .. } | Command::Check { .. } => {
            anyhow::bail!("this command is not built yet")
        }
    }
}
