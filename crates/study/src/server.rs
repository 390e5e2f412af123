//! `POST /chatkit`: the ChatKit protocol endpoint and the turn driver.
//!
//! Request flow: identity (401) → body within the size limit (413) → request type (400) → rate
//! limit for message-creating types (429) → full decoding (400) → ownership checks (404) → either
//! a JSON answer or an SSE stream. Everything that can fail with a status code happens before the
//! stream opens; once it is open, failures become ChatKit `error` events.
//!
//! A streaming turn runs in a spawned task that owns every store write and talks to the HTTP
//! response through a channel. When the client disconnects, the task notices (the channel
//! closes), drops the tutor stream (cancelling the LLM call) and still saves the assistant text
//! received so far. Each write is committed before the event that announces it is sent.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use platform::identity::{AuthMethod, Identity};
use platform::ratelimit::RateLimiter;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::chatkit::ids::{self, new_id};
use crate::chatkit::requests::{
    ChatKitRequest, ListParams, Order, StructuredInputSubmission, parse_request, request_type,
};
use crate::chatkit::types::{ToolCallStatus, user_text};
use crate::chatkit::{
    AssistantContent, ItemBody, ItemUpdate, Page, StreamEvent, StreamOptions, Thread, ThreadItem,
    ThreadMetadata, ThreadStatus, Timestamp, UserMessageInput,
};
use crate::store::{Owner, StoreError, StoredThread, ThreadStore};
use crate::turn::{HistoryMessage, Mode, Role, TurnInput, Tutor, TutorEvent};

/// How many earlier items the tutor sees as history.
pub const HISTORY_ITEMS: i64 = 30;
/// A turn fails with a retryable `error` event when the tutor sends nothing for this long.
pub const TUTOR_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a generated title may take before the turn gives up on it.
pub const TITLE_TIMEOUT: Duration = Duration::from_secs(20);
/// Frames buffered between the turn task and the HTTP response.
const CHANNEL_FRAMES: usize = 64;

/// Everything `/chatkit` needs. Built by the binary; cheap to share.
pub struct StudyState {
    pub store: ThreadStore,
    pub tutor: Arc<dyn Tutor>,
    pub limiter: Arc<dyn RateLimiter>,
    /// Largest accepted request body, in bytes (413 above it).
    pub max_body_bytes: usize,
}

/// The router serving `POST /chatkit`. The caller's [`Identity`] must be in the request
/// extensions (the auth middleware puts it there); without it the answer is 401.
pub fn chatkit_router(state: StudyState) -> Router {
    Router::new()
        .route("/chatkit", post(chatkit))
        .with_state(Arc::new(state))
}

// ------------------------------------------------------------------ errors

/// An error answered before any stream opens: `{"error":{"code","message"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_INPUT", message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound(what) => ApiError::new(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                format!("{what} not found"),
            ),
            StoreError::Invalid(msg) => ApiError::bad_request(msg),
            e @ StoreError::Unavailable { .. } => {
                tracing::warn!(error = %e, "study store unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "STORAGE_UNAVAILABLE",
                    "the database is busy or unreachable; retry shortly",
                )
            }
            e => {
                tracing::error!(error = %e, "study store error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL",
                    "internal error; retry later or contact the operator",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, axum::Json(body)).into_response()
    }
}

// ----------------------------------------------------------------- handler

/// Frontend query parameters (reference §1.1); other parameters are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
struct ChatkitQuery {
    #[serde(default)]
    lesson_path: Option<String>,
    #[serde(default)]
    user_name: Option<String>,
    #[serde(default)]
    selected_text: Option<String>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|v| !v.trim().is_empty())
}

/// The per-request context of a turn.
#[derive(Debug, Clone)]
struct Caller {
    owner: Owner,
    user_name: Option<String>,
    lesson_path: Option<String>,
    selected_text: Option<String>,
}

fn owner_of(identity: &Identity) -> Owner {
    let user = match (&identity.method, &identity.acting_user) {
        (AuthMethod::Dev, Some(acting)) if !acting.is_empty() => acting.clone(),
        _ => identity.subject.clone(),
    };
    Owner::new(user, identity.organization.as_deref())
}

async fn chatkit(State(st): State<Arc<StudyState>>, req: Request) -> Response {
    let Some(identity) = req.extensions().get::<Identity>().cloned() else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "authentication required",
        )
        .into_response();
    };
    let query = match Query::<ChatkitQuery>::try_from_uri(req.uri()) {
        Ok(Query(q)) => q,
        Err(e) => {
            return ApiError::bad_request(format!("invalid query string: {e}")).into_response();
        }
    };
    let owner = owner_of(&identity);
    let caller = Caller {
        owner,
        user_name: non_empty(identity.name.clone()).or(non_empty(query.user_name)),
        lesson_path: non_empty(query.lesson_path),
        selected_text: non_empty(query.selected_text),
    };
    let body = match axum::body::to_bytes(req.into_body(), st.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                format!(
                    "request body exceeds {} bytes or could not be read: {e}",
                    st.max_body_bytes
                ),
            )
            .into_response();
        }
    };
    let kind = match request_type(&body) {
        Ok(k) => k,
        Err(e) => return ApiError::bad_request(e.0).into_response(),
    };
    let decision = if ChatKitRequest::creates_message(&kind) {
        let d = st
            .limiter
            .check(&format!("study:msg:{}", caller.owner.user_id))
            .await;
        if !d.allowed {
            return platform::ratelimit::too_many_requests(&d);
        }
        Some(d)
    } else {
        None
    };
    let request = match parse_request(&body) {
        Ok(r) => r,
        Err(e) => return ApiError::bad_request(e.0).into_response(),
    };
    let mut resp = match handle(&st, caller, request).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    if let Some(d) = decision {
        resp.headers_mut().extend(platform::ratelimit::headers(&d));
    }
    resp
}

async fn handle(
    st: &Arc<StudyState>,
    caller: Caller,
    req: ChatKitRequest,
) -> Result<Response, ApiError> {
    let store = &st.store;
    let owner = &caller.owner;
    match req {
        ChatKitRequest::GetById { thread_id } => {
            let t = store.load_thread(owner, &thread_id).await?;
            let items = store
                .list_items(
                    owner,
                    &thread_id,
                    &ListParams {
                        limit: None,
                        order: Order::Asc,
                        after: None,
                    },
                )
                .await?;
            Ok(json_response(&Thread::from_metadata(&t.meta, items)))
        }
        ChatKitRequest::ThreadsList(page) => {
            let p = store.list_threads(owner, &page).await?;
            let out = Page {
                data: p
                    .data
                    .iter()
                    .map(|t| Thread::from_metadata(&t.meta, Page::default()))
                    .collect::<Vec<_>>(),
                has_more: p.has_more,
                after: p.after,
            };
            Ok(json_response(&out))
        }
        ChatKitRequest::ThreadsUpdate { thread_id, title } => {
            let t = store.set_title(owner, &thread_id, &title, true).await?;
            Ok(json_response(&Thread::from_metadata(
                &t.meta,
                Page::default(),
            )))
        }
        ChatKitRequest::ThreadsDelete { thread_id } => {
            store.delete_thread(owner, &thread_id).await?;
            Ok(json_response(&json!({})))
        }
        ChatKitRequest::ItemsList { thread_id, page } => {
            store.load_thread(owner, &thread_id).await?;
            let items = store.list_items(owner, &thread_id, &page).await?;
            Ok(json_response(&items))
        }
        ChatKitRequest::ItemsFeedback {
            thread_id,
            item_ids,
            kind,
        } => {
            store.load_thread(owner, &thread_id).await?;
            store
                .add_feedback(owner, &thread_id, &item_ids, kind)
                .await?;
            Ok(json_response(&json!({})))
        }
        ChatKitRequest::Unsupported { kind } => Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "NOT_SUPPORTED",
            format!(
                "{kind} is not supported by this server (Study Mode has no attachments, transcription or synchronous actions)"
            ),
        )),
        streaming => {
            let plan = prepare_stream(st, &caller, streaming).await?;
            Ok(start_stream(st, caller, plan))
        }
    }
}

fn json_response<T: serde::Serialize>(v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(bytes) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            format!("could not encode the response: {e}"),
        )
        .into_response(),
    }
}

// ------------------------------------------------------------- streaming

/// What a streaming request does once its checks and writes have succeeded.
struct StreamPlan {
    thread: StoredThread,
    /// Events before `stream_options` (thread.created, the user message).
    prelude: Vec<StreamEvent>,
    /// Events right after `stream_options` (replaced items, an unsupported-action error).
    after_options: Vec<StreamEvent>,
    /// The user message the tutor answers, if any.
    user_item: Option<ThreadItem>,
}

fn validate_input(input: &UserMessageInput) -> Result<(), ApiError> {
    if !input.attachments.is_empty() {
        return Err(ApiError::bad_request(
            "attachments are not supported by Study Mode",
        ));
    }
    Ok(())
}

fn user_item(thread_id: &str, input: UserMessageInput) -> ThreadItem {
    ThreadItem {
        id: new_id(ids::MESSAGE),
        thread_id: thread_id.to_string(),
        created_at: Timestamp::now(),
        body: ItemBody::UserMessage {
            content: input.content,
            attachments: Vec::new(),
            quoted_text: input.quoted_text,
            inference_options: input.inference_options,
        },
    }
}

async fn prepare_stream(
    st: &StudyState,
    caller: &Caller,
    req: ChatKitRequest,
) -> Result<StreamPlan, ApiError> {
    let store = &st.store;
    let owner = &caller.owner;
    match req {
        ChatKitRequest::ThreadsCreate { input } => {
            validate_input(&input)?;
            let meta = ThreadMetadata {
                title: None,
                id: new_id(ids::THREAD),
                created_at: Timestamp::now(),
                status: ThreadStatus::Active,
                metadata: Default::default(),
            };
            let item = user_item(&meta.id, input);
            store.create_thread_with_item(owner, &meta, &item).await?;
            let thread = store.load_thread(owner, &meta.id).await?;
            Ok(StreamPlan {
                prelude: vec![
                    StreamEvent::ThreadCreated {
                        thread: Thread::from_metadata(&thread.meta, Page::default()),
                    },
                    StreamEvent::ItemDone { item: item.clone() },
                ],
                thread,
                after_options: Vec::new(),
                user_item: Some(item),
            })
        }
        ChatKitRequest::AddUserMessage { thread_id, input } => {
            validate_input(&input)?;
            let thread = store.load_thread(owner, &thread_id).await?;
            let item = user_item(&thread_id, input);
            store.add_item(owner, &item).await?;
            Ok(StreamPlan {
                thread,
                prelude: vec![StreamEvent::ItemDone { item: item.clone() }],
                after_options: Vec::new(),
                user_item: Some(item),
            })
        }
        ChatKitRequest::RetryAfterItem { thread_id, item_id } => {
            let thread = store.load_thread(owner, &thread_id).await?;
            let item = store.load_item(owner, &thread_id, &item_id).await?;
            if !matches!(item.body, ItemBody::UserMessage { .. }) {
                return Err(ApiError::bad_request(format!(
                    "item {item_id} is not a user message"
                )));
            }
            store.delete_items_after(owner, &item).await?;
            Ok(StreamPlan {
                thread,
                prelude: Vec::new(),
                after_options: Vec::new(),
                user_item: Some(item),
            })
        }
        ChatKitRequest::AddClientToolOutput { thread_id, result } => {
            let thread = store.load_thread(owner, &thread_id).await?;
            let latest = store.recent_items(owner, &thread_id, None, 1).await?;
            let Some(mut call) = latest.into_iter().find(|i| {
                matches!(
                    i.body,
                    ItemBody::ClientToolCall {
                        status: ToolCallStatus::Pending,
                        ..
                    }
                )
            }) else {
                return Err(ApiError::bad_request(format!(
                    "the last item of thread {thread_id} is not a pending client tool call"
                )));
            };
            if let ItemBody::ClientToolCall { status, output, .. } = &mut call.body {
                *status = ToolCallStatus::Completed;
                *output = Some(result);
            }
            store.save_item(owner, &call).await?;
            // Drop any other dangling pending tool calls, as the SDK does.
            let recent = store
                .recent_items(owner, &thread_id, None, HISTORY_ITEMS)
                .await?;
            let dangling: Vec<String> = recent
                .iter()
                .filter(|i| {
                    matches!(
                        i.body,
                        ItemBody::ClientToolCall {
                            status: ToolCallStatus::Pending,
                            ..
                        }
                    )
                })
                .map(|i| i.id.clone())
                .collect();
            store.delete_items(owner, &thread_id, &dangling).await?;
            Ok(StreamPlan {
                thread,
                prelude: Vec::new(),
                after_options: Vec::new(),
                user_item: None,
            })
        }
        ChatKitRequest::AddStructuredInput {
            thread_id,
            item_id,
            input,
        } => {
            let thread = store.load_thread(owner, &thread_id).await?;
            let item = store.load_item(owner, &thread_id, &item_id).await?;
            let updated = apply_structured_input(item, &input)?;
            store.save_item(owner, &updated).await?;
            Ok(StreamPlan {
                thread,
                prelude: Vec::new(),
                after_options: vec![StreamEvent::ItemReplaced { item: updated }],
                user_item: None,
            })
        }
        ChatKitRequest::CustomAction {
            thread_id,
            item_id,
            action,
        } => {
            let thread = store.load_thread(owner, &thread_id).await?;
            if let Some(id) = &item_id {
                store.load_item(owner, &thread_id, id).await?;
            }
            Ok(StreamPlan {
                thread,
                prelude: Vec::new(),
                after_options: vec![StreamEvent::Error {
                    code: "custom".into(),
                    message: Some(format!(
                        "Custom actions are not supported by Study Mode (action {:?}).",
                        action.kind
                    )),
                    allow_retry: false,
                }],
                user_item: None,
            })
        }
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            format!("request {other:?} is not a streaming request"),
        )),
    }
}

/// Apply a structured-input submission to a pending `structured_input` item (SDK 1.6.5 semantics).
fn apply_structured_input(
    mut item: ThreadItem,
    sub: &StructuredInputSubmission,
) -> Result<ThreadItem, ApiError> {
    let id = item.id.clone();
    let ItemBody::StructuredInput { status, inputs } = &mut item.body else {
        return Err(ApiError::bad_request(format!(
            "item {id} is not a structured input item"
        )));
    };
    if status != "pending" {
        return Err(ApiError::bad_request(format!(
            "structured input item {id} is not pending"
        )));
    }
    for question in inputs.iter_mut() {
        let Some(q) = question.as_object_mut() else {
            continue;
        };
        let qid = q.get("id").and_then(Value::as_str).unwrap_or_default();
        let answer = sub.answers.get(qid);
        let values: Vec<Value> = answer
            .and_then(|a| a.get("values"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let skipped = answer
            .and_then(|a| a.get("skipped"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if sub.status == "skipped" || answer.is_none() || skipped || values.is_empty() {
            q.insert("answer".into(), json!({"values": [], "skipped": true}));
            continue;
        }
        let single = q.get("type").and_then(Value::as_str) == Some("multiple_choice")
            && !q.get("multiple").and_then(Value::as_bool).unwrap_or(false);
        let values: Vec<Value> = if single {
            values.into_iter().take(1).collect()
        } else {
            values
        };
        q.insert("answer".into(), json!({"values": values, "skipped": false}));
    }
    *status = sub.status.clone();
    Ok(item)
}

fn start_stream(st: &Arc<StudyState>, caller: Caller, plan: StreamPlan) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_FRAMES);
    let driver = TurnDriver {
        store: st.store.clone(),
        tutor: st.tutor.clone(),
        caller,
        tx: tx.clone(),
    };
    tokio::spawn(async move {
        metrics::gauge!("study_streams_active").increment(1.0);
        let inner = tokio::spawn(driver.run(plan));
        let result = inner.await;
        metrics::gauge!("study_streams_active").decrement(1.0);
        if let Err(e) = result
            && e.is_panic()
        {
            metrics::counter!("study_turns_total", "outcome" => "panicked").increment(1);
            tracing::error!("study turn panicked");
            let ev = StreamEvent::Error {
                code: "stream.error".into(),
                message: None,
                allow_retry: true,
            };
            let _ = tx.send(ev.to_sse()).await;
        }
    });
    let body = Body::from_stream(ReceiverStream::new(rx).map(Ok::<Bytes, Infallible>));
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    resp
}

/// Runs one streaming request: owns the store writes, sends frames to the response.
struct TurnDriver {
    store: ThreadStore,
    tutor: Arc<dyn Tutor>,
    caller: Caller,
    tx: mpsc::Sender<Bytes>,
}

/// The assistant message being streamed.
struct Pending {
    id: String,
    created_at: Timestamp,
    text: String,
}

impl TurnDriver {
    /// Send one event; false when the client is gone.
    async fn send(&self, ev: StreamEvent) -> bool {
        self.tx.send(ev.to_sse()).await.is_ok()
    }

    async fn run(self, plan: StreamPlan) {
        let mut connected = true;
        for ev in plan.prelude {
            connected = connected && self.send(ev).await;
        }
        connected = connected
            && self
                .send(StreamEvent::StreamOptions {
                    stream_options: StreamOptions { allow_cancel: true },
                })
                .await;
        for ev in plan.after_options {
            connected = connected && self.send(ev).await;
        }
        if !connected {
            return;
        }
        if let Some(user_item) = plan.user_item {
            self.turn(plan.thread, user_item).await;
        }
    }

    async fn turn(&self, thread: StoredThread, user_item: ThreadItem) {
        let owner = &self.caller.owner;
        let thread_id = thread.meta.id.clone();
        let history_items = match self
            .store
            .recent_items(owner, &thread_id, Some(&user_item), HISTORY_ITEMS)
            .await
        {
            Ok(items) => items,
            Err(e) => {
                tracing::error!(error = %e, thread = %thread_id, "loading history failed");
                self.send(stream_error()).await;
                return;
            }
        };
        let history: Vec<HistoryMessage> = history_items
            .iter()
            .filter_map(|i| match &i.body {
                ItemBody::UserMessage { .. } => Some(HistoryMessage {
                    role: Role::User,
                    text: i.message_text().unwrap_or_default(),
                }),
                ItemBody::AssistantMessage { .. } => Some(HistoryMessage {
                    role: Role::Assistant,
                    text: i.message_text().unwrap_or_default(),
                }),
                _ => None,
            })
            .collect();
        let (text, model) = match &user_item.body {
            ItemBody::UserMessage {
                content,
                inference_options,
                ..
            } => (user_text(content), inference_options.model.clone()),
            _ => (String::new(), None),
        };
        let input = TurnInput {
            thread_id: thread_id.clone(),
            user_id: owner.user_id.clone(),
            mode: Mode::from_model(model.as_deref()),
            lesson_path: self.caller.lesson_path.clone(),
            user_name: self.caller.user_name.clone(),
            selected_text: self.caller.selected_text.clone(),
            user_text: text.clone(),
            history,
            state: thread.tutor_state.clone(),
        };

        // The title is generated alongside the answer, on the first turn only.
        let title_task = if thread.meta.title.is_none() && !thread.title_set_by_user {
            let tutor = self.tutor.clone();
            let input = input.clone();
            Some(tokio::spawn(async move {
                let generated = tokio::time::timeout(TITLE_TIMEOUT, tutor.title(&input))
                    .await
                    .ok()
                    .flatten()
                    .filter(|t| !t.trim().is_empty());
                generated.unwrap_or_else(|| fallback_title(&input.user_text))
            }))
        } else {
            None
        };
        let abort_title = |t: &Option<tokio::task::JoinHandle<String>>| {
            if let Some(t) = t {
                t.abort();
            }
        };

        if self.caller.lesson_path.is_some()
            && !self
                .send(StreamEvent::ProgressUpdate {
                    icon: Some("search".into()),
                    text: "Loading lesson...".into(),
                })
                .await
        {
            abort_title(&title_task);
            return;
        }

        let mut pending: Option<Pending> = None;
        let mut failure: Option<(String, bool)> = None;
        let mut cancelled = false;

        let stream = tokio::select! {
            biased;
            _ = self.tx.closed() => None,
            s = tokio::time::timeout(TUTOR_IDLE_TIMEOUT, self.tutor.respond(input)) => Some(s),
        };
        if let Some(Err(_)) = stream {
            failure = Some((
                "The tutor did not start answering. Please try again.".into(),
                true,
            ));
        }
        if let Some(Ok(mut stream)) = stream {
            loop {
                let next = tokio::select! {
                    biased;
                    _ = self.tx.closed() => { cancelled = true; break; }
                    n = tokio::time::timeout(TUTOR_IDLE_TIMEOUT, stream.next()) => n,
                };
                match next {
                    Err(_) => {
                        failure = Some((
                            "The tutor stopped responding. Please try again.".into(),
                            true,
                        ));
                        break;
                    }
                    Ok(None) => break,
                    Ok(Some(TutorEvent::TextDelta(delta))) => {
                        if delta.is_empty() {
                            continue;
                        }
                        if pending.is_none() {
                            let p = Pending {
                                id: new_id(ids::MESSAGE),
                                created_at: Timestamp::now(),
                                text: String::new(),
                            };
                            let added = StreamEvent::ItemAdded {
                                item: assistant_item(&thread_id, &p, None),
                            };
                            let part = StreamEvent::ItemUpdated {
                                item_id: p.id.clone(),
                                update: ItemUpdate::ContentPartAdded {
                                    content_index: 0,
                                    content: AssistantContent::text(""),
                                },
                            };
                            pending = Some(p);
                            if !(self.send(added).await && self.send(part).await) {
                                cancelled = true;
                            }
                        }
                        if let Some(p) = pending.as_mut() {
                            p.text.push_str(&delta);
                            let ev = StreamEvent::ItemUpdated {
                                item_id: p.id.clone(),
                                update: ItemUpdate::TextDelta {
                                    content_index: 0,
                                    delta,
                                },
                            };
                            if cancelled || !self.send(ev).await {
                                cancelled = true;
                                break;
                            }
                        }
                    }
                    Ok(Some(TutorEvent::State(state))) => {
                        if let Err(e) = self.store.save_tutor_state(owner, &thread_id, &state).await
                        {
                            tracing::error!(error = %e, thread = %thread_id, "saving tutor state failed");
                            failure = Some((
                                "Your progress could not be saved. Please try again.".into(),
                                true,
                            ));
                            break;
                        }
                    }
                    Ok(Some(TutorEvent::Notice { level, message })) => {
                        let ev = StreamEvent::Notice {
                            level,
                            message,
                            title: None,
                        };
                        if !self.send(ev).await {
                            cancelled = true;
                            break;
                        }
                    }
                    Ok(Some(TutorEvent::Error {
                        message,
                        allow_retry,
                    })) => {
                        failure = Some((message, allow_retry));
                        break;
                    }
                }
            }
            // Dropping the stream here cancels the tutor (and its LLM request).
            drop(stream);
        } else if stream.is_none() {
            cancelled = true;
        }

        // Persist the assistant message (partial on cancel or failure) before announcing it.
        if let Some(p) = pending {
            let item = assistant_item(&thread_id, &p, Some(&p.text));
            if let Err(e) = self.store.add_item(owner, &item).await {
                tracing::error!(error = %e, thread = %thread_id, "saving the assistant message failed");
                abort_title(&title_task);
                if !cancelled {
                    self.send(stream_error()).await;
                }
                return;
            }
            if !cancelled {
                let done_part = StreamEvent::ItemUpdated {
                    item_id: p.id.clone(),
                    update: ItemUpdate::ContentPartDone {
                        content_index: 0,
                        content: AssistantContent::text(p.text.clone()),
                    },
                };
                cancelled = !(self.send(done_part).await
                    && self.send(StreamEvent::ItemDone { item }).await);
            }
        }
        if cancelled {
            metrics::counter!("study_turns_total", "outcome" => "cancelled").increment(1);
            tracing::info!(thread = %thread_id, "client disconnected; partial answer saved");
            abort_title(&title_task);
            return;
        }

        if let Some(task) = title_task {
            match task.await {
                Ok(title) => match self.store.set_title(owner, &thread_id, &title, false).await {
                    Ok(t) if t.meta.title.as_deref() == Some(title.as_str()) => {
                        let ev = StreamEvent::ThreadUpdated {
                            thread: Thread::from_metadata(&t.meta, Page::default()),
                        };
                        if !self.send(ev).await {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, thread = %thread_id, "saving the title failed")
                    }
                },
                Err(e) => tracing::warn!(error = %e, "title task failed"),
            }
        }

        let outcome = if failure.is_some() {
            "failed"
        } else {
            "completed"
        };
        metrics::counter!("study_turns_total", "outcome" => outcome).increment(1);
        if let Some((message, allow_retry)) = failure {
            tracing::warn!(thread = %thread_id, error = %message, "tutor turn failed");
            self.send(StreamEvent::Error {
                code: "custom".into(),
                message: Some(message),
                allow_retry,
            })
            .await;
        }
    }
}

fn stream_error() -> StreamEvent {
    StreamEvent::Error {
        code: "stream.error".into(),
        message: None,
        allow_retry: true,
    }
}

fn assistant_item(thread_id: &str, p: &Pending, text: Option<&str>) -> ThreadItem {
    ThreadItem {
        id: p.id.clone(),
        thread_id: thread_id.to_string(),
        created_at: p.created_at,
        body: ItemBody::AssistantMessage {
            content: text
                .map(|t| vec![AssistantContent::text(t)])
                .unwrap_or_default(),
        },
    }
}

/// A title from the first words of the message: 6 words, at most 50 characters; "New Chat" when
/// the message has no words.
pub fn fallback_title(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .filter(|c| !matches!(c, '\u{200B}' | '\u{FEFF}'))
        .collect();
    let words: Vec<&str> = cleaned.split_whitespace().collect();
    if words.is_empty() {
        return "New Chat".into();
    }
    let mut title = words.iter().take(6).copied().collect::<Vec<_>>().join(" ");
    if title.chars().count() > 50 {
        title = title.chars().take(47).collect::<String>() + "...";
    } else if words.len() > 6 {
        title.push_str("...");
    }
    title
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_titles() {
        assert_eq!(fallback_title("\u{200B}"), "New Chat");
        assert_eq!(fallback_title("what is a variable"), "what is a variable");
        assert_eq!(
            fallback_title("one two three four five six seven"),
            "one two three four five six..."
        );
        let long = fallback_title(&"abcdefghij".repeat(10));
        assert_eq!(long.chars().count(), 50);
        assert!(long.ends_with("..."));
    }

    #[test]
    fn dev_identity_acts_as_requested_user() {
        let mut id = Identity {
            subject: "dev".into(),
            scopes: Default::default(),
            name: None,
            email: None,
            organization: Some("org".into()),
            method: AuthMethod::Dev,
            acting_user: Some("alice".into()),
        };
        assert_eq!(owner_of(&id), Owner::new("alice", Some("org")));
        id.method = AuthMethod::Jwt;
        assert_eq!(owner_of(&id).user_id, "dev");
    }

    #[test]
    fn structured_input_is_applied() {
        let item = ThreadItem {
            id: "msg_1".into(),
            thread_id: "thr_1".into(),
            created_at: Timestamp::from_micros(1),
            body: ItemBody::StructuredInput {
                status: "pending".into(),
                inputs: vec![
                    json!({"type":"multiple_choice","id":"q1","question":"?","options":[{"value":"a"},{"value":"b"}]}),
                    json!({"type":"freeform","id":"q2","question":"?"}),
                ],
            },
        };
        let sub = StructuredInputSubmission {
            status: "answered".into(),
            answers: serde_json::from_value(json!({"q1":{"values":["a","b"]}})).unwrap(),
        };
        let out = apply_structured_input(item.clone(), &sub).unwrap();
        let ItemBody::StructuredInput { status, inputs } = &out.body else {
            panic!()
        };
        assert_eq!(status, "answered");
        assert_eq!(inputs[0]["answer"], json!({"values":["a"],"skipped":false}));
        assert_eq!(inputs[1]["answer"], json!({"values":[],"skipped":true}));
        assert!(apply_structured_input(out, &sub).is_err());
    }
}
