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

    /// The server's base URL (`http://host:port`).
    pub fn base(&self) -> &str {
        self.url.strip_suffix("/mcp").unwrap_or(&self.url)
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

/// A `tools/call` request body, serialized once (load loops reuse it; the id may repeat because
/// every POST to a stateless server is an independent exchange).
pub fn call_body(tool: &str, args: &Value) -> bytes::Bytes {
    bytes::Bytes::from(
        serde_json::to_vec(&json!({
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": tool, "arguments": args},
        }))
        .unwrap_or_default(),
    )
}

/// What the read loop checks in a `read_content` answer, decoded without building a JSON tree
/// (the content string is skipped, not copied).
#[derive(serde::Deserialize)]
struct ReadAnswer<'a> {
    #[serde(borrow)]
    result: Option<ReadResult<'a>>,
}

#[derive(serde::Deserialize)]
struct ReadResult<'a> {
    #[serde(rename = "isError", default)]
    is_error: bool,
    #[serde(rename = "structuredContent", borrow)]
    structured: Option<ReadStructured<'a>>,
}

#[derive(serde::Deserialize)]
struct ReadStructured<'a> {
    #[serde(borrow)]
    source: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    file_hash_sha256: std::borrow::Cow<'a, str>,
}

/// One keep-alive HTTP/1.1 connection to `/mcp` for a load loop: no pool, no URL parsing and no
/// header map building per request (the load generator shares two cores with the server, so its
/// own cost per call shows up in the server's numbers).
pub struct RawConn {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    path: String,
    host: http::HeaderValue,
}

impl RawConn {
    /// Connect to `{base}/mcp` (`base` = `http://host:port`).
    pub async fn connect(base: &str) -> anyhow::Result<RawConn> {
        let uri: http::Uri = format!("{base}/mcp").parse().context("server URL")?;
        let authority = uri.authority().context("server URL has no host")?.clone();
        let stream = tokio::net::TcpStream::connect(authority.as_str())
            .await
            .with_context(|| format!("connecting to {authority}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .context("HTTP/1.1 handshake")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(RawConn {
            sender,
            path: uri.path().to_string(),
            host: http::HeaderValue::from_str(authority.as_str())?,
        })
    }

    /// POST a prepared body; the raw answer body of a 2xx response.
    pub async fn post(&mut self, body: bytes::Bytes) -> Result<bytes::Bytes, CallError> {
        use http_body_util::BodyExt;
        let t = |e: &dyn std::fmt::Display| CallError::Transport(e.to_string());
        let req = http::Request::post(self.path.as_str())
            .header(http::header::HOST, self.host.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json, text/event-stream")
            .header("x-agent-id", "pv-bench")
            .body(http_body_util::Full::new(body))
            .map_err(|e| t(&e))?;
        self.sender.ready().await.map_err(|e| t(&e))?;
        let resp = self.sender.send_request(req).await.map_err(|e| t(&e))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| t(&e))?
            .to_bytes();
        if !status.is_success() {
            return Err(CallError::Transport(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            )));
        }
        Ok(bytes)
    }

    /// `read_content` with a prepared body ([`call_body`]): the answer's `source` (`base` or
    /// `overlay`), after checking it is a successful result carrying a 64-hex-digit hash.
    pub async fn read_content(&mut self, body: bytes::Bytes) -> Result<String, CallError> {
        let bytes = self.post(body).await?;
        let bad = |why: &str| {
            CallError::Transport(format!(
                "read_content: {why}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            ))
        };
        let a: ReadAnswer<'_> =
            serde_json::from_slice(&bytes).map_err(|e| bad(&format!("undecodable ({e})")))?;
        let r = a.result.ok_or_else(|| bad("no result"))?;
        if r.is_error {
            return Err(bad("tool error"));
        }
        let sc = r.structured.ok_or_else(|| bad("no structuredContent"))?;
        if sc.file_hash_sha256.len() != 64 {
            return Err(bad("no file hash"));
        }
        Ok(sc.source.into_owned())
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
