use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = bluezoned::cli::Cli::parse();
    bluezoned::logging::init(cli.log_json);
    match bluezoned::cmd::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bluezoned: error: {}", bluezoned::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
