//! Verification by remote services: API keys checked by an external auth server (the
//! predecessor's `POST /api/api-key/verify`) and opaque tokens checked through the SSO's OIDC
//! userinfo endpoint. Successful results are cached by a SHA-256 of the credential.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::AuthError;
use super::apikey::hash_key;
use super::jwks::StringOrList;
use crate::identity::{AuthMethod, Identity, Scopes};

/// How long an externally verified API key stays valid without asking again (as the predecessor).
pub const EXTERNAL_KEY_CACHE_TTL: Duration = Duration::from_secs(300);
/// How long a userinfo answer is reused for the same opaque token.
pub const USERINFO_CACHE_TTL: Duration = Duration::from_secs(60);
const CACHE_MAX: usize = 10_000;

/// Token prefixes that the external auth server issues.
pub const EXTERNAL_KEY_PREFIXES: &[&str] = &["pana_", "sk_live_", "sk_test_"];

/// A bounded TTL cache from credential hash to identity.
#[derive(Clone)]
struct TtlCache {
    ttl: Duration,
    map: Arc<Mutex<HashMap<String, (Identity, Instant)>>>,
}

impl TtlCache {
    fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            map: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn get(&self, k: &str) -> Option<Identity> {
        let map = self.map.lock().ok()?;
        map.get(k)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(id, _)| id.clone())
    }

    fn put(&self, k: String, id: Identity) {
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= CACHE_MAX {
                let ttl = self.ttl;
                map.retain(|_, (_, at)| at.elapsed() < ttl);
                if map.len() >= CACHE_MAX {
                    map.clear();
                }
            }
            map.insert(k, (id, Instant::now()));
        }
    }
}

fn http_client(timeout: Duration) -> reqwest::Client {
    crate::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "building an auth HTTP client failed; using defaults");
            reqwest::Client::new()
        })
}

/// Verifies API keys against an external auth server: `POST {url} {"key": …}` answering
/// `{"valid": true, "key": {"userId": …, "permissions": {"read": […], …}}}`.
#[derive(Clone)]
pub struct ExternalKeyVerifier {
    url: String,
    http: reqwest::Client,
    cache: TtlCache,
}

#[derive(Deserialize)]
struct ExternalAnswer {
    #[serde(default)]
    valid: serde_json::Value,
    #[serde(default)]
    key: Option<ExternalKey>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExternalKey {
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    permissions: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    name: Option<String>,
}

fn truthy(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::Null => false,
        serde_json::Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        serde_json::Value::String(s) => !s.is_empty(),
        serde_json::Value::Array(a) => !a.is_empty(),
        serde_json::Value::Object(o) => !o.is_empty(),
    }
}

impl ExternalKeyVerifier {
    /// `url` is the full verify endpoint, e.g. `{AUTH_SERVER_URL}/api/api-key/verify`.
    pub fn new(url: impl Into<String>, timeout: Duration) -> Self {
        Self {
            url: url.into(),
            http: http_client(timeout),
            cache: TtlCache::new(EXTERNAL_KEY_CACHE_TTL),
        }
    }

    /// Whether `token` looks like a key this verifier handles.
    pub fn handles(token: &str) -> bool {
        EXTERNAL_KEY_PREFIXES.iter().any(|p| token.starts_with(p))
    }

    /// Whether a verified answer for `key` is cached (no remote call needed).
    pub fn is_cached(&self, key: &str) -> bool {
        self.cache.get(&hash_key(key)).is_some()
    }

    /// Verify a key. Successes are cached for 300 s (rejections by the caller's guard).
    pub async fn verify(&self, key: &str) -> Result<Identity, AuthError> {
        let ck = hash_key(key);
        if let Some(id) = self.cache.get(&ck) {
            return Ok(id);
        }
        let resp = self
            .http
            .post(&self.url)
            .json(&serde_json::json!({ "key": key }))
            .send()
            .await
            .map_err(|e| AuthError::Unavailable(format!("API key server unreachable: {e}")))?;
        let status = resp.status();
        if status.is_server_error() {
            return Err(AuthError::Unavailable(format!(
                "API key server answered HTTP {status}"
            )));
        }
        if !status.is_success() {
            return Err(AuthError::Invalid("API key rejected".into()));
        }
        let answer: ExternalAnswer = resp
            .json()
            .await
            .map_err(|_| AuthError::Invalid("API key server sent an unreadable answer".into()))?;
        if !truthy(&answer.valid) {
            return Err(AuthError::Invalid("API key rejected".into()));
        }
        let key_info = answer.key.ok_or_else(|| {
            AuthError::Invalid("API key server did not name the key owner".into())
        })?;
        let subject = key_info
            .user_id
            .filter(|u| !u.trim().is_empty() && u != "system")
            .ok_or_else(|| AuthError::Invalid("API key has no owner".into()))?;
        let scopes = key_info
            .permissions
            .map(|p| p.keys().cloned().collect::<Vec<_>>().join(" "))
            .map(|s| Scopes::parse(&s))
            .unwrap_or_default();
        let id = Identity {
            subject,
            scopes,
            name: key_info.name.filter(|n| !n.is_empty()),
            email: None,
            organization: None,
            method: AuthMethod::ExternalApiKey,
            acting_user: None,
        };
        self.cache.put(ck, id.clone());
        Ok(id)
    }
}

/// Verifies opaque access tokens with `GET {userinfo_url}` and `Authorization: Bearer`.
#[derive(Clone)]
pub struct UserinfoVerifier {
    url: String,
    http: reqwest::Client,
    cache: TtlCache,
}

#[derive(Deserialize)]
struct UserinfoAnswer {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    scope: Option<StringOrList>,
    #[serde(default)]
    organization_id: Option<String>,
    #[serde(default)]
    org_id: Option<String>,
    #[serde(default)]
    tenant_id: Option<String>,
}

impl UserinfoVerifier {
    /// `url` is the SSO userinfo endpoint, e.g. `{SSO_URL}/api/auth/oauth2/userinfo`.
    pub fn new(url: impl Into<String>, timeout: Duration) -> Self {
        Self {
            url: url.into(),
            http: http_client(timeout),
            cache: TtlCache::new(USERINFO_CACHE_TTL),
        }
    }

    /// Whether a verified answer for `token` is cached (no remote call needed).
    pub fn is_cached(&self, token: &str) -> bool {
        self.cache.get(&hash_key(token)).is_some()
    }

    /// Ask the SSO who owns `token`. 401 → invalid, other non-200 → invalid, network error → 503.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let ck = hash_key(token);
        if let Some(id) = self.cache.get(&ck) {
            return Ok(id);
        }
        let resp = self
            .http
            .get(&self.url)
            .bearer_auth(token)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| AuthError::Unavailable(format!("SSO userinfo unreachable: {e}")))?;
        let status = resp.status();
        if status == http::StatusCode::UNAUTHORIZED {
            return Err(AuthError::Invalid("token invalid or expired".into()));
        }
        if status.is_server_error() {
            return Err(AuthError::Unavailable(format!(
                "SSO userinfo answered HTTP {status}"
            )));
        }
        if !status.is_success() {
            return Err(AuthError::Invalid(format!(
                "SSO userinfo answered HTTP {status}"
            )));
        }
        let u: UserinfoAnswer = resp
            .json()
            .await
            .map_err(|_| AuthError::Invalid("SSO userinfo sent an unreadable answer".into()))?;
        let subject = u
            .sub
            .filter(|s| !s.trim().is_empty() && s != "system")
            .ok_or_else(|| AuthError::Invalid("userinfo has no subject".into()))?;
        let scopes = u
            .scope
            .map(|s| Scopes::parse(&s.joined()))
            .unwrap_or_default();
        let organization = [u.organization_id, u.org_id, u.tenant_id]
            .into_iter()
            .flatten()
            .find(|s| !s.is_empty());
        let email = u.email.filter(|e| !e.is_empty());
        let id = Identity {
            subject,
            scopes,
            name: u.name.filter(|n| !n.is_empty()).or_else(|| email.clone()),
            email,
            organization,
            method: AuthMethod::Userinfo,
            acting_user: None,
        };
        self.cache.put(ck, id.clone());
        Ok(id)
    }
}
