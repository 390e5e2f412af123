//! HTTP transport: the MCP endpoint (`/mcp`, Streamable HTTP, stateless, JSON responses) and the
//! archive download route (`GET /books/{book}/archive`).
//!
//! [`mcp_router_with_auth`] applies the platform authenticator (which puts a [`platform::Identity`]
//! into the request extensions); [`mcp_router`] leaves authentication to the caller. The archive
//! route also accepts a signed URL (from `get_book_archive`) without any identity.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use axum::routing::get;
use platform::auth::{Authenticator, bearer_token, require_auth};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use crate::state::PfsMcpState;
use crate::tools::PfsTools;

/// The routes of the PanaversityFS MCP service: `/mcp` and `/books/{book}/archive`, without
/// authentication (wrap it in a layer that puts a [`platform::Identity`] into the request
/// extensions; tools answer `UNAUTHORIZED` without one). Prefer [`mcp_router_with_auth`].
pub fn mcp_router(state: PfsMcpState) -> Router {
    let mcp = with_host_check(mcp_routes(state.clone()), &state);
    mcp.merge(archive_routes(state))
}

/// [`mcp_router`] with the platform authenticator applied: `/mcp` requires authentication (401
/// with `WWW-Authenticate` otherwise); the archive route accepts either credentials or a signed
/// URL from `get_book_archive` (a request with `sig=` and no bearer token skips authentication
/// and is checked against its signature instead).
pub fn mcp_router_with_auth(state: PfsMcpState, auth: Arc<Authenticator>) -> Router {
    let mcp = mcp_routes(state.clone()).layer(from_fn_with_state(auth.clone(), require_auth));
    // The Host check comes first: a foreign Host gets 403 whatever its credentials.
    let mcp = with_host_check(mcp, &state);
    let archive = archive_routes(state).layer(from_fn_with_state(auth, auth_unless_signed));
    mcp.merge(archive)
}

/// Authenticate unless the request is a signed archive URL without credentials.
async fn auth_unless_signed(
    State(auth): State<Arc<Authenticator>>,
    mut req: Request,
    next: Next,
) -> Response {
    let signed = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("sig=")));
    if signed && bearer_token(req.headers()).is_none() {
        return next.run(req).await;
    }
    match auth
        .authenticate_from(req.headers(), platform::auth::peer_ip(&req))
        .await
    {
        Ok(id) => {
            req.extensions_mut().insert(id);
            next.run(req).await
        }
        Err(e) => auth.reject(&e),
    }
}

fn archive_routes(state: PfsMcpState) -> Router {
    Router::new()
        .route(
            "/books/{book}/archive",
            get(crate::archive::archive_handler),
        )
        .with_state(state)
}

/// Only `/mcp` (Streamable HTTP, stateless, JSON responses).
fn mcp_routes(state: PfsMcpState) -> Router {
    let mut config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_max_request_body_bytes(state.config.max_request_body_bytes);
    // The Host allow-list is checked in front of the transport ([`with_host_check`]), which
    // answers in JSON and names the setting; the transport's own check would answer plain text.
    config = config.disable_allowed_hosts();
    let tools_state = state.clone();
    let mcp = StreamableHttpService::new(
        move || Ok(PfsTools::new(tools_state.clone())),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    let limit = state.config.max_request_body_bytes;
    Router::new()
        .nest_service("/mcp", mcp)
        .layer(from_fn_with_state(limit, normalize_mcp_post))
}

/// `/mcp` behind the Host allow-list (DNS-rebinding protection; none when the list is empty): a
/// foreign Host gets 403 JSON `FORBIDDEN_HOST` naming it and `PANAVERSITY_ALLOWED_HOSTS`.
fn with_host_check(mcp: Router, state: &PfsMcpState) -> Router {
    if state.config.allowed_hosts.is_empty() {
        return mcp;
    }
    mcp.layer(from_fn_with_state(
        Arc::new(state.config.allowed_hosts.clone()),
        platform::http::host_check,
    ))
}

/// What the Streamable HTTP transport is strict about, made friendly at the edge:
/// * a POST that accepts only `application/json` (or anything, or sends no `Accept`: health
///   checks, curl) is served — responses are JSON anyway (`json_response`); the transport itself
///   insists on both `application/json` and `text/event-stream`;
/// * a body that is not JSON gets HTTP 400 with a JSON-RPC `-32700 Parse error` body (and a JSON
///   value that is not an object or array `-32600 Invalid Request`) instead of a plain-text 415.
async fn normalize_mcp_post(State(limit): State<usize>, req: Request, next: Next) -> Response {
    use axum::http::{HeaderValue, Method, StatusCode, header};
    use axum::response::IntoResponse;
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let accept = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !accept.contains("text/event-stream")
        && (accept.is_empty() || accept.contains("application/json") || accept.contains("*/*"))
    {
        parts.headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
    }
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                axum::Json(jsonrpc_error(
                    -32600,
                    &format!("request body over {limit} bytes"),
                )),
            )
                .into_response();
        }
    };
    // Validate without building a tree (the transport parses the message itself).
    let structured = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{' || *b == b'[');
    match serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
        Ok(_) if structured => {}
        Ok(_) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(jsonrpc_error(
                    -32600,
                    "Invalid Request: expected a JSON-RPC object",
                )),
            )
                .into_response();
        }
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(jsonrpc_error(-32700, &format!("Parse error: {e}"))),
            )
                .into_response();
        }
    }
    if parts.headers.get(header::CONTENT_TYPE).is_none() {
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

fn jsonrpc_error(code: i64, message: &str) -> serde_json::Value {
    serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}})
}
