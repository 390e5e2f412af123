//! Configuration: command-line flags, environment variables (the predecessors' names where they
//! exist) and an optional TOML file, with documented defaults. Precedence: flag > environment >
//! config file > default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
    /// Data directory: SQLite database, local storage, extracted sample docs.
    #[arg(
        long,
        env = "PANAVERSITY_DATA_DIR",
        default_value = "./data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// Optional TOML config file; its keys are the environment variable names in lower case
    /// without the PANAVERSITY_ prefix (e.g. `bind = "0.0.0.0:8000"`).
    #[arg(long, env = "PANAVERSITY_CONFIG", global = true)]
    pub config: Option<PathBuf>,
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

/// Apply config-file values to environment variables that are not already set, so clap's `env`
/// handling gives them the right precedence. Must run before argument parsing.
pub fn apply_config_file_to_env(path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("parsing config file {}", path.display()))?;
    for (k, v) in table {
        let name = k.to_ascii_uppercase();
        let name = match name.as_str() {
            "DATABASE_URL" | "REDIS_URL" | "OPENAI_API_KEY" | "OPENAI_BASE_URL"
            | "ALLOWED_ORIGINS" | "DEV_MODE" => name,
            _ if name.starts_with("PANAVERSITY_") || name.starts_with("STUDY_") => name,
            _ => format!("PANAVERSITY_{name}"),
        };
        if std::env::var_os(&name).is_none() {
            let value = match v {
                toml::Value::String(s) => s,
                other => other.to_string(),
            };
            // SAFETY: called once at start-up before any thread is spawned.
            unsafe { std::env::set_var(&name, value) };
        }
    }
    Ok(())
}

/// The database URL: explicit, else a SQLite file in the data dir (created if missing).
pub fn database_url(common: &Common) -> anyhow::Result<String> {
    let explicit = common
        .database_url
        .clone()
        .or_else(|| std::env::var("PANAVERSITY_DATABASE_URL").ok());
    if let Some(url) = explicit {
        ensure_sqlite_parent(&url)?;
        return Ok(url);
    }
    std::fs::create_dir_all(&common.data_dir)
        .with_context(|| format!("creating data dir {}", common.data_dir.display()))?;
    Ok(platform::db::sqlite_url_for(
        &common.data_dir.join("panaversity.db"),
    ))
}

/// Create the directory of a `sqlite://path` database file so a fresh path works.
fn ensure_sqlite_parent(url: &str) -> anyhow::Result<()> {
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return Ok(());
    };
    let path = rest.split('?').next().unwrap_or(rest);
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if let Some(parent) = Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
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

/// Dev mode from either name (`PANAVERSITY_DEV_MODE`, or the predecessor's `DEV_MODE`); an
/// unreadable value is an error, not a silent "off".
pub fn dev_mode_from_env() -> anyhow::Result<bool> {
    let mut on = false;
    for k in ["PANAVERSITY_DEV_MODE", "DEV_MODE"] {
        on |= platform::boolean::env_bool(k)
            .map_err(anyhow::Error::msg)?
            .unwrap_or(false);
    }
    Ok(on)
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
