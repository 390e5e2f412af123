//! The lesson service: source + cache with single-flight, stale-while-revalidate and bounded
//! failure caching.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use super::cache::{CacheEntry, CacheStore, EntryState, MemoryCache, RedisCache, USER_SEP};
use super::{Fetched, Lesson, LessonError, LessonSource, validate_lesson_path};

/// Cache behaviour.
#[derive(Clone)]
pub struct CacheConfig {
    /// Where entries live (Redis shared by replicas, or in-process).
    pub store: Arc<dyn CacheStore>,
    /// How long a loaded lesson is fresh (default 24 h, `CONTENT_CACHE_TTL`).
    pub ttl: Duration,
    /// How long after `ttl` a stale lesson is still kept, served while it is revalidated in the
    /// background and served when the source is down (default 7 days).
    pub stale_for: Duration,
    /// How long a failure or a not-found answer is remembered (at most 60 s).
    pub failure_ttl: Duration,
    /// With a shared (Redis) store: how long each replica keeps entries in process as well, to
    /// spare Redis a read per turn (default 30 s; zero disables). An invalidation reaches other
    /// replicas' in-process copies after at most this long.
    pub l1_ttl: Duration,
}

/// How long one replica may hold the right to fetch a lesson for all replicas.
const LEASE_TTL: Duration = Duration::from_secs(15);
/// How long a replica waits for another replica's fetch before fetching itself.
const LEASE_WAIT: Duration = Duration::from_secs(5);
/// Poll interval while waiting.
const LEASE_POLL: Duration = Duration::from_millis(40);

/// Upper bound of [`CacheConfig::failure_ttl`].
pub const MAX_FAILURE_TTL: Duration = Duration::from_secs(60);

impl CacheConfig {
    /// An in-process cache with default timings.
    pub fn memory() -> CacheConfig {
        CacheConfig {
            store: Arc::new(MemoryCache::new(10_000)),
            ttl: Duration::from_secs(24 * 3600),
            stale_for: Duration::from_secs(7 * 24 * 3600),
            failure_ttl: MAX_FAILURE_TTL,
            l1_ttl: Duration::from_secs(30),
        }
    }

    /// A Redis cache (keys `{prefix}{lesson path}`, e.g. prefix `study:lesson:`) with default
    /// timings. Fails when Redis is unreachable; callers may then fall back to [`Self::memory`].
    pub async fn redis(url: &str, prefix: &str) -> Result<CacheConfig, String> {
        let store = RedisCache::connect(url, prefix).await?;
        Ok(CacheConfig {
            store: Arc::new(store),
            ..CacheConfig::memory()
        })
    }
}

impl CacheConfig {
    /// The same cache with another in-process TTL in front of a shared store (zero disables).
    pub fn with_l1_ttl(mut self, ttl: Duration) -> CacheConfig {
        self.l1_ttl = ttl;
        self
    }

    /// The same cache with another freshness TTL (e.g. from `CONTENT_CACHE_TTL` seconds).
    pub fn with_ttl(mut self, ttl: Duration) -> CacheConfig {
        self.ttl = ttl;
        self
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig::memory()
    }
}

type LoadResult = Result<Option<Arc<Lesson>>, LessonError>;
type Inflight = Shared<BoxFuture<'static, LoadResult>>;

struct Inner {
    source: Arc<dyn LessonSource>,
    cfg: CacheConfig,
    /// In-process copy in front of a shared store.
    l1: Option<MemoryCache>,
    inflight: Mutex<HashMap<String, Inflight>>,
    health: Mutex<Health>,
}

#[derive(Default)]
struct Health {
    last_ok_ms: Option<i64>,
    last_error: Option<(i64, String)>,
}

/// What readiness checks report about the lesson source (no I/O: the outcome of recent fetches).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SourceStatus {
    /// `local`, `github`, `pfs`.
    pub source: &'static str,
    /// `memory`, `redis`.
    pub cache: &'static str,
    /// False when the most recent fetch failed.
    pub healthy: bool,
    /// The most recent failure, if it is newer than the most recent success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Loads lessons through the cache. Cheap to clone.
#[derive(Clone)]
pub struct LessonService {
    inner: Arc<Inner>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl LessonService {
    /// A service over `source` with this cache.
    pub fn new(source: Arc<dyn LessonSource>, mut cfg: CacheConfig) -> LessonService {
        cfg.failure_ttl = cfg.failure_ttl.min(MAX_FAILURE_TTL);
        let l1 = (cfg.store.backend() != "memory" && !cfg.l1_ttl.is_zero())
            .then(|| MemoryCache::new(10_000));
        LessonService {
            inner: Arc::new(Inner {
                source,
                cfg,
                l1,
                inflight: Mutex::new(HashMap::new()),
                health: Mutex::new(Health::default()),
            }),
        }
    }

    /// The source's name (`local`, `github`, `pfs`).
    pub fn source_name(&self) -> &'static str {
        self.inner.source.name()
    }

    /// The cache backend (`memory`, `redis`).
    pub fn cache_backend(&self) -> &'static str {
        self.inner.cfg.store.backend()
    }

    /// The source's recent health (for `/health/ready`).
    pub fn source_status(&self) -> SourceStatus {
        let h = self.inner.health.lock().unwrap_or_else(|p| p.into_inner());
        let failing = match (&h.last_error, h.last_ok_ms) {
            (Some((t, _)), Some(ok)) => *t > ok,
            (Some(_), None) => true,
            (None, _) => false,
        };
        SourceStatus {
            source: self.inner.source.name(),
            cache: self.inner.cfg.store.backend(),
            healthy: !failing,
            last_error: if failing {
                h.last_error.as_ref().map(|(_, m)| m.clone())
            } else {
                None
            },
        }
    }

    /// Load a lesson. `Ok(None)`: no such lesson. `user` matters only for per-user sources
    /// (a PanaversityFS overlay). Served from the cache when fresh; a stale lesson is served at
    /// once and revalidated in the background; concurrent misses share one source fetch; when
    /// the source fails, a cached lesson (however old) is served.
    pub async fn get(&self, lesson_path: &str, user: Option<&str>) -> LoadResult {
        let path = validate_lesson_path(lesson_path)?;
        let user = if self.inner.source.per_user() {
            user.filter(|u| !u.is_empty())
        } else {
            None
        };
        let key = match user {
            Some(u) => format!("{path}{USER_SEP}{u}"),
            None => path.clone(),
        };
        let cached = self.inner.cache_get(&key).await;
        let now = now_ms();
        if let Some(entry) = cached {
            match &entry.state {
                EntryState::Found { lesson, .. } => {
                    let lesson = Arc::new(lesson.clone());
                    let fresh = now - entry.fetched_at_ms < ms(self.inner.cfg.ttl);
                    let backing_off = entry.retry_at_ms.is_some_and(|t| t > now);
                    if fresh || backing_off {
                        metrics::counter!("study_lesson_cache_total", "result" => "hit")
                            .increment(1);
                        return Ok(Some(lesson));
                    }
                    metrics::counter!("study_lesson_cache_total", "result" => "stale").increment(1);
                    let refresh = self.load(key, path, user.map(str::to_string), Some(entry));
                    tokio::spawn(async move {
                        let _ = refresh.await;
                    });
                    return Ok(Some(lesson));
                }
                EntryState::NotFound => return Ok(None),
                EntryState::Failed { message } => {
                    return Err(LessonError::Unavailable(message.clone()));
                }
            }
        }
        metrics::counter!("study_lesson_cache_total", "result" => "miss").increment(1);
        self.load(key, path, user.map(str::to_string), None).await
    }

    /// Single-flight: join the running load for `key` or start one (in its own task, so a
    /// cancelled caller does not cancel it for the others).
    fn load(
        &self,
        key: String,
        path: String,
        user: Option<String>,
        prev: Option<CacheEntry>,
    ) -> Inflight {
        let mut map = self
            .inner
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(f) = map.get(&key) {
            return f.clone();
        }
        let inner = self.inner.clone();
        let k = key.clone();
        let handle = tokio::spawn(async move {
            let r = inner
                .fetch_and_store(&k, &path, user.as_deref(), prev)
                .await;
            inner
                .inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&k);
            r
        });
        let fut: Inflight = async move {
            handle.await.unwrap_or_else(|e| {
                Err(LessonError::Unavailable(format!(
                    "lesson load task failed: {e}"
                )))
            })
        }
        .boxed()
        .shared();
        map.insert(key, fut.clone());
        fut
    }

    /// Drop cached lessons: the given paths (with all their per-user variants), or everything.
    /// Invalid paths are skipped. Returns the number of cache entries removed.
    pub async fn invalidate(&self, paths: Option<Vec<String>>) -> Result<u64, String> {
        let store = &self.inner.cfg.store;
        if let Some(l1) = &self.inner.l1 {
            match &paths {
                None => {
                    let _ = l1.clear().await;
                }
                Some(ps) => {
                    for p in ps {
                        if let Ok(p) = validate_lesson_path(p) {
                            let _ = l1.delete_lesson(&p).await;
                        }
                    }
                }
            }
        }
        match paths {
            None => store.clear().await,
            Some(paths) => {
                let mut n = 0;
                for p in paths {
                    match validate_lesson_path(&p) {
                        Ok(p) => {
                            let p = p
                                .strip_suffix(".mdx")
                                .or_else(|| p.strip_suffix(".md"))
                                .unwrap_or(&p)
                                .to_string();
                            n += store.delete_lesson(&p).await?;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "skipping invalid path in invalidation")
                        }
                    }
                }
                Ok(n)
            }
        }
    }
}

impl Inner {
    async fn cache_get(&self, key: &str) -> Option<CacheEntry> {
        if let Some(l1) = &self.l1
            && let Ok(Some(e)) = l1.get(key).await
        {
            return Some(e);
        }
        match self.cfg.store.get(key).await {
            Ok(Some(e)) => {
                if let Some(l1) = &self.l1 {
                    let _ = l1.put(key, &e, self.cfg.l1_ttl).await;
                }
                Some(e)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "lesson cache read failed; going to the source");
                metrics::counter!("study_lesson_cache_errors_total").increment(1);
                None
            }
        }
    }

    async fn put(&self, key: &str, entry: &CacheEntry, ttl: Duration) {
        if let Some(l1) = &self.l1 {
            let _ = l1.put(key, entry, ttl.min(self.cfg.l1_ttl)).await;
        }
        if let Err(e) = self.cfg.store.put(key, entry, ttl).await {
            tracing::warn!(error = %e, "lesson cache write failed");
            metrics::counter!("study_lesson_cache_errors_total").increment(1);
        }
    }

    /// Cross-replica single-flight around [`Self::fetch_from_source`]: when another replica holds
    /// the lease for `key`, wait (briefly) for the entry it writes instead of fetching too.
    async fn fetch_and_store(
        &self,
        key: &str,
        path: &str,
        user: Option<&str>,
        prev: Option<CacheEntry>,
    ) -> LoadResult {
        let store = &self.cfg.store;
        let lease = match store.try_lease(key, LEASE_TTL).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "lesson fetch lease unavailable; fetching anyway");
                Some(String::new())
            }
        };
        let Some(token) = lease else {
            let since = prev.as_ref().map(|e| e.fetched_at_ms).unwrap_or(i64::MIN);
            let deadline = tokio::time::Instant::now() + LEASE_WAIT;
            while tokio::time::Instant::now() < deadline {
                tokio::time::sleep(LEASE_POLL).await;
                if let Ok(Some(e)) = store.get(key).await
                    && e.fetched_at_ms > since
                {
                    metrics::counter!("study_lesson_cache_total", "result" => "shared_fetch")
                        .increment(1);
                    if let Some(l1) = &self.l1 {
                        let _ = l1.put(key, &e, self.cfg.l1_ttl).await;
                    }
                    return match e.state {
                        EntryState::Found { lesson, .. } => Ok(Some(Arc::new(lesson))),
                        EntryState::NotFound => Ok(None),
                        EntryState::Failed { message } => Err(LessonError::Unavailable(message)),
                    };
                }
            }
            return self.fetch_from_source(key, path, user, prev).await;
        };
        let res = self.fetch_from_source(key, path, user, prev).await;
        if !token.is_empty()
            && let Err(e) = store.release_lease(key, &token).await
        {
            tracing::debug!(error = %e, "releasing the lesson fetch lease failed (it expires)");
        }
        res
    }

    async fn fetch_from_source(
        &self,
        key: &str,
        path: &str,
        user: Option<&str>,
        prev: Option<CacheEntry>,
    ) -> LoadResult {
        let keep = self.cfg.ttl + self.cfg.stale_for;
        let prev_found = prev.and_then(|e| match e.state {
            EntryState::Found { lesson, etag } => Some((lesson, etag)),
            _ => None,
        });
        let etag = prev_found.as_ref().and_then(|(_, e)| e.as_deref());
        metrics::counter!("study_lesson_source_fetches_total").increment(1);
        let started = std::time::Instant::now();
        let res = self.source.fetch_if_changed(path, user, etag).await;
        metrics::histogram!("study_lesson_source_seconds").record(started.elapsed().as_secs_f64());
        let now = now_ms();
        {
            let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
            match &res {
                Ok(_) => h.last_ok_ms = Some(now),
                Err(LessonError::Unavailable(m)) => h.last_error = Some((now, m.clone())),
                Err(LessonError::InvalidPath(_)) => {}
            }
        }
        match res {
            Ok(Fetched::Modified(raw)) => {
                let lesson = Lesson::parse(path, &raw.text);
                let entry = CacheEntry {
                    state: EntryState::Found {
                        lesson: lesson.clone(),
                        etag: raw.etag,
                    },
                    fetched_at_ms: now,
                    retry_at_ms: None,
                };
                self.put(key, &entry, keep).await;
                Ok(Some(Arc::new(lesson)))
            }
            Ok(Fetched::NotModified) => match prev_found {
                Some((lesson, etag)) => {
                    let entry = CacheEntry {
                        state: EntryState::Found {
                            lesson: lesson.clone(),
                            etag,
                        },
                        fetched_at_ms: now,
                        retry_at_ms: None,
                    };
                    self.put(key, &entry, keep).await;
                    Ok(Some(Arc::new(lesson)))
                }
                // 304 without a copy cannot happen with a well-behaved source; fetch in full.
                None => match self.source.fetch(path, user).await {
                    Ok(Some(raw)) => Ok(Some(Arc::new(Lesson::parse(path, &raw.text)))),
                    Ok(None) => Ok(None),
                    Err(e) => Err(e),
                },
            },
            Ok(Fetched::NotFound) => {
                let entry = CacheEntry {
                    state: EntryState::NotFound,
                    fetched_at_ms: now,
                    retry_at_ms: None,
                };
                self.put(key, &entry, self.cfg.failure_ttl).await;
                Ok(None)
            }
            Err(e @ LessonError::InvalidPath(_)) => Err(e),
            Err(LessonError::Unavailable(message)) => {
                tracing::warn!(path, error = %message, "lesson source failed");
                metrics::counter!("study_lesson_source_errors_total").increment(1);
                match prev_found {
                    Some((lesson, etag)) => {
                        // Serve the stale copy; do not ask the source again for a while.
                        let entry = CacheEntry {
                            state: EntryState::Found {
                                lesson: lesson.clone(),
                                etag,
                            },
                            fetched_at_ms: now - ms(self.cfg.ttl),
                            retry_at_ms: Some(now + ms(self.cfg.failure_ttl)),
                        };
                        self.put(key, &entry, keep).await;
                        Ok(Some(Arc::new(lesson)))
                    }
                    None => {
                        let entry = CacheEntry {
                            state: EntryState::Failed {
                                message: message.clone(),
                            },
                            fetched_at_ms: now,
                            retry_at_ms: None,
                        };
                        self.put(key, &entry, self.cfg.failure_ttl).await;
                        Err(LessonError::Unavailable(message))
                    }
                }
            }
        }
    }
}
