//! `POST /chatkit`: the ChatKit protocol endpoint and the turn driver.
//!
//! Request flow: identity (401) → body within the size limit (413) → request type (400) → rate
//! limit for message-creating types (429) → full decoding (400) → ownership checks (404) → either
//! a JSON answer or an SSE stream. Everything that can fail with a status code happens before the
//! stream opens; once it is open, failures become ChatKit `error` events.
//!
//! A streaming request starts a turn (`crate::turns`) that outlives the request: it owns every
//! store write, checkpoints the reply while it streams and appends frames to a log the response
//! reads. A client that goes away can re-attach (`threads.resume_stream`); `threads.stop_stream`
//! stops the turn. Each write is committed before the event that announces it is logged.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use platform::identity::{AuthMethod, Identity};
use platform::ratelimit::RateLimiter;
use serde::Deserialize;
use serde_json::json;

use crate::chatkit::requests::{ChatKitRequest, ListParams, Order, parse_request, request_type};
use crate::chatkit::{Page, Thread};
use crate::store::{Owner, StoreError, ThreadStore};
use crate::streaming;
use crate::turn::Tutor;
use crate::turns::{StreamSettings, TurnContext, TurnHub};

/// How many earlier items the tutor sees as history.
pub const HISTORY_ITEMS: i64 = 30;
/// A turn fails with a retryable `error` event when the tutor sends nothing for this long.
pub const TUTOR_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a generated title may take before the turn gives up on it.
pub const TITLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Everything `/chatkit` needs. Built by the binary; cheap to share.
pub struct StudyState {
    pub store: ThreadStore,
    pub tutor: Arc<dyn Tutor>,
    pub limiter: Arc<dyn RateLimiter>,
    /// Largest accepted request body, in bytes (413 above it).
    pub max_body_bytes: usize,
    /// Running and recently finished turns of this process.
    pub turns: Arc<TurnHub>,
    /// Checkpointing and detach limits of turns.
    pub streams: StreamSettings,
    /// An identical message within this window is a retry (zero: only `Idempotency-Key`).
    pub dedupe_window: Duration,
    /// The student name in dev mode when neither `X-User-Name` nor `?user_name=` gives one.
    pub dev_user_name: Option<String>,
    /// Cross-replica resumable streams (Redis); `None`: turns are resumable on their replica.
    pub bus: Option<Arc<crate::turns::RedisBus>>,
}

impl StudyState {
    /// A state with the default stream settings and dedupe window.
    pub fn new(
        store: ThreadStore,
        tutor: Arc<dyn Tutor>,
        limiter: Arc<dyn RateLimiter>,
        max_body_bytes: usize,
    ) -> StudyState {
        StudyState::with_streams(
            store,
            tutor,
            limiter,
            max_body_bytes,
            StreamSettings::default(),
        )
    }

    /// A state with these stream settings.
    pub fn with_streams(
        store: ThreadStore,
        tutor: Arc<dyn Tutor>,
        limiter: Arc<dyn RateLimiter>,
        max_body_bytes: usize,
        streams: StreamSettings,
    ) -> StudyState {
        StudyState {
            store,
            tutor,
            limiter,
            max_body_bytes,
            turns: Arc::new(TurnHub::new(streams.retain)),
            streams,
            dedupe_window: streaming::DEFAULT_DEDUPE_WINDOW,
            dev_user_name: None,
            bus: None,
        }
    }
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
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
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

type Caller = TurnContext;

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
    let request_key = match streaming::parse_request_key(req.headers().get("idempotency-key")) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let owner = owner_of(&identity);
    let caller = Caller {
        owner,
        user_name: non_empty(identity.name.clone())
            .or(non_empty(query.user_name))
            .or_else(|| {
                (identity.method == AuthMethod::Dev)
                    .then(|| st.dev_user_name.clone())
                    .flatten()
            }),
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
    let mut resp = match handle(&st, caller, request_key.as_deref(), request).await {
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
    request_key: Option<&str>,
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
        ChatKitRequest::ResumeStream { thread_id, after } => {
            streaming::resume(st, owner, &thread_id, after).await
        }
        ChatKitRequest::StopStream { thread_id } => Ok(json_response(
            &streaming::stop(st, owner, &thread_id).await?,
        )),
        streaming => streaming::start(st, caller.clone(), request_key, streaming).await,
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
}
