//! The one error type of the book store. Every variant maps to a stable error code that the
//! transports (MCP, HTTP, CLI) expose unchanged; messages say what to do next and never contain
//! host paths or secrets.

use serde_json::{Map, Value, json};

/// Stable error codes (the MCP contract, spec "Errors").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidPath,
    SchemaViolation,
    NotFound,
    Conflict,
    HashRequired,
    AlreadyExists,
    EditNoMatch,
    EditAmbiguous,
    RequestIdReused,
    InvalidInput,
    PayloadTooLarge,
    Unauthorized,
    Forbidden,
    StorageUnavailable,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidPath => "INVALID_PATH",
            ErrorCode::SchemaViolation => "SCHEMA_VIOLATION",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::HashRequired => "HASH_REQUIRED",
            ErrorCode::AlreadyExists => "ALREADY_EXISTS",
            ErrorCode::EditNoMatch => "EDIT_NO_MATCH",
            ErrorCode::EditAmbiguous => "EDIT_AMBIGUOUS",
            ErrorCode::RequestIdReused => "REQUEST_ID_REUSED",
            ErrorCode::InvalidInput => "INVALID_INPUT",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::StorageUnavailable => "STORAGE_UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors of the book store.
#[derive(Debug, thiserror::Error)]
pub enum PfsError {
    /// The path fails a security rule (traversal, absolute, bad characters, …).
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },
    /// The path is safe but does not fit the book's schema profile.
    #[error("path {path:?} does not fit the {profile} schema: {reason}")]
    SchemaViolation {
        path: String,
        profile: String,
        reason: String,
        suggestion: Option<String>,
    },
    #[error("{what} not found")]
    NotFound { what: String },
    /// `expected_hash` does not match the current hash.
    #[error(
        "conflict on {path}: expected hash {expected} but the current hash is {current}; read the file again, merge, and retry with the current hash"
    )]
    Conflict {
        path: String,
        expected: String,
        current: String,
        /// A unified diff from the expected version to the current one, when the expected hash
        /// is a version of this file (see [`PfsError::with_conflict_diff`]).
        diff: Option<String>,
    },
    /// The file exists, so an update must carry `expected_hash`.
    #[error("{path} already exists (hash {current}); read it and send expected_hash to update it")]
    HashRequired { path: String, current: String },
    /// The target of a create or move exists already.
    #[error("{path} already exists (hash {current}); choose another path, or delete it first")]
    AlreadyExists { path: String, current: String },
    /// An edit's `old_text` is not in the file.
    #[error(
        "edit {edit} of {path}: old_text was not found{hint}; re-read the file and copy old_text exactly (whitespace included)"
    )]
    EditNoMatch {
        path: String,
        /// 0-based index of the edit in `edits`.
        edit: usize,
        /// Where a near match is (e.g. "; a match ignoring whitespace starts at line 12"), or empty.
        hint: String,
    },
    /// An edit's `old_text` matches more than once and `replace_all` is not set.
    #[error(
        "edit {edit} of {path}: old_text matches {count} times (lines {lines:?}); add surrounding text to make it unique, or set replace_all"
    )]
    EditAmbiguous {
        path: String,
        edit: usize,
        count: usize,
        /// 1-based line numbers where the matches start (the first few).
        lines: Vec<usize>,
    },
    /// A client request id already names a different call (another tool or other arguments).
    #[error(
        "request_id {request_id:?} was already used for a different call; a new call needs a new request_id (a retry must repeat the call exactly)"
    )]
    RequestIdReused { request_id: String },
    #[error("{0}")]
    InvalidInput(String),
    #[error("payload too large: {what} is {size} bytes, the limit is {limit} bytes")]
    PayloadTooLarge { what: String, size: u64, limit: u64 },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// Object storage failed (after retries) or timed out.
    #[error("storage unavailable: {0}")]
    Storage(String),
    /// Database failure or an internal invariant broke. The message is for logs; the edge shows a
    /// generic text.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = PfsError> = std::result::Result<T, E>;

impl PfsError {
    pub fn code(&self) -> ErrorCode {
        match self {
            PfsError::InvalidPath { .. } => ErrorCode::InvalidPath,
            PfsError::SchemaViolation { .. } => ErrorCode::SchemaViolation,
            PfsError::NotFound { .. } => ErrorCode::NotFound,
            PfsError::Conflict { .. } => ErrorCode::Conflict,
            PfsError::HashRequired { .. } => ErrorCode::HashRequired,
            PfsError::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            PfsError::EditNoMatch { .. } => ErrorCode::EditNoMatch,
            PfsError::EditAmbiguous { .. } => ErrorCode::EditAmbiguous,
            PfsError::RequestIdReused { .. } => ErrorCode::RequestIdReused,
            PfsError::InvalidInput(_) => ErrorCode::InvalidInput,
            PfsError::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            PfsError::Unauthorized(_) => ErrorCode::Unauthorized,
            PfsError::Forbidden(_) => ErrorCode::Forbidden,
            PfsError::Storage(_) => ErrorCode::StorageUnavailable,
            PfsError::Internal(_) => ErrorCode::Internal,
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        PfsError::NotFound { what: what.into() }
    }

    pub fn invalid_path(path: impl Into<String>, reason: impl Into<String>) -> Self {
        PfsError::InvalidPath {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        PfsError::Internal(e.to_string())
    }

    /// The JSON error body of the MCP contract: `{"error": {"code", "message", ...details}}`.
    /// Internal errors get a generic message (details go to the logs, not to callers).
    pub fn to_json(&self) -> Value {
        let mut err = Map::new();
        err.insert("code".into(), json!(self.code().as_str()));
        let message = match self {
            PfsError::Internal(_) => {
                "internal error; the request changed nothing. Retry later or contact the operator"
                    .to_string()
            }
            other => other.to_string(),
        };
        err.insert("message".into(), json!(message));
        match self {
            PfsError::InvalidPath { path, reason } => {
                err.insert("path".into(), json!(path));
                err.insert("reason".into(), json!(reason));
            }
            PfsError::SchemaViolation {
                path,
                profile,
                reason,
                suggestion,
            } => {
                err.insert("path".into(), json!(path));
                err.insert("profile".into(), json!(profile));
                err.insert("reason".into(), json!(reason));
                if let Some(s) = suggestion {
                    err.insert("suggestion".into(), json!(s));
                }
            }
            PfsError::Conflict {
                path,
                expected,
                current,
                diff,
            } => {
                err.insert("path".into(), json!(path));
                err.insert("expected_hash".into(), json!(expected));
                err.insert("current_hash".into(), json!(current));
                if let Some(d) = diff {
                    err.insert("diff".into(), json!(d));
                }
            }
            PfsError::HashRequired { path, current }
            | PfsError::AlreadyExists { path, current } => {
                err.insert("path".into(), json!(path));
                err.insert("current_hash".into(), json!(current));
            }
            PfsError::RequestIdReused { request_id } => {
                err.insert("request_id".into(), json!(request_id));
            }
            PfsError::EditNoMatch { path, edit, .. } => {
                err.insert("path".into(), json!(path));
                err.insert("edit".into(), json!(edit));
            }
            PfsError::EditAmbiguous {
                path,
                edit,
                count,
                lines,
            } => {
                err.insert("path".into(), json!(path));
                err.insert("edit".into(), json!(edit));
                err.insert("matches".into(), json!(count));
                err.insert("lines".into(), json!(lines));
            }
            PfsError::PayloadTooLarge { size, limit, .. } => {
                err.insert("size".into(), json!(size));
                err.insert("limit".into(), json!(limit));
            }
            _ => {}
        }
        json!({ "error": Value::Object(err) })
    }
}

impl From<sqlx::Error> for PfsError {
    fn from(e: sqlx::Error) -> Self {
        PfsError::Internal(format!("database: {e}"))
    }
}

impl PfsError {
    /// A storage backend failure, described by its kind only (messages can name the fs root).
    pub(crate) fn storage_failed(kind: impl std::fmt::Display) -> PfsError {
        PfsError::Storage(format!("{kind} (the storage backend failed; retry later)"))
    }
}

impl From<opendal::Error> for PfsError {
    fn from(e: opendal::Error) -> Self {
        if e.kind() == opendal::ErrorKind::NotFound {
            PfsError::NotFound {
                what: "object".into(),
            }
        } else {
            // opendal messages can contain the fs root; keep only the kind for callers.
            tracing::warn!(error = %e, "storage error");
            PfsError::storage_failed(e.kind())
        }
    }
}
