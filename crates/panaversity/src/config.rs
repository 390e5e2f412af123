//! Configuration: command-line flags, environment variables (the predecessors' names where they
//! exist), `.env` files and an optional config file, with documented defaults. Precedence: flag >
//! environment > `.env` > config file > default; [`crate::settings`] feeds the lower layers
//! through the same clap definitions.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde::Deserialize;

/// Which services `serve` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Only {
    /// PanaversityFS (MCP server + archive route) only.
    Fs,
    /// Study Mode API (ChatKit) only.
    Study,
}

/// Storage backend for the book store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    Fs,
    S3,
    Memory,
}

/// Where the tutor reads lessons from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LessonSourceKind {
    /// A local docs directory (default: the sample book, extracted into the data dir).
    Local,
    /// A GitHub repository through raw URLs.
    Github,
    /// A PanaversityFS book (students' overlays become the lesson they are taught).
    Pfs,
}

/// Settings shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Data directory: SQLite database, local storage, extracted sample docs. Resolved to an
    /// absolute path (a relative one in the config file is relative to the file).
    #[arg(
        long,
        env = "PANAVERSITY_DATA_DIR",
        default_value = "./data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// Config file: flat TOML whose keys are the environment variable names in lower case
    /// without the PANAVERSITY_ prefix (e.g. `bind = "0.0.0.0:8000"`, `admin_secret = "…"`;
    /// `panaversity settings` lists them), or a `.env`-style file of NAME=value lines.
    #[arg(long, env = "PANAVERSITY_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Print this command's settings (value and origin: flag, environment, .env, config file,
    /// default) instead of running it; `--show-settings=json` for JSON.
    #[arg(long, global = true, value_enum, num_args = 0..=1, require_equals = true, default_missing_value = "text")]
    pub show_settings: Option<ShowFormat>,
    /// Database URL: `sqlite://path?mode=rwc` or `postgres://…`. Default: SQLite file in the data dir.
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// PostgreSQL schema that holds every table of ours (created if missing), so the database
    /// can be shared, e.g. with the predecessor's tables in `public` during a cut-over.
    /// Ignored on SQLite.
    #[arg(
        long,
        env = "PANAVERSITY_DB_SCHEMA",
        default_value = "panaversity",
        global = true
    )]
    pub db_schema: platform::db::PgSchema,
    /// Log format.
    #[arg(
        long,
        env = "PANAVERSITY_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    /// Log filter (tracing env-filter syntax).
    #[arg(
        long,
        env = "PANAVERSITY_LOG_LEVEL",
        default_value = "info,rmcp=warn",
        global = true
    )]
    pub log_level: String,
}

/// Output of `--show-settings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShowFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Storage settings (PanaversityFS).
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    #[arg(long, env = "PANAVERSITY_STORAGE_BACKEND", default_value = "fs")]
    pub storage_backend: StorageBackend,
    /// fs root (default: `<data-dir>/storage`).
    #[arg(long, env = "PANAVERSITY_STORAGE_ROOT")]
    pub storage_root: Option<PathBuf>,
    #[arg(long, env = "PANAVERSITY_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    #[arg(long, env = "PANAVERSITY_S3_REGION", default_value = "auto")]
    pub s3_region: String,
    /// S3-compatible endpoint (Cloudflare R2: https://<account>.r2.cloudflarestorage.com).
    #[arg(long, env = "PANAVERSITY_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = "PANAVERSITY_S3_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,
    #[arg(long, env = "PANAVERSITY_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    /// Per-call storage timeout in seconds.
    #[arg(
        long,
        env = "PANAVERSITY_STORAGE_TIMEOUT_SECONDS",
        default_value_t = 30
    )]
    pub storage_timeout_seconds: u64,
    /// Largest text file accepted by write_content, in bytes.
    #[arg(long, env = "PANAVERSITY_MAX_CONTENT_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub max_content_bytes: u64,
    /// Largest asset accepted by upload_asset, in MiB.
    #[arg(long, env = "PANAVERSITY_MAX_ASSET_SIZE_MB", default_value_t = 100)]
    pub max_asset_size_mb: u64,
    /// Memory for small immutable blobs (files up to 1 MiB), in MiB; 0 turns the cache off.
    /// Blobs are content-addressed, so a cached one is never stale.
    #[arg(long, env = "PANAVERSITY_BLOB_CACHE_MB", default_value_t = 64)]
    pub blob_cache_mb: u64,
    /// Local storage (SQLite file or PostgreSQL): small blobs skip their fsync and commit with the
    /// journal row instead; the filesystem is flushed this many milliseconds after such writes.
    /// 0 fsyncs every blob before its commit (needed when several machines share the storage
    /// directory over a network filesystem).
    #[arg(long, env = "PANAVERSITY_BLOB_SYNC_MS", default_value_t = 200)]
    pub blob_sync_ms: u64,
    /// Seconds between runs of the reconciler, which re-applies materializations a failure left
    /// pending (canonical objects that differ from the journal); 0 turns it off (`fs fsck
    /// --repair` then is the only way to finish them). `serve` only.
    #[arg(
        long,
        env = "PANAVERSITY_RECONCILE_INTERVAL_SECS",
        default_value_t = 30
    )]
    pub reconcile_interval_secs: u64,
    /// Schema profile of books created by their first write: `strict` or `docusaurus` (what
    /// `fs ingest` of a real docs tree needs).
    #[arg(long, env = "PANAVERSITY_DEFAULT_PROFILE", default_value = "strict")]
    pub default_profile: pfs::Profile,
}

/// Whether a command may create a new store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreUse {
    /// `serve`, `fs stdio`, `fs seed`, `migrate up`: create the data dir and database if missing.
    Create,
    /// Operator commands on the server's store (`fs fsck`, `fs audit`, `fs keys`, `migrate down`):
    /// a missing one is an error naming where it was looked for.
    Existing,
}

/// The database URL: explicit, else a SQLite file in the data dir (its directory created if
/// missing).
pub fn database_url(common: &Common) -> anyhow::Result<String> {
    store_url(common, StoreUse::Create)
}

/// The database URL: explicit, else a SQLite file in the data dir. With [`StoreUse::Create`]
/// the data dir (or a SQLite file's directory) is created; with [`StoreUse::Existing`] a SQLite
/// file that does not exist is an error naming where it was looked for.
pub fn store_url(common: &Common, store: StoreUse) -> anyhow::Result<String> {
    if let Some(url) = common.database_url.clone() {
        match (store, sqlite_file(&url)) {
            (StoreUse::Create, _) => ensure_sqlite_parent(&url)?,
            (StoreUse::Existing, Some(file)) if !file.is_file() => bail!(no_store(&format!(
                "no PanaversityFS store: the SQLite file {} of the database URL does not exist",
                std::path::absolute(&file).unwrap_or(file).display()
            ))),
            (StoreUse::Existing, _) => {}
        }
        return Ok(url);
    }
    let file = common.data_dir.join("panaversity.db");
    match store {
        StoreUse::Create => std::fs::create_dir_all(&common.data_dir)
            .with_context(|| format!("creating data dir {}", common.data_dir.display()))?,
        StoreUse::Existing if !file.is_file() => bail!(no_store(&format!(
            "no PanaversityFS store in the data dir {}: {} does not exist",
            common.data_dir.display(),
            file.display()
        ))),
        StoreUse::Existing => {}
    }
    Ok(platform::db::sqlite_url_for(&file))
}

/// The error of an operator command run where there is no store: `what` was not found, and how
/// to point the command at the server's store.
pub fn no_store(what: &str) -> String {
    format!(
        "{what}. This command works on the store a server already uses and does not create one: \
         point it there with --data-dir DIR, PANAVERSITY_DATA_DIR=DIR (in the environment or \
         ./.env), `data_dir = \"DIR\"` in the config file (--config FILE), or --database-url / \
         DATABASE_URL; `panaversity serve` or `panaversity migrate up` creates a new store"
    )
}

/// The file of a `sqlite://path` URL (`None` for other databases and `:memory:`).
fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

/// Create the directory of a `sqlite://path` database file so a fresh path works.
fn ensure_sqlite_parent(url: &str) -> anyhow::Result<()> {
    if let Some(file) = sqlite_file(url)
        && let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating the database directory {}", parent.display()))?;
    }
    Ok(())
}

/// The value parser of every boolean flag/environment setting ([`platform::boolean::parse_bool`]:
/// 1/0, true/false, yes/no, on/off).
pub fn bool_value(v: &str) -> Result<bool, String> {
    platform::boolean::parse_bool(v)
}

/// Comma-separated list.
pub fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Validate a bind address string.
pub fn parse_bind(s: &str) -> anyhow::Result<SocketAddr> {
    match s.parse() {
        Ok(a) => Ok(a),
        Err(_) => bail!("invalid bind address {s:?} (expected host:port, e.g. 127.0.0.1:8000)"),
    }
}
