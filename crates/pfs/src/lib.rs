//! PanaversityFS: the book store.
//!
//! Typed inputs ([`ids`], [`path`]) are parsed once at the edge; [`schema`] decides which paths a
//! book admits; [`storage`] wraps Apache OpenDAL; [`db`] owns the journal/audit tables and their
//! migrations; [`engine`] implements the content operations with the hash protocol.
//! This crate has no HTTP or MCP in it.

pub mod error;
pub mod ids;
pub mod path;
pub mod manifest;
pub mod schema;

pub use error::{ErrorCode, PfsError, Result};
pub use ids::{BASE_USER, BookId, Namespace, UserId};
pub use path::{Area, BookPath, DirPrefix};
pub use schema::Profile;
