//! `panaversity serve`: assemble both services on one listener.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use clap::Args;
use pfs::{Actor, BookId, BookPath, Engine, EngineConfig, Limits, Namespace, Profile, Storage};
use platform::auth::{AuthConfig, Authenticator, JwtConfig, apikey::ApiKeyStore};
use platform::db::{Db, PoolSettings};
use platform::http::{CheckResult, DbReadyCheck, HttpOptions, ReadyCheck, ReadyChecks};
use platform::ratelimit::RateLimiter;

use crate::config::{self, Common, LessonSourceKind, Only, StorageArgs, StorageBackend};
use crate::sample;

/// Settings of `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Run only one service (default: both).
    #[arg(long, value_enum)]
    pub only: Option<Only>,
    /// Listen address.
    #[arg(long, env = "PANAVERSITY_BIND", default_value = "127.0.0.1:8000")]
    pub bind: String,
    /// Dev mode: no authentication; X-Agent-ID / X-User-ID headers name the caller (also the
    /// predecessor's DEV_MODE). Refuses a non-loopback bind unless
    /// PANAVERSITY_ALLOW_DEV_MODE_PUBLIC=true.
    #[arg(long, env = "PANAVERSITY_DEV_MODE", num_args = 0..=1, default_missing_value = "true", default_value = "false", action = clap::ArgAction::Set, value_parser = crate::config::bool_value)]
    pub dev: bool,
    /// Agent id recorded in the audit log for dev-mode requests without X-Agent-ID.
    #[arg(long, env = "PANAVERSITY_DEV_AGENT_ID", default_value = "dev-agent")]
    pub dev_agent_id: String,
    /// Allow dev mode on a non-loopback address (never in production).
    #[arg(long, env = "PANAVERSITY_ALLOW_DEV_MODE_PUBLIC", num_args = 0..=1, default_missing_value = "true", default_value = "false", action = clap::ArgAction::Set, value_parser = crate::config::bool_value)]
    pub allow_dev_mode_public: bool,

    #[command(flatten)]
    pub storage: StorageArgs,

    /// SSO / auth server base URL. Sets the JWKS URL to {url}/api/auth/jwks, the JWT issuer to
    /// {url}, the external API-key verifier to {url}/api/api-key/verify and the userinfo endpoint
    /// to {url}/api/auth/oauth2/userinfo (the predecessor's) unless those are given explicitly.
    #[arg(long, env = "PANAVERSITY_AUTH_SERVER_URL")]
    pub auth_server_url: Option<String>,
    /// JWKS URL (overrides the one derived from the auth server URL).
    #[arg(long, env = "PANAVERSITY_JWKS_URL")]
    pub jwks_url: Option<String>,
    /// Required JWT issuer (`iss`). Default: the auth server URL.
    #[arg(long, env = "PANAVERSITY_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required JWT audience (`aud`); unchecked when unset.
    #[arg(long, env = "PANAVERSITY_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// JWKS cache lifetime in seconds.
    #[arg(long, env = "PANAVERSITY_JWKS_CACHE_TTL", default_value_t = 3600)]
    pub jwks_cache_ttl: u64,
    /// External API-key verify endpoint (keys prefixed pana_/sk_live_/sk_test_).
    #[arg(long, env = "PANAVERSITY_API_KEY_VERIFY_URL")]
    pub api_key_verify_url: Option<String>,
    /// SSO userinfo endpoint for opaque tokens.
    #[arg(long, env = "PANAVERSITY_USERINFO_URL")]
    pub userinfo_url: Option<String>,
    /// This server's public base URL (archive links, RFC 9728 resource metadata).
    #[arg(long, env = "PANAVERSITY_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// CDN base URL for asset links.
    #[arg(
        long,
        env = "PANAVERSITY_CDN_BASE_URL",
        default_value = "https://cdn.panaversity.com"
    )]
    pub cdn_base_url: String,
    /// HMAC key for signed archive URLs (identical on every replica). Random per process if unset.
    #[arg(long, env = "PANAVERSITY_ARCHIVE_SIGNING_KEY", hide_env_values = true)]
    pub archive_signing_key: Option<String>,
    /// Lifetime of signed archive URLs, seconds.
    #[arg(
        long,
        env = "PANAVERSITY_PRESIGN_EXPIRY_SECONDS",
        default_value_t = 900
    )]
    pub archive_url_ttl: u64,
    /// Server-side time budget of one archive download, seconds (0 = none; fractions allowed). When it runs out the
    /// ZIP ends early but valid, with `_archive_partial.json` (what is missing, `resume_after`)
    /// and the `x-archive-status: partial` / `x-archive-resume-after` trailers.
    #[arg(
        long,
        env = "PANAVERSITY_ARCHIVE_TIME_BUDGET_SECS",
        default_value_t = 0.0
    )]
    pub archive_time_budget_secs: f64,
    /// Accepted Host headers on /mcp (comma-separated). Default: localhost, 127.0.0.1, ::1 and
    /// the public URL's host.
    #[arg(long, env = "PANAVERSITY_ALLOWED_HOSTS")]
    pub allowed_hosts: Option<String>,
    /// Browser origins allowed by CORS (comma-separated, exact).
    #[arg(long, env = "ALLOWED_ORIGINS", default_value = "")]
    pub allowed_origins: String,
    /// Largest request body in bytes (MCP uploads carry base64 assets).
    #[arg(long, env = "PANAVERSITY_MAX_BODY_BYTES", default_value_t = 160 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Largest ChatKit request body in bytes.
    #[arg(long, env = "STUDY_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub study_max_body_bytes: usize,
    /// Seconds a client has to send a complete request head (also the longest idle wait between
    /// keep-alive requests on HTTP/1).
    #[arg(
        long,
        env = "PANAVERSITY_HEADER_READ_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub header_read_timeout_secs: u64,
    /// Seconds without traffic after which a connection is closed.
    #[arg(long, env = "PANAVERSITY_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub idle_timeout_secs: u64,
    /// Client connections served at once; more are refused with 503 (lowered to fit the
    /// open-file limit).
    #[arg(long, env = "PANAVERSITY_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Time budget of one grep_search, milliseconds (then SEARCH_TIMEOUT with partial results).
    #[arg(long, env = "PANAVERSITY_GREP_TIMEOUT_MS", default_value_t = 5000)]
    pub grep_timeout_ms: u64,
    /// Threads that run grep_search scans at low priority (0: one per CPU but one).
    #[arg(long, env = "PANAVERSITY_GREP_THREADS", default_value_t = 0)]
    pub grep_threads: usize,
    /// Most file bytes one grep_search scans (then it stops with truncated=true).
    #[arg(long, env = "PANAVERSITY_GREP_MAX_SCAN_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub grep_max_scan_bytes: u64,
    /// Largest asset get_asset returns inline with include_binary (bigger: PAYLOAD_TOO_LARGE
    /// naming the asset's URL).
    #[arg(long, env = "PANAVERSITY_MAX_INLINE_ASSET_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_inline_asset_bytes: u64,
    /// Seconds a credential rejected by the SSO / API-key server is rejected without asking again.
    #[arg(
        long,
        env = "PANAVERSITY_AUTH_NEGATIVE_CACHE_SECS",
        default_value_t = 30
    )]
    pub auth_negative_cache_secs: u64,
    /// Remote checks (userinfo, API-key server) of unknown credentials one client address may
    /// cause per minute (then 429).
    #[arg(long, env = "PANAVERSITY_AUTH_REMOTE_PER_MINUTE", default_value_t = 60)]
    pub auth_remote_per_minute: u32,
    /// Database pool size.
    #[arg(long, env = "PANAVERSITY_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: u32,
    /// Seconds to wait for a database connection before answering 503.
    #[arg(long, env = "PANAVERSITY_DB_ACQUIRE_TIMEOUT", default_value_t = 5)]
    pub db_acquire_timeout: u64,
    /// Connections opened at start and kept open (pool warm-up).
    #[arg(long, env = "PANAVERSITY_DB_MIN_CONNECTIONS", default_value_t = 1)]
    pub db_min_connections: u32,
    /// PostgreSQL statement timeout, seconds.
    #[arg(long, env = "PANAVERSITY_DB_STATEMENT_TIMEOUT", default_value_t = 15)]
    pub db_statement_timeout: u64,
    /// Ping each pooled connection before handing it out (one extra round trip per acquire).
    #[arg(long, env = "PANAVERSITY_DB_TEST_BEFORE_ACQUIRE", default_value_t = true, action = clap::ArgAction::Set, value_parser = crate::config::bool_value)]
    pub db_test_before_acquire: bool,
    /// SQLite: run the hot lookups (a file's journal row on every read, the current hash before a
    /// write) inline on query-only connections and write_content's transaction on one direct
    /// write connection, instead of through the pool's worker threads (one hand-off per statement).
    #[arg(long, env = "PANAVERSITY_DB_SQLITE_DIRECT", default_value_t = true, action = clap::ArgAction::Set, value_parser = crate::config::bool_value)]
    pub db_sqlite_direct: bool,
    /// Do not load the sample book into an empty store.
    #[arg(long, env = "PANAVERSITY_NO_SAMPLE", num_args = 0..=1, default_missing_value = "true", default_value = "false", action = clap::ArgAction::Set, value_parser = crate::config::bool_value)]
    pub no_sample: bool,

    /// Redis URL: shared rate limits and lesson cache. Without it both are in-process.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// Message-creating ChatKit requests allowed per user per window.
    #[arg(long, env = "STUDY_RATE_LIMIT", default_value_t = 20)]
    pub rate_limit: u64,
    /// Rate-limit window in seconds.
    #[arg(long, env = "STUDY_RATE_WINDOW_SECONDS", default_value_t = 60)]
    pub rate_window_seconds: u64,
    /// Secret for POST /admin/invalidate-cache (X-Admin-Secret). Disabled when unset.
    #[arg(long, env = "ADMIN_SECRET", hide_env_values = true)]
    pub admin_secret: Option<String>,
    /// Where lessons come from. Default: this server's book store (`pfs`, overlay-aware) when it
    /// runs both services, `github` when GITHUB_REPO or GITHUB_TOKEN is set (the predecessor's
    /// source), else `local`.
    #[arg(long, env = "STUDY_LESSON_SOURCE")]
    pub lesson_source: Option<LessonSourceKind>,
    /// Local docs directory (default: the sample book extracted into <data-dir>/sample-docs).
    #[arg(long, env = "STUDY_DOCS_DIR")]
    pub docs_dir: Option<PathBuf>,
    /// PanaversityFS book the tutor teaches from with --lesson-source pfs.
    #[arg(long, env = "STUDY_LESSON_BOOK", default_value = sample::BOOK_ID)]
    pub lesson_book: String,
    /// GitHub repository (owner/repo) for --lesson-source github (default
    /// panaversity/agentfactory; setting it makes github the default lesson source).
    #[arg(long, env = "GITHUB_REPO")]
    pub github_repo: Option<String>,
    #[arg(long, env = "GITHUB_BRANCH", default_value = "main")]
    pub github_branch: String,
    #[arg(long, env = "GITHUB_DOCS_PATH", default_value = "apps/learn-app/docs")]
    pub github_docs_path: String,
    #[arg(long, env = "GITHUB_TOKEN", hide_env_values = true)]
    pub github_token: Option<String>,
    /// Raw-content base URL (tests and mirrors).
    #[arg(
        long,
        env = "GITHUB_RAW_BASE_URL",
        default_value = "https://raw.githubusercontent.com"
    )]
    pub github_raw_base_url: String,
    #[command(flatten)]
    pub study_streams: crate::study_args::StudyStreamArgs,
    #[command(flatten)]
    pub llm: crate::study_args::LlmArgs,
}

/// The storage configuration from flags.
pub fn storage_config(common: &Common, s: &StorageArgs) -> anyhow::Result<pfs::StorageConfig> {
    Ok(match s.storage_backend {
        StorageBackend::Fs => pfs::StorageConfig::Fs {
            root: s
                .storage_root
                .clone()
                .unwrap_or_else(|| common.data_dir.join("storage")),
        },
        StorageBackend::Memory => pfs::StorageConfig::Memory,
        StorageBackend::S3 => pfs::StorageConfig::S3 {
            bucket: s
                .s3_bucket
                .clone()
                .context("PANAVERSITY_S3_BUCKET is required for the s3 backend")?,
            region: Some(s.s3_region.clone()),
            endpoint: s.s3_endpoint.clone(),
            access_key_id: s.s3_access_key_id.clone(),
            secret_access_key: s.s3_secret_access_key.clone(),
            root: None,
        },
    })
}

/// Connect the database and open the engine (migrations run inside `Engine::open`).
pub async fn open_engine(
    common: &Common,
    s: &StorageArgs,
    pool: PoolSettings,
) -> anyhow::Result<(Db, Engine)> {
    let url = config::database_url(common)?;
    let pool = PoolSettings {
        pg_schema: Some(common.db_schema.clone()),
        ..pool
    };
    let db = Db::connect(&url, &pool).await?;
    let cfg = storage_config(common, s)?;
    let opts = pfs::storage::StorageOptions {
        timeout: Duration::from_secs(s.storage_timeout_seconds),
        ..Default::default()
    };
    let storage = Storage::with_options(&cfg, &opts).context("configuring storage")?;
    let engine = Engine::open(
        db.clone(),
        storage,
        EngineConfig {
            limits: Limits {
                max_content_bytes: s.max_content_bytes,
                max_asset_bytes: s.max_asset_size_mb * 1024 * 1024,
            },
            default_profile: s.default_profile,
            blob_cache_bytes: s.blob_cache_mb.saturating_mul(1024 * 1024),
            blob_sync_interval: std::time::Duration::from_millis(s.blob_sync_ms),
            ..Default::default()
        },
    )
    .await
    .context("opening the book store")?;
    platform::auth::apikey::migrate_up(&db).await?;
    Ok((db, engine))
}

/// Load the sample book into an empty store.
pub async fn seed_sample(engine: &Engine) -> anyhow::Result<bool> {
    if !engine.list_books().await?.is_empty() {
        return Ok(false);
    }
    let book = BookId::parse(sample::BOOK_ID)?;
    engine.ensure_book(&book, Some(Profile::Strict)).await?;
    let actor = Actor::new("panaversity-sample-seed")?;
    for (path, bytes) in sample::FILES {
        let p = BookPath::parse(path)?;
        let bytes = bytes::Bytes::from_static(bytes);
        match p.area() {
            pfs::Area::Content => {
                engine
                    .write(&actor, &book, &p, &Namespace::Base, bytes, None)
                    .await?;
            }
            pfs::Area::Static => {
                engine.put_asset(&actor, &book, &p, bytes).await?;
            }
        }
    }
    tracing::info!(
        book = sample::BOOK_ID,
        files = sample::FILES.len(),
        "loaded the sample book"
    );
    Ok(true)
}

/// Extract the sample book's lessons as a docs tree (`content/` prefix removed) for the local
/// lesson source, once.
fn extract_sample_docs(dir: &std::path::Path) -> anyhow::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    for (path, bytes) in sample::FILES {
        let Some(rel) = path.strip_prefix("content/") else {
            continue;
        };
        let target = tmp.join(rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&target, bytes)?;
    }
    std::fs::rename(&tmp, dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(())
}

struct StorageReady(Storage);

#[async_trait::async_trait]
impl ReadyCheck for StorageReady {
    async fn check(&self) -> Vec<CheckResult> {
        vec![match self.0.list_files("books/").await {
            Ok(_) => CheckResult::pass("storage", true),
            Err(e) => CheckResult::fail("storage", true, e.to_string()),
        }]
    }
}

struct RedisReady(Arc<platform::ratelimit::RedisLimiter>);

#[async_trait::async_trait]
impl ReadyCheck for RedisReady {
    async fn check(&self) -> Vec<CheckResult> {
        vec![match self.0.ping().await {
            Ok(()) => CheckResult::pass("redis", false),
            Err(e) => CheckResult::fail("redis", false, format!("{e:#}")),
        }]
    }
}

fn auth_config(args: &ServeArgs, dev: bool, db: &Db, public_url: &str) -> AuthConfig {
    let base = args
        .auth_server_url
        .as_deref()
        .map(|u| u.trim_end_matches('/').to_string());
    let jwks_url = args
        .jwks_url
        .clone()
        .or_else(|| base.as_ref().map(|b| format!("{b}/api/auth/jwks")));
    let jwt = jwks_url.map(|url| {
        let mut c = JwtConfig::new(url);
        c.issuer = args.jwt_issuer.clone().or_else(|| base.clone());
        c.audience = args.jwt_audience.clone();
        c.cache_ttl = Duration::from_secs(args.jwks_cache_ttl);
        c
    });
    AuthConfig {
        dev_mode: dev,
        dev_subject: args.dev_agent_id.clone(),
        jwt,
        api_keys: Some(ApiKeyStore::new(db.clone())),
        external_api_key_url: args
            .api_key_verify_url
            .clone()
            .or_else(|| base.as_ref().map(|b| format!("{b}/api/api-key/verify"))),
        userinfo_url: args.userinfo_url.clone().or_else(|| {
            base.as_ref()
                .map(|b| format!("{b}/api/auth/oauth2/userinfo"))
        }),
        resource_url: Some(format!("{public_url}/mcp")),
        authorization_servers: base.into_iter().collect(),
        remote_limits: platform::auth::guard::RemoteLimits {
            negative_ttl: Duration::from_secs(args.auth_negative_cache_secs),
            per_source_per_minute: args.auth_remote_per_minute,
        },
    }
}

/// Run the server until Ctrl-C / SIGTERM.
pub async fn run(common: &Common, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let fd_soft = platform::conn::raise_fd_limit();
    let dev = args.dev;
    // Resolved to an absolute path at start (main); logged so an operator sees which store this is.
    tracing::info!(data_dir = %common.data_dir.display(), "data directory");
    let bind = config::parse_bind(&args.bind)?;
    platform::auth::check_dev_mode(dev, bind, args.allow_dev_mode_public)?;
    let run_fs = args.only != Some(Only::Study);
    let run_study = args.only != Some(Only::Fs);

    let pool = PoolSettings {
        max_connections: args.db_pool_size,
        min_connections: args.db_min_connections.min(args.db_pool_size),
        acquire_timeout: Duration::from_secs(args.db_acquire_timeout),
        statement_timeout: Duration::from_secs(args.db_statement_timeout),
        test_before_acquire: args.db_test_before_acquire,
        sqlite_direct: args.db_sqlite_direct,
        ..Default::default()
    };
    let (db, engine) = open_engine(common, &args.storage, pool).await?;
    if !args.no_sample {
        seed_sample(&engine).await?;
    }
    if args.storage.reconcile_interval_secs > 0 {
        // Ends with the process; the engine's own background tasks end with the engine.
        let _reconciler =
            engine.spawn_reconciler(Duration::from_secs(args.storage.reconcile_interval_secs));
    }
    let metrics = platform::telemetry::install_metrics()?;

    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("binding {bind}"))?;
    let local = listener.local_addr()?;
    let public_url = args
        .public_url
        .clone()
        .map(|u| u.trim_end_matches('/').to_string())
        .unwrap_or_else(|| format!("http://{local}"));
    let auth = Arc::new(Authenticator::new(auth_config(
        &args,
        dev,
        &db,
        &public_url,
    )));
    auth.warm_up().await;

    let mut allowed_hosts = match &args.allowed_hosts {
        Some(h) => config::split_list(h),
        None => vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
    };
    if let Some(host) = public_url
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .map(platform::http::host_of)
        && !allowed_hosts.contains(&host)
    {
        allowed_hosts.push(host);
    }
    let mut checks: Vec<Arc<dyn ReadyCheck>> = vec![Arc::new(DbReadyCheck {
        db: db.clone(),
        name: "database".into(),
        critical: true,
    })];
    let mut app = Router::new();

    if run_fs {
        checks.push(Arc::new(StorageReady(engine.storage().clone())));
        let cfg = pfs_mcp::PfsMcpConfig {
            public_base_url: public_url.clone(),
            cdn_base_url: args.cdn_base_url.trim_end_matches('/').to_string(),
            archive_signing_key: args
                .archive_signing_key
                .clone()
                .map(String::into_bytes)
                .unwrap_or_default(),
            archive_url_ttl: Duration::from_secs(args.archive_url_ttl),
            archive_time_budget: Duration::try_from_secs_f64(args.archive_time_budget_secs)
                .ok()
                .filter(|d| !d.is_zero()),
            allowed_hosts: allowed_hosts.clone(),
            max_asset_bytes: args.storage.max_asset_size_mb * 1024 * 1024,
            max_inline_asset_bytes: args.max_inline_asset_bytes,
            grep_timeout: Duration::from_millis(args.grep_timeout_ms.max(1)),
            grep_max_scan_bytes: args.grep_max_scan_bytes,
            grep_concurrency: args.grep_threads,
            max_request_body_bytes: args.max_body_bytes,
            ..Default::default()
        };
        let state = pfs_mcp::PfsMcpState::new(engine.clone(), cfg);
        app = app.merge(pfs_mcp::mcp_router_with_auth(state, auth.clone()));
        app = app.merge(platform::auth::protected_resource_metadata_route(
            format!("{public_url}/mcp"),
            args.auth_server_url.iter().cloned().collect(),
            vec!["read".into(), "write".into(), "admin".into()],
        ));
    }

    let mut study_turns = None;
    if run_study {
        let store = study::store::ThreadStore::new(db.clone());
        store.migrate_up().await.context("study migrations")?;
        let window = Duration::from_secs(args.rate_window_seconds.max(1));
        let limiter: Arc<dyn RateLimiter> = match &args.redis_url {
            Some(url) => {
                // One limiter (one Redis connection manager) serves requests and readiness.
                let l = Arc::new(platform::ratelimit::RedisLimiter::new(
                    url,
                    "study:rl:",
                    args.rate_limit,
                    window,
                )?);
                checks.push(Arc::new(RedisReady(l.clone())));
                l
            }
            None => Arc::new(platform::ratelimit::MemoryLimiter::new(
                args.rate_limit,
                window,
            )),
        };
        let kind = crate::study_args::lesson_source(
            args.lesson_source,
            [&args.github_repo, &args.github_token]
                .iter()
                .any(|v| v.as_deref().is_some_and(|v| !v.trim().is_empty())),
            run_fs,
        );
        tracing::info!(source = ?kind, "tutor lesson source");
        let source: Arc<dyn study::lessons::LessonSource> = match kind {
            LessonSourceKind::Local => {
                let dir = match &args.docs_dir {
                    Some(d) => d.clone(),
                    None => {
                        let d = common.data_dir.join("sample-docs");
                        extract_sample_docs(&d)?;
                        d
                    }
                };
                Arc::new(
                    study::lessons::LocalDocsSource::new(&dir)
                        .with_context(|| format!("opening the docs directory {}", dir.display()))?,
                )
            }
            LessonSourceKind::Github => Arc::new(study::lessons::GitHubSource::new(
                study::lessons::GitHubConfig {
                    repo: args
                        .github_repo
                        .clone()
                        .filter(|r| !r.trim().is_empty())
                        .unwrap_or_else(|| crate::study_args::DEFAULT_GITHUB_REPO.into()),
                    branch: args.github_branch.clone(),
                    docs_path: args.github_docs_path.clone(),
                    token: args.github_token.clone().filter(|t| !t.trim().is_empty()),
                    base_url: args.github_raw_base_url.clone(),
                    ..Default::default()
                },
            )?),
            LessonSourceKind::Pfs => Arc::new(study::lessons::PfsBookSource::new(
                engine.clone(),
                BookId::parse(&args.lesson_book)?,
            )),
        };
        let cache = match &args.redis_url {
            Some(url) => match study::lessons::CacheConfig::redis(url, "study:lesson:").await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "Redis unreachable at start; lesson cache is in-process");
                    study::lessons::CacheConfig::memory()
                }
            },
            None => study::lessons::CacheConfig::memory(),
        };
        let cache = cache.with_ttl(Duration::from_secs(
            args.study_streams.lesson_cache_ttl_secs,
        ));
        let lessons = Arc::new(study::lessons::LessonService::new(source, cache));
        // Readiness covers this server's own dependencies only: a lesson source (GitHub, a docs
        // directory) is outside them, and a request must never be able to flip readiness.
        let llm = match args.llm.config() {
            Some(cfg) => Some(study::llm::LlmClient::new(cfg)?),
            None => {
                tracing::warn!(
                    "no LLM provider configured (OPENAI_API_KEY / OPENAI_BASE_URL): the tutor answers with a notice"
                );
                None
            }
        };
        let tutor = Arc::new(study::tutor::StudyTutor::new(lessons.clone(), llm));
        let state = args
            .study_streams
            .state(
                store,
                tutor,
                limiter.clone(),
                args.study_max_body_bytes,
                args.redis_url.as_deref(),
            )
            .await?;
        study_turns = Some(state.turns.clone());
        let study_routes = study::server::chatkit_router(state)
            .merge(study::suggestions::suggestion_routes(
                lessons.clone(),
                limiter,
            ))
            .layer(axum::middleware::from_fn_with_state(
                auth.clone(),
                platform::auth::require_auth,
            ));
        // The admin route authenticates with X-Admin-Secret only (not a user token).
        app = app.merge(study_routes).merge(study::admin::admin_routes(
            lessons,
            args.admin_secret.clone(),
        ));
    }

    let ready: Arc<dyn ReadyCheck> = Arc::new(ReadyChecks(checks));
    app = app.merge(platform::http::health_router(ready, metrics));
    app = app.merge(crate::web::router(crate::web::WebConfig {
        engine: engine.clone(),
        auth: auth.clone(),
        dev,
        tutor_book: run_study.then(|| args.lesson_book.clone()),
    }));
    let opts = HttpOptions {
        max_body_bytes: args.max_body_bytes,
        allowed_origins: crate::web::cors_origins(config::split_list(&args.allowed_origins), dev),
        // Dev mode trusts headers for identity, so every route is closed to foreign Hosts.
        allowed_hosts: dev.then(|| allowed_hosts.clone()),
        ..Default::default()
    };
    let limits = platform::conn::ConnLimits {
        header_read_timeout: Duration::from_secs(args.header_read_timeout_secs.max(1)),
        idle_timeout: Duration::from_secs(args.idle_timeout_secs.max(1)),
        max_connections: platform::conn::fit_connections(args.max_connections, fd_soft, 128),
    };
    let app = platform::http::common_layers(app, &opts);
    tracing::info!(
        %local,
        dev_mode = dev,
        data_dir = %common.data_dir.display(),
        fs = run_fs,
        study = run_study,
        database = db.kind().as_str(),
        storage = engine.storage().backend_name(),
        startup_ms = started.elapsed().as_millis() as u64,
        "panaversity ready: MCP at http://{local}/mcp, ChatKit at http://{local}/chatkit, study page at http://{local}/"
    );
    platform::http::serve_with(app, listener, limits, platform::http::shutdown_signal()).await?;
    if let Some(turns) = study_turns {
        crate::study_args::drain_turns(&turns).await;
    }
    Ok(ExitCode::SUCCESS)
}
