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

mod memory;
mod redis_limiter;

pub use memory::MemoryLimiter;
pub use redis_limiter::RedisLimiter;

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode};

/// Whole seconds, rounded up, at least 1 (for `Retry-After` / `X-RateLimit-Reset`).
fn ceil_secs(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

/// `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (seconds until the window
/// resets) and, when the request is denied, `Retry-After` (seconds).
pub fn headers(d: &Decision) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-ratelimit-limit", HeaderValue::from(d.limit));
    h.insert("x-ratelimit-remaining", HeaderValue::from(d.remaining));
    h.insert(
        "x-ratelimit-reset",
        HeaderValue::from(ceil_secs(d.reset_after)),
    );
    if !d.allowed {
        h.insert(
            http::header::RETRY_AFTER,
            HeaderValue::from(ceil_secs(d.reset_after)),
        );
    }
    h
}

/// The 429 answer for a denied request: JSON
/// `{"error":{"code":"RATE_LIMITED","message":…,"limit":…,"reset_after_ms":…}}` plus [`headers`].
pub fn too_many_requests(d: &Decision) -> Response {
    let secs = ceil_secs(d.reset_after);
    let body = serde_json::json!({
        "error": {
            "code": "RATE_LIMITED",
            "message": format!(
                "Rate limit of {} requests reached. Try again in {secs} s.",
                d.limit
            ),
            "limit": d.limit,
            "reset_after_ms": u64::try_from(d.reset_after.as_millis()).unwrap_or(u64::MAX),
        }
    });
    let mut resp = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    resp.headers_mut().extend(headers(d));
    resp
}

/// Check `key` against `limiter` and count the outcome in
/// `ratelimit_decisions_total{backend,result}` (`allowed` | `denied` | `failed_open`).
/// `Ok(headers)` to add to the eventual response, or `Err(429 response)`.
pub async fn enforce(limiter: &dyn RateLimiter, key: &str) -> Result<HeaderMap, Response> {
    let d = limiter.check(key).await;
    let result = if d.failed_open {
        "failed_open"
    } else if d.allowed {
        "allowed"
    } else {
        "denied"
    };
    metrics::counter!(
        "ratelimit_decisions_total",
        "backend" => limiter.backend(),
        "result" => result
    )
    .increment(1);
    if d.allowed {
        Ok(headers(&d))
    } else {
        Err(too_many_requests(&d))
    }
}

/// Count a fail-open decision in `ratelimit_failopen_total{backend}` and log it at most once per
/// 10 s per process (so a Redis outage does not flood the logs).
pub(crate) fn record_fail_open(backend: &'static str, error: &dyn std::fmt::Display) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_LOG_SECS: AtomicU64 = AtomicU64::new(0);
    metrics::counter!("ratelimit_failopen_total", "backend" => backend).increment(1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let last = LAST_LOG_SECS.load(Ordering::Relaxed);
    if now >= last + 10
        && LAST_LOG_SECS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(backend, error = %error, "rate limiter backend failed; allowing requests (fail-open)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values() {
        let d = Decision {
            allowed: false,
            limit: 20,
            remaining: 0,
            reset_after: Duration::from_millis(1500),
            failed_open: false,
        };
        let h = headers(&d);
        assert_eq!(h["x-ratelimit-limit"], "20");
        assert_eq!(h["x-ratelimit-remaining"], "0");
        assert_eq!(h["x-ratelimit-reset"], "2");
        assert_eq!(h["retry-after"], "2");
        let ok = Decision { allowed: true, ..d };
        assert!(headers(&ok).get("retry-after").is_none());
        assert_eq!(
            too_many_requests(&d).status(),
            StatusCode::TOO_MANY_REQUESTS
        );
    }

    #[tokio::test]
    async fn enforce_passes_then_denies() {
        let l = MemoryLimiter::new(1, Duration::from_secs(60));
        let h = enforce(&l, "u").await.unwrap();
        assert_eq!(h["x-ratelimit-remaining"], "0");
        let r = enforce(&l, "u").await.unwrap_err();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(r.headers().contains_key("retry-after"));
    }
}
