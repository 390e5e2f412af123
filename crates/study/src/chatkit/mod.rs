//! The ChatKit wire protocol: request decoding, thread/item shapes, stream events and ids.

pub mod ids;
pub mod requests;
pub mod time;
pub mod types;

pub use requests::{ChatKitRequest, ListParams, Order, RequestError, parse_request};
pub use time::Timestamp;
pub use types::{
    AssistantContent, InferenceOptions, ItemBody, ItemUpdate, Page, StreamEvent, StreamOptions,
    Thread, ThreadItem, ThreadMetadata, ThreadStatus, UserMessageContent, UserMessageInput,
};
