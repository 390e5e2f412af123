//! Redis fixed-window limiter: one atomic Lua script (INCR + PEXPIRE + PTTL, run with EVALSHA),
//! so the count is exact across any number of replicas sharing the Redis. Every Redis problem
//! (down, slow, refused, script error) fails open quickly: the request is allowed,
//! `Decision.failed_open` is set and `ratelimit_failopen_total` counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Decision, RateLimiter, record_fail_open};

/// Connection and response timeout for Redis calls.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(200);
/// After a failure, skip Redis (fail open at once) for this long before trying again.
pub const BREAKER_OPEN: Duration = Duration::from_millis(500);

const SCRIPT: &str = r"
local current = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if current == 1 or ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {current, ttl}
";

/// Rate limiter backed by Redis. Cheap to share behind an `Arc`.
pub struct RedisLimiter {
    conn: ConnectionManager,
    script: redis::Script,
    prefix: String,
    limit: u64,
    window: Duration,
    base: Instant,
    /// Milliseconds since `base` until which Redis is skipped (circuit breaker).
    open_until_ms: AtomicU64,
}

impl RedisLimiter {
    /// `limit` requests per `window` per key; Redis keys are `{key_prefix}{key}`. Connects lazily
    /// (a Redis that is down at start only makes checks fail open) and reconnects on its own.
    /// Must be called inside a Tokio runtime.
    pub fn new(
        redis_url: &str,
        key_prefix: &str,
        limit: u64,
        window: Duration,
    ) -> anyhow::Result<RedisLimiter> {
        tokio::runtime::Handle::try_current()
            .context("RedisLimiter::new must be called inside a Tokio runtime")?;
        let client = redis::Client::open(redis_url).context("parsing the Redis URL")?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(0);
        let conn = ConnectionManager::new_lazy_with_config(client, cfg)
            .context("creating the Redis connection manager")?;
        anyhow::ensure!(
            window >= Duration::from_millis(1),
            "rate-limit window must be at least 1 ms"
        );
        Ok(RedisLimiter {
            conn,
            script: redis::Script::new(SCRIPT),
            prefix: key_prefix.to_owned(),
            limit,
            window,
            base: Instant::now(),
            open_until_ms: AtomicU64::new(0),
        })
    }

    /// `PING` Redis (for readiness checks), bounded by the Redis timeout.
    pub async fn ping(&self) -> anyhow::Result<()> {
        let mut conn = self.conn.clone();
        let call = async move { redis::cmd("PING").query_async::<String>(&mut conn).await };
        match tokio::time::timeout(REDIS_TIMEOUT + Duration::from_millis(50), call).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(anyhow::anyhow!("Redis PING failed: {e}")),
            Err(_) => Err(anyhow::anyhow!("Redis PING timed out")),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn fail_open(&self, err: &dyn std::fmt::Display) -> Decision {
        let until = self
            .now_ms()
            .saturating_add(u64::try_from(BREAKER_OPEN.as_millis()).unwrap_or(500));
        self.open_until_ms.store(until, Ordering::Relaxed);
        record_fail_open("redis", err);
        self.open_decision()
    }

    fn open_decision(&self) -> Decision {
        Decision {
            allowed: true,
            limit: self.limit,
            remaining: self.limit.saturating_sub(1),
            reset_after: self.window,
            failed_open: true,
        }
    }

    async fn run(&self, key: &str) -> Result<(i64, i64), String> {
        let window_ms = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX);
        let mut conn = self.conn.clone();
        let full_key = format!("{}{}", self.prefix, key);
        let call = async move {
            self.script
                .key(&full_key)
                .arg(window_ms)
                .invoke_async::<(i64, i64)>(&mut conn)
                .await
        };
        match tokio::time::timeout(REDIS_TIMEOUT + Duration::from_millis(50), call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("Redis call timed out".to_owned()),
        }
    }
}

#[async_trait::async_trait]
impl RateLimiter for RedisLimiter {
    async fn check(&self, key: &str) -> Decision {
        if self.now_ms() < self.open_until_ms.load(Ordering::Relaxed) {
            record_fail_open("redis", &"circuit open after a recent Redis failure");
            return self.open_decision();
        }
        let started = Instant::now();
        let res = self.run(key).await;
        metrics::histogram!("ratelimit_check_duration_seconds", "backend" => "redis")
            .record(started.elapsed().as_secs_f64());
        match res {
            Ok((current, ttl_ms)) => {
                let current = u64::try_from(current.max(0)).unwrap_or(0);
                let reset_after = if ttl_ms > 0 {
                    Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(0))
                } else {
                    self.window
                };
                Decision {
                    allowed: current <= self.limit,
                    limit: self.limit,
                    remaining: self.limit.saturating_sub(current),
                    reset_after,
                    failed_open: false,
                }
            }
            Err(e) => self.fail_open(&e),
        }
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}
