//! JWT verification against a JWKS: key cache with TTL, one refetch on an unknown `kid` (with a
//! cooldown), stale-key fallback when the JWKS endpoint is down, an algorithm allow-list that is
//! checked against the key (no algorithm confusion), `exp`/`nbf` with leeway, `iss`/`aud` when
//! configured.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde::Deserialize;

use super::AuthError;
use crate::identity::Scopes;

/// Clock-skew leeway for `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 60;

/// Where and how to verify JWTs.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// The JWKS document URL, e.g. `{SSO_URL}/api/auth/jwks`.
    pub jwks_url: String,
    /// Required `iss` (exact match) when set.
    pub issuer: Option<String>,
    /// Required `aud` (one of the token's audiences) when set. When unset, `aud` is not checked.
    pub audience: Option<String>,
    /// Accepted algorithms. HMAC algorithms are always refused (a JWKS never holds shared secrets).
    pub algorithms: Vec<Algorithm>,
    /// How long a fetched key set is considered fresh.
    pub cache_ttl: Duration,
    /// Minimum time between two JWKS fetches triggered by unknown key ids or expiry.
    pub refetch_cooldown: Duration,
    /// Timeout of one JWKS HTTP request.
    pub http_timeout: Duration,
}

impl JwtConfig {
    /// Defaults for a JWKS URL: RS256/ES256/EdDSA, 1 h cache, 30 s cooldown, 5 s HTTP timeout.
    pub fn new(jwks_url: impl Into<String>) -> Self {
        Self {
            jwks_url: jwks_url.into(),
            issuer: None,
            audience: None,
            algorithms: vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA],
            cache_ttl: Duration::from_secs(3600),
            refetch_cooldown: Duration::from_secs(30),
            http_timeout: Duration::from_secs(5),
        }
    }
}

/// The verified claims we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// Subject (never empty).
    pub sub: String,
    /// Scopes from `scope` (space-separated string or list) or `scp`.
    pub scope: Scopes,
    pub name: Option<String>,
    pub email: Option<String>,
    /// Organization from `org_id`, `organization_id`, `org`, `tenant_id` or `organization_ids[0]`.
    pub organization: Option<String>,
    /// Expiry (seconds since the epoch).
    pub exp: Option<u64>,
}

#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    scope: Option<StringOrList>,
    #[serde(default)]
    scp: Option<StringOrList>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    org_id: Option<String>,
    #[serde(default)]
    organization_id: Option<String>,
    #[serde(default)]
    org: Option<String>,
    #[serde(default)]
    tenant_id: Option<String>,
    #[serde(default)]
    organization_ids: Option<Vec<String>>,
    #[serde(default)]
    exp: Option<u64>,
}

/// A claim that may be a space-separated string or a list of strings.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    pub(crate) fn joined(&self) -> String {
        match self {
            StringOrList::One(s) => s.clone(),
            StringOrList::Many(v) => v.join(" "),
        }
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|v| !v.trim().is_empty())
}

impl RawClaims {
    fn into_claims(self) -> Result<Claims, AuthError> {
        let sub = non_empty(self.sub)
            .ok_or_else(|| AuthError::Invalid("token has no subject (sub)".into()))?;
        if sub == "system" {
            return Err(AuthError::Invalid("reserved subject".into()));
        }
        let scope_str = [self.scope, self.scp]
            .iter()
            .flatten()
            .map(StringOrList::joined)
            .collect::<Vec<_>>()
            .join(" ");
        let organization = non_empty(self.org_id)
            .or(non_empty(self.organization_id))
            .or(non_empty(self.org))
            .or(non_empty(self.tenant_id))
            .or_else(|| {
                self.organization_ids
                    .and_then(|v| non_empty(v.into_iter().next()))
            });
        Ok(Claims {
            sub,
            scope: Scopes::parse(&scope_str),
            name: non_empty(self.name),
            email: non_empty(self.email),
            organization,
            exp: self.exp,
        })
    }
}

/// One usable verification key from the JWKS.
#[derive(Clone)]
struct CachedKey {
    key: DecodingKey,
    family: AlgorithmFamily,
    /// The curve, for EC/OKP keys (decides ES256 vs ES384).
    curve: Option<EllipticCurve>,
    /// The JWK's own `alg`, when it declares one.
    alg: Option<Algorithm>,
}

impl CachedKey {
    fn from_jwk(jwk: &Jwk) -> Option<CachedKey> {
        if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
            return None;
        }
        let (family, curve) = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => (AlgorithmFamily::Rsa, None),
            AlgorithmParameters::EllipticCurve(p) => (AlgorithmFamily::Ec, Some(p.curve.clone())),
            AlgorithmParameters::OctetKeyPair(p) => (AlgorithmFamily::Ed, Some(p.curve.clone())),
            // Symmetric keys never belong in a JWKS we verify against; unknown key types are skipped.
            _ => return None,
        };
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(ka) => match ka.to_string().parse::<Algorithm>() {
                Ok(a) => Some(a),
                // An encryption or unknown algorithm: not a signing key for us.
                Err(_) => return None,
            },
        };
        let key = DecodingKey::from_jwk(jwk).ok()?;
        Some(CachedKey {
            key,
            family,
            curve,
            alg,
        })
    }

    /// Whether this key may verify a token signed with `alg`.
    fn accepts(&self, alg: Algorithm) -> bool {
        if alg.family() != self.family {
            return false;
        }
        if let Some(own) = self.alg
            && own != alg
        {
            return false;
        }
        match (alg, &self.curve) {
            (Algorithm::ES256, Some(c)) => *c == EllipticCurve::P256,
            (Algorithm::ES384, Some(c)) => *c == EllipticCurve::P384,
            (Algorithm::EdDSA, Some(c)) => *c == EllipticCurve::Ed25519,
            (Algorithm::ES256 | Algorithm::ES384 | Algorithm::EdDSA, None) => false,
            _ => true,
        }
    }
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, CachedKey>,
    /// Keys published without a `kid` (used only for tokens without a `kid`).
    anonymous: Vec<CachedKey>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
    last_error: Option<String>,
}

impl KeySet {
    fn is_empty(&self) -> bool {
        self.by_kid.is_empty() && self.anonymous.is_empty()
    }
}

struct Inner {
    cfg: JwtConfig,
    algorithms: Vec<Algorithm>,
    http: reqwest::Client,
    keys: RwLock<KeySet>,
    refresh: tokio::sync::Mutex<()>,
}

/// Verifies JWTs against a remote JWKS. Cheap to clone (shared cache).
#[derive(Clone)]
pub struct JwksVerifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JwksVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksVerifier")
            .field("jwks_url", &self.inner.cfg.jwks_url)
            .finish_non_exhaustive()
    }
}

/// The claims of a JWT payload (JSON), as [`JwksVerifier::verify`] maps them after the signature
/// checked out: the part of JWT handling that reads attacker-chosen JSON (fuzzed in `fuzz/`).
pub fn claims_from_payload(json: &[u8]) -> Result<Claims, AuthError> {
    let raw: RawClaims = serde_json::from_slice(json)
        .map_err(|e| AuthError::Invalid(format!("unreadable claims: {e}")))?;
    raw.into_claims()
}

/// After a failed fetch with no keys at all, retry at most this often.
const EMPTY_RETRY: Duration = Duration::from_secs(1);

impl JwksVerifier {
    /// A verifier with an empty cache; the first `verify` fetches the JWKS.
    pub fn new(cfg: JwtConfig) -> JwksVerifier {
        crate::install_crypto_provider();
        let algorithms: Vec<Algorithm> = cfg
            .algorithms
            .iter()
            .copied()
            .filter(|a| a.family() != AlgorithmFamily::Hmac)
            .collect();
        let http = reqwest::Client::builder()
            .timeout(cfg.http_timeout)
            .connect_timeout(cfg.http_timeout)
            .build()
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "building the JWKS HTTP client failed; using defaults");
                reqwest::Client::new()
            });
        JwksVerifier {
            inner: Arc::new(Inner {
                cfg,
                algorithms,
                http,
                keys: RwLock::new(KeySet::default()),
                refresh: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &JwtConfig {
        &self.inner.cfg
    }

    /// Fetch the key set now (warm-up at start, so the first request does not wait for it).
    pub async fn prefetch(&self) -> Result<(), AuthError> {
        self.ensure_fresh().await
    }

    /// Verify a compact JWS and return its claims.
    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Invalid(format!("malformed token header: {e}")))?;
        let alg = header.alg;
        if !self.inner.algorithms.contains(&alg) {
            return Err(AuthError::Invalid(format!(
                "signing algorithm {alg:?} is not accepted"
            )));
        }
        self.ensure_fresh().await?;
        let key = match self.find_key(header.kid.as_deref(), alg)? {
            Some(k) => k,
            None => {
                // Unknown kid: maybe the keys were rotated. One refetch, subject to the cooldown.
                self.refetch_for_unknown_kid().await;
                self.find_key(header.kid.as_deref(), alg)?.ok_or_else(|| {
                    AuthError::Invalid("token signing key not found in JWKS".into())
                })?
            }
        };
        let mut validation = Validation::new(alg);
        validation.algorithms = vec![alg];
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(iss) = &self.inner.cfg.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        if let Some(aud) = &self.inner.cfg.audience {
            validation.set_audience(&[aud]);
            validation.validate_aud = true;
            required.push("aud");
        } else {
            validation.validate_aud = false;
        }
        validation.set_required_spec_claims(&required);
        let data = jsonwebtoken::decode::<RawClaims>(token, &key.key, &validation)
            .map_err(map_jwt_error)?;
        data.claims.into_claims()
    }

    fn find_key(&self, kid: Option<&str>, alg: Algorithm) -> Result<Option<CachedKey>, AuthError> {
        let set = self
            .inner
            .keys
            .read()
            .map_err(|_| AuthError::Unavailable("JWKS cache lock poisoned".into()))?;
        let found = match kid {
            Some(kid) => set.by_kid.get(kid).cloned(),
            None => {
                // No kid: accept only when exactly one key could have signed it.
                let mut candidates = set
                    .anonymous
                    .iter()
                    .chain(set.by_kid.values())
                    .filter(|k| k.accepts(alg));
                match (candidates.next(), candidates.next()) {
                    (Some(k), None) => Some(k.clone()),
                    _ => None,
                }
            }
        };
        match found {
            Some(k) if !k.accepts(alg) => Err(AuthError::Invalid(format!(
                "algorithm {alg:?} does not match the signing key"
            ))),
            other => Ok(other),
        }
    }

    fn snapshot(&self) -> (bool, Option<Instant>, Option<Instant>, Option<String>) {
        match self.inner.keys.read() {
            Ok(s) => (
                s.is_empty(),
                s.fetched_at,
                s.last_attempt,
                s.last_error.clone(),
            ),
            Err(_) => (true, None, None, None),
        }
    }

    /// Make sure we have keys: fetch when empty or older than the TTL. On failure keep (and use)
    /// the stale keys; with no keys at all report the JWKS as unavailable.
    async fn ensure_fresh(&self) -> Result<(), AuthError> {
        let cfg = &self.inner.cfg;
        let (empty, fetched_at, _, _) = self.snapshot();
        if fetched_at.is_some_and(|t| t.elapsed() < cfg.cache_ttl) {
            return Ok(());
        }
        // With (stale) keys in hand, never queue behind a refresh another request is doing.
        let guard = if empty {
            Some(self.inner.refresh.lock().await)
        } else {
            self.inner.refresh.try_lock().ok()
        };
        if let Some(_guard) = guard {
            let (empty_now, fetched_at, last_attempt, _) = self.snapshot();
            let still_stale = fetched_at.is_none_or(|t| t.elapsed() >= cfg.cache_ttl);
            let retry_gap = if empty_now {
                EMPTY_RETRY.min(cfg.refetch_cooldown)
            } else {
                cfg.refetch_cooldown
            };
            let may_try = last_attempt.is_none_or(|t| t.elapsed() >= retry_gap);
            if still_stale
                && may_try
                && let Err(e) = self.fetch().await
                && !empty_now
            {
                tracing::warn!(error = %e, url = %cfg.jwks_url, "JWKS refresh failed; using cached (stale) keys");
            }
        }
        let (empty_after, _, _, last_error) = self.snapshot();
        if empty_after {
            return Err(AuthError::Unavailable(format!(
                "authentication keys unavailable: {}",
                last_error.unwrap_or_else(|| "JWKS not fetched yet".into())
            )));
        }
        Ok(())
    }

    async fn refetch_for_unknown_kid(&self) {
        let _guard = self.inner.refresh.lock().await;
        let (_, _, last_attempt, _) = self.snapshot();
        if last_attempt.is_some_and(|t| t.elapsed() < self.inner.cfg.refetch_cooldown) {
            tracing::debug!("unknown kid, JWKS refetch suppressed by cooldown");
            return;
        }
        if let Err(e) = self.fetch().await {
            tracing::warn!(error = %e, "JWKS refetch for an unknown kid failed");
        }
    }

    /// Fetch and install the key set. Records the attempt (and the error) either way.
    async fn fetch(&self) -> Result<(), String> {
        let started = Instant::now();
        let result = self.fetch_inner().await;
        let mut set = self
            .inner
            .keys
            .write()
            .map_err(|_| "JWKS cache lock poisoned".to_string())?;
        set.last_attempt = Some(started);
        match result {
            Ok((by_kid, anonymous)) => {
                metrics::counter!("auth_jwks_fetch_total", "result" => "ok").increment(1);
                set.by_kid = by_kid;
                set.anonymous = anonymous;
                set.fetched_at = Some(started);
                set.last_error = None;
                Ok(())
            }
            Err(e) => {
                metrics::counter!("auth_jwks_fetch_total", "result" => "error").increment(1);
                set.last_error = Some(e.clone());
                Err(e)
            }
        }
    }

    async fn fetch_inner(&self) -> Result<(HashMap<String, CachedKey>, Vec<CachedKey>), String> {
        #[derive(Deserialize)]
        struct RawSet {
            keys: Vec<serde_json::Value>,
        }
        let resp = self
            .inner
            .http
            .get(&self.inner.cfg.jwks_url)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("JWKS request failed: {e}"))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("JWKS endpoint answered HTTP {status}"));
        }
        let raw: RawSet = resp
            .json()
            .await
            .map_err(|e| format!("JWKS document is not valid JSON: {e}"))?;
        let mut by_kid = HashMap::new();
        let mut anonymous = Vec::new();
        for value in raw.keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
                continue;
            };
            let Some(key) = CachedKey::from_jwk(&jwk) else {
                continue;
            };
            match &jwk.common.key_id {
                Some(kid) => {
                    by_kid.insert(kid.clone(), key);
                }
                None => anonymous.push(key),
            }
        }
        if by_kid.is_empty() && anonymous.is_empty() {
            return Err("JWKS holds no usable signing keys".into());
        }
        Ok((by_kid, anonymous))
    }
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => AuthError::Expired,
        K::ImmatureSignature => AuthError::Invalid("token is not valid yet (nbf)".into()),
        K::InvalidIssuer => AuthError::Invalid("wrong token issuer".into()),
        K::InvalidAudience => AuthError::Invalid("wrong token audience".into()),
        K::InvalidSignature => AuthError::Invalid("invalid token signature".into()),
        K::InvalidAlgorithm => AuthError::Invalid("signing algorithm not accepted".into()),
        K::MissingRequiredClaim(c) => AuthError::Invalid(format!("token lacks the {c} claim")),
        _ => AuthError::Invalid(format!("invalid token: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_claims_map_scope_forms_and_org() {
        let c: RawClaims = serde_json::from_value(serde_json::json!({
            "sub": "u1", "scope": ["read", "write"], "organization_id": "o1", "exp": 5
        }))
        .unwrap();
        let c = c.into_claims().unwrap();
        assert!(c.scope.read && c.scope.write && !c.scope.admin);
        assert_eq!(c.organization.as_deref(), Some("o1"));
        let c: RawClaims =
            serde_json::from_value(serde_json::json!({"sub": "u1", "scope": "admin"})).unwrap();
        assert_eq!(c.into_claims().unwrap().scope, Scopes::ALL);
        let c: RawClaims = serde_json::from_value(serde_json::json!({"sub": ""})).unwrap();
        assert!(matches!(c.into_claims(), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn hmac_is_never_accepted() {
        let mut cfg = JwtConfig::new("http://127.0.0.1:9/jwks");
        cfg.algorithms.push(Algorithm::HS256);
        let v = JwksVerifier::new(cfg);
        assert!(!v.inner.algorithms.contains(&Algorithm::HS256));
    }
}
