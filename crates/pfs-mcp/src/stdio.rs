//! The stdio transport (`panaversity fs stdio`): one MCP session over stdin/stdout. There is no
//! HTTP request, so every call runs as the configured identity.
//!
//! Pitfall: nothing else may write to stdout while serving (logs go to stderr).

use std::sync::Arc;

use platform::Identity;
use rmcp::ServiceExt;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::state::PfsMcpState;
use crate::tools::PfsTools;

/// Serve one MCP session over any byte stream pair, as `identity`, until the peer closes it.
pub async fn serve_io<R, W>(
    state: PfsMcpState,
    identity: Identity,
    read: R,
    write: W,
) -> anyhow::Result<()>
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    let mut config = (*state.config).clone();
    config.stdio_identity = Some(identity);
    let state = PfsMcpState {
        engine: state.engine,
        config: Arc::new(config),
        scan_pool: state.scan_pool,
    };
    let running = PfsTools::new(state)
        .serve((read, write))
        .await
        .map_err(|e| anyhow::anyhow!("MCP stdio session failed to start: {e}"))?;
    running
        .waiting()
        .await
        .map_err(|e| anyhow::anyhow!("MCP stdio session ended with an error: {e}"))?;
    Ok(())
}

/// Serve MCP over this process's stdin/stdout as `identity` (for local agent clients).
pub async fn serve_stdio(state: PfsMcpState, identity: Identity) -> anyhow::Result<()> {
    let (read, write) = rmcp::transport::io::stdio_pipes();
    serve_io(state, identity, read, write).await
}
