//! ChatKit requests: `{type, params, metadata}` bodies, decoded with precise error messages.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::types::UserMessageInput;

/// Sort order of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    Asc,
    #[default]
    Desc,
}

/// `limit` / `order` / `after` of `threads.list` and `items.list`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
pub struct ListParams {
    #[serde(default)]
    pub limit: Option<i64>,
    #[serde(default)]
    pub order: Order,
    #[serde(default)]
    pub after: Option<String>,
}

/// A custom widget action.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Action {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub payload: Option<Value>,
}

/// Feedback on assistant items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedbackKind {
    Positive,
    Negative,
}

impl FeedbackKind {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackKind::Positive => "positive",
            FeedbackKind::Negative => "negative",
        }
    }
}

/// Answers for a structured input item (`StructuredInputSubmission`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StructuredInputSubmission {
    #[serde(default = "answered")]
    pub status: String,
    #[serde(default)]
    pub answers: serde_json::Map<String, Value>,
}

fn answered() -> String {
    "answered".into()
}

/// Every ChatKit request this server understands.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatKitRequest {
    ThreadsCreate {
        input: UserMessageInput,
    },
    AddUserMessage {
        thread_id: String,
        input: UserMessageInput,
    },
    AddClientToolOutput {
        thread_id: String,
        result: Value,
    },
    RetryAfterItem {
        thread_id: String,
        item_id: String,
    },
    CustomAction {
        thread_id: String,
        item_id: Option<String>,
        action: Action,
    },
    AddStructuredInput {
        thread_id: String,
        item_id: String,
        input: StructuredInputSubmission,
    },
    GetById {
        thread_id: String,
    },
    ThreadsList(ListParams),
    ThreadsUpdate {
        thread_id: String,
        title: String,
    },
    ThreadsDelete {
        thread_id: String,
    },
    ItemsList {
        thread_id: String,
        page: ListParams,
    },
    ItemsFeedback {
        thread_id: String,
        item_ids: Vec<String>,
        kind: FeedbackKind,
    },
    /// Study Mode extension `threads.resume_stream`: re-attach to the thread's latest turn and
    /// receive its frames from index `after` on (the number of frames already received).
    ResumeStream {
        thread_id: String,
        after: usize,
    },
    /// Study Mode extension `threads.stop_stream`: stop the thread's running turn (what the
    /// ChatKit stop button means; a dropped connection no longer stops a turn).
    StopStream {
        thread_id: String,
    },
    /// A known ChatKit request type this server does not implement (attachments, transcription,
    /// synchronous custom actions).
    Unsupported {
        kind: String,
    },
}

impl ChatKitRequest {
    /// Whether the response is a `text/event-stream`.
    pub fn is_streaming(&self) -> bool {
        matches!(
            self,
            ChatKitRequest::ThreadsCreate { .. }
                | ChatKitRequest::AddUserMessage { .. }
                | ChatKitRequest::AddClientToolOutput { .. }
                | ChatKitRequest::RetryAfterItem { .. }
                | ChatKitRequest::CustomAction { .. }
                | ChatKitRequest::AddStructuredInput { .. }
        )
    }

    /// Whether the request makes the tutor write a message (rate limited).
    pub fn creates_message(kind: &str) -> bool {
        matches!(
            kind,
            "threads.create" | "threads.add_user_message" | "threads.retry_after_item"
        )
    }
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    params: Option<Value>,
}

#[derive(Deserialize)]
struct ResumeP {
    thread_id: String,
    #[serde(default)]
    after: usize,
}
#[derive(Deserialize)]
struct CreateP {
    input: UserMessageInput,
}
#[derive(Deserialize)]
struct AddMsgP {
    thread_id: String,
    input: UserMessageInput,
}
#[derive(Deserialize)]
struct ToolOutP {
    thread_id: String,
    #[serde(default)]
    result: Value,
}
#[derive(Deserialize)]
struct ThreadItemP {
    thread_id: String,
    item_id: String,
}
#[derive(Deserialize)]
struct CustomP {
    thread_id: String,
    #[serde(default)]
    item_id: Option<String>,
    action: Action,
}
#[derive(Deserialize)]
struct StructuredP {
    thread_id: String,
    item_id: String,
    input: StructuredInputSubmission,
}
#[derive(Deserialize)]
struct ThreadP {
    thread_id: String,
}
#[derive(Deserialize)]
struct UpdateP {
    thread_id: String,
    title: String,
}
#[derive(Deserialize)]
struct ItemsListP {
    thread_id: String,
    #[serde(flatten)]
    page: ListParams,
}
#[derive(Deserialize)]
struct FeedbackP {
    thread_id: String,
    item_ids: Vec<String>,
    kind: FeedbackKind,
}

/// Why a body is not a valid request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(pub String);

/// Just the `type` of a request body, for rate limiting before full decoding.
pub fn request_type(body: &[u8]) -> Result<String, RequestError> {
    let env: Envelope = serde_json::from_slice(body)
        .map_err(|e| RequestError(format!("request body is not a ChatKit request: {e}")))?;
    Ok(env.kind)
}

fn params<T: DeserializeOwned>(kind: &str, params: Option<Value>) -> Result<T, RequestError> {
    let v = params.ok_or_else(|| RequestError(format!("{kind}: missing \"params\"")))?;
    serde_json::from_value(v).map_err(|e| RequestError(format!("{kind}: invalid params: {e}")))
}

/// Decode a request body.
pub fn parse_request(body: &[u8]) -> Result<ChatKitRequest, RequestError> {
    let env: Envelope = serde_json::from_slice(body)
        .map_err(|e| RequestError(format!("request body is not a ChatKit request: {e}")))?;
    let kind = env.kind.as_str();
    let p = env.params;
    Ok(match kind {
        "threads.create" => {
            let x: CreateP = params(kind, p)?;
            ChatKitRequest::ThreadsCreate { input: x.input }
        }
        "threads.add_user_message" => {
            let x: AddMsgP = params(kind, p)?;
            ChatKitRequest::AddUserMessage {
                thread_id: x.thread_id,
                input: x.input,
            }
        }
        "threads.add_client_tool_output" => {
            let x: ToolOutP = params(kind, p)?;
            ChatKitRequest::AddClientToolOutput {
                thread_id: x.thread_id,
                result: x.result,
            }
        }
        "threads.retry_after_item" => {
            let x: ThreadItemP = params(kind, p)?;
            ChatKitRequest::RetryAfterItem {
                thread_id: x.thread_id,
                item_id: x.item_id,
            }
        }
        "threads.custom_action" => {
            let x: CustomP = params(kind, p)?;
            ChatKitRequest::CustomAction {
                thread_id: x.thread_id,
                item_id: x.item_id,
                action: x.action,
            }
        }
        "threads.add_structured_input" => {
            let x: StructuredP = params(kind, p)?;
            if x.input.status != "answered" && x.input.status != "skipped" {
                return Err(RequestError(format!(
                    "{kind}: input.status must be \"answered\" or \"skipped\""
                )));
            }
            ChatKitRequest::AddStructuredInput {
                thread_id: x.thread_id,
                item_id: x.item_id,
                input: x.input,
            }
        }
        "threads.get_by_id" => {
            let x: ThreadP = params(kind, p)?;
            ChatKitRequest::GetById {
                thread_id: x.thread_id,
            }
        }
        "threads.list" => {
            ChatKitRequest::ThreadsList(params(kind, p.or(Some(Value::Null)).map(null_to_obj))?)
        }
        "threads.update" => {
            let x: UpdateP = params(kind, p)?;
            ChatKitRequest::ThreadsUpdate {
                thread_id: x.thread_id,
                title: x.title,
            }
        }
        "threads.delete" => {
            let x: ThreadP = params(kind, p)?;
            ChatKitRequest::ThreadsDelete {
                thread_id: x.thread_id,
            }
        }
        "items.list" => {
            let x: ItemsListP = params(kind, p)?;
            ChatKitRequest::ItemsList {
                thread_id: x.thread_id,
                page: x.page,
            }
        }
        "items.feedback" => {
            let x: FeedbackP = params(kind, p)?;
            ChatKitRequest::ItemsFeedback {
                thread_id: x.thread_id,
                item_ids: x.item_ids,
                kind: x.kind,
            }
        }
        "threads.resume_stream" => {
            let x: ResumeP = params(kind, p)?;
            ChatKitRequest::ResumeStream {
                thread_id: x.thread_id,
                after: x.after,
            }
        }
        "threads.stop_stream" => {
            let x: ThreadP = params(kind, p)?;
            ChatKitRequest::StopStream {
                thread_id: x.thread_id,
            }
        }
        "attachments.create"
        | "attachments.delete"
        | "input.transcribe"
        | "threads.sync_custom_action" => ChatKitRequest::Unsupported {
            kind: kind.to_string(),
        },
        other => {
            return Err(RequestError(format!(
                "unknown ChatKit request type {other:?}"
            )));
        }
    })
}

fn null_to_obj(v: Value) -> Value {
    if v.is_null() {
        Value::Object(Default::default())
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_create() {
        let r = parse_request(br#"{"type":"threads.create","params":{"input":{"content":[{"type":"input_text","text":"hi"}],"attachments":[],"inference_options":{"model":"ask"}}},"metadata":{}}"#).unwrap();
        assert!(r.is_streaming());
        match r {
            ChatKitRequest::ThreadsCreate { input } => {
                assert_eq!(input.inference_options.model.as_deref(), Some("ask"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn list_defaults_to_desc() {
        let r = parse_request(br#"{"type":"threads.list","params":{}}"#).unwrap();
        assert_eq!(r, ChatKitRequest::ThreadsList(ListParams::default()));
        let r = parse_request(br#"{"type":"items.list","params":{"thread_id":"t","limit":2,"order":"asc","after":null}}"#).unwrap();
        assert_eq!(
            r,
            ChatKitRequest::ItemsList {
                thread_id: "t".into(),
                page: ListParams {
                    limit: Some(2),
                    order: Order::Asc,
                    after: None
                }
            }
        );
    }

    #[test]
    fn rejects_garbage_with_a_reason() {
        assert!(parse_request(b"not json").is_err());
        let e = parse_request(br#"{"type":"threads.nope","params":{}}"#).unwrap_err();
        assert!(e.0.contains("threads.nope"));
        let e = parse_request(br#"{"type":"threads.create","params":{"input":{}}}"#).unwrap_err();
        assert!(e.0.contains("threads.create"), "{e}");
        assert!(matches!(
            parse_request(br#"{"type":"input.transcribe","params":{}}"#),
            Ok(ChatKitRequest::Unsupported { .. })
        ));
    }
}
