//! PanaversityFS over MCP: every book-store tool as an rmcp tool server ([`PfsTools`]), served over
//! Streamable HTTP ([`mcp_router`], stateless, JSON responses) and stdio ([`serve_stdio`]), plus the
//! HTTP archive route (`GET /books/{book}/archive`) that the `get_book_archive` tool signs URLs for.
//!
//! * Arguments are accepted flat or wrapped in `{"params": {...}}` (object or JSON string), see
//!   [`args`]; unknown keys are `INVALID_INPUT`.
//! * Results are one JSON object, returned as `structuredContent` and as the text content; every
//!   tool advertises input and output schemas and annotations.
//! * Errors are `isError: true` with `{"error": {"code", "message", ...}}` ([`pfs::PfsError::to_json`]).
//! * Authorization ([`auth`]): `read` for read tools, `write` for mutations, `admin` for the audit
//!   tools; overlays only for the caller's own user id unless admin; search and bulk reads cover
//!   base plus the caller's own overlay, never another user's.

pub mod archive;
pub mod args;
pub mod auth;
mod grep;
pub mod http;
pub mod metrics;
mod ops;
pub mod output;
mod replay;
mod revise;
mod scan_pool;
pub mod schema;
pub mod sign;
pub mod state;
pub mod stdio;
pub mod tools;

pub use http::{mcp_router, mcp_router_with_auth};
pub use ops::mime_type;
pub use state::{PfsMcpConfig, PfsMcpState};
pub use stdio::{serve_io, serve_stdio};
pub use tools::PfsTools;
