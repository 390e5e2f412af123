//! Tool results. Each is a JSON object (returned as `structuredContent` and as text); the types
//! here give the advertised output schemas. Optional fields are omitted when absent.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One file returned by `read_content`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FileContent {
    /// Book-relative path.
    pub path: String,
    /// The stored text, byte-exact.
    pub content: String,
    /// Size in bytes.
    pub file_size: u64,
    /// sha256 of the stored bytes (send it as `expected_hash` to update the file).
    pub file_hash_sha256: String,
    /// When the file was last written (RFC 3339, UTC).
    pub last_modified: String,
    /// Storage backend name.
    pub storage_backend: String,
    /// `overlay` or `base`.
    #[schemars(extend("enum" = ["overlay", "base"]))]
    pub source: String,
}

/// `read_content` result. File scope fills the file fields; `static/…` paths give only
/// `exists` and `file_hash_sha256`; the bulk scopes give `files`.
#[derive(Debug, Serialize, JsonSchema, Default)]
pub struct ReadContentOutput {
    /// file, chapter, part or book.
    pub scope: String,
    /// The requested path.
    pub path: String,
    /// Asset-hash mode (`static/…`): whether the asset exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
    /// The stored text (file scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Size in bytes (file scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_size: Option<u64>,
    /// sha256 of the stored bytes (file scope and asset-hash mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_hash_sha256: Option<String>,
    /// Last write time, RFC 3339 (file scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// Storage backend (file scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_backend: Option<String>,
    /// `overlay` or `base` (file scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Overlay reads: whether the base file changed since the overlay was last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_changed: Option<bool>,
    /// Overlay reads: the base hash when the overlay was last written (absent: no base then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_hash_then: Option<String>,
    /// Overlay reads: the base hash now (absent: no base file now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_hash_now: Option<String>,
    /// Reads by version: the version number, and whether it is the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_current: Option<bool>,
    /// The files (bulk scopes), sorted by path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<FileContent>>,
    /// Number of files (bulk scopes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
}

/// `write_content` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct WriteContentOutput {
    /// Always `success`.
    pub status: String,
    /// `unchanged`: no new version.
    #[schemars(extend("enum" = ["created", "updated", "unchanged"]))]
    pub mode: String,
    /// Book-relative path.
    pub path: String,
    /// Object-storage key (`books/{book}/…`).
    pub storage_path: String,
    /// Size in bytes.
    pub file_size: u64,
    /// sha256 of the new content.
    pub file_hash: String,
    /// The hash before this write (updates only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_hash: Option<String>,
    /// `base` or `overlay`.
    #[schemars(extend("enum" = ["base", "overlay"]))]
    pub namespace: String,
    /// The overlay owner (overlay writes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// `true`: a retry of an earlier call with this request_id, answered without writing (not in
    /// the advertised schemas, to keep `tools/list` small; the tool descriptions say it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub replayed: Option<bool>,
}

/// `edit_content` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EditContentOutput {
    /// `updated`, `created` (a new overlay) or `unchanged` (the edits changed nothing).
    #[schemars(extend("enum" = ["updated", "created", "unchanged"]))]
    pub mode: String,
    /// Book-relative path.
    pub path: String,
    /// sha256 of the new content (send it as expected_hash next time).
    pub file_hash: String,
    /// The hash the edits were applied to.
    pub prev_hash: String,
    /// Size in bytes.
    pub file_size: u64,
    /// How many replacements were made.
    pub replacements: usize,
    /// Unified diff of the change.
    pub diff: String,
    /// `base` or `overlay`.
    #[schemars(extend("enum" = ["base", "overlay"]))]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub replayed: Option<bool>,
}

/// `move_content` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MoveContentOutput {
    /// Always `success`.
    pub status: String,
    pub from_path: String,
    pub to_path: String,
    /// sha256 of the moved content (unchanged).
    pub file_hash: String,
    /// Version number at the new path (history continues there).
    pub version: i64,
    /// `base` or `overlay`.
    #[schemars(extend("enum" = ["base", "overlay"]))]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub replayed: Option<bool>,
}

/// One version in `list_versions`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct VersionInfo {
    pub version: i64,
    /// Content hash; pass as read_content's version.
    pub sha256: String,
    pub size: u64,
    pub agent_id: String,
    /// write_content or move_content.
    pub operation: String,
    /// RFC 3339.
    pub written_at: String,
}

/// `list_versions` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ListVersionsOutput {
    pub path: String,
    /// `base` or `overlay`.
    #[schemars(extend("enum" = ["base", "overlay"]))]
    pub namespace: String,
    /// Current sha256 (absent when the file is deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_hash: Option<String>,
    /// Newest first.
    pub versions: Vec<VersionInfo>,
    /// Pass as cursor for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `delete_content` / `delete_asset` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DeleteOutput {
    /// Always `success` (deletes are idempotent).
    pub status: String,
    /// Book-relative path.
    pub path: String,
    /// Object-storage key.
    pub storage_path: String,
    /// Whether there was something to delete.
    pub existed: bool,
    /// The hash of the deleted content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_hash: Option<String>,
    /// Human-readable outcome.
    pub message: String,
    /// `base` or `overlay`.
    #[schemars(extend("enum" = ["base", "overlay"]))]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub replayed: Option<bool>,
}

/// Asset metadata (`get_asset`, `list_assets`, `upload_asset`).
#[derive(Debug, Serialize, JsonSchema, Clone)]
pub struct AssetInfo {
    /// Book-relative path (`static/{type}/{file}`).
    pub path: String,
    /// Public URL (`{cdn_base}/books/{book}/static/{type}/{file}`).
    pub cdn_url: String,
    /// slides, images, videos or audio.
    pub asset_type: String,
    /// Path below `static/{type}/`.
    pub filename: String,
    /// Size in bytes.
    pub file_size: u64,
    /// MIME type from the extension.
    pub mime_type: String,
    /// sha256 of the bytes.
    pub file_hash_sha256: String,
    /// Last write time, RFC 3339.
    pub upload_timestamp: String,
    /// Base64 bytes (`get_asset` with `include_binary`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_data: Option<String>,
}

/// `upload_asset` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct UploadAssetOutput {
    /// `success` (written) or `skipped` (same bytes already stored).
    #[schemars(extend("enum" = ["success", "skipped"]))]
    pub status: String,
    /// Always `direct`.
    pub method: String,
    /// The stored asset.
    #[serde(flatten)]
    pub asset: AssetInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub replayed: Option<bool>,
}

/// `list_assets` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ListAssetsOutput {
    /// Book identifier.
    pub book_id: String,
    /// Assets sorted by path.
    pub assets: Vec<AssetInfo>,
    /// Number of assets.
    pub count: usize,
}

/// A chapter in a book's content tree.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ChapterTree {
    /// Chapter directory name.
    pub id: String,
    /// File names below the chapter (deeper levels as relative paths), sorted.
    pub lessons: Vec<String>,
}

/// A part in a book's content tree.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PartTree {
    /// Part directory name.
    pub id: String,
    /// Files directly in the part directory.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// Chapters, sorted.
    pub chapters: Vec<ChapterTree>,
}

/// Content tree of a book.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ContentTree {
    /// Parts, sorted.
    pub parts: Vec<PartTree>,
}

/// Asset lists of a book (paths below `static/{type}/`).
#[derive(Debug, Serialize, JsonSchema, Default)]
pub struct AssetTree {
    pub images: Vec<String>,
    pub slides: Vec<String>,
    pub videos: Vec<String>,
    pub audio: Vec<String>,
}

/// One book in `list_books`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct BookItem {
    /// Book identifier.
    pub book_id: String,
    /// Storage backend name.
    pub storage_backend: String,
    /// Schema profile (`strict` or `docusaurus`).
    pub profile: String,
    /// Content tree (include_structure content/all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<ContentTree>,
    /// Assets (include_structure assets/all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assets: Option<AssetTree>,
}

/// `list_books` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ListBooksOutput {
    /// Books sorted by id.
    pub books: Vec<BookItem>,
    /// Number of books.
    pub count: usize,
}

/// `glob_search` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct GlobSearchOutput {
    /// The pattern searched.
    pub pattern: String,
    /// Matching book-relative paths, as `read_content` takes them (with all_books:
    /// `{book_id}/{path}`), sorted, each once even when both base and your overlay have it.
    pub matches: Vec<String>,
    /// Number of matches.
    pub count: usize,
    /// Every matching file with its book and namespace (`base` or `overlay`).
    pub files: Vec<GlobFile>,
}

/// One `glob_search` hit.
#[derive(Debug, Serialize, JsonSchema)]
pub struct GlobFile {
    pub book_id: String,
    pub path: String,
    pub namespace: String,
}

/// One `grep_search` match.
#[derive(Debug, Serialize, JsonSchema)]
pub struct GrepMatch {
    /// Object-storage key of the file.
    pub file_path: String,
    /// Book identifier.
    pub book_id: String,
    /// Book-relative path.
    pub path: String,
    /// `base` or `overlay`.
    #[schemars(extend("enum" = ["base", "overlay"]))]
    pub namespace: String,
    /// 1-based line number.
    pub line_number: u64,
    /// The matching line, trimmed.
    pub matched_line: String,
}

/// `grep_search` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct GrepSearchOutput {
    /// The pattern searched.
    pub pattern: String,
    /// Matches in path order.
    pub matches: Vec<GrepMatch>,
    /// Number of matches returned.
    pub count: usize,
    /// Whether `max_results` cut the list short.
    pub truncated: bool,
    /// Files searched.
    pub files_scanned: usize,
    /// Files skipped because they exceed the per-file size limit.
    pub files_skipped: usize,
}

/// `get_book_archive` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ArchiveOutput {
    /// `success`, `empty` or `partial` (see missing).
    #[schemars(extend("enum" = ["success", "empty", "partial"]))]
    pub status: String,
    /// Signed, short-lived download URL (GET, returns application/zip).
    pub archive_url: String,
    /// URL expiry, RFC 3339.
    pub expires_at: String,
    /// Seconds the URL stays valid.
    pub valid_for_seconds: u64,
    /// Files the archive will contain.
    pub file_count: usize,
    /// Sum of their sizes in bytes.
    pub total_size_bytes: u64,
    /// content, assets or all.
    pub scope: String,
    /// Always `zip`.
    pub format: String,
    /// Manifest hash of the archived files (also the archive's ETag basis).
    pub manifest_hash: String,
    /// The overlay merged in, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Unreadable files (status partial).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// Server time limit of the download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_budget_seconds: Option<u64>,
}

/// `delta_build` result.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct DeltaBuildOutput {
    /// Book identifier.
    pub book_id: String,
    /// The `since` echo.
    pub since: String,
    /// Number of changed files.
    pub changed_count: usize,
    /// Changed files, newest first (base first, then overlay).
    pub changed_files: Vec<DeltaItem>,
    /// Overlay owner (when asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Base changes (when an overlay was asked for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_changes: Option<usize>,
    /// Overlay changes (when an overlay was asked for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay_changes: Option<usize>,
}

/// One `delta_build` file.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct DeltaItem {
    /// Book-relative path.
    pub path: String,
    /// sha256 of the current bytes.
    pub sha256: String,
    /// Last write time, RFC 3339.
    pub last_modified: String,
    /// `base` or `overlay`.
    #[schemars(extend("enum" = ["base", "overlay"]))]
    pub namespace: String,
    /// Overlay owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Content (include_content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Why the content is missing (include_content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One file of a build plan.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct PlanFileOut {
    /// Book-relative path.
    pub path: String,
    /// Hash in the current book (`null` when deleted).
    pub current_hash: Option<String>,
    /// Hash in the target manifest (`null` when added or no usable target).
    pub target_hash: Option<String>,
    /// added, modified or deleted.
    #[schemars(extend("enum" = ["added", "modified", "deleted"]))]
    pub change_type: String,
}

/// `plan_build` result.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct PlanBuildOutput {
    /// `changed` or `unchanged`.
    #[schemars(extend("enum" = ["changed", "unchanged"]))]
    pub status: String,
    /// Manifest hash of the current book (store it after applying the plan).
    pub manifest_hash: String,
    /// Files to download (added/modified) or delete (deleted), sorted by path.
    pub files: Vec<PlanFileOut>,
    /// Number of files in `files`.
    pub changed_count: usize,
    /// Number of files in the current book.
    pub total_files: usize,
    /// Book identifier.
    pub book_id: String,
    /// The target echo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_manifest_hash: Option<String>,
    /// Set when the target manifest is unknown (every file is listed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// One validation finding.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct IssueOut {
    /// Book-relative path.
    pub path: String,
    /// `error` or `warning`.
    pub severity: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub suggestion: Option<String>,
}

/// File counts of a validation report.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct SummaryOut {
    pub total_files: usize,
    pub content_files: usize,
    pub asset_files: usize,
    pub error_count: usize,
    pub warning_count: usize,
}

/// `validate_book` result.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ValidateOutput {
    /// Whether the book has no errors.
    pub valid: bool,
    /// Book identifier.
    pub book_id: String,
    /// Schema profile checked (`strict` or `docusaurus`).
    pub profile: String,
    /// Set when validation stopped early (strict) or the book does not exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Strict mode: the first failing path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<String>,
    /// Strict mode: the suggestion for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<String>,
    /// Counts.
    pub summary: SummaryOut,
    /// Errors.
    pub errors: Vec<IssueOut>,
    /// Warnings.
    pub warnings: Vec<IssueOut>,
}

/// One audit row.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct AuditRowOut {
    /// Sequence number (row-chain position).
    pub seq: i64,
    /// Timestamp, RFC 3339.
    pub ts: String,
    /// Who did it.
    pub agent_id: String,
    /// Tool/operation name.
    pub operation: String,
    pub book_id: String,
    pub path: String,
    /// `__base__` or the overlay owner.
    pub user_id: String,
    pub prev_hash: Option<String>,
    pub new_hash: Option<String>,
    /// success, conflict or error.
    pub status: String,
    pub error_message: Option<String>,
    pub execution_time_ms: Option<i64>,
    /// Hash over this row's fields and `prev_row_hash`.
    pub row_hash: String,
    pub prev_row_hash: String,
    /// The request_id of the call that made the change, if it named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// `query_audit_log` result.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct AuditPageOut {
    /// Rows, newest first.
    pub rows: Vec<AuditRowOut>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A place where a chain does not hold.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ChainBreakOut {
    pub seq: i64,
    /// row_hash, row_link, seq_gap, file_chain or head.
    pub kind: String,
    pub detail: String,
}

/// `verify_audit_chain` result.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ChainReportOut {
    /// Whether every checked chain holds.
    pub valid: bool,
    pub rows_checked: u64,
    pub head_seq: Option<i64>,
    pub breaks: Vec<ChainBreakOut>,
}
