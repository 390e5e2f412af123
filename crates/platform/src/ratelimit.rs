//! Rate limiting per authenticated user: a Redis limiter (atomic Lua script, exact across
//! replicas, fail-open when Redis is down) and an in-process limiter for the embedded default.

use std::time::Duration;

/// The outcome of one rate-limit check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests allowed per window.
    pub limit: u64,
    /// Requests left in the current window after this one.
    pub remaining: u64,
    /// Time until the window resets.
    pub reset_after: Duration,
    /// True when the limiter could not reach its backend and let the request through.
    pub failed_open: bool,
}

/// A rate limiter keyed by an opaque string (e.g. `study:msg:{user_id}`).
#[async_trait::async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Count one request for `key` and decide whether it may proceed.
    async fn check(&self, key: &str) -> Decision;
    /// A short name for logs and metrics (`redis`, `memory`).
    fn backend(&self) -> &'static str;
}
