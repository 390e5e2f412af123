//! The streaming side of `POST /chatkit`: preparing a turn (its writes and checks, duplicate
//! detection), starting it, and the Study Mode extensions `threads.resume_stream` and
//! `threads.stop_stream`.
//!
//! Idempotent messages: a `threads.create` / `threads.add_user_message` carrying an
//! `Idempotency-Key` header that this user already sent with the same request type creates
//! nothing; without a key, the same text (same mode, same thread, or a new thread on the same
//! lesson) within the dedupe window counts as a retry while the first one's turn is running or
//! produced a reply (a repeat after a failure is a new attempt). A duplicate is answered with the first
//! request's stream (re-attached from its first frame while the turn is kept in this process),
//! or with the stored outcome of that turn, and never calls the tutor again.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use futures::{Stream, StreamExt};
use serde_json::{Value, json};

use crate::chatkit::ids::{self, new_id};
use crate::chatkit::requests::{ChatKitRequest, StructuredInputSubmission};
use crate::chatkit::types::{ToolCallStatus, user_text};
use crate::chatkit::{
    ItemBody, Page, StreamEvent, StreamOptions, Thread, ThreadItem, ThreadMetadata, ThreadStatus,
    Timestamp, UserMessageInput,
};
use crate::server::{ApiError, HISTORY_ITEMS, StudyState};
use crate::store::{Inserted, ItemKeys, Owner};
use crate::turns::{StreamPlan, TurnContext, spawn_turn};

/// Longest accepted `Idempotency-Key`.
pub const MAX_REQUEST_KEY: usize = 200;

/// A prepared streaming request.
pub(crate) enum Prepared {
    /// A new turn (or a stream without one) to run.
    Plan(Box<StreamPlan>),
    /// The request repeats an earlier one whose user message is `first`.
    Duplicate { first: ThreadItem, created: bool },
}

/// Check an `Idempotency-Key` header value: 1–200 visible ASCII characters.
pub fn parse_request_key(v: Option<&HeaderValue>) -> Result<Option<String>, ApiError> {
    let Some(v) = v else { return Ok(None) };
    let s = v.to_str().unwrap_or_default().trim();
    if s.is_empty() || s.len() > MAX_REQUEST_KEY || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_request(format!(
            "Idempotency-Key must be 1 to {MAX_REQUEST_KEY} visible ASCII characters"
        )));
    }
    Ok(Some(s.to_string()))
}

fn item_keys(request_key: Option<String>, scope: &str, input: &UserMessageInput) -> ItemKeys {
    let mode = input.inference_options.model.as_deref().unwrap_or_default();
    ItemKeys {
        content_key: Some(ItemKeys::content_key(
            scope,
            mode,
            &user_text(&input.content),
        )),
        request_key,
    }
}

/// Without a request key: the same message stored within the dedupe window whose turn is still
/// running or produced a reply, if any.
async fn recent_duplicate(
    st: &StudyState,
    owner: &Owner,
    keys: &ItemKeys,
) -> Result<Option<ThreadItem>, ApiError> {
    if keys.request_key.is_some() || st.dedupe_window.is_zero() {
        return Ok(None);
    }
    let Some(ck) = &keys.content_key else {
        return Ok(None);
    };
    let window = i64::try_from(st.dedupe_window.as_micros()).unwrap_or(i64::MAX);
    let since = Timestamp::from_micros(Timestamp::now().micros().saturating_sub(window));
    let Some(first) = st.store.find_recent_by_content(owner, ck, since).await? else {
        return Ok(None);
    };
    // A repeat after a failed or dead turn is a new attempt, not a duplicate.
    let worked = match st.turns.get(&owner.user_id, &first.thread_id) {
        Some(log) if log.origin.as_deref() == Some(first.id.as_str()) => !log.failed(),
        _ => st.store.has_live_reply_after(owner, &first).await?,
    };
    if !worked {
        return Ok(None);
    }
    metrics::counter!("study_duplicate_messages_total", "by" => "content").increment(1);
    Ok(Some(first))
}

fn sse_response(body: Body, turn_id: Option<&str>) -> Response {
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
    if let Some(id) = turn_id.and_then(|t| HeaderValue::from_str(t).ok()) {
        h.insert(HeaderName::from_static("x-study-turn-id"), id);
    }
    resp
}

fn stream_body(s: impl Stream<Item = Bytes> + Send + 'static) -> Body {
    Body::from_stream(s.map(Ok::<Bytes, std::convert::Infallible>))
}

/// Prepare and start a streaming request; its response follows the new turn.
pub(crate) async fn start(
    st: &Arc<StudyState>,
    ctx: TurnContext,
    request_key: Option<&str>,
    req: ChatKitRequest,
) -> Result<Response, ApiError> {
    match prepare_stream(st, &ctx, request_key, req).await? {
        Prepared::Plan(plan) => {
            let origin = plan.user_item.as_ref().map(|i| i.id.clone());
            let (log, sub) = spawn_turn(
                &st.turns,
                st.bus.as_ref(),
                st.store.clone(),
                st.tutor.clone(),
                ctx,
                st.streams,
                *plan,
                origin,
            );
            Ok(sse_response(stream_body(sub), Some(&log.turn_id)))
        }
        Prepared::Duplicate { first, created } => duplicate(st, &ctx.owner, first, created).await,
    }
}

/// Answer a duplicate: the first request's turn from its first frame when this process still
/// keeps it, else what that turn stored.
async fn duplicate(
    st: &StudyState,
    owner: &Owner,
    first: ThreadItem,
    created: bool,
) -> Result<Response, ApiError> {
    metrics::counter!("study_duplicate_requests_total").increment(1);
    tracing::info!(thread = %first.thread_id, item = %first.id, "duplicate message; no new turn");
    // A racing copy may get here before the first request registered its turn: wait briefly.
    let fresh = Timestamp::now().micros() - first.created_at.micros() < 5_000_000;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        if let Some(log) = st.turns.get(&owner.user_id, &first.thread_id)
            && log.origin.as_deref() == Some(first.id.as_str())
        {
            return Ok(sse_response(
                stream_body(log.subscribe(0)),
                Some(&log.turn_id),
            ));
        }
        if !fresh || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let thread = st.store.load_thread(owner, &first.thread_id).await?;
    let mut frames: Vec<StreamEvent> = Vec::new();
    if created {
        frames.push(StreamEvent::ThreadCreated {
            thread: Thread::from_metadata(&thread.meta, Page::default()),
        });
    }
    let after = st.store.items_after(owner, &first).await?;
    frames.push(StreamEvent::ItemDone { item: first });
    frames.push(StreamEvent::StreamOptions {
        stream_options: StreamOptions { allow_cancel: true },
    });
    frames.extend(after.into_iter().map(|item| StreamEvent::ItemDone { item }));
    if created && thread.meta.title.is_some() {
        frames.push(StreamEvent::ThreadUpdated {
            thread: Thread::from_metadata(&thread.meta, Page::default()),
        });
    }
    let bytes: Vec<u8> = frames.iter().flat_map(|f| f.to_sse().to_vec()).collect();
    Ok(sse_response(Body::from(bytes), None))
}

/// `threads.resume_stream`: the thread's latest turn from frame `after` on (from this replica's
/// turn log, else from the Redis mirror when configured).
pub(crate) async fn resume(
    st: &StudyState,
    owner: &Owner,
    thread_id: &str,
    after: usize,
) -> Result<Response, ApiError> {
    st.store.load_thread(owner, thread_id).await?;
    if let Some(log) = st.turns.get(&owner.user_id, thread_id) {
        metrics::counter!("study_stream_resumes_total", "from" => "local").increment(1);
        return Ok(sse_response(
            stream_body(log.subscribe(after)),
            Some(&log.turn_id),
        ));
    }
    if let Some(bus) = &st.bus
        && let Some(turn) = remote_turn(bus, owner, thread_id).await?
    {
        metrics::counter!("study_stream_resumes_total", "from" => "redis").increment(1);
        return Ok(sse_response(
            stream_body(bus.subscribe(&turn, after)),
            Some(&turn),
        ));
    }
    Err(no_stream(thread_id))
}

async fn remote_turn(
    bus: &crate::turns::RedisBus,
    owner: &Owner,
    thread_id: &str,
) -> Result<Option<String>, ApiError> {
    bus.latest(&owner.user_id, thread_id).await.map_err(|e| {
        tracing::warn!(error = %e, "looking up a turn in Redis failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "STREAM_BUS_UNAVAILABLE",
            "the shared stream store is unreachable; retry shortly",
        )
    })
}

fn no_stream(thread_id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NO_STREAM",
        format!(
            "thread {thread_id} has no running or recently finished turn; load it with threads.get_by_id"
        ),
    )
}

/// `threads.stop_stream`: stop the thread's running turn (its partial reply is kept), on this
/// replica or, through Redis, on the one running it.
pub(crate) async fn stop(
    st: &StudyState,
    owner: &Owner,
    thread_id: &str,
) -> Result<Value, ApiError> {
    st.store.load_thread(owner, thread_id).await?;
    let stopped = match st.turns.get(&owner.user_id, thread_id) {
        Some(log) if !log.is_done() => {
            log.request_stop();
            true
        }
        Some(_) => false,
        None => match &st.bus {
            Some(bus) => match remote_turn(bus, owner, thread_id).await? {
                Some(turn) => {
                    bus.request_stop(&turn).await.map_err(|e| {
                        tracing::warn!(error = %e, "requesting a stop through Redis failed");
                        ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "STREAM_BUS_UNAVAILABLE",
                            "the shared stream store is unreachable; retry shortly",
                        )
                    })?;
                    true
                }
                None => false,
            },
            None => false,
        },
    };
    Ok(json!({ "stopped": stopped }))
}

/// The default window in which an identical message counts as a retry.
pub const DEFAULT_DEDUPE_WINDOW: Duration = Duration::from_secs(10);

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

pub(crate) async fn prepare_stream(
    st: &StudyState,
    ctx: &TurnContext,
    request_key: Option<&str>,
    req: ChatKitRequest,
) -> Result<Prepared, ApiError> {
    let store = &st.store;
    let owner = &ctx.owner;
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
            let scope = format!("new:{}", ctx.lesson_path.as_deref().unwrap_or_default());
            let keys = item_keys(request_key.map(|k| format!("create:{k}")), &scope, &input);
            if let Some(first) = recent_duplicate(st, owner, &keys).await? {
                return Ok(Prepared::Duplicate {
                    first,
                    created: true,
                });
            }
            let item = user_item(&meta.id, input);
            if let Inserted::Duplicate(first) = store
                .create_thread_with_user_item(owner, &meta, &item, &keys)
                .await?
            {
                return Ok(Prepared::Duplicate {
                    first,
                    created: true,
                });
            }
            let thread = store.load_thread(owner, &meta.id).await?;
            Ok(Prepared::Plan(Box::new(StreamPlan {
                prelude: vec![
                    StreamEvent::ThreadCreated {
                        thread: Thread::from_metadata(&thread.meta, Page::default()),
                    },
                    StreamEvent::ItemDone { item: item.clone() },
                ],
                thread,
                after_options: Vec::new(),
                user_item: Some(item),
            })))
        }
        ChatKitRequest::AddUserMessage { thread_id, input } => {
            validate_input(&input)?;
            let thread = store.load_thread(owner, &thread_id).await?;
            let keys = item_keys(request_key.map(|k| format!("add:{k}")), &thread_id, &input);
            if let Some(first) = recent_duplicate(st, owner, &keys).await? {
                return Ok(Prepared::Duplicate {
                    first,
                    created: false,
                });
            }
            let item = user_item(&thread_id, input);
            if let Inserted::Duplicate(first) = store.add_user_item(owner, &item, &keys).await? {
                return Ok(Prepared::Duplicate {
                    first,
                    created: false,
                });
            }
            Ok(Prepared::Plan(Box::new(StreamPlan {
                thread,
                prelude: vec![StreamEvent::ItemDone { item: item.clone() }],
                after_options: Vec::new(),
                user_item: Some(item),
            })))
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
            Ok(Prepared::Plan(Box::new(StreamPlan {
                thread,
                prelude: Vec::new(),
                after_options: Vec::new(),
                user_item: Some(item),
            })))
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
            Ok(Prepared::Plan(Box::new(StreamPlan {
                thread,
                prelude: Vec::new(),
                after_options: Vec::new(),
                user_item: None,
            })))
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
            Ok(Prepared::Plan(Box::new(StreamPlan {
                thread,
                prelude: Vec::new(),
                after_options: vec![StreamEvent::ItemReplaced { item: updated }],
                user_item: None,
            })))
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
            Ok(Prepared::Plan(Box::new(StreamPlan {
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
            })))
        }
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            format!("request {other:?} is not a streaming request"),
        )),
    }
}
/// Apply a structured-input submission to a pending `structured_input` item (SDK 1.6.5 semantics).
pub(crate) fn apply_structured_input(
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
#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn request_keys() {
        assert_eq!(parse_request_key(None).unwrap(), None);
        let ok = HeaderValue::from_static("retry-1");
        assert_eq!(
            parse_request_key(Some(&ok)).unwrap().as_deref(),
            Some("retry-1")
        );
        for bad in ["", "has space", &"x".repeat(201)] {
            let v = HeaderValue::from_str(bad).unwrap();
            assert!(parse_request_key(Some(&v)).is_err(), "{bad:?}");
        }
    }
}
