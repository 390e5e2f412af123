//! In-process fixed-window limiter (the embedded default, and the fallback without Redis).
//! Exact within one process; keys are spread over mutex-guarded shards, and expired windows are
//! swept from a shard when it grows.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Decision, RateLimiter};

const SHARDS: usize = 32;
/// A shard is swept of expired windows whenever it has grown past this many keys since the last sweep.
const SWEEP_AT: usize = 1024;

struct Window {
    start: Instant,
    count: u64,
}

struct Shard {
    map: HashMap<String, Window>,
    sweep_at: usize,
}

/// Fixed-window counter per key, in process memory.
pub struct MemoryLimiter {
    limit: u64,
    window: Duration,
    shards: Vec<Mutex<Shard>>,
}

impl MemoryLimiter {
    /// `limit` requests per `window` per key.
    pub fn new(limit: u64, window: Duration) -> MemoryLimiter {
        MemoryLimiter {
            limit,
            window: window.max(Duration::from_millis(1)),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::new(),
                        sweep_at: SWEEP_AT,
                    })
                })
                .collect(),
        }
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    /// Number of keys currently tracked (for tests and metrics).
    pub fn tracked_keys(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.map.len()).unwrap_or(0))
            .sum()
    }

    /// Count one request for `key` now (synchronous core of [`RateLimiter::check`]).
    pub fn check_now(&self, key: &str) -> Decision {
        let now = Instant::now();
        let Ok(mut shard) = self.shard(key).lock() else {
            super::record_fail_open("memory", &"limiter lock poisoned");
            return Decision {
                allowed: true,
                limit: self.limit,
                remaining: self.limit,
                reset_after: self.window,
                failed_open: true,
            };
        };
        if shard.map.len() >= shard.sweep_at {
            let window = self.window;
            shard
                .map
                .retain(|_, w| now.duration_since(w.start) < window);
            shard.sweep_at = (shard.map.len() * 2).max(SWEEP_AT);
        }
        let w = shard.map.entry(key.to_owned()).or_insert(Window {
            start: now,
            count: 0,
        });
        if now.duration_since(w.start) >= self.window {
            w.start = now;
            w.count = 0;
        }
        w.count = w.count.saturating_add(1);
        let reset_after = self.window.saturating_sub(now.duration_since(w.start));
        Decision {
            allowed: w.count <= self.limit,
            limit: self.limit,
            remaining: self.limit.saturating_sub(w.count),
            reset_after,
            failed_open: false,
        }
    }
}

#[async_trait::async_trait]
impl RateLimiter for MemoryLimiter {
    async fn check(&self, key: &str) -> Decision {
        self.check_now(key)
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_resets_and_keys_are_independent() {
        let l = MemoryLimiter::new(2, Duration::from_millis(50));
        assert!(l.check_now("a").allowed);
        let d = l.check_now("a");
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        assert!(!l.check_now("a").allowed);
        assert!(l.check_now("b").allowed);
        std::thread::sleep(Duration::from_millis(60));
        assert!(l.check_now("a").allowed);
    }

    #[test]
    fn expired_keys_are_evicted() {
        let l = MemoryLimiter::new(1, Duration::from_millis(10));
        for i in 0..(SHARDS * SWEEP_AT) {
            l.check_now(&format!("k{i}"));
        }
        std::thread::sleep(Duration::from_millis(20));
        for i in 0..(SHARDS * SWEEP_AT) {
            l.check_now(&format!("n{i}"));
        }
        assert!(l.tracked_keys() < 2 * SHARDS * SWEEP_AT);
    }
}
