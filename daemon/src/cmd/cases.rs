//! cases (being written)
use anyhow::Result; use std::path::PathBuf; use crate::cli::CasesCommand;
pub fn run(_d: Option<PathBuf>, _c: CasesCommand) -> Result<()> { anyhow::bail!("not yet") }
