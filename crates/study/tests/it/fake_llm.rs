//! A small, scriptable, OpenAI-compatible Chat Completions server for tests.
//!
//! `POST /v1/chat/completions` answers with the next scripted [`Step`] whose matcher accepts the
//! request (steps without a matcher accept anything). With `"stream": true` a reply is sent as
//! SSE `data: {chat.completion.chunk}` frames followed by `data: [DONE]`; otherwise as one
//! `chat.completion` JSON object whose content is the joined deltas. Every request body (and its
//! `Authorization` header) is recorded so tests can inspect what the model was sent.
//!
//! ```ignore
//! let llm = fake_llm::start(vec![Step::reply(&["Hello", " world", "! "])]).await;
//! let client = LlmClient::new(LlmConfig { base_url: llm.base_url.clone(), .. });
//! ```
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Decides whether a scripted step answers a given request body.
pub type Matcher = Arc<dyn Fn(&Value) -> bool + Send + Sync>;

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Step {
    /// A normal reply streamed as these deltas (kept byte for byte, whitespace included).
    Reply(Vec<String>),
    /// A normal reply with a pause before every delta.
    Slow {
        deltas: Vec<String>,
        per_delta: Duration,
    },
    /// An HTTP error before any token (e.g. 429 with `Retry-After`, 500, 503).
    Http {
        status: u16,
        retry_after: Option<String>,
        body: String,
    },
    /// Send these deltas, then an SSE `{"error":{...}}` frame, then end the stream (no `[DONE]`).
    ErrorMidStream {
        deltas: Vec<String>,
        message: String,
    },
    /// Send these deltas, then drop the connection abruptly (no `[DONE]`, broken chunked body).
    DisconnectMidStream { deltas: Vec<String> },
    /// Send these deltas, then go silent for `stall` before finishing normally.
    Stall {
        deltas: Vec<String>,
        stall: Duration,
    },
    /// Answer one non-streamed `chat.completion` JSON even when a stream was requested
    /// (servers that ignore `stream: true`).
    JsonReply(String),
}

impl Step {
    /// A normal reply made of these deltas.
    pub fn reply(deltas: &[&str]) -> Step {
        Step::Reply(deltas.iter().map(|s| s.to_string()).collect())
    }

    /// A normal reply of one delta (handy for non-streamed JSON answers).
    pub fn text(text: impl Into<String>) -> Step {
        Step::Reply(vec![text.into()])
    }

    /// HTTP error before the first token.
    pub fn status(status: u16) -> Step {
        Step::Http {
            status,
            retry_after: None,
            body: json!({"error": {"message": format!("fake status {status}"), "type": "server_error"}})
                .to_string(),
        }
    }

    /// HTTP 429 with a `Retry-After` header (seconds).
    pub fn too_many(retry_after_secs: u64) -> Step {
        Step::Http {
            status: 429,
            retry_after: Some(retry_after_secs.to_string()),
            body: json!({"error": {"message": "rate limited", "type": "rate_limit_exceeded"}})
                .to_string(),
        }
    }

    /// The joined text this step would produce (empty for failures before the first token).
    pub fn joined(&self) -> String {
        match self {
            Step::Reply(d)
            | Step::Slow { deltas: d, .. }
            | Step::ErrorMidStream { deltas: d, .. }
            | Step::DisconnectMidStream { deltas: d }
            | Step::Stall { deltas: d, .. } => d.concat(),
            Step::JsonReply(t) => t.clone(),
            Step::Http { .. } => String::new(),
        }
    }
}

struct Scripted {
    matcher: Option<Matcher>,
    step: Step,
}

#[derive(Default)]
struct Inner {
    queue: VecDeque<Scripted>,
    fallback: Option<Step>,
    requests: Vec<Value>,
    authorizations: Vec<Option<String>>,
    /// Streams the client closed before the end.
    abandoned: usize,
}

/// A running fake LLM server; it stops when the test's runtime ends.
#[derive(Clone)]
pub struct FakeLlm {
    /// Base URL including `/v1` (what `OPENAI_BASE_URL` would be).
    pub base_url: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeLlm {
    /// Queue a step that answers the next request.
    pub fn push(&self, step: Step) {
        self.inner.lock().unwrap().queue.push_back(Scripted {
            matcher: None,
            step,
        });
    }

    /// Queue a normal reply made of these deltas.
    pub fn push_reply(&self, deltas: &[&str]) {
        self.push(Step::reply(deltas));
    }

    /// Queue a step that answers only a request the matcher accepts (other requests skip it).
    pub fn push_when(&self, matcher: impl Fn(&Value) -> bool + Send + Sync + 'static, step: Step) {
        self.inner.lock().unwrap().queue.push_back(Scripted {
            matcher: Some(Arc::new(matcher)),
            step,
        });
    }

    /// Queue a step for the next streamed (`stream: true`) request only.
    pub fn push_streamed(&self, step: Step) {
        self.push_when(is_streamed, step);
    }

    /// Queue a step for the next non-streamed request only.
    pub fn push_unstreamed(&self, step: Step) {
        self.push_when(|b| !is_streamed(b), step);
    }

    /// The step used when no queued step matches (default: HTTP 500 "script exhausted").
    pub fn set_fallback(&self, step: Option<Step>) {
        self.inner.lock().unwrap().fallback = step;
    }

    /// Every request body received so far, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// The `Authorization` header of every request received so far.
    pub fn authorizations(&self) -> Vec<Option<String>> {
        self.inner.lock().unwrap().authorizations.clone()
    }

    /// Number of requests received so far.
    pub fn request_count(&self) -> usize {
        self.inner.lock().unwrap().requests.len()
    }

    /// Number of streams the client dropped before they ended.
    pub fn abandoned(&self) -> usize {
        self.inner.lock().unwrap().abandoned
    }

    /// Number of scripted steps not consumed yet.
    pub fn pending(&self) -> usize {
        self.inner.lock().unwrap().queue.len()
    }
}

/// True when the request body asks for a streamed answer.
pub fn is_streamed(body: &Value) -> bool {
    body.get("stream").and_then(Value::as_bool).unwrap_or(false)
}

/// All message contents of a request body joined with newlines (for assertions).
pub fn all_message_text(body: &Value) -> String {
    body.get("messages")
        .and_then(Value::as_array)
        .map(|msgs| {
            msgs.iter()
                .filter_map(|m| m.get("content").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// Start the server on `127.0.0.1:0` with an initial script.
pub async fn start(script: Vec<Step>) -> FakeLlm {
    let inner = Arc::new(Mutex::new(Inner {
        queue: script
            .into_iter()
            .map(|step| Scripted {
                matcher: None,
                step,
            })
            .collect(),
        ..Inner::default()
    }));
    let app = Router::new()
        .route("/v1/chat/completions", post(handle))
        .with_state(inner.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    FakeLlm {
        base_url: format!("http://{addr}/v1"),
        inner,
    }
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let step = {
        let mut g = inner.lock().unwrap();
        g.requests.push(body.clone());
        g.authorizations.push(
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        );
        let pos = g
            .queue
            .iter()
            .position(|s| s.matcher.as_ref().is_none_or(|m| m(&body)));
        match pos.and_then(|p| g.queue.remove(p)) {
            Some(s) => s.step,
            None => g.fallback.clone().unwrap_or(Step::Http {
                status: 500,
                retry_after: None,
                body: json!({"error": {"message": "fake llm: script exhausted"}}).to_string(),
            }),
        }
    };
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("fake-model")
        .to_string();

    if let Step::Http {
        status,
        retry_after,
        body,
    } = &step
    {
        let mut resp = (
            StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            [("content-type", "application/json")],
            body.clone(),
        )
            .into_response();
        if let Some(ra) = retry_after {
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from_str(ra).unwrap());
        }
        return resp;
    }

    if !is_streamed(&body) || matches!(step, Step::JsonReply(_)) {
        return match step {
            Step::Reply(_) | Step::Slow { .. } | Step::Stall { .. } | Step::JsonReply(_) => {
                if let Step::Stall { stall, .. } = &step {
                    tokio::time::sleep(*stall).await;
                }
                Json(json!({
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": 0,
                    "model": model,
                    "choices": [{
                        "index": 0,
                        "message": {"role": "assistant", "content": step.joined()},
                        "finish_reason": "stop"
                    }],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
                }))
                .into_response()
            }
            _ => (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": {"message": "fake mid-stream failure"}})),
            )
                .into_response(),
        };
    }

    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let shared = inner.clone();
    tokio::spawn(async move {
        let _ = tx
            .send(Ok(chunk_frame(
                &model,
                json!({"role": "assistant", "content": ""}),
                None,
            )))
            .await;
        let (deltas, per_delta) = match &step {
            Step::Slow { deltas, per_delta } => (deltas.clone(), Some(*per_delta)),
            Step::Reply(d)
            | Step::ErrorMidStream { deltas: d, .. }
            | Step::DisconnectMidStream { deltas: d }
            | Step::Stall { deltas: d, .. } => (d.clone(), None),
            Step::Http { .. } | Step::JsonReply(_) => (Vec::new(), None),
        };
        for d in deltas {
            if let Some(p) = per_delta {
                tokio::time::sleep(p).await;
            }
            if tx
                .send(Ok(chunk_frame(&model, json!({"content": d}), None)))
                .await
                .is_err()
            {
                shared.lock().unwrap().abandoned += 1;
                return;
            }
        }
        match step {
            Step::ErrorMidStream { message, .. } => {
                let frame = format!(
                    "data: {}\n\n",
                    json!({"error": {"message": message, "type": "server_error"}})
                );
                let _ = tx.send(Ok(Bytes::from(frame))).await;
                return;
            }
            Step::DisconnectMidStream { .. } => {
                // Let hyper flush what was sent, then break the body.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = tx
                    .send(Err(std::io::Error::other("fake abrupt disconnect")))
                    .await;
                return;
            }
            Step::Stall { stall, .. } => {
                tokio::time::sleep(stall).await;
            }
            _ => {}
        }
        let _ = tx
            .send(Ok(chunk_frame(&model, json!({}), Some("stop"))))
            .await;
        let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
    });
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(ReceiverStream::new(rx)))
        .unwrap()
}

fn chunk_frame(model: &str, delta: Value, finish: Option<&str>) -> Bytes {
    let v = json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
    });
    Bytes::from(format!("data: {v}\n\n"))
}
