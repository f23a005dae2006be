use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = bluezoned::cli::Cli::parse();
    bluezoned::logging::init(cli.log_json);
    match bluezoned::cmd::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line: "reading FILE: field X: expected Y".
            eprintln!("bluezoned: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
