//! Configuration and shared state of the MCP layer.

use std::sync::Arc;
use std::time::Duration;

use pfs::engine::Engine;
use platform::Identity;

/// Settings of the MCP tools and HTTP routes.
#[derive(Debug, Clone)]
pub struct PfsMcpConfig {
    /// Externally visible base URL of this server (`https://books.example.com`), used to build
    /// archive download URLs. No trailing slash.
    pub public_base_url: String,
    /// Public base URL of the CDN in front of the bucket (asset `cdn_url`s are
    /// `{cdn_base_url}/books/{book}/static/{type}/{file}`).
    pub cdn_base_url: String,
    /// HMAC-SHA256 key for signed archive URLs. Keep it secret and identical across replicas.
    pub archive_signing_key: Vec<u8>,
    /// How long a signed archive URL stays valid.
    pub archive_url_ttl: Duration,
    /// Time budget of one archive download (checked between entries; `None` = unlimited, since
    /// the download streams with bounded memory). When it runs out the ZIP ends early and the
    /// client resumes with `start_after`.
    pub archive_time_budget: Option<Duration>,
    /// Accepted `Host` headers on `/mcp` (DNS-rebinding protection). Empty → any host.
    pub allowed_hosts: Vec<String>,
    /// Largest asset moved inline as base64 (`upload_asset`, `get_asset` with include_binary),
    /// in decoded bytes. Content size limits come from the engine (`Limits`).
    pub max_asset_bytes: u64,
    /// Largest JSON-RPC request body on `/mcp`. Must exceed the base64 size of `max_asset_bytes`.
    pub max_request_body_bytes: usize,
    /// Upper bound for `grep_search.max_results`.
    pub grep_max_results: usize,
    /// Largest file `grep_search` reads (bigger files are skipped).
    pub grep_max_file_bytes: u64,
    /// Time budget of one `grep_search` (then `SEARCH_TIMEOUT` with partial results).
    pub grep_timeout: Duration,
    /// Most file bytes one `grep_search` scans (then it ends with `truncated: true`).
    pub grep_max_scan_bytes: u64,
    /// Scans running at once (others wait, within their own deadline). 0: one per CPU but one.
    pub grep_concurrency: usize,
    /// Largest asset `get_asset` returns inline with `include_binary` (decoded bytes).
    pub max_inline_asset_bytes: u64,
    /// Identity used over stdio (no HTTP request there). Over HTTP the auth middleware decides.
    pub stdio_identity: Option<Identity>,
}

impl Default for PfsMcpConfig {
    fn default() -> Self {
        PfsMcpConfig {
            public_base_url: "http://127.0.0.1:8000".into(),
            cdn_base_url: "https://cdn.panaversity.com".into(),
            archive_signing_key: Vec::new(),
            archive_url_ttl: Duration::from_secs(900),
            archive_time_budget: None,
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            max_asset_bytes: 10 * 1024 * 1024,
            max_request_body_bytes: 16 * 1024 * 1024,
            grep_max_results: 1000,
            grep_max_file_bytes: 4 * 1024 * 1024,
            grep_timeout: Duration::from_secs(5),
            grep_max_scan_bytes: 64 * 1024 * 1024,
            grep_concurrency: 0,
            max_inline_asset_bytes: 4 * 1024 * 1024,
            stdio_identity: None,
        }
    }
}

/// State shared by the tools and routes: the book-store engine and the configuration.
#[derive(Clone)]
pub struct PfsMcpState {
    /// The book store.
    pub engine: Engine,
    /// MCP-layer settings.
    pub config: Arc<PfsMcpConfig>,
    /// Low-priority threads for `grep_search` scans (CPU-bound work off the async workers).
    pub scan_pool: crate::scan_pool::ScanPool,
}

impl PfsMcpState {
    /// Bundle an engine and a configuration. An empty signing key is replaced by a random one
    /// (URLs then only verify on this process).
    pub fn new(engine: Engine, mut config: PfsMcpConfig) -> Self {
        if config.archive_signing_key.is_empty() {
            config.archive_signing_key = random_key();
        }
        let slots = match config.grep_concurrency {
            // One core stays free for the async workers (health checks, other requests).
            0 => {
                std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
            }
            n => n,
        };
        PfsMcpState {
            engine,
            config: Arc::new(config),
            scan_pool: crate::scan_pool::ScanPool::new(slots),
        }
    }
}

fn random_key() -> Vec<u8> {
    use sha2::{Digest, Sha256};
    // Two v4 UUIDs come from the OS RNG; hash them into a 32-byte key.
    let mut h = Sha256::new();
    h.update(uuid::Uuid::new_v4().as_bytes());
    h.update(uuid::Uuid::new_v4().as_bytes());
    h.update(std::process::id().to_le_bytes());
    h.finalize().to_vec()
}
