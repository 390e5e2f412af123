//! Settings of the Study Mode turns (`serve`): checkpointing, resumable streams, duplicates.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use platform::ratelimit::RateLimiter;

/// How ChatKit turns checkpoint, run without a client, and detect duplicates.
#[derive(Debug, Clone, Args)]
pub struct StudyStreamArgs {
    /// Longest time (ms) a streamed reply's received text stays unsaved.
    #[arg(long, env = "STUDY_STREAM_CHECKPOINT_MS", default_value_t = 250)]
    pub stream_checkpoint_ms: u64,
    /// Unsaved reply bytes that force a checkpoint sooner.
    #[arg(long, env = "STUDY_STREAM_CHECKPOINT_BYTES", default_value_t = 2048)]
    pub stream_checkpoint_bytes: usize,
    /// A streaming reply not checkpointed for this long (its server died) is shown as
    /// interrupted; live replies refresh it every third of it.
    #[arg(long, env = "STUDY_STREAM_LEASE_SECS", default_value_t = 30)]
    pub stream_lease_secs: u64,
    /// A turn keeps generating this long after its last client went away (then it stops and
    /// keeps its partial reply); clients re-attach with `threads.resume_stream`.
    #[arg(long, env = "STUDY_DETACHED_TURN_SECS", default_value_t = 120)]
    pub detached_turn_secs: u64,
    /// How long a finished turn can still be re-attached to (and answers duplicates).
    #[arg(long, env = "STUDY_TURN_RETAIN_SECS", default_value_t = 120)]
    pub turn_retain_secs: u64,
    /// The same message within this many seconds is a retry, not a new turn (0: only
    /// `Idempotency-Key` headers deduplicate).
    #[arg(long, env = "STUDY_DEDUPE_WINDOW_SECS", default_value_t = 10)]
    pub dedupe_window_secs: u64,
    /// Lifetime of a cached lesson in seconds (the predecessor's CONTENT_CACHE_TTL).
    #[arg(long, env = "STUDY_LESSON_CACHE_TTL_SECS", default_value_t = 24 * 3600)]
    pub lesson_cache_ttl_secs: u64,
    /// The student name the tutor uses in dev mode when a request has no X-User-Name
    /// (the predecessor's DEV_USER_NAME).
    #[arg(long, env = "STUDY_DEV_USER_NAME")]
    pub dev_user_name: Option<String>,
    /// Where turns can be re-attached: `memory` (the replica running the turn) or `redis`
    /// (every replica: frames mirrored to Redis streams, stops relayed; needs REDIS_URL).
    #[arg(long, env = "STUDY_STREAM_BUS", default_value = "memory")]
    pub stream_bus: StreamBus,
}

/// Where turns can be re-attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StreamBus {
    Memory,
    Redis,
}

impl StudyStreamArgs {
    /// The `/chatkit` state with these settings (connects the Redis stream bus when chosen).
    pub async fn state(
        &self,
        store: study::store::ThreadStore,
        tutor: Arc<dyn study::Tutor>,
        limiter: Arc<dyn RateLimiter>,
        max_body_bytes: usize,
        redis_url: Option<&str>,
    ) -> anyhow::Result<study::server::StudyState> {
        let store = store.with_stream_lease(Duration::from_secs(self.stream_lease_secs.max(1)));
        let streams = study::turns::StreamSettings {
            checkpoint_interval: Duration::from_millis(self.stream_checkpoint_ms.max(10)),
            checkpoint_bytes: self.stream_checkpoint_bytes.max(1),
            detached_limit: Duration::from_secs(self.detached_turn_secs),
            retain: Duration::from_secs(self.turn_retain_secs),
        };
        let mut state =
            study::server::StudyState::with_streams(store, tutor, limiter, max_body_bytes, streams);
        state.dedupe_window = Duration::from_secs(self.dedupe_window_secs);
        state.dev_user_name = self.dev_user_name.clone();
        if self.stream_bus == StreamBus::Redis {
            let url = redis_url
                .ok_or_else(|| anyhow::anyhow!("STUDY_STREAM_BUS=redis needs REDIS_URL"))?;
            let bus = study::turns::RedisBus::connect(url, "study:turns:", streams.retain)
                .await
                .map_err(|e| anyhow::anyhow!("STUDY_STREAM_BUS=redis: {e}"))?;
            state.bus = Some(Arc::new(bus));
        }
        Ok(state)
    }
}

/// The GitHub repository lessons are read from when `GITHUB_REPO` is not set.
pub const DEFAULT_GITHUB_REPO: &str = "panaversity/agentfactory";

/// The LLM provider (any OpenAI-compatible Chat Completions API).
#[derive(Debug, Clone, Args)]
pub struct LlmArgs {
    /// Provider API key. A provider is configured when this or OPENAI_BASE_URL is set.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub openai_api_key: Option<String>,
    /// Provider base URL (default https://api.openai.com/v1).
    #[arg(long, env = "OPENAI_BASE_URL")]
    pub openai_base_url: Option<String>,
    /// Model of teach mode (set both models for a provider other than OpenAI).
    #[arg(long, env = "STUDY_TEACH_MODEL", default_value = "gpt-5-mini")]
    pub teach_model: String,
    /// Model of ask mode.
    #[arg(long, env = "STUDY_ASK_MODEL", default_value = "gpt-5-nano")]
    pub ask_model: String,
    /// TCP/TLS connect timeout to the provider, seconds.
    #[arg(long, env = "LLM_CONNECT_TIMEOUT_SECS", default_value_t = 5.0)]
    pub llm_connect_timeout_secs: f64,
    /// Longest wait for the first token of a reply, seconds.
    #[arg(long, env = "LLM_FIRST_TOKEN_TIMEOUT_SECS", default_value_t = 60.0)]
    pub llm_first_token_timeout_secs: f64,
    /// Longest silence between two chunks of a streamed reply, seconds.
    #[arg(long, env = "LLM_IDLE_TIMEOUT_SECS", default_value_t = 30.0)]
    pub llm_idle_timeout_secs: f64,
    /// Retries of a failed call before its first token.
    #[arg(long, env = "LLM_MAX_RETRIES", default_value_t = 2)]
    pub llm_max_retries: u32,
}

impl LlmArgs {
    /// The client configuration; `None` when no provider is configured (neither an API key nor
    /// a base URL; empty values count as unset).
    pub fn config(&self) -> Option<study::llm::LlmConfig> {
        let set = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        let api_key = set(&self.openai_api_key);
        let base_url = set(&self.openai_base_url);
        if api_key.is_none() && base_url.is_none() {
            return None;
        }
        let d = study::llm::LlmConfig::default();
        let secs = |v: f64, dflt: Duration| {
            Some(v)
                .filter(|v| v.is_finite() && *v > 0.0)
                .map(Duration::from_secs_f64)
                .unwrap_or(dflt)
        };
        let model = |v: &str, dflt: String| {
            Some(v.trim().to_string())
                .filter(|v| !v.is_empty())
                .unwrap_or(dflt)
        };
        Some(study::llm::LlmConfig {
            base_url: base_url.unwrap_or(d.base_url),
            api_key,
            teach_model: model(&self.teach_model, d.teach_model),
            ask_model: model(&self.ask_model, d.ask_model),
            connect_timeout: secs(self.llm_connect_timeout_secs, d.connect_timeout),
            first_token_timeout: secs(self.llm_first_token_timeout_secs, d.first_token_timeout),
            idle_timeout: secs(self.llm_idle_timeout_secs, d.idle_timeout),
            max_retries: self.llm_max_retries,
            initial_backoff: d.initial_backoff,
            max_backoff: d.max_backoff,
        })
    }
}

/// The tutor's lesson source: the explicit one; else GitHub when `GITHUB_REPO` or `GITHUB_TOKEN`
/// is set (the predecessor always read GitHub); else this server's own book store when it also
/// serves PanaversityFS (so the tutor teaches the lesson an agent just edited, and a student's
/// overlay); else the local docs directory.
pub fn lesson_source(
    explicit: Option<crate::config::LessonSourceKind>,
    github_set: bool,
    serves_fs: bool,
) -> crate::config::LessonSourceKind {
    use crate::config::LessonSourceKind;
    match explicit {
        Some(k) => k,
        None if github_set => LessonSourceKind::Github,
        None if serves_fs => LessonSourceKind::Pfs,
        None => LessonSourceKind::Local,
    }
}

/// Graceful shutdown: let running turns (whose clients may be gone) finish, for at most 30 s.
pub async fn drain_turns(turns: &study::turns::TurnHub) {
    let running = turns.running();
    if running == 0 {
        return;
    }
    tracing::info!(
        running,
        "waiting for running tutor turns to finish (at most 30 s)"
    );
    let left = turns.drain(Duration::from_secs(30)).await;
    if left > 0 {
        tracing::warn!(
            left,
            "tutor turns still running at exit; their replies keep their last checkpoint"
        );
    }
}
