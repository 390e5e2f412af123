//! ChatKit wire types: threads, items, pages and stream events, as `openai-chatkit` 1.6 serializes
//! them (`exclude_none`: absent optional fields are omitted, empty lists and maps are kept).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::time::Timestamp;

/// A page of records (`Page[T]`): `after` is the id of the last element, present only with `has_more`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub has_more: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

impl<T> Default for Page<T> {
    fn default() -> Self {
        Page {
            data: Vec::new(),
            has_more: false,
            after: None,
        }
    }
}

/// Lifecycle state of a thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ThreadStatus {
    #[default]
    Active,
    Locked {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    Closed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// A thread without its items (`ThreadMetadata`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub id: String,
    pub created_at: Timestamp,
    #[serde(default)]
    pub status: ThreadStatus,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// A thread with a page of its items (`Thread`), as sent on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thread {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub id: String,
    pub created_at: Timestamp,
    pub status: ThreadStatus,
    pub metadata: Map<String, Value>,
    pub items: Page<ThreadItem>,
}

impl Thread {
    /// The wire form of a thread: `metadata` is always `{}` (the SDK's `_to_thread_response`).
    pub fn from_metadata(meta: &ThreadMetadata, items: Page<ThreadItem>) -> Thread {
        Thread {
            title: meta.title.clone(),
            id: meta.id.clone(),
            created_at: meta.created_at,
            status: meta.status.clone(),
            metadata: Map::new(),
            items,
        }
    }
}

/// `{id}` of a tool the user picked in the composer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolChoice {
    pub id: String,
}

/// Composer options sent with a user message; Study Mode reads `model` as the mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct InferenceOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// One part of a user message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum UserMessageContent {
    InputText {
        text: String,
    },
    InputTag {
        id: String,
        text: String,
        #[serde(default)]
        data: Map<String, Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<String>,
        #[serde(default)]
        interactive: bool,
    },
}

/// The `input` of `threads.create` / `threads.add_user_message` (`UserMessageInput`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserMessageInput {
    pub content: Vec<UserMessageContent>,
    pub attachments: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quoted_text: Option<String>,
    pub inference_options: InferenceOptions,
}

/// Assistant message text with its annotations (`AssistantMessageContent`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssistantContent {
    #[serde(default)]
    pub annotations: Vec<Value>,
    pub text: String,
    #[serde(rename = "type")]
    pub kind: OutputText,
}

impl AssistantContent {
    /// An `output_text` part without annotations.
    pub fn text(text: impl Into<String>) -> AssistantContent {
        AssistantContent {
            annotations: Vec::new(),
            text: text.into(),
            kind: OutputText::OutputText,
        }
    }
}

/// The only assistant content type: `"output_text"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputText {
    OutputText,
}

/// Status of a client tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolCallStatus {
    Pending,
    Completed,
}

/// A thread item (`ThreadItem`): common fields plus the type-specific body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadItem {
    pub id: String,
    pub thread_id: String,
    pub created_at: Timestamp,
    #[serde(flatten)]
    pub body: ItemBody,
}

/// The type-specific part of a [`ThreadItem`], tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ItemBody {
    UserMessage {
        content: Vec<UserMessageContent>,
        #[serde(default)]
        attachments: Vec<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        quoted_text: Option<String>,
        inference_options: InferenceOptions,
    },
    AssistantMessage {
        content: Vec<AssistantContent>,
    },
    ClientToolCall {
        status: ToolCallStatus,
        call_id: String,
        name: String,
        arguments: Map<String, Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<Value>,
    },
    Widget {
        widget: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        copy_text: Option<String>,
    },
    GeneratedImage {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        image: Option<Value>,
    },
    StructuredInput {
        status: String,
        inputs: Vec<Value>,
    },
    Workflow {
        workflow: Value,
    },
    Task {
        task: Value,
    },
    HiddenContextItem {
        content: Value,
    },
    SdkHiddenContext {
        content: String,
    },
    EndOfTurn,
}

impl ItemBody {
    /// The wire `type` of this body.
    pub fn type_name(&self) -> &'static str {
        match self {
            ItemBody::UserMessage { .. } => "user_message",
            ItemBody::AssistantMessage { .. } => "assistant_message",
            ItemBody::ClientToolCall { .. } => "client_tool_call",
            ItemBody::Widget { .. } => "widget",
            ItemBody::GeneratedImage { .. } => "generated_image",
            ItemBody::StructuredInput { .. } => "structured_input",
            ItemBody::Workflow { .. } => "workflow",
            ItemBody::Task { .. } => "task",
            ItemBody::HiddenContextItem { .. } => "hidden_context_item",
            ItemBody::SdkHiddenContext { .. } => "sdk_hidden_context",
            ItemBody::EndOfTurn => "end_of_turn",
        }
    }

    /// Hidden items are stored but never sent to the client.
    pub fn is_hidden(&self) -> bool {
        matches!(
            self,
            ItemBody::HiddenContextItem { .. } | ItemBody::SdkHiddenContext { .. }
        )
    }
}

impl ThreadItem {
    /// The text of a user message (its `input_text` parts joined; tags as `@text`), or of an
    /// assistant message (its parts joined). `None` for other item types.
    pub fn message_text(&self) -> Option<String> {
        match &self.body {
            ItemBody::UserMessage { content, .. } => Some(user_text(content)),
            ItemBody::AssistantMessage { content } => Some(
                content
                    .iter()
                    .map(|c| c.text.as_str())
                    .collect::<Vec<_>>()
                    .join(""),
            ),
            _ => None,
        }
    }
}

/// Join the `input_text` parts of a user message; tags become `@text`.
pub fn user_text(content: &[UserMessageContent]) -> String {
    let mut out = String::new();
    for part in content {
        match part {
            UserMessageContent::InputText { text } => out.push_str(text),
            UserMessageContent::InputTag { text, .. } => {
                out.push('@');
                out.push_str(text);
            }
        }
    }
    out
}

/// A change to an item already announced with `thread.item.added`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ItemUpdate {
    #[serde(rename = "assistant_message.content_part.added")]
    ContentPartAdded {
        content_index: usize,
        content: AssistantContent,
    },
    #[serde(rename = "assistant_message.content_part.text_delta")]
    TextDelta { content_index: usize, delta: String },
    #[serde(rename = "assistant_message.content_part.done")]
    ContentPartDone {
        content_index: usize,
        content: AssistantContent,
    },
}

/// `stream_options.allow_cancel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamOptions {
    pub allow_cancel: bool,
}

/// Severity of a notice.
pub use crate::turn::NoticeLevel;

/// One server-sent event (`ThreadStreamEvent`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum StreamEvent {
    #[serde(rename = "thread.created")]
    ThreadCreated { thread: Thread },
    #[serde(rename = "thread.updated")]
    ThreadUpdated { thread: Thread },
    #[serde(rename = "thread.item.added")]
    ItemAdded { item: ThreadItem },
    #[serde(rename = "thread.item.updated")]
    ItemUpdated { item_id: String, update: ItemUpdate },
    #[serde(rename = "thread.item.done")]
    ItemDone { item: ThreadItem },
    #[serde(rename = "thread.item.removed")]
    ItemRemoved { item_id: String },
    #[serde(rename = "thread.item.replaced")]
    ItemReplaced { item: ThreadItem },
    #[serde(rename = "stream_options")]
    StreamOptions { stream_options: StreamOptions },
    #[serde(rename = "progress_update")]
    ProgressUpdate {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        icon: Option<String>,
        text: String,
    },
    #[serde(rename = "notice")]
    Notice {
        level: NoticeLevel,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
    },
    #[serde(rename = "error")]
    Error {
        /// `stream.error` or `custom`.
        code: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        allow_retry: bool,
    },
}

impl StreamEvent {
    /// The SSE frame: `data: {json}\n\n`.
    pub fn to_sse(&self) -> bytes::Bytes {
        // Serializing these plain data types cannot fail (no maps with non-string keys).
        let json = serde_json::to_string(self).unwrap_or_else(|e| {
            format!(
                "{{\"type\":\"error\",\"code\":\"stream.error\",\"message\":{},\"allow_retry\":true}}",
                serde_json::Value::String(format!("serialization failed: {e}"))
            )
        });
        let mut out = String::with_capacity(json.len() + 8);
        out.push_str("data: ");
        out.push_str(&json);
        out.push_str("\n\n");
        bytes::Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn user_message_round_trips_and_omits_nulls() {
        let raw = json!({"id":"msg_1","thread_id":"thr_1","created_at":"2026-01-01T00:00:00.000001Z",
            "type":"user_message","content":[{"type":"input_text","text":"hi"}],"attachments":[],
            "inference_options":{"model":"teach"}});
        let item: ThreadItem = serde_json::from_value(raw.clone()).unwrap();
        assert_eq!(serde_json::to_value(&item).unwrap(), raw);
    }

    #[test]
    fn thread_without_title_omits_it() {
        let meta = ThreadMetadata {
            title: None,
            id: "thr_1".into(),
            created_at: Timestamp::from_micros(0),
            status: ThreadStatus::Active,
            metadata: Map::new(),
        };
        let s = serde_json::to_string(&StreamEvent::ThreadCreated {
            thread: Thread::from_metadata(&meta, Page::default()),
        })
        .unwrap();
        assert_eq!(
            s,
            r#"{"type":"thread.created","thread":{"id":"thr_1","created_at":"1970-01-01T00:00:00.000000Z","status":{"type":"active"},"metadata":{},"items":{"data":[],"has_more":false}}}"#
        );
    }

    #[test]
    fn content_part_shapes_match_the_sdk() {
        let e = StreamEvent::ItemUpdated {
            item_id: "msg_3".into(),
            update: ItemUpdate::ContentPartAdded {
                content_index: 0,
                content: AssistantContent::text(""),
            },
        };
        assert_eq!(
            String::from_utf8(e.to_sse().to_vec()).unwrap(),
            "data: {\"type\":\"thread.item.updated\",\"item_id\":\"msg_3\",\"update\":{\"type\":\"assistant_message.content_part.added\",\"content_index\":0,\"content\":{\"annotations\":[],\"text\":\"\",\"type\":\"output_text\"}}}\n\n"
        );
    }

    #[test]
    fn error_event_shape() {
        let e = StreamEvent::Error {
            code: "custom".into(),
            message: Some("Daily limit reached".into()),
            allow_retry: false,
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"error","code":"custom","message":"Daily limit reached","allow_retry":false}"#
        );
    }
}
