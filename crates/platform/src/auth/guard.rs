//! What keeps rejected credentials from reaching the SSO one-to-one: a short negative cache
//! (a credential the remote verifier rejected is answered locally for a while) and a per-source
//! limit on remote verifications of credentials not already cached.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::AuthError;

/// Limits on remote credential checks (userinfo, external API-key server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteLimits {
    /// How long a rejected credential is rejected without asking again.
    pub negative_ttl: Duration,
    /// Remote verifications of uncached credentials one client address may cause per minute.
    pub per_source_per_minute: u32,
}

impl Default for RemoteLimits {
    fn default() -> Self {
        RemoteLimits {
            negative_ttl: Duration::from_secs(30),
            per_source_per_minute: 60,
        }
    }
}

const MAX_ENTRIES: usize = 10_000;
const WINDOW: Duration = Duration::from_secs(60);

/// Negative cache plus per-source fixed-window counters.
#[derive(Debug)]
pub struct RemoteGuard {
    limits: RemoteLimits,
    rejected: Mutex<HashMap<String, (AuthError, Instant)>>,
    sources: Mutex<HashMap<Option<IpAddr>, (u32, Instant)>>,
}

impl RemoteGuard {
    pub fn new(limits: RemoteLimits) -> RemoteGuard {
        RemoteGuard {
            limits,
            rejected: Mutex::default(),
            sources: Mutex::default(),
        }
    }

    /// The cached rejection of the credential with hash `key`, if still fresh.
    pub fn cached_rejection(&self, key: &str) -> Option<AuthError> {
        let map = self.rejected.lock().ok()?;
        map.get(key)
            .filter(|(_, at)| at.elapsed() < self.limits.negative_ttl)
            .map(|(e, _)| e.clone())
    }

    /// Remember a rejection (only definite ones: an unreachable verifier is not cached).
    pub fn remember(&self, key: String, err: &AuthError) {
        if !matches!(err, AuthError::Invalid(_) | AuthError::Expired) {
            return;
        }
        if let Ok(mut map) = self.rejected.lock() {
            if map.len() >= MAX_ENTRIES {
                let ttl = self.limits.negative_ttl;
                map.retain(|_, (_, at)| at.elapsed() < ttl);
                if map.len() >= MAX_ENTRIES {
                    map.clear();
                }
            }
            map.insert(key, (err.clone(), Instant::now()));
        }
    }

    /// Count one remote verification for `source`; `RateLimited` when its budget is spent.
    pub fn admit(&self, source: Option<IpAddr>) -> Result<(), AuthError> {
        let Ok(mut map) = self.sources.lock() else {
            return Ok(());
        };
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, (_, start)| start.elapsed() < WINDOW);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        let entry = map.entry(source).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= WINDOW {
            *entry = (0, Instant::now());
        }
        if entry.0 >= self.limits.per_source_per_minute {
            let wait = WINDOW.saturating_sub(entry.1.elapsed()).as_secs().max(1);
            return Err(AuthError::RateLimited(wait));
        }
        entry.0 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_are_cached_and_sources_limited() {
        let g = RemoteGuard::new(RemoteLimits {
            negative_ttl: Duration::from_millis(200),
            per_source_per_minute: 3,
        });
        assert!(g.cached_rejection("k").is_none());
        g.remember("k".into(), &AuthError::Invalid("no".into()));
        g.remember("u".into(), &AuthError::Unavailable("down".into()));
        assert_eq!(
            g.cached_rejection("k"),
            Some(AuthError::Invalid("no".into()))
        );
        assert!(g.cached_rejection("u").is_none(), "outages are not cached");
        std::thread::sleep(Duration::from_millis(250));
        assert!(g.cached_rejection("k").is_none(), "the entry expires");

        let a: Option<IpAddr> = Some([10, 0, 0, 1].into());
        let b: Option<IpAddr> = Some([10, 0, 0, 2].into());
        for _ in 0..3 {
            g.admit(a).unwrap();
        }
        assert!(matches!(g.admit(a), Err(AuthError::RateLimited(s)) if (1..=60).contains(&s)));
        g.admit(b).unwrap();
    }
}
