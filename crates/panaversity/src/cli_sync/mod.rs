//! `panaversity fs ingest` and `panaversity fs hydrate`: the Docusaurus build pipeline.
//!
//! Both commands talk to a running server over MCP Streamable HTTP (one JSON-RPC `tools/call`
//! per POST to `{url}/mcp`), the way the pipeline reaches production.
//!
//! Mapping between a docs tree and a book (the same in both directions, so ingest → hydrate
//! reproduces the tree byte for byte):
//! * `DOCS/<rel>` ↔ `content/<rel>` for every text file (UTF-8) the book's profile admits under
//!   `content/` (pages, `_category_.json`, SVG, …), written with `write_content`.
//! * binary files co-located in the docs tree (images, PDFs, media: files whose extension is a
//!   binary type, or whose bytes are not UTF-8) ↔ `static/images/content/<rel>`, written with
//!   `upload_asset` and read with `get_asset`, because the MCP content tools carry UTF-8 text
//!   only. The `static/images/content/` prefix is reserved for them.
//! * with `--static-dir STATIC`: `STATIC/<type>/<path>` ↔ `static/<type>/<path>` for the asset
//!   types `images|slides|videos|audio`.
//!
//! `ingest` compares local sha256 hashes with the ones a single `plan_build` returns and writes
//! only what changed (updates carry `expected_hash`, so a concurrent edit is reported as a
//! conflict instead of being overwritten). `hydrate` applies `plan_build(target_manifest_hash)`
//! to an output directory and saves the new manifest only when every file was applied.

mod archive;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use clap::{Args, ValueEnum};
use futures::StreamExt;
use pfs::storage::sha256_hex;
use pfs::{BookId, BookPath, Profile};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::Common;

/// Book-path prefix of binary files co-located with the pages of a docs tree.
pub const COLOCATED_PREFIX: &str = "static/images/content/";

/// Extensions (lower case) of files that are always carried as bytes, never as text.
const BINARY_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "webp", "avif", "ico", "bmp", "tif", "tiff", "pdf", "mp4", "webm",
    "mov", "mp3", "wav", "ogg", "zip", "gz", "woff", "woff2", "ttf", "otf",
];

/// Directory names never scanned (besides every name starting with `.`).
const SKIP_DIRS: &[&str] = &["node_modules", "__pycache__", "build", "dist"];

/// Default server URL.
const DEFAULT_URL: &str = "http://127.0.0.1:8000";

/// Connection settings shared by `ingest` and `hydrate`.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Server base URL (`/mcp` is appended when missing).
    #[arg(long, env = "PANAVERSITY_MCP_URL", default_value = DEFAULT_URL)]
    pub url: String,
    /// API key or JWT, sent as `Authorization: Bearer …`.
    #[arg(long, env = "PANAVERSITY_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The book to sync (`^[a-z0-9-]{3,50}$`).
    #[arg(long, env = "PANAVERSITY_BOOK_ID")]
    pub book_id: String,
    /// Timeout of one MCP request, in seconds.
    #[arg(long, env = "PANAVERSITY_MCP_TIMEOUT", default_value_t = 120)]
    pub timeout: u64,
    /// Retries of a transient failure (connect error, timeout, HTTP 429/5xx, STORAGE_UNAVAILABLE),
    /// with exponential backoff.
    #[arg(long, env = "PANAVERSITY_MCP_RETRIES", default_value_t = 3)]
    pub retries: u32,
    /// Files transferred at the same time.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Schema profile named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProfileArg {
    /// `content/{NN-Name}/{NN-Name}/{NN-name}(.summary)?.md` only.
    Strict,
    /// A real Docusaurus docs tree.
    Docusaurus,
}

impl From<ProfileArg> for Profile {
    fn from(p: ProfileArg) -> Profile {
        match p {
            ProfileArg::Strict => Profile::Strict,
            ProfileArg::Docusaurus => Profile::Docusaurus,
        }
    }
}

/// `panaversity fs ingest`: upload a Docusaurus docs tree into a book (changed files only).
#[derive(Debug, Clone, Args)]
pub struct IngestArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The docs tree (e.g. `apps/learn-app/docs`).
    #[arg(long, env = "PANAVERSITY_SOURCE_DIR")]
    pub source_dir: PathBuf,
    /// The site's static directory: `STATIC/{images|slides|videos|audio}/…` ↔ `static/…`.
    #[arg(long, env = "PANAVERSITY_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,
    /// Profile the book must have. An existing book keeps its own profile (a different value is
    /// an error); a new book is created by the server with its default profile, which must match.
    /// Default: docusaurus.
    #[arg(long, value_enum)]
    pub profile: Option<ProfileArg>,
    /// Show what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Delete files that are in the book but not in the tree (otherwise only reported).
    #[arg(long)]
    pub delete: bool,
}

/// `panaversity fs hydrate`: bring a local docs tree up to date with a book.
#[derive(Debug, Clone, Args)]
pub struct HydrateArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Where the docs tree is written (`content/<rel>` → `DIR/<rel>`).
    #[arg(long, env = "PANAVERSITY_OUTPUT_DIR")]
    pub output_dir: PathBuf,
    /// Where `static/{type}/…` assets are written; without it they are skipped.
    #[arg(long, env = "PANAVERSITY_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,
    /// The build manifest of the last successful hydrate.
    #[arg(
        long,
        env = "PANAVERSITY_MANIFEST_FILE",
        default_value = ".panaversity/manifest.json"
    )]
    pub manifest_file: PathBuf,
    /// Ignore (and delete) the manifest and download every file.
    #[arg(long)]
    pub full_rebuild: bool,
    /// Full hydrates download the book's ZIP (resuming time-budgeted partial archives) instead
    /// of reading file by file; incremental ones still fetch only what changed.
    #[arg(long, env = "PANAVERSITY_HYDRATE_FROM_ARCHIVE", num_args = 0..=1, default_missing_value = "true", default_value = "false", action = clap::ArgAction::Set, value_parser = crate::config::bool_value)]
    pub from_archive: bool,
}

// ---------------------------------------------------------------------------------------------
// MCP client
// ---------------------------------------------------------------------------------------------

/// Why a tool call failed.
#[derive(Debug, Clone)]
pub enum CallError {
    /// The tool answered `isError: true`; `error` is the `{"code","message",…}` object.
    Tool {
        code: String,
        message: String,
        error: Value,
    },
    /// HTTP, JSON-RPC or decoding failure.
    Transport { message: String, transient: bool },
}

impl CallError {
    /// Whether retrying may help.
    pub fn transient(&self) -> bool {
        match self {
            CallError::Tool { code, .. } => code == "STORAGE_UNAVAILABLE",
            CallError::Transport { transient, .. } => *transient,
        }
    }

    /// The stable error code of a tool error.
    pub fn code(&self) -> Option<&str> {
        match self {
            CallError::Tool { code, .. } => Some(code),
            CallError::Transport { .. } => None,
        }
    }

    /// `current_hash` of a CONFLICT / HASH_REQUIRED error.
    fn current_hash(&self) -> Option<&str> {
        match self {
            CallError::Tool { error, .. } => error.get("current_hash").and_then(Value::as_str),
            CallError::Transport { .. } => None,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Tool { code, message, .. } => write!(f, "{code}: {message}"),
            CallError::Transport { message, .. } => f.write_str(message),
        }
    }
}

impl std::error::Error for CallError {}

/// The tools that change the store (their calls carry a `request_id`, see [`McpClient::call`]).
const MUTATING_TOOLS: [&str; 6] = [
    "write_content",
    "edit_content",
    "move_content",
    "delete_content",
    "upload_asset",
    "delete_asset",
];

/// A minimal MCP Streamable HTTP client: stateless `tools/call` requests with retries.
pub struct McpClient {
    http: reqwest::Client,
    url: String,
    bearer: Option<String>,
    retries: u32,
    next_id: AtomicU64,
    /// Calls in a row that failed transiently even after every retry; at
    /// [`GIVE_UP_AFTER`] the server is considered down and further calls fail at once.
    exhausted: AtomicU64,
}

/// Consecutive calls that exhausted their retries before the client stops trying.
const GIVE_UP_AFTER: u64 = 3;

/// `{base}/mcp` unless the URL already ends with `/mcp`.
pub fn mcp_endpoint(url: &str) -> String {
    let base = url.trim().trim_end_matches('/');
    if base.ends_with("/mcp") {
        base.to_string()
    } else {
        format!("{base}/mcp")
    }
}

impl McpClient {
    /// A client for the server named by `args`.
    pub fn new(args: &ServerArgs) -> anyhow::Result<McpClient> {
        let timeout = Duration::from_secs(args.timeout.max(1));
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(usize::from(args.concurrency) * 2)
            .build()
            .context("building the HTTP client")?;
        let bearer = args
            .api_key
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_string);
        Ok(McpClient {
            http,
            url: mcp_endpoint(&args.url),
            bearer,
            retries: args.retries,
            next_id: AtomicU64::new(1),
            exhausted: AtomicU64::new(0),
        })
    }

    /// Call `tool` with (flat) `args`, retrying transient failures; the structured result. A
    /// mutating call gets a fresh `request_id` shared by its retries, so a retry of a change
    /// whose reply was lost is answered with its first outcome instead of writing again (or
    /// failing as a conflict with itself).
    pub async fn call(&self, tool: &str, mut args: Value) -> Result<Value, CallError> {
        if MUTATING_TOOLS.contains(&tool)
            && let Some(obj) = args.as_object_mut()
        {
            obj.entry("request_id")
                .or_insert_with(|| json!(uuid::Uuid::new_v4().to_string()));
        }
        if self.exhausted.load(Ordering::Relaxed) >= GIVE_UP_AFTER {
            return Err(CallError::Transport {
                message: format!(
                    "{tool}: not attempted: {GIVE_UP_AFTER} calls in a row failed after {} retries (is the server down?)",
                    self.retries
                ),
                transient: false,
            });
        }
        let mut attempt = 0u32;
        loop {
            match self.call_once(tool, &args).await {
                Err(e) if e.transient() && attempt < self.retries => {
                    tracing::debug!(tool, attempt, error = %e, "transient failure; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) if e.transient() => {
                    self.exhausted.fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
                other => {
                    self.exhausted.store(0, Ordering::Relaxed);
                    return other;
                }
            }
        }
    }

    async fn call_once(&self, tool: &str, args: &Value) -> Result<Value, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({
            "jsonrpc": "2.0",
            "id": id,
            "method": "tools/call",
            "params": {"name": tool, "arguments": args},
        });
        let mut req = self
            .http
            .post(&self.url)
            .header(
                reqwest::header::ACCEPT,
                "application/json, text/event-stream",
            )
            .json(&body);
        if let Some(b) = &self.bearer {
            req = req.bearer_auth(b);
        }
        let transport = |message: String, transient: bool| CallError::Transport {
            message: format!("{tool}: {message}"),
            transient,
        };
        let resp = req.send().await.map_err(|e| {
            transport(
                format!("cannot reach {}: {}", self.url, error_chain(&e)),
                e.is_connect() || e.is_timeout() || e.is_request() || e.is_body(),
            )
        })?;
        let status = resp.status();
        let is_sse = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| transport(format!("reading the response: {}", error_chain(&e)), true))?;
        if !status.is_success() {
            let snippet = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).to_string();
            let hint = match status.as_u16() {
                401 => " (check --api-key / PANAVERSITY_API_KEY)",
                403 => " (the key lacks the scope this needs: ingest needs write)",
                _ => "",
            };
            return Err(transport(
                format!("HTTP {status}{hint}: {snippet}"),
                status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408,
            ));
        }
        let msg = if is_sse {
            sse_response(&bytes, id)
                .ok_or_else(|| transport("no JSON-RPC response in the event stream".into(), true))?
        } else {
            serde_json::from_slice::<Value>(&bytes).map_err(|e| {
                transport(
                    format!(
                        "response is not JSON ({e}): {}",
                        String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                    ),
                    false,
                )
            })?
        };
        if let Some(err) = msg.get("error") {
            return Err(transport(format!("JSON-RPC error {err}"), false));
        }
        let result = msg
            .get("result")
            .ok_or_else(|| transport("JSON-RPC response without a result".into(), false))?;
        let text = result
            .get("content")
            .and_then(Value::as_array)
            .and_then(|c| c.iter().find_map(|i| i.get("text").and_then(Value::as_str)));
        if result.get("isError").and_then(Value::as_bool) == Some(true) {
            let parsed: Value = text
                .and_then(|t| serde_json::from_str(t).ok())
                .unwrap_or(Value::Null);
            let error = parsed.get("error").cloned().unwrap_or(Value::Null);
            return Err(CallError::Tool {
                code: error
                    .get("code")
                    .and_then(Value::as_str)
                    .unwrap_or("UNKNOWN")
                    .to_string(),
                message: error
                    .get("message")
                    .and_then(Value::as_str)
                    .or(text)
                    .unwrap_or("tool error without a message")
                    .to_string(),
                error,
            });
        }
        if let Some(v) = result.get("structuredContent").filter(|v| v.is_object()) {
            return Ok(v.clone());
        }
        text.and_then(|t| serde_json::from_str(t).ok())
            .ok_or_else(|| {
                transport(
                    "result has neither structured nor JSON text content".into(),
                    false,
                )
            })
    }
}

/// The JSON-RPC response with `id` in an SSE body (`data:` lines, events separated by blank lines).
fn sse_response(body: &[u8], id: u64) -> Option<Value> {
    let text = String::from_utf8_lossy(body);
    let mut data = String::new();
    let mut found = None;
    let mut flush = |data: &mut String| {
        if let Ok(v) = serde_json::from_str::<Value>(data)
            && v.get("id").and_then(Value::as_u64) == Some(id)
        {
            found = Some(v);
        }
        data.clear();
    };
    for line in text.lines() {
        if line.is_empty() {
            flush(&mut data);
        } else if let Some(d) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(d.strip_prefix(' ').unwrap_or(d));
        }
    }
    flush(&mut data);
    found
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// 300 ms, 600 ms, 1.2 s, … (capped at 8 s) plus up to 25% jitter.
fn backoff(attempt: u32) -> Duration {
    let base = 300u64.saturating_mul(1 << attempt.min(5)).min(8_000);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    Duration::from_millis(base + u64::from(nanos) % (base / 4 + 1))
}

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

fn lower_ext(name: &str) -> Option<String> {
    name.rsplit_once('.')
        .filter(|(stem, _)| !stem.is_empty())
        .map(|(_, e)| e.to_ascii_lowercase())
}

/// The docs-tree relative path of a `content/<rel>` or co-located `static/images/content/<rel>`
/// book path.
fn docs_rel(path: &str) -> Option<&str> {
    path.strip_prefix("content/")
        .or_else(|| path.strip_prefix(COLOCATED_PREFIX))
}

/// `(asset_type, filename)` of a `static/{type}/{filename}` book path.
fn asset_parts(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("static/")?;
    let (ty, file) = rest.split_once('/')?;
    pfs::path::ASSET_TYPES
        .contains(&ty)
        .then_some((ty, file))
        .filter(|(_, f)| !f.is_empty())
}

fn progress_bar(len: usize, quiet: bool, what: &str) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len as u64);
    let style = indicatif::ProgressStyle::with_template(
        "{msg:10} [{bar:32.cyan/blue}] {pos}/{len} files ({per_sec}, eta {eta})",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    pb.set_style(style);
    pb.set_message(what.to_string());
    pb
}

fn parse_book(id: &str) -> anyhow::Result<BookId> {
    BookId::parse(id).map_err(|e| anyhow::anyhow!("--book-id {id:?}: {e}"))
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Write `bytes` to `path` through a temporary file in the same directory and a rename, so a
/// reader never sees a half-written file. `durable` also fsyncs the file first.
async fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    tokio::fs::create_dir_all(&dir).await?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.pv-tmp-{}-{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = async {
        let mut f = tokio::fs::File::create(&tmp).await?;
        f.write_all(bytes).await?;
        if durable {
            f.sync_all().await?;
        } else {
            f.flush().await?;
        }
        drop(f);
        tokio::fs::rename(&tmp, path).await
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

/// One file that could not be handled.
#[derive(Debug, Clone, Serialize)]
pub struct FileProblem {
    pub path: String,
    pub error: String,
}

fn print_problems(title: &str, items: &[FileProblem]) {
    if items.is_empty() {
        return;
    }
    eprintln!("{title} ({}):", items.len());
    for p in items.iter().take(50) {
        eprintln!("  {}: {}", p.path, p.error);
    }
    if items.len() > 50 {
        eprintln!("  … and {} more (use --json for all)", items.len() - 50);
    }
}

/// `plan_build` result (the fields the pipeline uses).
#[derive(Debug, Deserialize)]
struct Plan {
    status: String,
    manifest_hash: String,
    files: Vec<PlanFile>,
    total_files: usize,
    #[serde(default)]
    warning: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PlanFile {
    path: String,
    current_hash: Option<String>,
    #[serde(default)]
    change_type: Option<String>,
}

impl Plan {
    /// The plan of a book that does not exist yet.
    fn empty() -> Plan {
        Plan {
            status: "new".into(),
            manifest_hash: String::new(),
            files: Vec::new(),
            total_files: 0,
            warning: None,
        }
    }
}

impl PlanFile {
    /// Whether applying this entry removes a file.
    fn is_deletion(&self) -> bool {
        self.change_type.as_deref() == Some("deleted") || self.current_hash.is_none()
    }
}

async fn plan_build(mcp: &McpClient, book: &str, target: Option<&str>) -> anyhow::Result<Plan> {
    let mut args = json!({ "book_id": book });
    if let Some(t) = target {
        args["target_manifest_hash"] = json!(t);
    }
    let v = mcp
        .call("plan_build", args)
        .await
        .with_context(|| format!("plan_build for book {book}"))?;
    serde_json::from_value(v).context("decoding the plan_build result")
}

// ---------------------------------------------------------------------------------------------
// ingest
// ---------------------------------------------------------------------------------------------

/// How a local file travels.
#[derive(Debug, Clone)]
enum Carrier {
    /// `write_content` (UTF-8 text under `content/`).
    Text,
    /// `upload_asset` / `get_asset` (bytes under `static/{type}/`).
    Asset,
}

#[derive(Debug, Clone)]
struct LocalFile {
    book_path: String,
    file: PathBuf,
    sha256: String,
    carrier: Carrier,
}

#[derive(Debug, Default)]
struct Scan {
    files: BTreeMap<String, LocalFile>,
    skipped: Vec<FileProblem>,
    failed: Vec<FileProblem>,
}

/// Every regular file below `root` as (relative `/`-joined path, full path), sorted.
fn walk(root: &Path, skipped: &mut Vec<FileProblem>) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), root.to_path_buf())];
    while let Some((rel, dir)) = stack.pop() {
        let entries = std::fs::read_dir(&dir)
            .with_context(|| format!("reading directory {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("reading directory {}", dir.display()))?;
            let os_name = entry.file_name();
            let child_path = entry.path();
            let Some(name) = os_name.to_str() else {
                skipped.push(FileProblem {
                    path: child_path.display().to_string(),
                    error: "file name is not UTF-8".into(),
                });
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let child_rel = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            let ft = entry
                .file_type()
                .with_context(|| format!("inspecting {}", child_path.display()))?;
            // Follow symlinks to files; never descend into symlinked directories (no cycles).
            let is_file = if ft.is_symlink() {
                std::fs::metadata(&child_path).is_ok_and(|m| m.is_file())
            } else {
                ft.is_file()
            };
            if ft.is_dir() {
                if !SKIP_DIRS.contains(&name) {
                    stack.push((child_rel, child_path));
                }
            } else if is_file {
                out.push((child_rel, child_path));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Scan the docs tree (and the static dir) into book paths admitted by `profile`.
fn scan(source: &Path, static_dir: Option<&Path>, profile: Profile) -> anyhow::Result<Scan> {
    let mut s = Scan::default();
    for (rel, file) in walk(source, &mut s.skipped)? {
        let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        let content_path = format!("content/{rel}");
        let admitted = BookPath::parse(&content_path)
            .map_err(|e| e.to_string())
            .and_then(|bp| profile.check(&bp).map_err(|e| e.to_string()));
        if let Err(reason) = admitted {
            s.skipped.push(FileProblem {
                path: rel,
                error: reason,
            });
            continue;
        }
        let binary_ext = lower_ext(&rel).is_some_and(|e| BINARY_EXTENSIONS.contains(&e.as_str()));
        let utf8 = std::str::from_utf8(&bytes).is_ok();
        let (book_path, carrier) = if !binary_ext && utf8 {
            (content_path, Carrier::Text)
        } else if pfs::schema::is_page(&rel) || rel.ends_with(".json") {
            s.failed.push(FileProblem {
                path: rel,
                error: "not UTF-8 text; pages and category files must be UTF-8".into(),
            });
            continue;
        } else {
            let p = format!("{COLOCATED_PREFIX}{rel}");
            if let Err(e) = BookPath::parse_asset(&p) {
                s.skipped.push(FileProblem {
                    path: rel,
                    error: e.to_string(),
                });
                continue;
            }
            (p, Carrier::Asset)
        };
        s.files.insert(
            book_path.clone(),
            LocalFile {
                book_path,
                file,
                sha256: sha256_hex(&bytes),
                carrier,
            },
        );
    }
    if let Some(dir) = static_dir {
        for (rel, file) in walk(dir, &mut s.skipped)? {
            let p = format!("static/{rel}");
            let shown = format!("{}/{rel}", dir.display());
            if p.starts_with(COLOCATED_PREFIX) {
                s.skipped.push(FileProblem {
                    path: shown,
                    error: format!(
                        "{COLOCATED_PREFIX} is reserved for images co-located with the pages"
                    ),
                });
                continue;
            }
            let admitted = BookPath::parse_asset(&p)
                .map_err(|e| e.to_string())
                .and_then(|bp| profile.check(&bp).map_err(|e| e.to_string()));
            if let Err(reason) = admitted {
                s.skipped.push(FileProblem {
                    path: shown,
                    error: reason,
                });
                continue;
            }
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            s.files.insert(
                p.clone(),
                LocalFile {
                    book_path: p,
                    file,
                    sha256: sha256_hex(&bytes),
                    carrier: Carrier::Asset,
                },
            );
        }
    }
    Ok(s)
}

/// What ingest does to one path.
#[derive(Debug, Clone)]
enum Action {
    Add(LocalFile),
    Update(LocalFile, String),
    Delete(String),
}

impl Action {
    fn path(&self) -> &str {
        match self {
            Action::Add(f) | Action::Update(f, _) => &f.book_path,
            Action::Delete(p) => p,
        }
    }
}

#[derive(Debug)]
enum Outcome {
    Added,
    Updated,
    /// The server already held these bytes (e.g. a retried write that had succeeded).
    Unchanged,
    Deleted,
    Conflict(String),
    Failed(String),
}

/// The summary of an ingest run.
#[derive(Debug, Default, Serialize)]
pub struct IngestSummary {
    pub book_id: String,
    pub profile: String,
    pub dry_run: bool,
    pub added: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub deleted: usize,
    /// Files in the book but not in the tree, left alone (no `--delete`).
    pub extra: usize,
    pub skipped: usize,
    pub conflicts: usize,
    pub failed: usize,
    pub extra_files: Vec<String>,
    pub skipped_files: Vec<FileProblem>,
    pub conflict_files: Vec<FileProblem>,
    pub failed_files: Vec<FileProblem>,
}

/// Which profile to ingest with: the existing book's, or (new book) the server's default, which
/// must match the requested one.
async fn resolve_profile(
    mcp: &McpClient,
    book: &str,
    wanted: Option<ProfileArg>,
    dry_run: bool,
) -> anyhow::Result<Profile> {
    // A book that does not exist yet answers NOT_FOUND: ingest creates it.
    let listed = match mcp.call("list_books", json!({ "book_id": book })).await {
        Ok(v) => v,
        Err(e) if e.code() == Some("NOT_FOUND") => json!({ "books": [] }),
        Err(e) => return Err(anyhow::Error::new(e).context("list_books")),
    };
    let existing = listed
        .get("books")
        .and_then(Value::as_array)
        .and_then(|b| {
            b.iter()
                .find(|i| i.get("book_id").and_then(Value::as_str) == Some(book))
        })
        .and_then(|i| i.get("profile").and_then(Value::as_str))
        .map(Profile::parse)
        .transpose()
        .context("list_books returned an unknown profile")?;
    if let Some(p) = existing {
        if let Some(w) = wanted.map(Profile::from)
            && w != p
        {
            bail!(
                "book {book} has profile {p}, not {w}; ingest with --profile {p} (or change the book's profile on the server)"
            );
        }
        return Ok(p);
    }
    let wanted = wanted.map(Profile::from).unwrap_or(Profile::Docusaurus);
    // validate_book on a missing book reports the profile the server gives new books.
    let report = mcp
        .call("validate_book", json!({ "book_id": book }))
        .await
        .context("validate_book")?;
    let server_default = report
        .get("profile")
        .and_then(Value::as_str)
        .map(Profile::parse)
        .transpose()
        .context("validate_book returned an unknown profile")?
        .unwrap_or(Profile::Strict);
    if server_default != wanted {
        let msg = format!(
            "book {book} does not exist yet and this server creates new books with profile {server_default}, not {wanted}; \
             start the server with --default-profile {wanted} (PANAVERSITY_DEFAULT_PROFILE), or ingest with --profile {server_default}"
        );
        if dry_run {
            eprintln!("warning: {msg}");
        } else {
            bail!(msg);
        }
    }
    Ok(wanted)
}

/// Run `panaversity fs ingest`.
pub async fn ingest(_common: &Common, args: IngestArgs) -> anyhow::Result<ExitCode> {
    let book = parse_book(&args.server.book_id)?;
    let book = book.as_str().to_string();
    anyhow::ensure!(
        args.source_dir.is_dir(),
        "--source-dir {} is not a directory",
        args.source_dir.display()
    );
    if let Some(d) = &args.static_dir {
        anyhow::ensure!(
            d.is_dir(),
            "--static-dir {} is not a directory",
            d.display()
        );
    }
    let mcp = McpClient::new(&args.server)?;
    let profile = resolve_profile(&mcp, &book, args.profile, args.dry_run).await?;

    let source = args.source_dir.clone();
    let static_dir = args.static_dir.clone();
    let scan = tokio::task::spawn_blocking(move || scan(&source, static_dir.as_deref(), profile))
        .await
        .context("scanning the source tree")??;
    // A new book (NOT_FOUND) has nothing remote yet.
    let plan = match plan_build(&mcp, &book, None).await {
        Ok(p) => p,
        Err(e) if e.downcast_ref::<CallError>().and_then(CallError::code) == Some("NOT_FOUND") => {
            Plan::empty()
        }
        Err(e) => return Err(e),
    };
    let remote: BTreeMap<String, String> = plan
        .files
        .into_iter()
        .filter_map(|f| f.current_hash.map(|h| (f.path, h.to_ascii_lowercase())))
        .collect();

    let mut summary = IngestSummary {
        book_id: book.clone(),
        profile: profile.to_string(),
        dry_run: args.dry_run,
        skipped_files: scan.skipped,
        failed_files: scan.failed,
        ..Default::default()
    };
    let mut actions = Vec::new();
    for (path, local) in &scan.files {
        match remote.get(path) {
            None => actions.push(Action::Add(local.clone())),
            Some(h) if *h == local.sha256 => summary.unchanged += 1,
            Some(h) => actions.push(Action::Update(local.clone(), h.clone())),
        }
    }
    let managed = |p: &str| {
        p.starts_with("content/")
            || p.starts_with(COLOCATED_PREFIX)
            || (args.static_dir.is_some() && p.starts_with("static/"))
    };
    let local_paths: BTreeSet<&String> = scan.files.keys().collect();
    let local_docs: BTreeSet<&str> = scan.files.keys().filter_map(|p| docs_rel(p)).collect();
    for path in remote.keys() {
        if managed(path) && !local_paths.contains(path) {
            // The same docs file under the other carrier (text ↔ binary) is a move, not a
            // removal: the stale copy goes even without --delete (both map to one local file).
            let moved = docs_rel(path).is_some_and(|r| local_docs.contains(r));
            if args.delete || moved {
                actions.push(Action::Delete(path.clone()));
            } else {
                summary.extra_files.push(path.clone());
            }
        }
    }

    if args.dry_run {
        for a in &actions {
            match a {
                Action::Add(_) => summary.added += 1,
                Action::Update(..) => summary.updated += 1,
                Action::Delete(_) => summary.deleted += 1,
            }
            if !args.server.quiet && !args.server.json {
                let verb = match a {
                    Action::Add(_) => "add",
                    Action::Update(..) => "update",
                    Action::Delete(_) => "delete",
                };
                println!("would {verb} {}", a.path());
            }
        }
    } else {
        let pb = progress_bar(actions.len(), args.server.quiet, "ingest");
        let mcp_ref = &mcp;
        let book_ref = book.as_str();
        let mut results = futures::stream::iter(actions.into_iter().map(|a| async move {
            let path = a.path().to_string();
            (path, apply_action(mcp_ref, book_ref, a).await)
        }))
        .buffer_unordered(usize::from(args.server.concurrency));
        while let Some((path, outcome)) = results.next().await {
            pb.inc(1);
            match outcome {
                Outcome::Added => summary.added += 1,
                Outcome::Updated => summary.updated += 1,
                Outcome::Unchanged => summary.unchanged += 1,
                Outcome::Deleted => summary.deleted += 1,
                Outcome::Conflict(error) => {
                    summary.conflict_files.push(FileProblem { path, error })
                }
                Outcome::Failed(error) => summary.failed_files.push(FileProblem { path, error }),
            }
        }
        pb.finish_and_clear();
    }
    summary.extra = summary.extra_files.len();
    summary.skipped = summary.skipped_files.len();
    summary.conflicts = summary.conflict_files.len();
    summary.failed = summary.failed_files.len();
    summary.conflict_files.sort_by(|a, b| a.path.cmp(&b.path));
    summary.failed_files.sort_by(|a, b| a.path.cmp(&b.path));

    if args.server.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_problems(
            "skipped (not admitted by the book's profile)",
            &summary.skipped_files,
        );
        print_problems(
            "conflicts (changed on the server since it was read; not overwritten)",
            &summary.conflict_files,
        );
        print_problems("failed", &summary.failed_files);
        if !summary.extra_files.is_empty() {
            eprintln!(
                "{} file(s) are in the book but not in the tree (use --delete to remove them):",
                summary.extra
            );
            for p in summary.extra_files.iter().take(50) {
                eprintln!("  {p}");
            }
        }
        println!(
            "{}book {} ({}): added {}, updated {}, unchanged {}, deleted {}, failed {}{}{}",
            if args.dry_run { "dry run: " } else { "" },
            summary.book_id,
            summary.profile,
            summary.added,
            summary.updated,
            summary.unchanged,
            summary.deleted,
            summary.failed + summary.conflicts,
            if summary.skipped > 0 {
                format!(", skipped {}", summary.skipped)
            } else {
                String::new()
            },
            if summary.extra > 0 {
                format!(", not deleted {}", summary.extra)
            } else {
                String::new()
            },
        );
    }
    Ok(if summary.failed + summary.conflicts > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Send one change; never panics, every error becomes an outcome.
async fn apply_action(mcp: &McpClient, book: &str, action: Action) -> Outcome {
    match action {
        Action::Delete(path) => {
            let res = match asset_parts(&path) {
                Some((ty, file)) => {
                    mcp.call(
                        "delete_asset",
                        json!({"book_id": book, "asset_type": ty, "filename": file}),
                    )
                    .await
                }
                None => {
                    mcp.call("delete_content", json!({"book_id": book, "path": path}))
                        .await
                }
            };
            match res {
                Ok(_) => Outcome::Deleted,
                Err(e) => Outcome::Failed(e.to_string()),
            }
        }
        Action::Add(f) => upload(mcp, book, &f, None).await,
        Action::Update(f, current) => upload(mcp, book, &f, Some(&current)).await,
    }
}

async fn upload(mcp: &McpClient, book: &str, f: &LocalFile, expected: Option<&str>) -> Outcome {
    let bytes = match tokio::fs::read(&f.file).await {
        Ok(b) => b,
        Err(e) => return Outcome::Failed(format!("reading {}: {e}", f.file.display())),
    };
    // The file may have changed since the scan: send what is there now, and check it.
    let sha = sha256_hex(&bytes);
    let res = match f.carrier {
        Carrier::Text => {
            let content = match String::from_utf8(bytes) {
                Ok(s) => s,
                Err(_) => return Outcome::Failed("no longer UTF-8 text".into()),
            };
            let mut args = json!({"book_id": book, "path": f.book_path, "content": content});
            if let Some(h) = expected {
                args["expected_hash"] = json!(h);
            }
            mcp.call("write_content", args).await.map(|v| {
                v.get("file_hash")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
        }
        Carrier::Asset => {
            let Some((ty, file)) = asset_parts(&f.book_path) else {
                return Outcome::Failed("not a static/{type}/… asset path".into());
            };
            let data = base64::engine::general_purpose::STANDARD.encode(&bytes);
            mcp.call(
                "upload_asset",
                json!({"book_id": book, "asset_type": ty, "filename": file, "binary_data": data}),
            )
            .await
            .map(|v| {
                v.get("file_hash_sha256")
                    .or_else(|| v.pointer("/asset/file_hash_sha256"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
        }
    };
    match res {
        Ok(Some(h)) if h.eq_ignore_ascii_case(&sha) => {
            if expected.is_some() {
                Outcome::Updated
            } else {
                Outcome::Added
            }
        }
        Ok(Some(h)) => Outcome::Failed(format!(
            "the server stored sha256 {h}, but the local file hashes to {sha}"
        )),
        Ok(None) => Outcome::Failed("the server's answer carries no file hash".into()),
        Err(e)
            if e.current_hash()
                .is_some_and(|h| h.eq_ignore_ascii_case(&sha)) =>
        {
            // The book already holds exactly these bytes (e.g. a retry after a lost response).
            Outcome::Unchanged
        }
        Err(e) if matches!(e.code(), Some("CONFLICT" | "HASH_REQUIRED")) => {
            Outcome::Conflict(format!(
                "{e}; the file changed on the server since this run read it: merge, then ingest again"
            ))
        }
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// hydrate
// ---------------------------------------------------------------------------------------------

/// The build manifest saved by a successful hydrate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BuildManifest {
    pub book_id: String,
    pub manifest_hash: String,
    /// RFC 3339 UTC time of the hydrate.
    pub timestamp: String,
    /// Files in the book at that manifest.
    pub file_count: usize,
    /// Whether `static/…` assets were written too (a run with `--static-dir` after one without
    /// downloads everything again).
    #[serde(default)]
    pub includes_static: bool,
}

/// The manifest at `path`, or why it cannot be used.
async fn load_manifest(path: &Path) -> Result<BuildManifest, String> {
    let bytes = match tokio::fs::read(path).await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err("no manifest yet".into());
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let m: BuildManifest = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not a valid manifest: {e}", path.display()))?;
    let hex64 =
        m.manifest_hash.len() == 64 && m.manifest_hash.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex64 {
        return Err(format!("{} has an invalid manifest_hash", path.display()));
    }
    Ok(m)
}

/// Where a book path lands locally, or `None` when it is not hydrated (assets without
/// `--static-dir`).
fn local_target(
    path: &str,
    out: &Path,
    static_dir: Option<&Path>,
) -> Result<Option<PathBuf>, String> {
    // Server paths are re-checked: nothing may escape the output directories.
    BookPath::parse(path).map_err(|e| format!("refusing unsafe path from the server: {e}"))?;
    let join = |root: &Path, rel: &str| {
        let mut p = root.to_path_buf();
        p.extend(rel.split('/'));
        p
    };
    if let Some(rel) = path.strip_prefix("content/") {
        return Ok(Some(join(out, rel)));
    }
    if let Some(rel) = path.strip_prefix(COLOCATED_PREFIX) {
        return Ok(Some(join(out, rel)));
    }
    match (path.strip_prefix("static/"), static_dir) {
        (Some(rel), Some(dir)) => Ok(Some(join(dir, rel))),
        (Some(_), None) => Ok(None),
        (None, _) => Err(format!("unexpected book path {path}")),
    }
}

/// Remove empty directories from `start` up to (not including) `stop`.
async fn prune_empty_dirs(start: Option<&Path>, stop: &Path) {
    let mut cur = start.map(Path::to_path_buf);
    while let Some(dir) = cur {
        if dir == stop || !dir.starts_with(stop) || tokio::fs::remove_dir(&dir).await.is_err() {
            break;
        }
        cur = dir.parent().map(Path::to_path_buf);
    }
}

/// The summary of a hydrate run.
#[derive(Debug, Default, Serialize)]
pub struct HydrateSummary {
    pub book_id: String,
    /// `unchanged` (nothing to do), `updated` or `failed`.
    pub status: String,
    /// `incremental` (from the saved manifest) or `full`.
    pub mode: String,
    /// Why the run was full, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_reason: Option<String>,
    pub manifest_hash: String,
    pub total_files: usize,
    pub downloaded: usize,
    pub deleted: usize,
    /// Full runs: local files that already had the right bytes.
    pub kept: usize,
    /// Assets not written because no `--static-dir` was given.
    pub skipped: usize,
    pub failed: usize,
    pub manifest_saved: bool,
    pub failed_files: Vec<FileProblem>,
    /// `--from-archive`: how many archive downloads it took (more than one when the server's
    /// time budget cut the ZIP and the rest was resumed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_parts: Option<usize>,
}

impl HydrateSummary {
    fn count(&mut self, path: String, r: Fetch) {
        match r {
            Fetch::Downloaded => self.downloaded += 1,
            Fetch::Deleted => self.deleted += 1,
            Fetch::Kept => self.kept += 1,
            Fetch::Skipped => self.skipped += 1,
            Fetch::Failed(error) => self.failed_files.push(FileProblem { path, error }),
        }
    }
}

#[derive(Debug)]
enum Fetch {
    Downloaded,
    Deleted,
    Kept,
    Skipped,
    Failed(String),
}

/// Run `panaversity fs hydrate`.
pub async fn hydrate(_common: &Common, args: HydrateArgs) -> anyhow::Result<ExitCode> {
    let book = parse_book(&args.server.book_id)?;
    let book = book.as_str().to_string();
    let mcp = McpClient::new(&args.server)?;
    let out = args.output_dir.clone();
    let static_dir = args.static_dir.clone();

    let mut summary = HydrateSummary {
        book_id: book.clone(),
        ..Default::default()
    };
    let previous = if args.full_rebuild {
        // A failed full rebuild must be followed by another full one, not an incremental run
        // from a manifest that no longer describes the directory.
        match tokio::fs::remove_file(&args.manifest_file).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("removing the manifest {}", args.manifest_file.display())
                });
            }
        }
        Err("--full-rebuild".to_string())
    } else {
        match load_manifest(&args.manifest_file).await {
            Ok(m) if m.book_id != book => Err(format!(
                "the manifest is for book {}, not {book}",
                m.book_id
            )),
            Ok(m) if static_dir.is_some() && !m.includes_static => {
                Err("the last hydrate did not write static assets".to_string())
            }
            Ok(_) if !out.is_dir() => Err(format!("{} does not exist", out.display())),
            other => other,
        }
    };
    let target = previous.as_ref().ok().map(|m| m.manifest_hash.clone());
    if let Err(reason) = &previous
        && !args.server.json
        && !args.server.quiet
    {
        eprintln!("full hydrate: {reason}");
    }
    let plan = plan_build(&mcp, &book, target.as_deref()).await?;
    summary.manifest_hash = plan.manifest_hash.clone();
    summary.total_files = plan.total_files;
    let incremental = target.is_some() && plan.warning.is_none();
    summary.mode = if incremental { "incremental" } else { "full" }.into();
    summary.full_reason = match (&previous, &plan.warning) {
        (Err(r), _) => Some(r.clone()),
        (Ok(_), Some(w)) => Some(w.clone()),
        _ => None,
    };
    if target.is_some() && plan.status == "unchanged" {
        summary.status = "unchanged".into();
        if args.server.json {
            println!("{}", serde_json::to_string_pretty(&summary)?);
        } else {
            println!(
                "book {book} is up to date (manifest {}); nothing to do",
                plan.manifest_hash
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(w) = &plan.warning
        && !args.server.json
    {
        eprintln!("warning: {w}");
    }
    tokio::fs::create_dir_all(&out)
        .await
        .with_context(|| format!("creating {}", out.display()))?;

    let verify_local = !incremental && !args.full_rebuild;
    let pb = progress_bar(plan.files.len(), args.server.quiet, "hydrate");
    let (mcp_ref, book_ref, out_ref, static_ref) =
        (&mcp, book.as_str(), out.as_path(), static_dir.as_deref());
    // Deletions first: a path that moved between carriers (e.g. an image that was text and is
    // now binary) maps to the same local file, which must end up written, not removed.
    let (deletions, mut downloads): (Vec<PlanFile>, Vec<PlanFile>) =
        plan.files.into_iter().partition(PlanFile::is_deletion);
    let mut fetched = Vec::new();
    if args.from_archive && !incremental && !downloads.is_empty() {
        let files = std::mem::take(&mut downloads);
        let parts;
        (fetched, parts) = archive::fetch_from_archive(
            &mcp,
            &book,
            files,
            &out,
            static_dir.as_deref(),
            verify_local,
            &pb,
        )
        .await?;
        summary.archive_parts = Some(parts);
    }
    for (path, r) in fetched {
        summary.count(path, r);
    }
    for batch in [deletions, downloads] {
        let mut results = futures::stream::iter(batch.into_iter().map(|f| async move {
            let path = f.path.clone();
            (
                path,
                fetch_one(mcp_ref, book_ref, f, out_ref, static_ref, verify_local).await,
            )
        }))
        .buffer_unordered(usize::from(args.server.concurrency));
        while let Some((path, r)) = results.next().await {
            pb.inc(1);
            summary.count(path, r);
        }
    }
    pb.finish_and_clear();
    summary.failed = summary.failed_files.len();
    summary.failed_files.sort_by(|a, b| a.path.cmp(&b.path));

    if summary.failed == 0 {
        let manifest = BuildManifest {
            book_id: book.clone(),
            manifest_hash: plan.manifest_hash.clone(),
            timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            file_count: plan.total_files,
            includes_static: static_dir.is_some(),
        };
        let mut bytes = serde_json::to_vec_pretty(&manifest)?;
        bytes.push(b'\n');
        write_atomic(&args.manifest_file, &bytes, true)
            .await
            .with_context(|| format!("saving the manifest {}", args.manifest_file.display()))?;
        summary.manifest_saved = true;
        summary.status = "updated".into();
    } else {
        summary.status = "failed".into();
    }

    if args.server.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_problems("failed", &summary.failed_files);
        if summary.skipped > 0 {
            eprintln!(
                "{} static asset(s) not written: pass --static-dir to hydrate them",
                summary.skipped
            );
        }
        println!(
            "book {book} ({} hydrate): downloaded {}, deleted {}, kept {}, skipped {}, failed {}; {}",
            summary.mode,
            summary.downloaded,
            summary.deleted,
            summary.kept,
            summary.skipped,
            summary.failed,
            if summary.manifest_saved {
                format!("manifest {} saved", summary.manifest_hash)
            } else {
                "manifest NOT updated (run hydrate again)".into()
            }
        );
    }
    Ok(if summary.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Apply one plan entry locally.
async fn fetch_one(
    mcp: &McpClient,
    book: &str,
    f: PlanFile,
    out: &Path,
    static_dir: Option<&Path>,
    verify_local: bool,
) -> Fetch {
    let target = match local_target(&f.path, out, static_dir) {
        Ok(Some(t)) => t,
        Ok(None) => return Fetch::Skipped,
        Err(e) => return Fetch::Failed(e),
    };
    if f.is_deletion() {
        return match tokio::fs::remove_file(&target).await {
            Ok(()) => {
                let root = if f.path.starts_with("static/") && !f.path.starts_with(COLOCATED_PREFIX)
                {
                    static_dir.unwrap_or(out)
                } else {
                    out
                };
                prune_empty_dirs(target.parent(), root).await;
                Fetch::Deleted
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Fetch::Deleted,
            Err(e) => Fetch::Failed(format!("deleting {}: {e}", target.display())),
        };
    }
    let Some(expected) = f.current_hash.map(|h| h.to_ascii_lowercase()) else {
        return Fetch::Failed("plan entry without a hash".into());
    };
    if verify_local
        && let Ok(local) = tokio::fs::read(&target).await
        && sha256_hex(&local) == expected
    {
        return Fetch::Kept;
    }
    let bytes = match download(mcp, book, &f.path).await {
        Ok(b) => b,
        Err(e) => return Fetch::Failed(e),
    };
    let got = sha256_hex(&bytes);
    if got != expected {
        return Fetch::Failed(format!(
            "changed on the server while hydrating (plan sha256 {expected}, downloaded {got}); run hydrate again"
        ));
    }
    match write_atomic(&target, &bytes, false).await {
        Ok(()) => Fetch::Downloaded,
        Err(e) => Fetch::Failed(format!("writing {}: {e}", target.display())),
    }
}

/// The exact bytes of one book file.
async fn download(mcp: &McpClient, book: &str, path: &str) -> Result<Vec<u8>, String> {
    if let Some((ty, file)) = asset_parts(path) {
        let v = mcp
            .call(
                "get_asset",
                json!({"book_id": book, "asset_type": ty, "filename": file, "include_binary": true}),
            )
            .await
            .map_err(|e| e.to_string())?;
        let data = v
            .get("binary_data")
            .and_then(Value::as_str)
            .ok_or("get_asset returned no binary_data")?;
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| format!("get_asset returned invalid base64: {e}"))
    } else {
        let v = mcp
            .call("read_content", json!({"book_id": book, "path": path}))
            .await
            .map_err(|e| e.to_string())?;
        v.get("content")
            .and_then(Value::as_str)
            .map(|s| s.as_bytes().to_vec())
            .ok_or_else(|| "read_content returned no content".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_appends_mcp_once() {
        assert_eq!(mcp_endpoint("http://h:8000"), "http://h:8000/mcp");
        assert_eq!(mcp_endpoint("http://h:8000/"), "http://h:8000/mcp");
        assert_eq!(mcp_endpoint("http://h:8000/mcp"), "http://h:8000/mcp");
        assert_eq!(mcp_endpoint("https://h/api/mcp/"), "https://h/api/mcp");
    }

    #[test]
    fn sse_body_yields_the_matching_response() {
        let body = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"x\":1}}\n\n";
        assert_eq!(sse_response(body, 7).unwrap()["result"]["x"], 1);
        assert!(sse_response(body, 8).is_none());
    }

    #[test]
    fn asset_parts_and_targets() {
        assert_eq!(
            asset_parts("static/images/content/a/b.png"),
            Some(("images", "content/a/b.png"))
        );
        assert_eq!(asset_parts("static/other/b.png"), None);
        assert_eq!(asset_parts("content/a.md"), None);
        let out = Path::new("/o");
        let st = Path::new("/s");
        assert_eq!(
            local_target("content/a/b.md", out, None).unwrap(),
            Some(PathBuf::from("/o/a/b.md"))
        );
        assert_eq!(
            local_target("static/images/content/a/i.png", out, None).unwrap(),
            Some(PathBuf::from("/o/a/i.png"))
        );
        assert_eq!(
            local_target("static/slides/x.pdf", out, None).unwrap(),
            None
        );
        assert_eq!(
            local_target("static/slides/x.pdf", out, Some(st)).unwrap(),
            Some(PathBuf::from("/s/slides/x.pdf"))
        );
        assert!(local_target("content/../etc/passwd", out, None).is_err());
        assert!(local_target("/etc/passwd", out, None).is_err());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(0) >= Duration::from_millis(300));
        assert!(backoff(0) < Duration::from_millis(400));
        assert!(backoff(2) >= Duration::from_millis(1200));
        assert!(backoff(30) <= Duration::from_millis(10_000));
    }

    #[test]
    fn scan_maps_text_binary_and_static_files() {
        let dir = tempfile::tempdir().unwrap();
        let docs = dir.path().join("docs");
        let st = dir.path().join("static");
        std::fs::create_dir_all(docs.join("01-Part/img")).unwrap();
        std::fs::create_dir_all(docs.join(".git")).unwrap();
        std::fs::create_dir_all(st.join("images")).unwrap();
        std::fs::create_dir_all(st.join("img")).unwrap();
        std::fs::write(docs.join("README.md"), "# Book\r\n").unwrap();
        std::fs::write(docs.join("01-Part/img/d.png"), [0x89, b'P', 0xff]).unwrap();
        std::fs::write(docs.join("01-Part/img/d.svg"), "<svg/>").unwrap();
        std::fs::write(docs.join("01-Part/bad.md"), [0xff, 0xfe]).unwrap();
        std::fs::write(docs.join("01-Part/x.exe"), [0u8]).unwrap();
        std::fs::write(docs.join(".git/HEAD"), "x").unwrap();
        std::fs::write(st.join("images/logo.png"), [1u8, 2]).unwrap();
        std::fs::write(st.join("img/old.png"), [1u8]).unwrap();
        let s = scan(&docs, Some(&st), Profile::Docusaurus).unwrap();
        let paths: Vec<&str> = s.files.keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            [
                "content/01-Part/img/d.svg",
                "content/README.md",
                "static/images/content/01-Part/img/d.png",
                "static/images/logo.png"
            ]
        );
        assert_eq!(
            s.files["content/README.md"].sha256,
            sha256_hex(b"# Book\r\n")
        );
        assert_eq!(s.failed.len(), 1, "{:?}", s.failed);
        assert_eq!(s.failed[0].path, "01-Part/bad.md");
        let skipped: Vec<&str> = s.skipped.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(skipped.contains(&"01-Part/x.exe"));
        // Strict: only NN-Name/NN-Name/NN-name.md pages (and static assets).
        let s = scan(&docs, None, Profile::Strict).unwrap();
        assert!(s.files.is_empty(), "{:?}", s.files.keys());
    }
}
