//! The lesson service cache: single-flight, stale-while-revalidate, failure caching, Redis.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use study::lessons::{
    CacheConfig, Fetched, LessonError, LessonService, LessonSource, MemoryCache, RawLesson,
};

/// A source whose answers tests control; counts fetches.
#[derive(Default)]
pub struct TestSource {
    pub fetches: AtomicUsize,
    pub conditional_hits: AtomicUsize,
    pub down: AtomicBool,
    pub delay_ms: AtomicUsize,
    pub text: Mutex<Option<String>>,
    pub version: AtomicUsize,
    pub users_seen: Mutex<Vec<Option<String>>>,
    pub per_user: bool,
}

impl TestSource {
    pub fn with_text(text: &str) -> Arc<TestSource> {
        let s = TestSource::default();
        *s.text.lock().unwrap() = Some(text.to_string());
        Arc::new(s)
    }
    pub fn set_text(&self, text: Option<&str>) {
        *self.text.lock().unwrap() = text.map(str::to_string);
        self.version.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl LessonSource for TestSource {
    async fn fetch(&self, _p: &str, user: Option<&str>) -> Result<Option<RawLesson>, LessonError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        self.users_seen
            .lock()
            .unwrap()
            .push(user.map(str::to_string));
        let d = self.delay_ms.load(Ordering::SeqCst);
        if d > 0 {
            tokio::time::sleep(Duration::from_millis(d as u64)).await;
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(LessonError::Unavailable("test source down".into()));
        }
        let v = self.version.load(Ordering::SeqCst);
        Ok(self.text.lock().unwrap().clone().map(|t| RawLesson {
            text: match user {
                Some(u) => format!("{t}\n\nFor {u}."),
                None => t,
            },
            etag: Some(format!("v{v}")),
        }))
    }

    async fn fetch_if_changed(
        &self,
        p: &str,
        user: Option<&str>,
        etag: Option<&str>,
    ) -> Result<Fetched, LessonError> {
        if let Some(e) = etag
            && !self.down.load(Ordering::SeqCst)
            && e == format!("v{}", self.version.load(Ordering::SeqCst))
        {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            self.conditional_hits.fetch_add(1, Ordering::SeqCst);
            return Ok(Fetched::NotModified);
        }
        Ok(match self.fetch(p, user).await? {
            Some(r) => Fetched::Modified(r),
            None => Fetched::NotFound,
        })
    }

    fn per_user(&self) -> bool {
        self.per_user
    }

    fn name(&self) -> &'static str {
        "test"
    }
}

fn mem(ttl: Duration, failure_ttl: Duration) -> CacheConfig {
    CacheConfig {
        store: Arc::new(MemoryCache::new(100)),
        ttl,
        stale_for: Duration::from_secs(3600),
        failure_ttl,
        l1_ttl: Duration::ZERO,
    }
}

#[tokio::test]
async fn concurrent_misses_share_one_fetch() {
    let src = TestSource::with_text("# T\n\nBody");
    src.delay_ms.store(150, Ordering::SeqCst);
    let svc = LessonService::new(src.clone(), CacheConfig::memory());
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { svc.get("01-a/02-b", None).await })
        })
        .collect();
    for t in tasks {
        let l = t.await.unwrap().unwrap().unwrap();
        assert_eq!(l.title, "T");
    }
    assert_eq!(src.fetches.load(Ordering::SeqCst), 1);
    // Now cached: no more fetches.
    svc.get("01-a/02-b", None).await.unwrap().unwrap();
    assert_eq!(src.fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_cancelled_caller_does_not_cancel_the_shared_fetch() {
    let src = TestSource::with_text("# T\n\nBody");
    src.delay_ms.store(200, Ordering::SeqCst);
    let svc = LessonService::new(src.clone(), CacheConfig::memory());
    let first = {
        let svc = svc.clone();
        tokio::spawn(async move { svc.get("a/b", None).await })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    first.abort();
    let l = svc.get("a/b", None).await.unwrap().unwrap();
    assert_eq!(l.title, "T");
    assert_eq!(src.fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn stale_while_revalidate_uses_conditional_fetch() {
    let src = TestSource::with_text("# Old\n\nBody");
    let svc = LessonService::new(
        src.clone(),
        mem(Duration::from_millis(100), Duration::from_secs(60)),
    );
    assert_eq!(svc.get("a/b", None).await.unwrap().unwrap().title, "Old");
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Stale, unchanged: served at once, revalidated with the validator (304 path).
    assert_eq!(svc.get("a/b", None).await.unwrap().unwrap().title, "Old");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(src.conditional_hits.load(Ordering::SeqCst), 1);
    // Fresh again after the 304: no fetch.
    svc.get("a/b", None).await.unwrap();
    assert_eq!(src.fetches.load(Ordering::SeqCst), 2);

    // Changed at the source: the stale copy is served once, then the new one.
    src.set_text(Some("# New\n\nBody"));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(svc.get("a/b", None).await.unwrap().unwrap().title, "Old");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(svc.get("a/b", None).await.unwrap().unwrap().title, "New");
}

#[tokio::test]
async fn source_down_serves_stale_and_backs_off() {
    let src = TestSource::with_text("# Kept\n\nBody");
    let svc = LessonService::new(
        src.clone(),
        mem(Duration::from_millis(50), Duration::from_millis(300)),
    );
    svc.get("a/b", None).await.unwrap().unwrap();
    src.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(80)).await;
    for _ in 0..5 {
        assert_eq!(svc.get("a/b", None).await.unwrap().unwrap().title, "Kept");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One failed revalidation, then backing off for failure_ttl.
    assert_eq!(src.fetches.load(Ordering::SeqCst), 2);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(svc.get("a/b", None).await.unwrap().unwrap().title, "Kept");
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(src.fetches.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn failures_and_not_found_are_cached_briefly() {
    let src = TestSource::with_text("# T\n\nBody");
    src.down.store(true, Ordering::SeqCst);
    let svc = LessonService::new(
        src.clone(),
        mem(Duration::from_secs(60), Duration::from_millis(200)),
    );
    for _ in 0..3 {
        assert!(matches!(
            svc.get("a/b", None).await,
            Err(LessonError::Unavailable(_))
        ));
    }
    assert_eq!(src.fetches.load(Ordering::SeqCst), 1);
    let st = svc.source_status();
    assert!(!st.healthy);
    assert_eq!(st.last_error.as_deref(), Some("test source down"));
    assert_eq!((st.source, st.cache), ("test", "memory"));
    src.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(svc.get("a/b", None).await.unwrap().unwrap().title, "T");
    assert!(svc.source_status().healthy);
    assert_eq!(svc.source_status().last_error, None);

    src.set_text(None);
    for _ in 0..3 {
        assert_eq!(svc.get("a/missing", None).await.unwrap(), None);
    }
    assert_eq!(src.fetches.load(Ordering::SeqCst), 3);
    src.set_text(Some("# Appeared\n\nx"));
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        svc.get("a/missing", None).await.unwrap().unwrap().title,
        "Appeared"
    );
}

#[tokio::test]
async fn invalid_paths_never_reach_the_source() {
    let src = TestSource::with_text("x");
    let svc = LessonService::new(src.clone(), CacheConfig::memory());
    for bad in ["../x", "/abs", "a/%2e%2e/b", "a\\b"] {
        assert!(matches!(
            svc.get(bad, None).await,
            Err(LessonError::InvalidPath(_))
        ));
    }
    assert_eq!(src.fetches.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn invalidate_paths_and_all_including_user_variants() {
    let src = Arc::new(TestSource {
        per_user: true,
        ..TestSource::default()
    });
    src.set_text(Some("# T\n\nBody"));
    let svc = LessonService::new(src.clone(), CacheConfig::memory());
    let a1 = svc.get("a/one", Some("alice")).await.unwrap().unwrap();
    assert!(a1.body.contains("For alice."));
    let b1 = svc.get("a/one", Some("bob")).await.unwrap().unwrap();
    assert!(b1.body.contains("For bob."));
    svc.get("a/two", Some("alice")).await.unwrap();
    assert_eq!(src.fetches.load(Ordering::SeqCst), 3);
    assert_eq!(
        svc.invalidate(Some(vec!["a/one".into(), "../bad".into()]))
            .await
            .unwrap(),
        2
    );
    svc.get("a/one", Some("alice")).await.unwrap();
    svc.get("a/two", Some("alice")).await.unwrap();
    assert_eq!(src.fetches.load(Ordering::SeqCst), 4);
    assert!(svc.invalidate(None).await.unwrap() >= 2);
    svc.get("a/two", Some("alice")).await.unwrap();
    assert_eq!(src.fetches.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn redis_cache_shares_entries_across_services() {
    let Some(url) = platform::db::test_redis_url() else {
        eprintln!("REDIS_URL not set: skipping");
        return;
    };
    let prefix = format!("test:lesson:{}:", uuid::Uuid::new_v4().simple());
    let src = TestSource::with_text("# Shared\n\nBody");
    // No in-process layer here: this part checks what replicas share through Redis.
    let cfg = CacheConfig::redis(&url, &prefix)
        .await
        .unwrap()
        .with_l1_ttl(Duration::ZERO);
    assert_eq!(cfg.store.backend(), "redis");
    let svc1 = LessonService::new(src.clone(), cfg.clone());
    let svc2 = LessonService::new(
        src.clone(),
        CacheConfig::redis(&url, &prefix)
            .await
            .unwrap()
            .with_l1_ttl(Duration::ZERO),
    );
    assert_eq!(
        svc1.get("r/one", None).await.unwrap().unwrap().title,
        "Shared"
    );
    // A second replica finds it in Redis.
    assert_eq!(
        svc2.get("r/one", None).await.unwrap().unwrap().title,
        "Shared"
    );
    assert_eq!(src.fetches.load(Ordering::SeqCst), 1);
    svc1.get("r/two", None).await.unwrap();
    assert_eq!(src.fetches.load(Ordering::SeqCst), 2);

    // Not-found is cached in Redis with the short TTL.
    src.set_text(None);
    assert_eq!(svc1.get("r/none", None).await.unwrap(), None);
    assert_eq!(svc2.get("r/none", None).await.unwrap(), None);
    assert_eq!(src.fetches.load(Ordering::SeqCst), 3);
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let pttl: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}r/none"))
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(pttl > 0 && pttl <= 60_000, "{pttl}");
    let pttl: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}r/one"))
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(pttl > 24 * 3600 * 1000, "{pttl}");

    // Invalidation through one replica is seen by the other.
    src.set_text(Some("# Updated\n\nBody"));
    assert_eq!(
        svc2.invalidate(Some(vec!["r/one".into()])).await.unwrap(),
        1
    );
    assert_eq!(
        svc1.get("r/one", None).await.unwrap().unwrap().title,
        "Updated"
    );
    assert!(svc1.invalidate(None).await.unwrap() >= 2);
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");

    // With the default in-process layer a replica does not read Redis on every turn: deleting
    // the Redis key behind its back does not cause a source fetch within the L1 TTL.
    let svc3 = LessonService::new(
        src.clone(),
        CacheConfig::redis(&url, &prefix).await.unwrap(),
    );
    assert_eq!(
        svc3.get("r/l1", None).await.unwrap().unwrap().title,
        "Updated"
    );
    let before = src.fetches.load(Ordering::SeqCst);
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{prefix}r/l1"))
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(
        svc3.get("r/l1", None).await.unwrap().unwrap().title,
        "Updated"
    );
    assert_eq!(src.fetches.load(Ordering::SeqCst), before);
    // Its own invalidation clears its in-process copy too.
    svc3.invalidate(Some(vec!["r/l1".into()])).await.unwrap();
    svc3.get("r/l1", None).await.unwrap();
    assert_eq!(src.fetches.load(Ordering::SeqCst), before + 1);
    svc3.invalidate(None).await.unwrap();
}

#[tokio::test]
async fn replicas_sharing_redis_fetch_a_missing_lesson_once() {
    let Some(url) = platform::db::test_redis_url() else {
        eprintln!("REDIS_URL not set: skipping");
        return;
    };
    let prefix = format!("test:lease:{}:", uuid::Uuid::new_v4().simple());
    let src = TestSource::with_text("# Once\n\nBody");
    src.delay_ms.store(300, Ordering::SeqCst);
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(LessonService::new(
            src.clone(),
            CacheConfig::redis(&url, &prefix)
                .await
                .unwrap()
                .with_l1_ttl(Duration::ZERO),
        ));
    }
    let tasks: Vec<_> = replicas
        .iter()
        .flat_map(|svc| {
            (0..5).map(move |_| {
                let svc = svc.clone();
                tokio::spawn(async move { svc.get("x/once", None).await })
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().unwrap().title, "Once");
    }
    assert_eq!(src.fetches.load(Ordering::SeqCst), 1);
    // The lease was released.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let leases: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}lease:*"))
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(leases.is_empty(), "{leases:?}");
    replicas[0].invalidate(None).await.unwrap();
}
