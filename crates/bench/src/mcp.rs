//! A minimal MCP client over Streamable HTTP (stateless server, JSON responses): one JSON-RPC
//! `tools/call` per HTTP POST.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

/// Why a tool call failed.
#[derive(Debug)]
pub enum CallError {
    /// The tool answered `isError: true` with this code (`CONFLICT`, `NOT_FOUND`, …).
    Tool { code: String, message: String },
    /// HTTP, JSON-RPC or decoding failure.
    Transport(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Tool { code, message } => write!(f, "tool error {code}: {message}"),
            CallError::Transport(m) => write!(f, "transport error: {m}"),
        }
    }
}

impl std::error::Error for CallError {}

/// An MCP client for one server. Cheap to clone (shares the connection pool).
#[derive(Clone)]
pub struct Mcp {
    http: reqwest::Client,
    url: String,
    next_id: Arc<AtomicU64>,
}

/// An HTTP/1.1 client with keep-alive suited to loopback load generation.
pub fn http_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1024)
        .pool_idle_timeout(Duration::from_secs(90))
        .timeout(timeout)
        .build()
        .context("building the HTTP client")
}

impl Mcp {
    /// A client for `{base}/mcp`.
    pub fn new(base: &str) -> anyhow::Result<Mcp> {
        Ok(Mcp {
            http: http_client(Duration::from_secs(120))?,
            url: format!("{base}/mcp"),
            next_id: Arc::new(AtomicU64::new(1)),
        })
    }

    /// The underlying HTTP client (for archive downloads).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Call `tool` with `args`; the result's `structuredContent` on success.
    pub async fn call(&self, tool: &str, args: Value) -> Result<Value, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({
            "jsonrpc": "2.0",
            "id": id,
            "method": "tools/call",
            "params": {"name": tool, "arguments": args},
        });
        let resp = self
            .http
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .header("x-agent-id", "pv-bench")
            .json(&body)
            .send()
            .await
            .map_err(|e| CallError::Transport(format!("{tool}: {e}")))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| CallError::Transport(format!("{tool}: reading the body: {e}")))?;
        if !status.is_success() {
            return Err(CallError::Transport(format!(
                "{tool}: HTTP {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            )));
        }
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
            CallError::Transport(format!(
                "{tool}: not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            ))
        })?;
        if let Some(err) = v.get("error") {
            return Err(CallError::Transport(format!(
                "{tool}: JSON-RPC error {err}"
            )));
        }
        let result = v
            .get("result")
            .ok_or_else(|| CallError::Transport(format!("{tool}: no result in {v}")))?;
        if result.get("isError").and_then(Value::as_bool) == Some(true) {
            let text = result["content"][0]["text"].as_str().unwrap_or("");
            let e: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            return Err(CallError::Tool {
                code: e["error"]["code"].as_str().unwrap_or("UNKNOWN").to_string(),
                message: e["error"]["message"].as_str().unwrap_or(text).to_string(),
            });
        }
        result
            .get("structuredContent")
            .cloned()
            .ok_or_else(|| CallError::Transport(format!("{tool}: no structuredContent")))
    }
}

/// A strict-profile lesson path for index `i` (up to 1,000,000 distinct paths):
/// `content/{PP}-Part/{CC}-Chapter/{LL}-lesson.md`.
pub fn lesson_path(i: usize) -> String {
    format!(
        "content/{:02}-Part/{:02}-Chapter/{:02}-lesson.md",
        (i / 10_000) % 100,
        (i / 100) % 100,
        i % 100
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lesson_paths_fit_the_strict_profile() {
        for i in [0usize, 1, 99, 100, 9_999, 10_000, 999_999] {
            let p = pfs::BookPath::parse(&lesson_path(i)).unwrap();
            pfs::Profile::Strict.check(&p).unwrap();
        }
        let all: std::collections::HashSet<String> = (0..20_000).map(lesson_path).collect();
        assert_eq!(all.len(), 20_000);
    }
}
