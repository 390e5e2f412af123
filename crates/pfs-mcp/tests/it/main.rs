//! Integration tests of the PanaversityFS MCP server: the real router on 127.0.0.1 over SQLite and
//! PostgreSQL, driven by raw JSON-RPC (reqwest), by the official Python `mcp` and TypeScript SDK
//! clients, and over a stdio-style duplex stream.

mod archive;
mod jsonrpc;
mod platform_auth;
mod python_e2e;
mod retries;
mod revise;
mod stdio;
mod support;
mod ts_e2e;
