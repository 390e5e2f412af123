//! PanaversityFS over MCP: every book-store tool as an rmcp tool server ([`PfsTools`]), served over
//! Streamable HTTP ([`mcp_router`], stateless, JSON responses) and stdio ([`serve_stdio`]), plus the
//! HTTP archive route (`GET /books/{book}/archive`) that the `get_book_archive` tool signs URLs for.
//!
//! Arguments are accepted flat or wrapped in `{"params": {...}}` ([`args`]); results are a JSON
//! object returned as `structuredContent` and as text; errors are `isError: true` with
//! `{"error": {"code", "message", ...}}` ([`pfs::PfsError::to_json`]). Authorization rules are in
//! [`auth`].

pub mod args;
pub mod auth;
pub mod sign;
