//! Lesson cache stores: in-process and Redis.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use super::Lesson;

/// What we know about one lesson key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EntryState {
    /// The lesson and its validator.
    Found {
        lesson: Lesson,
        etag: Option<String>,
    },
    /// The source says there is no such lesson.
    NotFound,
    /// The source failed and we had nothing to serve.
    Failed { message: String },
}

/// One cached record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    pub state: EntryState,
    /// When the source last confirmed this state (ms since the Unix epoch).
    pub fetched_at_ms: i64,
    /// After a failed revalidation of a found lesson: do not ask the source again before this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at_ms: Option<i64>,
}

/// Storage for lesson cache entries. Keys are relative: the store adds its own prefix.
#[async_trait::async_trait]
pub trait CacheStore: Send + Sync + 'static {
    /// Read an entry (`Ok(None)` when absent or expired).
    async fn get(&self, key: &str) -> Result<Option<CacheEntry>, String>;
    /// Write an entry that expires after `ttl`.
    async fn put(&self, key: &str, entry: &CacheEntry, ttl: Duration) -> Result<(), String>;
    /// Delete `key` and every per-user variant `key@u:*`; returns how many were removed.
    async fn delete_lesson(&self, key: &str) -> Result<u64, String>;
    /// Delete every lesson entry of this store.
    async fn clear(&self) -> Result<u64, String>;
    /// `memory` or `redis`.
    fn backend(&self) -> &'static str;

    /// Try to become the one process that fetches `key` from the source for `ttl` (cross-replica
    /// single-flight). `Some(token)` when granted. Stores without cross-process coordination
    /// always grant it (the in-process single-flight already covers them).
    async fn try_lease(&self, key: &str, ttl: Duration) -> Result<Option<String>, String> {
        let _ = (key, ttl);
        Ok(Some(String::new()))
    }

    /// Give a lease back (only if `token` still holds it).
    async fn release_lease(&self, key: &str, token: &str) -> Result<(), String> {
        let _ = (key, token);
        Ok(())
    }
}

/// Prefix of lease keys (lesson paths cannot contain `:`, so these never collide with entries).
pub const LEASE_PREFIX: &str = "lease:";

/// Separator between a lesson path and the user in per-user cache keys.
pub const USER_SEP: &str = "@u:";

/// An in-process cache with a size bound (the entries closest to expiry are evicted first).
pub struct MemoryCache {
    map: Mutex<HashMap<String, (Instant, CacheEntry)>>,
    max_entries: usize,
}

impl MemoryCache {
    /// A cache holding at most `max_entries` lessons.
    pub fn new(max_entries: usize) -> MemoryCache {
        MemoryCache {
            map: Mutex::new(HashMap::new()),
            max_entries: max_entries.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, CacheEntry)>> {
        // A panic while holding the lock cannot leave the map inconsistent (single operations).
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl CacheStore for MemoryCache {
    async fn get(&self, key: &str) -> Result<Option<CacheEntry>, String> {
        let mut map = self.lock();
        match map.get(key) {
            Some((exp, e)) if *exp > Instant::now() => Ok(Some(e.clone())),
            Some(_) => {
                map.remove(key);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn put(&self, key: &str, entry: &CacheEntry, ttl: Duration) -> Result<(), String> {
        let mut map = self.lock();
        let now = Instant::now();
        if map.len() >= self.max_entries && !map.contains_key(key) {
            map.retain(|_, (exp, _)| *exp > now);
            while map.len() >= self.max_entries {
                let victim = map
                    .iter()
                    .min_by_key(|(_, (exp, _))| *exp)
                    .map(|(k, _)| k.clone());
                match victim {
                    Some(k) => map.remove(&k),
                    None => break,
                };
            }
        }
        map.insert(key.to_string(), (now + ttl, entry.clone()));
        Ok(())
    }

    async fn delete_lesson(&self, key: &str) -> Result<u64, String> {
        let mut map = self.lock();
        let before = map.len();
        let user_prefix = format!("{key}{USER_SEP}");
        map.retain(|k, _| k != key && !k.starts_with(&user_prefix));
        Ok((before - map.len()) as u64)
    }

    async fn clear(&self) -> Result<u64, String> {
        let mut map = self.lock();
        let n = map.len() as u64;
        map.clear();
        Ok(n)
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

/// A Redis-backed cache shared by all replicas (JSON values, `SET PX`).
#[derive(Clone)]
pub struct RedisCache {
    cm: ConnectionManager,
    prefix: String,
}

impl RedisCache {
    /// Connect (fails fast when Redis is unreachable). Keys are `{prefix}{lesson key}`.
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisCache, String> {
        let cm = crate::redis_conn::connect(url).await?;
        Ok(RedisCache {
            cm,
            prefix: prefix.to_string(),
        })
    }

    async fn delete_matching(&self, pattern: &str) -> Result<u64, String> {
        let mut cm = self.cm.clone();
        let mut cursor: u64 = 0;
        let mut deleted = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut cm)
                .await
                .map_err(|e| format!("Redis SCAN failed: {e}"))?;
            if !keys.is_empty() {
                let n: u64 = redis::cmd("DEL")
                    .arg(&keys)
                    .query_async(&mut cm)
                    .await
                    .map_err(|e| format!("Redis DEL failed: {e}"))?;
                deleted += n;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}

/// Escape Redis glob metacharacters.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[async_trait::async_trait]
impl CacheStore for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<CacheEntry>, String> {
        let mut cm = self.cm.clone();
        let v: Option<String> = redis::cmd("GET")
            .arg(format!("{}{key}", self.prefix))
            .query_async(&mut cm)
            .await
            .map_err(|e| format!("Redis GET failed: {e}"))?;
        match v {
            None => Ok(None),
            // An undecodable entry (older format) is a miss, not an error.
            Some(s) => Ok(serde_json::from_str(&s).ok()),
        }
    }

    async fn put(&self, key: &str, entry: &CacheEntry, ttl: Duration) -> Result<(), String> {
        let mut cm = self.cm.clone();
        let json = serde_json::to_string(entry).map_err(|e| format!("encode: {e}"))?;
        let ms = ttl.as_millis().clamp(1, u64::MAX as u128) as u64;
        redis::cmd("SET")
            .arg(format!("{}{key}", self.prefix))
            .arg(json)
            .arg("PX")
            .arg(ms)
            .query_async::<()>(&mut cm)
            .await
            .map_err(|e| format!("Redis SET failed: {e}"))
    }

    async fn delete_lesson(&self, key: &str) -> Result<u64, String> {
        let mut cm = self.cm.clone();
        let n: u64 = redis::cmd("DEL")
            .arg(format!("{}{key}", self.prefix))
            .query_async(&mut cm)
            .await
            .map_err(|e| format!("Redis DEL failed: {e}"))?;
        let pattern = format!(
            "{}{USER_SEP}*",
            glob_escape(&format!("{}{key}", self.prefix))
        );
        Ok(n + self.delete_matching(&pattern).await?)
    }

    async fn clear(&self) -> Result<u64, String> {
        self.delete_matching(&format!("{}*", glob_escape(&self.prefix)))
            .await
    }

    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn try_lease(&self, key: &str, ttl: Duration) -> Result<Option<String>, String> {
        let mut cm = self.cm.clone();
        let token = uuid::Uuid::new_v4().simple().to_string();
        let ms = ttl.as_millis().clamp(1, u64::MAX as u128) as u64;
        let ok: Option<String> = redis::cmd("SET")
            .arg(format!("{}{LEASE_PREFIX}{key}", self.prefix))
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(ms)
            .query_async(&mut cm)
            .await
            .map_err(|e| format!("Redis SET NX failed: {e}"))?;
        Ok(ok.map(|_| token))
    }

    async fn release_lease(&self, key: &str, token: &str) -> Result<(), String> {
        static RELEASE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
            redis::Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
            )
        });
        let mut cm = self.cm.clone();
        RELEASE
            .key(format!("{}{LEASE_PREFIX}{key}", self.prefix))
            .arg(token)
            .invoke_async::<i64>(&mut cm)
            .await
            .map(|_| ())
            .map_err(|e| format!("Redis lease release failed: {e}"))
    }
}
