//! HTTP API (issue 7; being written).

use std::sync::Arc;

use anyhow::Result;
use tokio_util::sync::CancellationToken;

use crate::service::Shared;

/// Starts the API if `api.listen` is set.
pub async fn start(
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>> {
    let _ = shutdown;
    if shared.config.api.listen.is_some() {
        anyhow::bail!("api.listen: the HTTP API is not built yet");
    }
    Ok(None)
}
