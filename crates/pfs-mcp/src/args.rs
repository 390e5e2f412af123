//! Tool arguments: one struct per tool, decoded from either the flat form (`{"book_id": …}`) or the
//! predecessor's wrapped form (`{"params": {"book_id": …}}`, where `params` may also be a JSON
//! string holding that object). Unknown keys are rejected with `INVALID_INPUT`.
//!
//! Only the flat form is advertised (`crate::schema` makes it portable across model providers);
//! the wrapped form stays accepted on input for the predecessor's clients.

use pfs::PfsError;
use rmcp::model::JsonObject;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Decode tool arguments given flat or wrapped in `params` (object or JSON string).
pub fn decode_args<T: DeserializeOwned>(args: JsonObject) -> Result<T, PfsError> {
    decode_flat(flatten_args(args)?)
}

/// Decode arguments already in the flat form (see [`flatten_args`]).
pub fn decode_flat<T: DeserializeOwned>(flat: JsonObject) -> Result<T, PfsError> {
    serde_json::from_value(Value::Object(flat))
        .map_err(|e| PfsError::InvalidInput(format!("invalid arguments: {e}")))
}

/// The arguments in the flat form, whichever form they came in.
pub fn flatten_args(args: JsonObject) -> Result<JsonObject, PfsError> {
    match args.get("params") {
        Some(Value::Object(obj)) => Ok(obj.clone()),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(obj)) => Ok(obj),
            Ok(_) => Err(PfsError::InvalidInput(
                "params must be a JSON object holding the tool arguments".into(),
            )),
            Err(e) => Err(PfsError::InvalidInput(format!(
                "params is a string but not a JSON object ({e}); send the arguments as an object"
            ))),
        },
        Some(Value::Null) | None => {
            let mut flat = args;
            flat.remove("params");
            Ok(flat)
        }
        Some(_) => Err(PfsError::InvalidInput(
            "params must be an object holding the tool arguments (or send them flat)".into(),
        )),
    }
}

pub use crate::schema::input_schema;
pub use crate::schema::output_schema;

/// Accept `true`/`false` and the strings `"true"`/`"false"` (the predecessor's lax parsing).
fn lax_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match Value::deserialize(d)? {
        Value::Bool(b) => Ok(b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        other => Err(serde::de::Error::custom(format!(
            "expected a boolean, got {other}"
        ))),
    }
}

/// Accept integers and decimal strings (`5`, `"5"`).
fn lax_opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Number(n) => n.as_u64().map(Some).ok_or_else(|| {
            serde::de::Error::custom(format!("expected a non-negative integer, got {n}"))
        }),
        Value::String(s) => s
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("expected an integer, got {s:?}"))),
        other => Err(serde::de::Error::custom(format!(
            "expected an integer, got {other}"
        ))),
    }
}

fn default_content_path() -> String {
    "content".into()
}

fn default_true() -> bool {
    true
}

/// How much `read_content` returns.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ReadScope {
    /// One file.
    #[default]
    File,
    /// The `.md` files directly inside the directory `path`.
    Chapter,
    /// All `.md` files below the directory `path`.
    Part,
    /// All `.md` files of the book (`path` is ignored).
    Book,
}

/// `read_content` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadContentArgs {
    /// Book id.
    #[schemars(pattern(r"^[a-z0-9-]{3,50}$"))]
    pub book_id: String,
    /// A file (`content/…`; `static/…` gives an asset's hash), or the chapter/part directory.
    #[serde(default = "default_content_path")]
    pub path: String,
    /// `file` (default), `chapter` (direct children), `part` (recursive) or `book` (whole book).
    #[serde(default)]
    pub scope: ReadScope,
    /// Prefer this user's overlay over base (your own id unless admin).
    #[serde(default)]
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,100}$"))]
    pub user_id: Option<String>,
    /// A sha256 from list_versions: read that earlier version (file scope).
    #[serde(default)]
    #[schemars(pattern(r"^[0-9a-fA-F]{64}$"))]
    pub version: Option<String>,
}

/// `edit_content` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EditContentArgs {
    /// Book id.
    #[schemars(pattern(r"^[a-z0-9-]{3,50}$"))]
    pub book_id: String,
    /// Book-relative content path.
    pub path: String,
    /// file_hash_sha256 of the content the edits were made against.
    #[schemars(pattern(r"^[0-9a-fA-F]{64}$"))]
    pub expected_hash: String,
    /// Applied in order, all or none.
    #[schemars(length(min = 1, max = 100))]
    pub edits: Vec<TextEdit>,
    /// Edit this user's overlay (made from base if absent).
    #[serde(default)]
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,100}$"))]
    pub user_id: Option<String>,
    /// Idempotency key (max 64 chars) for safe retries.
    #[serde(default)]
    pub request_id: Option<String>,
}

/// One exact-text replacement of `edit_content`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TextEdit {
    /// Exact text to find (whitespace included); must match once unless replace_all.
    #[schemars(length(min = 1))]
    pub old_text: String,
    /// Replacement text.
    pub new_text: String,
    /// Replace every match.
    #[serde(default, deserialize_with = "lax_bool")]
    pub replace_all: bool,
}

impl From<TextEdit> for pfs::edit::TextEdit {
    fn from(e: TextEdit) -> Self {
        pfs::edit::TextEdit {
            old_text: e.old_text,
            new_text: e.new_text,
            replace_all: e.replace_all,
        }
    }
}

/// `move_content` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveContentArgs {
    /// Book id.
    #[schemars(pattern(r"^[a-z0-9-]{3,50}$"))]
    pub book_id: String,
    /// Current content path.
    pub from_path: String,
    /// New content path; must not exist.
    pub to_path: String,
    /// Current sha256 of from_path.
    #[schemars(pattern(r"^[0-9a-fA-F]{64}$"))]
    pub expected_hash: String,
    /// Move within this user's overlay.
    #[serde(default)]
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,100}$"))]
    pub user_id: Option<String>,
    /// Idempotency key (max 64 chars) for safe retries.
    #[serde(default)]
    pub request_id: Option<String>,
}

/// `list_versions` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListVersionsArgs {
    /// Book id.
    #[schemars(pattern(r"^[a-z0-9-]{3,50}$"))]
    pub book_id: String,
    /// Book-relative path.
    pub path: String,
    /// The versions of this user's overlay.
    #[serde(default)]
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,100}$"))]
    pub user_id: Option<String>,
    /// Page size, 1-100 (default 20).
    #[serde(default, deserialize_with = "lax_opt_u64")]
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<u64>,
    /// next_cursor of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// `write_content` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteContentArgs {
    /// Book id.
    #[schemars(pattern(r"^[a-z0-9-]{3,50}$"))]
    pub book_id: String,
    /// Book-relative content path, e.g. `content/01-Part/01-Chapter/01-lesson.md`.
    pub path: String,
    /// The full new file content (UTF-8, stored byte-exact).
    pub content: String,
    /// Current sha256: required to update, omitted to create.
    #[serde(default)]
    #[schemars(pattern(r"^[0-9a-fA-F]{64}$"))]
    pub expected_hash: Option<String>,
    /// Write this user's overlay instead of base (your own id unless admin).
    #[serde(default)]
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,100}$"))]
    pub user_id: Option<String>,
    /// Idempotency key (max 64 chars) for safe retries.
    #[serde(default)]
    pub request_id: Option<String>,
}

/// `delete_content` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteContentArgs {
    /// Book id.
    #[schemars(pattern(r"^[a-z0-9-]{3,50}$"))]
    pub book_id: String,
    /// Book-relative content path.
    pub path: String,
    /// Delete from this user's overlay only (base untouched).
    #[serde(default)]
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,100}$"))]
    pub user_id: Option<String>,
    /// Idempotency key (max 64 chars) for safe retries.
    #[serde(default)]
    pub request_id: Option<String>,
}

/// Asset directory under `static/`.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AssetType {
    Slides,
    Images,
    Videos,
    Audio,
}

impl AssetType {
    /// Directory name under `static/`.
    pub fn as_str(self) -> &'static str {
        match self {
            AssetType::Slides => "slides",
            AssetType::Images => "images",
            AssetType::Videos => "videos",
            AssetType::Audio => "audio",
        }
    }

    /// All types in the predecessor's listing order.
    pub const ALL: [AssetType; 4] = [
        AssetType::Slides,
        AssetType::Images,
        AssetType::Videos,
        AssetType::Audio,
    ];
}

/// `upload_asset` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadAssetArgs {
    /// Book id.
    #[schemars(pattern(r"^[a-z0-9-]{3,50}$"))]
    pub book_id: String,
    /// Asset directory: slides, images, videos or audio.
    pub asset_type: AssetType,
    /// File name, optionally nested (`chapter-1/diagram.png`).
    pub filename: String,
    /// The file bytes, standard base64.
    #[serde(default)]
    pub binary_data: Option<String>,
    /// Unsupported (presigned upload): send binary_data.
    #[serde(default, deserialize_with = "lax_opt_u64")]
    pub file_size: Option<u64>,
    /// Idempotency key (max 64 chars) for safe retries.
    #[serde(default)]
    pub request_id: Option<String>,
}

/// `get_asset` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetAssetArgs {
    /// Book id.
    #[schemars(pattern(r"^[a-z0-9-]{3,50}$"))]
    pub book_id: String,
    /// Asset directory.
    pub asset_type: AssetType,
    /// File name (optionally nested).
    pub filename: String,
    /// Also return the bytes as base64.
    #[serde(default, deserialize_with = "lax_bool")]
    pub include_binary: bool,
}

/// `list_assets` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListAssetsArgs {
    /// Book id.
    #[schemars(pattern(r"^[a-z0-9-]{3,50}$"))]
    pub book_id: String,
    /// Only this asset directory (default: all four).
    #[serde(default)]
    pub asset_type: Option<AssetType>,
}

/// `delete_asset` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteAssetArgs {
    /// Book id.
    #[schemars(pattern(r"^[a-z0-9-]{3,50}$"))]
    pub book_id: String,
    /// Asset directory.
    pub asset_type: AssetType,
    /// File name (optionally nested).
    pub filename: String,
    /// Idempotency key (max 64 chars) for safe retries.
    #[serde(default)]
    pub request_id: Option<String>,
}

/// What `list_books` includes per book.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IncludeStructure {
    #[default]
    None,
    Content,
    Assets,
    All,
}

/// `list_books` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListBooksArgs {
    /// Include the content tree, the asset list, or both.
    #[serde(default)]
    pub include_structure: Option<IncludeStructure>,
    /// Only this book.
    #[serde(default)]
    #[schemars(pattern(r"^[a-z0-9-]{3,50}$"))]
    pub book_id: Option<String>,
}

/// `glob_search` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GlobSearchArgs {
    /// Book id.
    #[schemars(pattern(r"^[a-z0-9-]{3,50}$"))]
    pub book_id: String,
    /// Glob over book-relative paths (`content/**/*.md`; all_books: `*/content/**/*.md`).
    pub pattern: String,
    /// Search every book.
    #[serde(default, deserialize_with = "lax_bool")]
    pub all_books: bool,
    /// Also search this user's overlay (default: yours; others need admin).
    #[serde(default)]
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,100}$"))]
    pub user_id: Option<String>,
}

/// `grep_search` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrepSearchArgs {
    /// Book id.
    #[schemars(pattern(r"^[a-z0-9-]{3,50}$"))]
    pub book_id: String,
    /// Regular expression (Rust `regex` syntax, case-sensitive; `(?i)` for case-insensitive).
    pub pattern: String,
    /// Search every book.
    #[serde(default, deserialize_with = "lax_bool")]
    pub all_books: bool,
    /// Maximum matches returned, 1–1000 (default 100).
    #[serde(default, deserialize_with = "lax_opt_u64")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_results: Option<u64>,
    /// Also search this user's overlay (default: yours; others need admin).
    #[serde(default)]
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,100}$"))]
    pub user_id: Option<String>,
}

/// What an archive contains.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveScope {
    /// `content/…` only.
    #[default]
    Content,
    /// `static/…` only.
    Assets,
    /// Both.
    All,
}

impl ArchiveScope {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ArchiveScope::Content => "content",
            ArchiveScope::Assets => "assets",
            ArchiveScope::All => "all",
        }
    }

    /// Parse the wire name.
    pub fn parse(s: &str) -> Result<ArchiveScope, PfsError> {
        match s {
            "content" => Ok(ArchiveScope::Content),
            "assets" => Ok(ArchiveScope::Assets),
            "all" => Ok(ArchiveScope::All),
            other => Err(PfsError::InvalidInput(format!(
                "unknown archive scope {other:?}; use content, assets or all"
            ))),
        }
    }

    /// Whether a book-relative path belongs in this scope.
    pub fn admits(self, path: &str) -> bool {
        match self {
            ArchiveScope::Content => path.starts_with("content/"),
            ArchiveScope::Assets => path.starts_with("static/"),
            ArchiveScope::All => true,
        }
    }
}

/// `get_book_archive` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetBookArchiveArgs {
    /// Book id.
    #[schemars(pattern(r"^[a-z0-9-]{3,50}$"))]
    pub book_id: String,
    /// content (default), assets or all.
    #[serde(default)]
    pub scope: ArchiveScope,
    /// Merge this user's overlay over base (yours unless admin).
    #[serde(default)]
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,100}$"))]
    pub user_id: Option<String>,
    /// Only files after this path (a partial ZIP's resume_after).
    #[serde(default)]
    pub start_after: Option<String>,
}

/// `validate_book` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateBookArgs {
    /// Book id.
    #[schemars(pattern(r"^[a-z0-9-]{3,50}$"))]
    pub book_id: String,
    /// Stop at the first error.
    #[serde(default, deserialize_with = "lax_bool")]
    pub strict: bool,
    /// Collect warnings too (default true).
    #[serde(default = "default_true", deserialize_with = "lax_bool")]
    pub include_warnings: bool,
}

/// `delta_build` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeltaBuildArgs {
    /// Book id.
    #[schemars(pattern(r"^[a-z0-9-]{3,50}$"))]
    pub book_id: String,
    /// ISO 8601 time (`2025-01-01T00:00:00Z`); files written after it.
    pub since: String,
    /// Include each changed file's content.
    #[serde(default, deserialize_with = "lax_bool")]
    pub include_content: bool,
    /// Also report this user's overlay changes.
    #[serde(default)]
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,100}$"))]
    pub user_id: Option<String>,
}

/// `plan_build` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanBuildArgs {
    /// Book id.
    #[schemars(pattern(r"^[a-z0-9-]{3,50}$"))]
    pub book_id: String,
    /// The manifest hash of the last build (64 hex); omitted → every file is listed.
    #[serde(default)]
    #[schemars(pattern(r"^[0-9a-fA-F]{64}$"))]
    pub target_manifest_hash: Option<String>,
}

/// `query_audit_log` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryAuditLogArgs {
    /// Only rows by this agent.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// Only this operation (e.g. `write_content`).
    #[serde(default)]
    pub operation: Option<String>,
    /// Only this book.
    #[serde(default)]
    #[schemars(pattern(r"^[a-z0-9-]{3,50}$"))]
    pub book_id: Option<String>,
    /// Path pattern (`*` matches any characters), e.g. `content/01-Part/*`.
    #[serde(default)]
    pub path_pattern: Option<String>,
    /// Rows at or after this ISO 8601 time.
    #[serde(default)]
    pub since: Option<String>,
    /// Rows before this ISO 8601 time.
    #[serde(default)]
    pub until: Option<String>,
    /// Only this status (`success`, `error`, `conflict`).
    #[serde(default)]
    pub status: Option<String>,
    /// Page size (default 100, max 1000).
    #[serde(default, deserialize_with = "lax_opt_u64")]
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<u64>,
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// `verify_audit_chain` arguments. Without a file filter the whole row chain and every per-file
/// chain is checked; with `book_id` + `path` (and optionally `user_id`) only that file's chain.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyAuditChainArgs {
    /// Book of the file whose chain to check.
    #[serde(default)]
    /// Book id.
    #[schemars(pattern(r"^[a-z0-9-]{3,50}$"))]
    pub book_id: Option<String>,
    /// Book-relative path of the file (requires book_id).
    #[serde(default)]
    pub path: Option<String>,
    /// Overlay owner of the file (default: base).
    #[serde(default)]
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,100}$"))]
    pub user_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> JsonObject {
        match v {
            Value::Object(o) => o,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn flat_wrapped_and_string_forms_decode_the_same() {
        let flat = obj(json!({"book_id": "abc", "path": "content/a.md", "scope": "file"}));
        let wrapped =
            obj(json!({"params": {"book_id": "abc", "path": "content/a.md", "scope": "file"}}));
        let string = obj(
            json!({"params": "{\"book_id\":\"abc\",\"path\":\"content/a.md\",\"scope\":\"file\"}"}),
        );
        for a in [flat, wrapped, string] {
            let r: ReadContentArgs = decode_args(a).unwrap();
            assert_eq!(r.book_id, "abc");
            assert_eq!(r.path, "content/a.md");
            assert_eq!(r.scope, ReadScope::File);
        }
    }

    #[test]
    fn unknown_keys_and_bad_params_are_invalid_input() {
        let e =
            decode_args::<ReadContentArgs>(obj(json!({"book_id": "abc", "nope": 1}))).unwrap_err();
        assert_eq!(e.code(), pfs::ErrorCode::InvalidInput);
        let e = decode_args::<ReadContentArgs>(obj(json!({"params": 5}))).unwrap_err();
        assert_eq!(e.code(), pfs::ErrorCode::InvalidInput);
        let e = decode_args::<ReadContentArgs>(obj(json!({"params": "[1]"}))).unwrap_err();
        assert_eq!(e.code(), pfs::ErrorCode::InvalidInput);
    }

    #[test]
    fn lax_scalars() {
        let a: GrepSearchArgs = decode_args(obj(
            json!({"book_id": "abc", "pattern": "x", "all_books": "true", "max_results": "5"}),
        ))
        .unwrap();
        assert!(a.all_books);
        assert_eq!(a.max_results, Some(5));
        let v: ValidateBookArgs = decode_args(obj(json!({"book_id": "abc"}))).unwrap();
        assert!(v.include_warnings);
        assert!(!v.strict);
    }

    #[test]
    fn input_schema_is_flat_and_does_not_advertise_the_wrapped_form() {
        let s = input_schema::<WriteContentArgs>();
        assert_eq!(s.get("type"), Some(&json!("object")));
        let props = s.get("properties").and_then(Value::as_object).unwrap();
        assert!(!props.contains_key("params"));
        assert!(props.contains_key("content"));
        assert!(s.get("anyOf").is_none());
        assert_eq!(s["required"], json!(["book_id", "path", "content"]));
    }
}
