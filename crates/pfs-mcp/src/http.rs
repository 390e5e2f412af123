//! HTTP transport: the MCP endpoint (`/mcp`, Streamable HTTP, stateless, JSON responses) and the
//! archive download route (`GET /books/{book}/archive`).
//!
//! Authentication is not done here: the binary wraps this router in the platform auth middleware,
//! which puts a [`platform::Identity`] into the request extensions. The archive route also accepts
//! a signed URL (from `get_book_archive`) without any identity.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use crate::state::PfsMcpState;
use crate::tools::PfsTools;

/// The routes of the PanaversityFS MCP service: `/mcp` and `/books/{book}/archive`.
pub fn mcp_router(state: PfsMcpState) -> Router {
    let mut config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_max_request_body_bytes(state.config.max_request_body_bytes);
    config = if state.config.allowed_hosts.is_empty() {
        config.disable_allowed_hosts()
    } else {
        config.with_allowed_hosts(state.config.allowed_hosts.clone())
    };
    let tools_state = state.clone();
    let mcp = StreamableHttpService::new(
        move || Ok(PfsTools::new(tools_state.clone())),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    Router::new()
        .nest_service("/mcp", mcp)
        .route(
            "/books/{book}/archive",
            get(crate::archive::archive_handler),
        )
        .with_state(state)
}
