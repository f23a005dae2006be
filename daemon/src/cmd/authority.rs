//! `bluezoned authority …`: the health authority's commands (README "For health authorities").

use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::authority::db::Db;
use crate::authority::output::Output;
use crate::authority::{init, publish, serve, Authority, InitOutcome, InitSettings};
use crate::cli::AuthorityCommand;
use crate::clock::{SharedClock, SystemClock};

pub fn run(cmd: AuthorityCommand) -> Result<()> {
    match cmd {
        AuthorityCommand::Init {
            dir,
            region,
            key_id,
            key_version,
        } => {
            let settings = InitSettings {
                region,
                key_id,
                key_version,
            };
            match init(&dir, &settings)? {
                InitOutcome::Created => {
                    println!(
                        "created the authority in {d}: signing key {d}/{k} (keep it secret), public key {d}/{p} \
                         (give it to devices as --trust / cases.trust), official tokens in {d}/{t}",
                        d = dir.display(),
                        k = crate::authority::SIGNING_KEY,
                        p = crate::authority::PUBLIC_KEY,
                        t = crate::authority::TOKENS_FILE,
                    );
                }
                InitOutcome::AlreadyInitialised => {
                    println!(
                        "{} already holds an authority: nothing changed",
                        dir.display()
                    );
                }
            }
            Ok(())
        }
        AuthorityCommand::Publish { dir, out, json } => {
            let auth = Authority::open(&dir)?;
            let output = Output::parse(&auth.out_location(out.as_deref()))?;
            let db = std::sync::Mutex::new(Db::open(&auth.database_path())?);
            let clock = SystemClock;
            let now = crate::clock::Clock::now(&clock);
            let rt = runtime()?;
            let report = rt.block_on(publish::publish(&auth, &db, &output, now))?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "published window {}..{}: {} new file(s), {} keys, {} revised, {} F0 entries; index lists {} file(s)",
                    report.window_start,
                    report.window_end,
                    report.files.len(),
                    report.gaen_keys,
                    report.revised_keys,
                    report.f0_entries,
                    report.index.len()
                );
            }
            Ok(())
        }
        AuthorityCommand::Serve {
            dir,
            listen,
            out,
            allow_remote,
        } => {
            let mut auth = Authority::open(&dir)?;
            auth.config.api.allow_remote |= allow_remote;
            let output = Output::parse(&auth.out_location(out.as_deref()))?;
            let clock: SharedClock = Arc::new(SystemClock);
            let rt = runtime()?;
            rt.block_on(async move {
                let shutdown = tokio_util::sync::CancellationToken::new();
                tokio::spawn(crate::cmd::run::signals(shutdown.clone())?);
                serve::serve(auth, &listen, output, clock, shutdown, |addr| {
                    // The ready line: tests and supervisors read the bound address from it.
                    println!("{}", serde_json::json!({ "listening": addr.to_string() }));
                    let _ = std::io::stdout().flush();
                })
                .await
            })
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
