use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = bluezoned::cli::Cli::parse();
    let level = match cli.command {
        bluezoned::cli::Command::Demo(_) => "warn",
        _ => "info",
    };
    bluezoned::logging::init(cli.log_json, level);
    match bluezoned::cmd::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bluezoned: error: {}", bluezoned::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
