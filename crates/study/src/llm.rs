//! An OpenAI-compatible Chat Completions client (streaming and non-streaming) on reqwest.
//!
//! Chat Completions is the baseline every provider speaks (OpenAI, DeepSeek, Ollama, vLLM,
//! llama.cpp), so that is what we call. The SSE stream is parsed here: every character of every
//! content delta is passed through untouched (the predecessor trimmed deltas and lost spaces).
//!
//! Failures before the first token (HTTP 429/5xx, connect errors, a stream that dies before it
//! produced any text, a first-token timeout) are retried with exponential backoff, honouring
//! `Retry-After`/`retry-after-ms`. Once a token was delivered nothing is retried: a later failure
//! is reported as an error item in the stream.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Configuration of the LLM provider.
#[derive(Clone)]
pub struct LlmConfig {
    /// Base URL including the version segment (`OPENAI_BASE_URL`, default `https://api.openai.com/v1`).
    pub base_url: String,
    /// Bearer token (`OPENAI_API_KEY`); `None` for local servers that need none (Ollama, llama.cpp).
    pub api_key: Option<String>,
    /// Model used by teach mode (`STUDY_TEACH_MODEL`).
    pub teach_model: String,
    /// Model used by ask mode (`STUDY_ASK_MODEL`).
    pub ask_model: String,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Longest wait from sending the request to the first content token (or the whole JSON answer
    /// of a non-streamed call).
    pub first_token_timeout: Duration,
    /// Longest silence between two stream chunks once the stream started.
    pub idle_timeout: Duration,
    /// Retries before the first token (so at most `max_retries + 1` attempts).
    pub max_retries: u32,
    /// First backoff delay; doubled on each retry (with jitter), capped by `max_backoff`.
    pub initial_backoff: Duration,
    /// Upper bound of any wait between attempts, including a server's `Retry-After`.
    pub max_backoff: Duration,
}

impl std::fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("teach_model", &self.teach_model)
            .field("ask_model", &self.ask_model)
            .field("connect_timeout", &self.connect_timeout)
            .field("first_token_timeout", &self.first_token_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

/// Default base URL of the OpenAI API.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            base_url: DEFAULT_BASE_URL.to_string(),
            api_key: None,
            teach_model: "gpt-5-mini".to_string(),
            ask_model: "gpt-5-nano".to_string(),
            connect_timeout: Duration::from_secs(5),
            first_token_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(30),
            max_retries: 2,
            initial_backoff: Duration::from_millis(300),
            max_backoff: Duration::from_secs(20),
        }
    }
}

impl LlmConfig {
    /// Read the configuration from the environment. Returns `None` when neither `OPENAI_API_KEY`
    /// nor `OPENAI_BASE_URL` is set (no provider configured). Optional: `STUDY_TEACH_MODEL`,
    /// `STUDY_ASK_MODEL`, `LLM_CONNECT_TIMEOUT_SECS`, `LLM_FIRST_TOKEN_TIMEOUT_SECS`,
    /// `LLM_IDLE_TIMEOUT_SECS`, `LLM_MAX_RETRIES`.
    pub fn from_env() -> Option<LlmConfig> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let api_key = var("OPENAI_API_KEY");
        let base_url = var("OPENAI_BASE_URL");
        if api_key.is_none() && base_url.is_none() {
            return None;
        }
        let d = LlmConfig::default();
        let secs = |k: &str, dflt: Duration| {
            var(k)
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| *v > 0.0)
                .map(Duration::from_secs_f64)
                .unwrap_or(dflt)
        };
        Some(LlmConfig {
            base_url: base_url.unwrap_or(d.base_url),
            api_key,
            teach_model: var("STUDY_TEACH_MODEL").unwrap_or(d.teach_model),
            ask_model: var("STUDY_ASK_MODEL").unwrap_or(d.ask_model),
            connect_timeout: secs("LLM_CONNECT_TIMEOUT_SECS", d.connect_timeout),
            first_token_timeout: secs("LLM_FIRST_TOKEN_TIMEOUT_SECS", d.first_token_timeout),
            idle_timeout: secs("LLM_IDLE_TIMEOUT_SECS", d.idle_timeout),
            max_retries: var("LLM_MAX_RETRIES")
                .and_then(|v| v.parse().ok())
                .unwrap_or(d.max_retries),
            initial_backoff: d.initial_backoff,
            max_backoff: d.max_backoff,
        })
    }
}

/// One chat message sent to the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        ChatMessage {
            role: "system".into(),
            content: content.into(),
        }
    }
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        ChatMessage {
            role: "user".into(),
            content: content.into(),
        }
    }
    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        ChatMessage {
            role: "assistant".into(),
            content: content.into(),
        }
    }
}

/// Which timeout fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    /// No first token (or no non-streamed answer) in time.
    FirstToken,
    /// The stream went silent for longer than the idle timeout.
    Idle,
}

/// An LLM call failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LlmError {
    /// The provider answered with an HTTP error status.
    #[error("LLM provider returned HTTP {status}: {message}")]
    Status { status: u16, message: String },
    /// Could not connect to the provider.
    #[error("cannot connect to the LLM provider: {0}")]
    Connect(String),
    /// The connection failed while receiving the answer.
    #[error("LLM stream interrupted: {0}")]
    Transport(String),
    /// A timeout fired.
    #[error("LLM provider timed out ({0:?})")]
    Timeout(TimeoutKind),
    /// The provider sent an error object inside the stream.
    #[error("LLM provider error: {0}")]
    Api(String),
    /// The answer could not be understood.
    #[error("unexpected LLM response: {0}")]
    Protocol(String),
    /// The client could not be built.
    #[error("LLM client configuration error: {0}")]
    Config(String),
}

impl LlmError {
    /// True for failures worth retrying (overload, server errors, network, timeouts).
    pub fn is_transient(&self) -> bool {
        match self {
            LlmError::Status { status, .. } => *status == 429 || *status == 408 || *status >= 500,
            LlmError::Connect(_) | LlmError::Transport(_) | LlmError::Timeout(_) => true,
            LlmError::Api(_) => true,
            LlmError::Protocol(_) | LlmError::Config(_) => false,
        }
    }
}

/// A stream of content deltas, exactly as the model produced them.
pub type DeltaStream = BoxStream<'static, Result<String, LlmError>>;

/// The client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LlmClient {
    http: reqwest::Client,
    cfg: Arc<LlmConfig>,
}

/// Install the ring rustls provider as the process default if none is installed yet
/// (reqwest is built with `rustls-no-provider`).
pub fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing the race to another thread installing one is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

impl LlmClient {
    /// Build a client for this configuration.
    pub fn new(cfg: LlmConfig) -> Result<LlmClient, LlmError> {
        ensure_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| LlmError::Config(e.to_string()))?;
        Ok(LlmClient {
            http,
            cfg: Arc::new(cfg),
        })
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &LlmConfig {
        &self.cfg
    }

    fn url(&self) -> String {
        format!(
            "{}/chat/completions",
            self.cfg.base_url.trim_end_matches('/')
        )
    }

    async fn send(&self, body: &Value) -> Result<reqwest::Response, (LlmError, Option<Duration>)> {
        let mut req = self.http.post(self.url()).json(body);
        if let Some(key) = &self.cfg.api_key {
            req = req.bearer_auth(key);
        }
        let resp = match tokio::time::timeout(self.cfg.first_token_timeout, req.send()).await {
            Err(_) => return Err((LlmError::Timeout(TimeoutKind::FirstToken), None)),
            Ok(Err(e)) if e.is_connect() => return Err((LlmError::Connect(e.to_string()), None)),
            Ok(Err(e)) if e.is_timeout() => {
                return Err((LlmError::Timeout(TimeoutKind::FirstToken), None));
            }
            Ok(Err(e)) => return Err((LlmError::Transport(e.to_string()), None)),
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let retry_after = retry_after(resp.headers());
        let text = tokio::time::timeout(Duration::from_secs(5), resp.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| {
                v.pointer("/error/message")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_else(|| text.chars().take(300).collect());
        Err((
            LlmError::Status {
                status: status.as_u16(),
                message,
            },
            retry_after,
        ))
    }

    fn backoff(&self, attempt: u32, server_hint: Option<Duration>) -> Duration {
        let d = match server_hint {
            Some(h) => h,
            None => {
                let base = self
                    .cfg
                    .initial_backoff
                    .saturating_mul(2u32.saturating_pow(attempt));
                let jitter = rand::random::<f64>() * 0.25 + 0.875;
                base.mul_f64(jitter)
            }
        };
        d.min(self.cfg.max_backoff)
    }

    /// Stream a chat completion: a stream of content deltas. Fails (after retries) only when not a
    /// single token could be obtained; later failures arrive as an `Err` item in the stream.
    pub async fn stream_chat(
        &self,
        model: &str,
        messages: &[ChatMessage],
    ) -> Result<DeltaStream, LlmError> {
        let body = json!({
            "model": model,
            "messages": messages,
            "stream": true,
        });
        let mut attempt = 0u32;
        loop {
            let (err, hint) = match self.send(&body).await {
                Err(e) => e,
                Ok(resp) if is_json(&resp) => {
                    // A server that ignores `stream: true` and answers one JSON completion.
                    match tokio::time::timeout(self.cfg.first_token_timeout, resp.json::<Value>())
                        .await
                    {
                        Err(_) => (LlmError::Timeout(TimeoutKind::FirstToken), None),
                        Ok(Err(e)) => (LlmError::Transport(e.to_string()), None),
                        Ok(Ok(v)) => match completion_text(&v) {
                            Ok(text) if text.is_empty() => {
                                return Ok(futures::stream::empty().boxed());
                            }
                            Ok(text) => {
                                return Ok(futures::stream::once(async move { Ok(text) }).boxed());
                            }
                            Err(e) => (e, None),
                        },
                    }
                }
                Ok(resp) => {
                    let mut sse =
                        SseDeltas::new(Box::pin(resp.bytes_stream()), self.cfg.idle_timeout);
                    // Wait for the first content token (or a clean, empty end).
                    match tokio::time::timeout(self.cfg.first_token_timeout, sse.next_delta()).await
                    {
                        Err(_) => (LlmError::Timeout(TimeoutKind::FirstToken), None),
                        Ok(Some(Err(e))) => (e, None),
                        Ok(None) => return Ok(futures::stream::empty().boxed()),
                        Ok(Some(Ok(first))) => {
                            let rest = futures::stream::unfold(sse, |mut s| async move {
                                s.next_delta().await.map(|item| (item, s))
                            });
                            return Ok(futures::stream::once(async move { Ok(first) })
                                .chain(rest)
                                .boxed());
                        }
                    }
                }
            };
            if !err.is_transient() || attempt >= self.cfg.max_retries {
                return Err(err);
            }
            let wait = self.backoff(attempt, hint);
            tracing::warn!(error = %err, attempt, wait_ms = wait.as_millis() as u64, "LLM call failed before the first token; retrying");
            metrics::counter!("study_llm_retries_total").increment(1);
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// A non-streamed chat completion returning the whole answer text (retried like
    /// [`LlmClient::stream_chat`]). Used for structured side calls (knowledge checks, judging).
    pub async fn complete(
        &self,
        model: &str,
        messages: &[ChatMessage],
    ) -> Result<String, LlmError> {
        let body = json!({
            "model": model,
            "messages": messages,
            "stream": false,
        });
        let mut attempt = 0u32;
        loop {
            let (err, hint) = match self.send(&body).await {
                Err(e) => e,
                Ok(resp) => {
                    match tokio::time::timeout(self.cfg.first_token_timeout, resp.json::<Value>())
                        .await
                    {
                        Err(_) => (LlmError::Timeout(TimeoutKind::FirstToken), None),
                        Ok(Err(e)) => (LlmError::Transport(e.to_string()), None),
                        Ok(Ok(v)) => match completion_text(&v) {
                            Ok(text) => return Ok(text),
                            Err(e) => (e, None),
                        },
                    }
                }
            };
            if !err.is_transient() || attempt >= self.cfg.max_retries {
                return Err(err);
            }
            let wait = self.backoff(attempt, hint);
            tracing::warn!(error = %err, attempt, "LLM completion failed; retrying");
            metrics::counter!("study_llm_retries_total").increment(1);
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

fn is_json(resp: &reqwest::Response) -> bool {
    resp.headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"))
}

/// The content of a non-streamed completion (or the provider's error).
fn completion_text(v: &Value) -> Result<String, LlmError> {
    if let Some(msg) = v.pointer("/error/message").and_then(Value::as_str) {
        return Err(LlmError::Api(msg.to_string()));
    }
    v.pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| LlmError::Protocol("no choices[0].message.content in the answer".into()))
}

/// `Retry-After` (seconds or HTTP date) or OpenAI's `retry-after-ms`.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let v = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// Incremental parser of an OpenAI SSE body into content deltas.
struct SseDeltas {
    body: ByteStream,
    idle: Duration,
    buf: BytesMut,
    pending: VecDeque<String>,
    finished: bool,
    done: bool,
}

impl SseDeltas {
    fn new(body: ByteStream, idle: Duration) -> Self {
        SseDeltas {
            body,
            idle,
            buf: BytesMut::new(),
            pending: VecDeque::new(),
            finished: false,
            done: false,
        }
    }

    /// The next non-empty content delta, `None` at a clean end, or an error (after which the
    /// stream ends).
    async fn next_delta(&mut self) -> Option<Result<String, LlmError>> {
        loop {
            if let Some(d) = self.pending.pop_front() {
                return Some(Ok(d));
            }
            if self.done {
                return None;
            }
            if let Some(event) = take_event(&mut self.buf) {
                if let Err(e) = self.handle_event(&event) {
                    self.done = true;
                    return Some(Err(e));
                }
                continue;
            }
            match tokio::time::timeout(self.idle, self.body.next()).await {
                Err(_) => {
                    self.done = true;
                    return Some(Err(LlmError::Timeout(TimeoutKind::Idle)));
                }
                Ok(Some(Ok(bytes))) => self.buf.extend_from_slice(&bytes),
                Ok(Some(Err(e))) => {
                    self.done = true;
                    return Some(Err(LlmError::Transport(e.to_string())));
                }
                Ok(None) => {
                    self.done = true;
                    // A last event without the trailing blank line.
                    if !self.buf.is_empty() {
                        let rest = String::from_utf8_lossy(&self.buf).into_owned();
                        self.buf.clear();
                        if let Err(e) = self.handle_event(&rest) {
                            return Some(Err(e));
                        }
                        if let Some(d) = self.pending.pop_front() {
                            return Some(Ok(d));
                        }
                    }
                    if self.finished {
                        return None;
                    }
                    return Some(Err(LlmError::Transport(
                        "the stream ended before the answer was complete".into(),
                    )));
                }
            }
        }
    }

    fn handle_event(&mut self, event: &str) -> Result<(), LlmError> {
        let mut data = String::new();
        let mut any = false;
        for line in event.lines() {
            if let Some(rest) = line.strip_prefix("data:") {
                if any {
                    data.push('\n');
                }
                data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
                any = true;
            }
        }
        if !any {
            return Ok(()); // comment / keep-alive / other field
        }
        let data = data.trim_end_matches(['\r', '\n']);
        if data.trim() == "[DONE]" {
            self.finished = true;
            self.done = true;
            return Ok(());
        }
        let v: Value = serde_json::from_str(data)
            .map_err(|e| LlmError::Protocol(format!("bad SSE JSON: {e}")))?;
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            let msg = err
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| err.to_string());
            return Err(LlmError::Api(msg));
        }
        if let Some(choices) = v.get("choices").and_then(Value::as_array) {
            for c in choices {
                if let Some(text) = c.pointer("/delta/content").and_then(Value::as_str)
                    && !text.is_empty()
                {
                    self.pending.push_back(text.to_string());
                }
                if c.get("finish_reason").is_some_and(|f| !f.is_null()) {
                    self.finished = true;
                }
            }
        }
        Ok(())
    }
}

/// Remove and return the next complete SSE event (terminated by a blank line) from `buf`.
fn take_event(buf: &mut BytesMut) -> Option<String> {
    let (pos, sep) = find_event_end(buf)?;
    let ev = buf.split_to(pos + sep);
    Some(String::from_utf8_lossy(&ev[..pos]).into_owned())
}

fn find_event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2));
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_on_blank_lines_and_keep_utf8() {
        let mut b = BytesMut::from("data: {\"a\":1}\n\ndata: x\r\n\r\npartial".as_bytes());
        assert_eq!(take_event(&mut b).as_deref(), Some("data: {\"a\":1}"));
        assert_eq!(take_event(&mut b).as_deref(), Some("data: x"));
        assert_eq!(take_event(&mut b), None);
        assert_eq!(&b[..], b"partial");
    }

    #[test]
    fn retry_after_parses_seconds_and_ms() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", "150".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
    }
}
