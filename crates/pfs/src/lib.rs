//! PanaversityFS: the book store.
//!
//! Typed inputs ([`ids`], [`path`]) are parsed once at the edge; [`schema`] decides which paths a
//! book admits; [`storage`] wraps Apache OpenDAL; [`db`] owns the journal/audit tables and their
//! migrations; [`engine`] implements the content operations with the hash protocol.
//! This crate has no HTTP or MCP in it.

#[macro_use]
mod sql;

pub mod archive;
pub mod audit;
pub mod blob_cache;
mod confirm;
pub mod db;
pub mod edit;
pub mod engine;
pub mod error;
pub mod fsck;
pub mod ids;
pub mod manifest;
pub mod path;
pub mod schema;
pub mod search;
pub mod storage;
pub mod validate;

pub use engine::{
    Actor, AssetOutcome, AssetStatus, BookInfo, DeleteOutcome, EditOutcome, Engine, EngineConfig,
    ImportOptions, JournalEntry, Limits, ListView, MoveOutcome, ReadOutput, Source, VersionEntry,
    WriteMode, WriteOutcome,
};
pub use error::{ErrorCode, PfsError, Result};
pub use ids::{BASE_USER, BookId, Namespace, RequestKey, UserId};
pub use path::{Area, BookPath, DirPrefix};
pub use schema::Profile;
pub use storage::{Storage, StorageConfig};
