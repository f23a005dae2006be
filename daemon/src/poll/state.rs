//! The poller's memory across restarts: [`STATE_FILE`] in the data directory, plain JSON
//! written atomically. It holds only public file names and validators, so it is not sealed.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use reqwest::Url;
use serde::{Deserialize, Serialize};

use super::remote::redacted;

/// The poller's state file, in the data directory.
pub const STATE_FILE: &str = "poll-state.json";

/// What survives a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PollState {
    /// The `poll.url` this state belongs to, without user, password or query (another URL
    /// starts afresh).
    pub url: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// The files of the last index fetched, in its order.
    pub listed: Vec<String>,
    /// Imported files: index path → case list id.
    pub imported: BTreeMap<String, i64>,
}

/// The state saved for `base`; a fresh one if there is none, it cannot be read, or it belongs
/// to another URL.
pub(super) fn load_state(path: &Path, base: &Url) -> PollState {
    let fresh = PollState {
        url: redacted(base),
        ..PollState::default()
    };
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return fresh,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "poll: cannot read the state; starting afresh");
            return fresh;
        }
    };
    match serde_json::from_slice::<PollState>(&text) {
        Ok(s) if s.url == fresh.url => s,
        Ok(_) => {
            tracing::info!("poll.url changed: the poller starts afresh");
            fresh
        }
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "poll: unreadable state; starting afresh");
            fresh
        }
    }
}

/// Writes the state atomically (temp file, fsync, rename, directory fsync).
pub(super) fn save_state(path: &Path, state: &PollState) -> Result<()> {
    let json = serde_json::to_vec_pretty(state)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    // NamedTempFile is created 0600 in the same directory, so the rename is atomic.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(&json)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("renaming to {}", path.display()))?;
    // The rename is durable only once the directory is.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
