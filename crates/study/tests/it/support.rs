//! Shared helpers: a scripted tutor, a counting rate limiter, the `/chatkit` router served on
//! 127.0.0.1:0 behind a dev-identity middleware, and a small ChatKit HTTP/SSE client that records
//! every response body and event for the `openai-chatkit` validator.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use futures::StreamExt;
use futures::stream::BoxStream;
use platform::db::TestDb;
use platform::identity::{AuthMethod, Identity, Scopes};
use platform::ratelimit::{Decision, RateLimiter};
use serde_json::{Value, json};
use study::server::{StudyState, chatkit_router};
use study::store::ThreadStore;
use study::turn::{NoticeLevel, TurnInput, Tutor, TutorEvent};
use study::turns::{RedisBus, StreamSettings, TurnHub};

/// A tutor whose behaviour is chosen by markers in the user text:
/// - `#fail`: one delta, then `TutorEvent::Error` (retryable);
/// - `#slow`: a delta every 30 ms for a long time (for cancellation tests);
/// - `#notice`: a notice, then a short answer;
/// - `#panic`: one delta, then the stream panics;
/// - `#silent`: ends without any event;
/// - `#drip`: [`DRIP_DELTAS`] deltas `w{i} `, one every 40 ms, then the end;
/// - anything else: deltas with leading/trailing whitespace and a `State` event.
///
/// `title()` returns "📚 Lesson" for trigger messages (`\u{200B}`) and `None` otherwise.
#[derive(Default)]
pub struct ScriptedTutor {
    /// Every input the tutor received, in order.
    pub inputs: Mutex<Vec<TurnInput>>,
    /// Set when a `#slow` stream was dropped before it finished.
    pub slow_dropped: Arc<AtomicBool>,
    /// Deltas produced by `#slow` streams so far.
    pub slow_sent: Arc<AtomicUsize>,
}

/// Deltas of a `#drip` answer.
pub const DRIP_DELTAS: usize = 30;

/// The whole `#drip` answer.
pub fn drip_text() -> String {
    (0..DRIP_DELTAS).map(|i| format!("w{i} ")).collect()
}

/// The default answer, split in deltas that must arrive byte for byte.
pub const DEFAULT_DELTAS: [&str; 4] = ["  Hi ", "there! ", "\n\nWhat is", " a variable?  "];

struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl Tutor for ScriptedTutor {
    async fn respond(&self, input: TurnInput) -> BoxStream<'static, TutorEvent> {
        self.inputs.lock().unwrap().push(input.clone());
        let text = input.user_text.clone();
        if text.contains("#fail") {
            return futures::stream::iter(vec![
                TutorEvent::TextDelta("Partial ".into()),
                TutorEvent::Error {
                    message: "Tutor exploded".into(),
                    allow_retry: true,
                },
                TutorEvent::TextDelta("never sent".into()),
            ])
            .boxed();
        }
        if text.contains("#slow") {
            let flag = DropFlag(self.slow_dropped.clone());
            let sent = self.slow_sent.clone();
            return futures::stream::unfold((0usize, flag, sent), |(i, flag, sent)| async move {
                if i >= 2000 {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
                sent.fetch_add(1, Ordering::SeqCst);
                Some((
                    TutorEvent::TextDelta(format!("tick{i} ")),
                    (i + 1, flag, sent),
                ))
            })
            .boxed();
        }
        if text.contains("#drip") {
            return futures::stream::unfold(0usize, |i| async move {
                if i >= DRIP_DELTAS {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
                Some((TutorEvent::TextDelta(format!("w{i} ")), i + 1))
            })
            .boxed();
        }
        if text.contains("#notice") {
            return futures::stream::iter(vec![
                TutorEvent::Notice {
                    level: NoticeLevel::Warning,
                    message: "No LLM configured".into(),
                },
                TutorEvent::TextDelta("Short answer.".into()),
            ])
            .boxed();
        }
        if text.contains("#panic") {
            return futures::stream::iter(vec![0, 1])
                .map(|i| {
                    if i == 1 {
                        panic!("scripted tutor panic");
                    }
                    TutorEvent::TextDelta("before the panic".into())
                })
                .boxed();
        }
        if text.contains("#silent") {
            return futures::stream::empty().boxed();
        }
        let turn = input.history.len() / 2 + 1;
        let mut events: Vec<TutorEvent> = DEFAULT_DELTAS
            .iter()
            .map(|d| TutorEvent::TextDelta(d.to_string()))
            .collect();
        events.insert(
            2,
            TutorEvent::State(json!({"turn": turn, "prev": input.state})),
        );
        futures::stream::iter(events).boxed()
    }

    async fn title(&self, input: &TurnInput) -> Option<String> {
        input
            .user_text
            .contains('\u{200B}')
            .then(|| "📚 Lesson".to_string())
    }
}

/// The full default answer text.
pub fn default_text() -> String {
    DEFAULT_DELTAS.concat()
}

/// A fixed-window limiter counting per key in memory.
pub struct CountingLimiter {
    pub limit: u64,
    pub counts: Mutex<HashMap<String, u64>>,
}

impl CountingLimiter {
    pub fn new(limit: u64) -> CountingLimiter {
        CountingLimiter {
            limit,
            counts: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait::async_trait]
impl RateLimiter for CountingLimiter {
    async fn check(&self, key: &str) -> Decision {
        let mut counts = self.counts.lock().unwrap();
        let n = counts.entry(key.to_string()).or_insert(0);
        *n += 1;
        Decision {
            allowed: *n <= self.limit,
            limit: self.limit,
            remaining: self.limit.saturating_sub(*n),
            reset_after: Duration::from_millis(42_500),
            failed_open: false,
        }
    }
    fn backend(&self) -> &'static str {
        "memory"
    }
}

/// Identity from `X-User-ID` (dev mode) and `X-Org-ID`; no header, no identity (→ 401).
async fn dev_identity(mut req: Request, next: Next) -> Response {
    let user = req
        .headers()
        .get("x-user-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let org = req
        .headers()
        .get("x-org-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(user) = user {
        req.extensions_mut().insert(Identity {
            subject: "dev".into(),
            scopes: Scopes::ALL,
            name: None,
            email: None,
            organization: org,
            method: AuthMethod::Dev,
            acting_user: Some(user),
        });
    }
    next.run(req).await
}

/// One captured response, for the Python validator.
#[derive(Debug, Clone)]
pub struct Captured {
    pub kind: &'static str,
    pub raw: String,
}

/// A running `/chatkit` server over a fresh database.
pub struct TestServer {
    pub url: String,
    pub store: ThreadStore,
    pub turns: Arc<TurnHub>,
    pub tutor: Arc<ScriptedTutor>,
    pub limiter: Arc<CountingLimiter>,
    pub http: reqwest::Client,
    pub captured: Arc<Mutex<Vec<Captured>>>,
    pub backend: &'static str,
    _db: Option<TestDb>,
}

/// The default body limit of test servers.
pub const BODY_LIMIT: usize = 64 * 1024;

impl TestServer {
    pub async fn start(db: TestDb) -> TestServer {
        TestServer::start_with_limit(db, 1000).await
    }

    pub async fn start_with_limit(db: TestDb, limit: u64) -> TestServer {
        // A turn left without a client stops at once (what the disconnect tests pin).
        let streams = StreamSettings {
            detached_limit: Duration::ZERO,
            ..StreamSettings::default()
        };
        TestServer::start_opts(db, limit, streams, Duration::ZERO).await
    }

    /// A server with these stream settings and dedupe window (zero: only `Idempotency-Key`).
    pub async fn start_opts(
        db: TestDb,
        limit: u64,
        streams: StreamSettings,
        dedupe_window: Duration,
    ) -> TestServer {
        platform::install_crypto_provider();
        let backend = db.kind.as_str();
        let store = ThreadStore::new(db.connect().await);
        store.migrate_up().await.expect("migrate");
        TestServer::serve(
            store,
            Some(db),
            backend,
            limit,
            streams,
            dedupe_window,
            None,
        )
        .await
    }

    /// Another server instance (own turns, tutor and listener) on this one's database, both
    /// mirroring turns to `bus` (a second replica).
    pub async fn replica(&self, streams: StreamSettings, bus: Arc<RedisBus>) -> TestServer {
        TestServer::serve(
            self.store.clone(),
            None,
            self.backend,
            1000,
            streams,
            Duration::ZERO,
            Some(bus),
        )
        .await
    }

    async fn serve(
        store: ThreadStore,
        db: Option<TestDb>,
        backend: &'static str,
        limit: u64,
        streams: StreamSettings,
        dedupe_window: Duration,
        bus: Option<Arc<RedisBus>>,
    ) -> TestServer {
        let tutor = Arc::new(ScriptedTutor::default());
        let limiter = Arc::new(CountingLimiter::new(limit));
        let mut state = StudyState::with_streams(
            store.clone(),
            tutor.clone(),
            limiter.clone(),
            BODY_LIMIT,
            streams,
        );
        state.dedupe_window = dedupe_window;
        state.bus = bus;
        let turns = state.turns.clone();
        let app = chatkit_router(state).layer(middleware::from_fn(dev_identity));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        TestServer {
            url: format!("http://{addr}/chatkit"),
            store,
            turns,
            tutor,
            limiter,
            http: reqwest::Client::new(),
            captured: Arc::new(Mutex::new(Vec::new())),
            backend,
            _db: db,
        }
    }

    /// One server per available backend (SQLite always, PostgreSQL when configured).
    pub async fn all() -> Vec<TestServer> {
        let mut out = Vec::new();
        for db in TestDb::all().await {
            out.push(TestServer::start(db).await);
        }
        out
    }

    pub fn request(&self, user: &str, body: &Value) -> reqwest::RequestBuilder {
        self.request_q(user, body, "")
    }

    /// A request with a (pre-encoded) query string.
    pub fn request_q(&self, user: &str, body: &Value, query: &str) -> reqwest::RequestBuilder {
        let url = if query.is_empty() {
            self.url.clone()
        } else {
            format!("{}?{query}", self.url)
        };
        self.http
            .post(url)
            .header("x-user-id", user)
            .header("content-type", "application/json")
            .body(body.to_string())
    }

    /// A non-streaming request: status, headers and JSON body.
    pub async fn call(&self, user: &str, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
        let resp = self.request(user, &body).send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let json: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("non-JSON body {text:?}: {e}"));
        if status == 200 {
            let kind = match body["type"].as_str().unwrap_or("") {
                "threads.get_by_id" | "threads.update" => Some("thread"),
                "threads.list" => Some("threads_page"),
                "items.list" => Some("items_page"),
                "threads.delete" | "items.feedback" => Some("empty"),
                _ => None,
            };
            if let Some(kind) = kind {
                self.captured
                    .lock()
                    .unwrap()
                    .push(Captured { kind, raw: text });
            }
        }
        (status, headers, json)
    }

    /// A streaming request read to the end: the response and its parsed events.
    pub async fn stream(&self, user: &str, body: Value) -> Streamed {
        self.stream_with(self.request(user, &body)).await
    }

    pub async fn stream_with(&self, req: reqwest::RequestBuilder) -> Streamed {
        let resp = tokio::time::timeout(Duration::from_secs(30), req.send())
            .await
            .expect("stream request timed out")
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = tokio::time::timeout(Duration::from_secs(30), resp.bytes())
            .await
            .expect("stream did not end")
            .unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let events = if status == 200 {
            let frames = parse_sse(&text);
            let mut cap = self.captured.lock().unwrap();
            for raw in &frames {
                cap.push(Captured {
                    kind: "event",
                    raw: raw.clone(),
                });
            }
            frames
                .iter()
                .map(|f| serde_json::from_str(f).unwrap())
                .collect()
        } else {
            Vec::new()
        };
        Streamed {
            status,
            headers,
            text,
            events,
        }
    }

    /// Create a thread with a first message and return its id (stream read to the end).
    pub async fn create_thread(&self, user: &str, text: &str) -> (String, Streamed) {
        let s = self.stream(user, create_body(text, "teach")).await;
        assert_eq!(s.status, 200, "{}", s.text);
        let id = s.events[0]["thread"]["id"].as_str().unwrap().to_string();
        (id, s)
    }

    pub async fn items(&self, user: &str, thread_id: &str) -> Vec<Value> {
        let (status, _, page) = self
            .call(
                user,
                json!({"type":"items.list","params":{"thread_id":thread_id,"limit":100,"order":"asc"}}),
            )
            .await;
        assert_eq!(status, 200, "{page}");
        page["data"].as_array().unwrap().clone()
    }
}

/// A finished SSE response.
#[derive(Debug)]
pub struct Streamed {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub events: Vec<Value>,
}

impl Streamed {
    /// The event types, with the update type for `thread.item.updated`.
    pub fn types(&self) -> Vec<String> {
        self.events.iter().map(event_type).collect()
    }
}

pub fn event_type(e: &Value) -> String {
    let t = e["type"].as_str().unwrap_or("?");
    if t == "thread.item.updated" {
        format!("{t}:{}", e["update"]["type"].as_str().unwrap_or("?"))
    } else {
        t.to_string()
    }
}

/// Split an SSE body into frames; every frame must be exactly `data: {json}\n\n`.
pub fn parse_sse(text: &str) -> Vec<String> {
    assert!(
        text.is_empty() || text.ends_with("\n\n"),
        "stream does not end with a blank line: {text:?}"
    );
    text.split_terminator("\n\n")
        .map(|f| {
            let json = f
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("frame without data prefix: {f:?}"));
            assert!(!json.contains('\n'), "multi-line frame {f:?}");
            json.to_string()
        })
        .collect()
}

pub fn input(text: &str, model: &str) -> Value {
    json!({"content":[{"type":"input_text","text":text}],"attachments":[],"inference_options":{"model":model}})
}

pub fn create_body(text: &str, model: &str) -> Value {
    json!({"type":"threads.create","params":{"input":input(text, model)},"metadata":{}})
}

pub fn add_body(thread_id: &str, text: &str) -> Value {
    json!({"type":"threads.add_user_message","params":{"thread_id":thread_id,"input":input(text, "teach")}})
}

/// Replace ids and timestamps so transcripts compare structurally.
pub fn mask(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let masked = match k.as_str() {
                        "id" | "thread_id" | "item_id" | "after" if v.is_string() => json!("<id>"),
                        "created_at" => json!("<ts>"),
                        _ => mask(v),
                    };
                    (k.clone(), masked)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(mask).collect()),
        other => other.clone(),
    }
}

/// Poll `f` until it returns `Some` (or panic after `secs`).
pub async fn eventually<T, F, Fut>(secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached in {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
