//! The contract between the ChatKit protocol layer and the tutor.
//!
//! The protocol layer (threads, items, SSE) knows nothing about lessons or LLMs: for each user
//! message it builds a [`TurnInput`] and consumes the [`TutorEvent`] stream the [`Tutor`] returns,
//! turning text deltas into ChatKit assistant-message events and persisting the result.

use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

/// Which tutor answers: Socratic teaching or direct answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Teach,
    Ask,
}

impl Mode {
    /// ChatKit sends the mode as `inference_options.model` (`teach` / `ask`); anything else is teach.
    pub fn from_model(model: Option<&str>) -> Mode {
        match model {
            Some("ask") => Mode::Ask,
            _ => Mode::Teach,
        }
    }
}

/// Who said a history message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

/// One earlier message of the thread, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryMessage {
    pub role: Role,
    pub text: String,
}

/// Everything the tutor needs for one turn.
#[derive(Debug, Clone)]
pub struct TurnInput {
    pub thread_id: String,
    pub user_id: String,
    pub mode: Mode,
    /// Docusaurus lesson path from `?lesson_path=` (e.g. `01-Part/02-Chapter/03-lesson`).
    pub lesson_path: Option<String>,
    pub user_name: Option<String>,
    /// Text the student selected on the page (`?selected_text=`), used by Ask mode.
    pub selected_text: Option<String>,
    /// The new user message (joined input_text parts).
    pub user_text: String,
    /// Earlier messages of this thread, oldest first, not including `user_text`.
    pub history: Vec<HistoryMessage>,
    /// The tutor's persisted per-thread state from the previous turn (`Value::Null` at first).
    /// Opaque to the protocol layer; it stores whatever `TutorEvent::State` last carried.
    pub state: serde_json::Value,
}

/// What the tutor streams back.
#[derive(Debug, Clone, PartialEq)]
pub enum TutorEvent {
    /// Append this text to the assistant message (every character is kept, whitespace included).
    TextDelta(String),
    /// Replace the thread's persisted tutor state (saved before the turn's final events are sent).
    State(serde_json::Value),
    /// A notice to show the student (e.g. "no LLM configured") without failing the turn.
    Notice { level: NoticeLevel, message: String },
    /// The turn failed; the protocol layer sends a ChatKit `error` event.
    Error { message: String, allow_retry: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoticeLevel {
    Info,
    Warning,
    Danger,
}

/// A tutor: produces the assistant's answer for one turn as a stream of events.
#[async_trait::async_trait]
pub trait Tutor: Send + Sync + 'static {
    /// Answer one user message. The stream ends when the answer is complete. Dropping the stream
    /// cancels the turn (client disconnect); the protocol layer keeps the text received so far.
    async fn respond(&self, input: TurnInput) -> BoxStream<'static, TutorEvent>;

    /// A short thread title for the first user message (`None`: the protocol layer keeps its own).
    async fn title(&self, input: &TurnInput) -> Option<String>;
}
