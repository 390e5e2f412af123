//! Study Mode API: the ChatKit protocol server, thread store, lesson sources and the tutor.

pub mod admin;
pub mod chatkit;
pub mod lessons;
pub mod llm;
pub mod provider;
mod redis_conn;
pub mod server;
pub mod store;
pub mod streaming;
pub mod suggestions;
pub mod turn;
pub mod turns;
pub mod tutor;

pub use turn::{HistoryMessage, Mode, Role, TurnInput, Tutor, TutorEvent};
