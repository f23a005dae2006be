use std::process::ExitCode;

use clap::Parser;

/// Large blocks (case lists, the observation index) on huge pages: see `hugepages`.
#[global_allocator]
static ALLOC: bluezoned::hugepages::HugePageAlloc = bluezoned::hugepages::HugePageAlloc;

fn main() -> ExitCode {
    // Before any file exists: the store, its WAL and SHM, the key, exports and the socket are
    // then created without group or other access whatever the caller's umask (each is also
    // given its mode explicitly where it is created).
    // SAFETY: umask(2) only sets the process's file mode creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
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
