//! The rmcp tool server: tool metadata (names, titles, annotations, input and output schemas) and
//! the call envelope (caller identity, scope check, argument decoding, result/error shaping,
//! metrics). The operations themselves are in [`crate::ops`].

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use pfs::audit::AuditRow;
use pfs::{PfsError, RequestKey};
use platform::Identity;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, JsonObject, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler, tool, tool_handler, tool_router};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::args::*;
use crate::auth::{self, Need};
use crate::output::*;
use crate::replay;
use crate::state::PfsMcpState;

/// The PanaversityFS MCP server: every book-store tool. Cheap to clone (one per HTTP request).
#[derive(Clone)]
pub struct PfsTools {
    pub(crate) state: PfsMcpState,
    tool_router: Arc<ToolRouter<PfsTools>>,
}

/// The tool table is built once per process (schemas included), not once per HTTP request.
static ROUTER: OnceLock<Arc<ToolRouter<PfsTools>>> = OnceLock::new();

/// An error a tool can answer with: a stable code (for metrics and the body) and the JSON body
/// `{"error": {"code", "message", …}}`. [`PfsError`] is one; `grep_search` adds its own codes.
pub trait ToolError {
    /// The stable error code.
    fn code_str(&self) -> &'static str;
    /// The error body.
    fn body(&self) -> Value;
    /// Log it as fits its kind.
    fn log(&self, tool: &'static str);
}

impl ToolError for PfsError {
    fn code_str(&self) -> &'static str {
        self.code().as_str()
    }

    fn body(&self) -> Value {
        self.to_json()
    }

    fn log(&self, tool: &'static str) {
        match self {
            PfsError::Internal(msg) => tracing::error!(tool, error = %msg, "tool failed"),
            PfsError::Storage(msg) => {
                tracing::warn!(tool, error = %msg, "tool failed: storage")
            }
            other => tracing::debug!(tool, error = %other, "tool refused"),
        }
    }
}

/// Turn a tool outcome into the MCP result: success → the JSON object as `structuredContent` and
/// as text; error → `isError: true` with `{"error": {...}}` as text.
pub fn tool_result<E: ToolError>(
    tool: &'static str,
    started: Instant,
    res: Result<Value, E>,
) -> CallToolResult {
    match res {
        Ok(v) => {
            crate::metrics::tool_call(tool, "ok", started.elapsed());
            CallToolResult::structured(v)
        }
        Err(e) => {
            crate::metrics::tool_call(tool, e.code_str(), started.elapsed());
            e.log(tool);
            CallToolResult::error(vec![ContentBlock::text(e.body().to_string())])
        }
    }
}

fn to_value<T: Serialize>(v: T) -> Result<Value, PfsError> {
    serde_json::to_value(v).map_err(PfsError::internal)
}

impl PfsTools {
    /// A tool server over `state`.
    pub fn new(state: PfsMcpState) -> Self {
        PfsTools {
            state,
            tool_router: ROUTER.get_or_init(|| Arc::new(Self::tool_router())).clone(),
        }
    }

    /// The tool list (as `tools/list` returns it).
    pub fn tools(&self) -> Vec<rmcp::model::Tool> {
        self.tool_router.list_all()
    }

    /// Shared envelope: identity → scope → arguments → operation → result.
    async fn call<A, O, E, F, Fut>(
        &self,
        tool: &'static str,
        need: Need,
        args: JsonObject,
        ctx: &RequestContext<RoleServer>,
        op: F,
    ) -> CallToolResult
    where
        A: DeserializeOwned,
        O: Serialize,
        E: ToolError + From<PfsError>,
        F: FnOnce(Identity, A) -> Fut,
        Fut: Future<Output = Result<O, E>>,
    {
        let started = Instant::now();
        let res: Result<Value, E> = async {
            let id = auth::caller(ctx, self.state.config.stdio_identity.as_ref())?;
            auth::require(&id, need)?;
            let a: A = decode_args(args)?;
            Ok(to_value(op(id, a).await?)?)
        }
        .await;
        tool_result(tool, started, res)
    }
}

impl PfsTools {
    /// The envelope of a mutating tool: [`PfsTools::call`] plus idempotent retries (see
    /// [`crate::replay`]): a call naming a `request_id` whose change already committed is
    /// answered by `replay` from that change's audit rows instead of running `op` again.
    async fn call_mut<A, O, F, Fut, R, RFut>(
        &self,
        tool: &'static str,
        args: JsonObject,
        ctx: &RequestContext<RoleServer>,
        op: F,
        replay: R,
    ) -> CallToolResult
    where
        A: DeserializeOwned,
        O: Serialize,
        F: FnOnce(Identity, Option<RequestKey>, A) -> Fut,
        Fut: Future<Output = Result<O, PfsError>>,
        R: FnOnce(Identity, A, Vec<AuditRow>) -> RFut,
        RFut: Future<Output = Result<O, PfsError>>,
    {
        let started = Instant::now();
        let res: Result<Value, PfsError> = async {
            let id = auth::caller(ctx, self.state.config.stdio_identity.as_ref())?;
            auth::require(&id, Need::Write)?;
            let mut flat = flatten_args(args)?;
            let Some(key) = replay::request_key(tool, &mut flat)? else {
                return to_value(op(id, None, decode_flat(flat)?).await?);
            };
            if let Some(rows) = self.request_rows(&id, &key).await? {
                return to_value(replay(id, decode_flat(flat)?, rows).await?);
            }
            let a: A = decode_flat(flat.clone())?;
            match op(id.clone(), Some(key.clone()), a).await {
                Ok(o) => to_value(o),
                // A copy of this very call may have committed first.
                Err(e) if replay::may_have_lost_to_itself(&e) => {
                    match self.request_rows(&id, &key).await? {
                        Some(rows) => to_value(replay(id, decode_flat(flat)?, rows).await?),
                        None => Err(e),
                    }
                }
                Err(e) => Err(e),
            }
        }
        .await;
        tool_result(tool, started, res)
    }
}

#[tool_router]
impl PfsTools {
    #[tool(
        name = "read_content",
        description = "Read a file (scope=file), or the markdown of a chapter, part or the whole book. With user_id the user's overlay wins when present (source; base_changed tells if base moved on since). A static/… path gives only exists and the hash. Next: edit_content or write_content with file_hash_sha256 as expected_hash.",
        input_schema = input_schema::<ReadContentArgs>(),
        output_schema = output_schema::<ReadContentOutput>(),
        annotations(title = "Read Content", read_only_hint = true, open_world_hint = false)
    )]
    async fn read_content(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.call("read_content", Need::Read, args, &ctx, |id, a| {
            self.op_read_content(id, a)
        })
        .await
    }

    #[tool(
        name = "write_content",
        description = "Create (no expected_hash) or replace a content file (expected_hash = current file_hash_sha256, else HASH_REQUIRED or CONFLICT with current_hash and a diff). Stored byte-exact. Small changes: edit_content. With user_id: that user's overlay (yours unless admin).",
        input_schema = input_schema::<WriteContentArgs>(),
        output_schema = output_schema::<WriteContentOutput>(),
        annotations(title = "Write Content (Upsert)", read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn write_content(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.call_mut(
            "write_content",
            args,
            &ctx,
            |id, req, a| self.op_write_content(id, req, a),
            |_, a, rows| self.replay_write(a, rows),
        )
        .await
    }

    #[tool(
        name = "edit_content",
        description = "Change part of a file without resending it: each edit replaces old_text (exact; once unless replace_all) with new_text, in order, all or nothing. expected_hash: file_hash_sha256 from read_content. Returns file_hash and a diff. CONFLICT carries current_hash and a diff from your version: rebase on it.",
        input_schema = input_schema::<EditContentArgs>(),
        output_schema = output_schema::<EditContentOutput>(),
        annotations(title = "Edit Content", read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false)
    )]
    async fn edit_content(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.call_mut(
            "edit_content",
            args,
            &ctx,
            |id, req, a| self.op_edit_content(id, req, a),
            |_, a, rows| self.replay_edit(a, rows),
        )
        .await
    }

    #[tool(
        name = "move_content",
        description = "Rename a content file atomically (expected_hash: its current hash); to_path must not exist (ALREADY_EXISTS). History moves with it.",
        input_schema = input_schema::<MoveContentArgs>(),
        output_schema = output_schema::<MoveContentOutput>(),
        annotations(title = "Move Content", read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = false)
    )]
    async fn move_content(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.call_mut(
            "move_content",
            args,
            &ctx,
            |id, req, a| self.op_move_content(id, req, a),
            |_, a, rows| self.replay_move(a, rows),
        )
        .await
    }

    #[tool(
        name = "list_versions",
        description = "A file's versions, newest first (sha256, size, agent_id, operation, time); page with cursor. read_content with version=<sha256> reads one.",
        input_schema = input_schema::<ListVersionsArgs>(),
        output_schema = output_schema::<ListVersionsOutput>(),
        annotations(title = "List Versions", read_only_hint = true, open_world_hint = false)
    )]
    async fn list_versions(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.call("list_versions", Need::Read, args, &ctx, |id, a| {
            self.op_list_versions(id, a)
        })
        .await
    }

    #[tool(
        name = "delete_content",
        description = "Delete a content file (idempotent: a missing file gives existed=false). With user_id only that user's overlay copy; base is untouched.",
        input_schema = input_schema::<DeleteContentArgs>(),
        output_schema = output_schema::<DeleteOutput>(),
        annotations(title = "Delete Content", read_only_hint = false, destructive_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn delete_content(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.call_mut(
            "delete_content",
            args,
            &ctx,
            |id, req, a| self.op_delete_content(id, req, a),
            |id, a, rows| self.replay_delete_content(id, a, rows),
        )
        .await
    }

    #[tool(
        name = "upload_asset",
        description = "Upload a binary asset as base64 binary_data to static/{asset_type}/{filename} (filename may be nested). Identical bytes are skipped; over the limit → PAYLOAD_TOO_LARGE.",
        input_schema = input_schema::<UploadAssetArgs>(),
        output_schema = output_schema::<UploadAssetOutput>(),
        annotations(title = "Upload Binary Asset", read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = false)
    )]
    async fn upload_asset(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.call_mut(
            "upload_asset",
            args,
            &ctx,
            |id, req, a| self.op_upload_asset(id, req, a),
            |_, a, rows| self.replay_upload(a, rows),
        )
        .await
    }

    #[tool(
        name = "get_asset",
        description = "Metadata of one asset (size, MIME type, hash, CDN URL); include_binary=true also returns the bytes as base64.",
        input_schema = input_schema::<GetAssetArgs>(),
        output_schema = output_schema::<AssetInfo>(),
        annotations(title = "Get Asset Metadata", read_only_hint = true, open_world_hint = false)
    )]
    async fn get_asset(&self, args: JsonObject, ctx: RequestContext<RoleServer>) -> CallToolResult {
        self.call("get_asset", Need::Read, args, &ctx, |id, a| {
            self.op_get_asset(id, a)
        })
        .await
    }

    #[tool(
        name = "list_assets",
        description = "List a book's assets (recursively), optionally of one asset_type.",
        input_schema = input_schema::<ListAssetsArgs>(),
        output_schema = output_schema::<ListAssetsOutput>(),
        annotations(title = "List Book Assets", read_only_hint = true, open_world_hint = false)
    )]
    async fn list_assets(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.call("list_assets", Need::Read, args, &ctx, |id, a| {
            self.op_list_assets(id, a)
        })
        .await
    }

    #[tool(
        name = "delete_asset",
        description = "Delete an asset (idempotent: deleting a missing asset succeeds with existed=false).",
        input_schema = input_schema::<DeleteAssetArgs>(),
        output_schema = output_schema::<DeleteOutput>(),
        annotations(title = "Delete Asset", read_only_hint = false, destructive_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn delete_asset(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.call_mut(
            "delete_asset",
            args,
            &ctx,
            |id, req, a| self.op_delete_asset(id, req, a),
            |_, a, rows| self.replay_delete_asset(a, rows),
        )
        .await
    }

    #[tool(
        name = "list_books",
        description = "List books (or one book_id); include_structure adds the content tree, the assets or all.",
        input_schema = input_schema::<ListBooksArgs>(),
        output_schema = output_schema::<ListBooksOutput>(),
        annotations(title = "List Books", read_only_hint = true, open_world_hint = false)
    )]
    async fn list_books(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.call("list_books", Need::Read, args, &ctx, |id, a| {
            self.op_list_books(id, a)
        })
        .await
    }

    #[tool(
        name = "glob_search",
        description = "Find files whose book-relative path matches a glob (`*`, `**`, `?`, `[abc]`), e.g. content/**/*.md; with all_books it starts with the book id (*/content/**/*.md). Covers base plus your own overlay. Returns paths read_content takes.",
        input_schema = input_schema::<GlobSearchArgs>(),
        output_schema = output_schema::<GlobSearchOutput>(),
        annotations(title = "Search Files by Pattern", read_only_hint = true, open_world_hint = false)
    )]
    async fn glob_search(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.call("glob_search", Need::Read, args, &ctx, |id, a| {
            self.op_glob_search(id, a)
        })
        .await
    }

    #[tool(
        name = "grep_search",
        description = "Search content files line by line with a regular expression (Rust regex syntax): up to max_results matches (truncated=true when cut). Covers base plus your own overlay.",
        input_schema = input_schema::<GrepSearchArgs>(),
        output_schema = output_schema::<GrepSearchOutput>(),
        annotations(title = "Search Content by Regex", read_only_hint = true, open_world_hint = false)
    )]
    async fn grep_search(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let cancel = ctx.ct.clone();
        self.call("grep_search", Need::Read, args, &ctx, |id, a| {
            self.op_grep_search(id, a, cancel)
        })
        .await
    }

    #[tool(
        name = "get_book_archive",
        description = "A signed short-lived URL to download the book as a ZIP, plus counts. user_id (yours unless admin) merges that overlay. A partial ZIP has _archive_partial.json: resume with start_after.",
        input_schema = input_schema::<GetBookArchiveArgs>(),
        output_schema = output_schema::<ArchiveOutput>(),
        annotations(title = "Get Book Archive", read_only_hint = true, open_world_hint = false)
    )]
    async fn get_book_archive(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.call("get_book_archive", Need::Read, args, &ctx, |id, a| {
            self.op_get_book_archive(id, a)
        })
        .await
    }

    #[tool(
        name = "validate_book",
        description = "Check every file of a book against the book's schema profile and report errors (with suggestions) and warnings. strict=true stops at the first error.",
        input_schema = input_schema::<ValidateBookArgs>(),
        output_schema = output_schema::<ValidateOutput>(),
        annotations(title = "Validate Book Schema", read_only_hint = true, open_world_hint = false)
    )]
    async fn validate_book(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.call("validate_book", Need::Read, args, &ctx, |id, a| {
            self.op_validate_book(id, a)
        })
        .await
    }

    #[tool(
        name = "delta_build",
        description = "Files written after `since` (ISO 8601), newest first; with user_id also that user's overlay changes. Deletions are not visible here: use plan_build for exact deltas.",
        input_schema = input_schema::<DeltaBuildArgs>(),
        output_schema = output_schema::<DeltaBuildOutput>(),
        annotations(title = "Delta Build Detection", read_only_hint = true, open_world_hint = false)
    )]
    async fn delta_build(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.call("delta_build", Need::Read, args, &ctx, |id, a| {
            self.op_delta_build(id, a)
        })
        .await
    }

    #[tool(
        name = "plan_build",
        description = "Compare the book with your last build (target_manifest_hash): files to download (added, modified) and delete (deleted). Store the returned manifest_hash once applied.",
        input_schema = input_schema::<PlanBuildArgs>(),
        output_schema = output_schema::<PlanBuildOutput>(),
        annotations(title = "Plan Build (Manifest Delta)", read_only_hint = true, open_world_hint = false)
    )]
    async fn plan_build(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.call("plan_build", Need::Read, args, &ctx, |id, a| {
            self.op_plan_build(id, a)
        })
        .await
    }

    #[tool(
        name = "query_audit_log",
        description = "Audit rows, newest first, filtered by agent_id, operation, book_id, path_pattern (* wildcard), since/until (ISO 8601), status; next_cursor pages. Needs the admin scope.",
        input_schema = input_schema::<QueryAuditLogArgs>(),
        output_schema = output_schema::<AuditPageOut>(),
        annotations(title = "Query Audit Log", read_only_hint = true, open_world_hint = false)
    )]
    async fn query_audit_log(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.call("query_audit_log", Need::Admin, args, &ctx, |id, a| {
            self.op_query_audit_log(id, a)
        })
        .await
    }

    #[tool(
        name = "verify_audit_chain",
        description = "Verify the tamper-evident audit row chain and the per-file hash chains (entry[n].new_hash == entry[n+1].prev_hash). Needs the admin scope.",
        input_schema = input_schema::<VerifyAuditChainArgs>(),
        output_schema = output_schema::<ChainReportOut>(),
        annotations(title = "Verify Audit Chain", read_only_hint = true, open_world_hint = false)
    )]
    async fn verify_audit_chain(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.call("verify_audit_chain", Need::Admin, args, &ctx, |id, a| {
            self.op_verify_audit_chain(id, a)
        })
        .await
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for PfsTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("panaversity_fs", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "PanaversityFS book store. Read with read_content, update with write_content carrying \
                 expected_hash = the file_hash_sha256 you read. Errors are JSON {\"error\":{\"code\",\"message\"}}.",
            )
    }
}
