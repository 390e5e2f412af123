//! Authentication for both services.
//!
//! [`Authenticator::authenticate`] turns request headers into an [`Identity`]:
//! - dev mode: no verification; the subject is `X-Agent-ID` (else the configured dev subject), the
//!   acting user `X-User-ID`, the name `X-User-Name`, all scopes. [`check_dev_mode`] refuses dev
//!   mode on a non-loopback bind unless explicitly allowed;
//! - otherwise `Authorization: Bearer <token>` where the token is
//!   - `pvk_…`: an API key from our database ([`ApiKeyStore`]),
//!   - `pana_…`, `sk_live_…`, `sk_test_…`: an API key checked by the external auth server,
//!   - a JWT (three dot-separated base64url parts): decided by the JWKS ([`JwksVerifier`]) alone
//!     when JWKS is configured — a JWT rejected there (wrong `aud`/`iss`, bad signature) is never
//!     retried elsewhere; only without JWKS does the userinfo endpoint judge it,
//!   - anything else: an opaque token checked through the SSO userinfo endpoint (when configured).
//!
//! Remote checks (userinfo, external API keys) pass a [`guard::RemoteGuard`]: a credential the
//! remote service rejected is rejected locally for a while (negative cache), and each client
//! address may cause only so many remote checks of uncached credentials per minute (429).
//!
//! Failures are [`AuthError`]s: 401 with `WWW-Authenticate: Bearer … resource_metadata=…`
//! (RFC 6750 / RFC 9728), 429 when a client exhausts its remote checks, or 503 when the verifying
//! service is unreachable.

pub mod apikey;
pub mod guard;
pub mod jwks;
pub mod remote;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, HeaderValue, StatusCode, header};

pub use apikey::{
    API_KEY_PREFIX, ApiKeyInfo, ApiKeyStore, VERIFY_CACHE_TTL, hash_key, migrate_down, migrate_up,
};
pub use jsonwebtoken::Algorithm;
pub use jwks::{Claims, JwksVerifier, JwtConfig, LEEWAY_SECS};
pub use remote::{
    EXTERNAL_KEY_CACHE_TTL, EXTERNAL_KEY_PREFIXES, ExternalKeyVerifier, USERINFO_CACHE_TTL,
    UserinfoVerifier,
};

use crate::identity::{AuthMethod, Identity, Scopes};

/// Timeout for calls to the external API-key server and the userinfo endpoint.
pub const REMOTE_TIMEOUT: Duration = Duration::from_secs(5);
/// The RFC 9728 well-known path.
pub const PROTECTED_RESOURCE_PATH: &str = "/.well-known/oauth-protected-resource";

/// Why a request could not be authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` credentials.
    #[error("authentication required: send Authorization: Bearer <token>")]
    Missing,
    /// Credentials present but not acceptable.
    #[error("invalid credentials: {0}")]
    Invalid(String),
    /// The token has expired.
    #[error("token expired")]
    Expired,
    /// The service that verifies credentials (JWKS, SSO, auth server, database) is unreachable.
    #[error("authentication service unavailable: {0}")]
    Unavailable(String),
    /// This client caused too many remote credential checks; retry after the given seconds.
    #[error("too many unverified credentials from this client; retry in {0} s")]
    RateLimited(u64),
}

impl AuthError {
    /// 401 for credential problems, 503 when verification could not be done.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::Missing | AuthError::Invalid(_) | AuthError::Expired => {
                StatusCode::UNAUTHORIZED
            }
            AuthError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AuthError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// A short label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Invalid(_) => "invalid",
            AuthError::Expired => "expired",
            AuthError::Unavailable(_) => "unavailable",
            AuthError::RateLimited(_) => "rate_limited",
        }
    }

    /// The HTTP response, with `resource_metadata` in `WWW-Authenticate` when a metadata URL is
    /// given. Body: `{"error":{"code":"UNAUTHORIZED"|"AUTH_UNAVAILABLE","message":…}}`.
    pub fn to_response(&self, resource_metadata_url: Option<&str>) -> Response {
        let status = self.status();
        let code = match status {
            StatusCode::UNAUTHORIZED => "UNAUTHORIZED",
            StatusCode::TOO_MANY_REQUESTS => "RATE_LIMITED",
            _ => "AUTH_UNAVAILABLE",
        };
        let message = self.to_string();
        let body = serde_json::json!({ "error": { "code": code, "message": message } });
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            let mut v = format!(
                "Bearer error=\"invalid_token\", error_description=\"{}\"",
                quote_safe(&message)
            );
            if let Some(url) = resource_metadata_url {
                v.push_str(&format!(", resource_metadata=\"{}\"", quote_safe(url)));
            }
            if let Ok(hv) = HeaderValue::from_str(&v) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, hv);
            }
        } else {
            let after = match self {
                AuthError::RateLimited(s) => s.to_string(),
                _ => "5".to_string(),
            };
            if let Ok(hv) = HeaderValue::from_str(&after) {
                resp.headers_mut().insert(header::RETRY_AFTER, hv);
            }
        }
        resp
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        self.to_response(None)
    }
}

/// Keep a string safe inside a quoted header parameter.
fn quote_safe(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => '?',
        })
        .take(300)
        .collect()
}

/// The RFC 9728 metadata URL for a resource: the well-known path inserted between the origin and
/// the resource's path (`https://h/mcp` → `https://h/.well-known/oauth-protected-resource/mcp`).
pub fn resource_metadata_url(resource: &str) -> String {
    let (origin, path) = split_resource(resource);
    format!("{origin}{PROTECTED_RESOURCE_PATH}{path}")
}

/// Split `scheme://authority/path` into (`scheme://authority`, `/path` without trailing slash).
fn split_resource(resource: &str) -> (&str, &str) {
    let after_scheme = resource.find("://").map(|i| i + 3).unwrap_or(0);
    match resource[after_scheme..].find('/') {
        Some(i) => {
            let (o, p) = resource.split_at(after_scheme + i);
            (o, p.trim_end_matches('/'))
        }
        None => (resource, ""),
    }
}

/// Authentication settings. `Default` is "production with nothing configured" (every request is
/// rejected), so set at least one verifier or `dev_mode`.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// No verification at all (see [`check_dev_mode`]).
    pub dev_mode: bool,
    /// Subject used in dev mode when the request has no `X-Agent-ID`.
    pub dev_subject: String,
    pub jwt: Option<JwtConfig>,
    pub api_keys: Option<ApiKeyStore>,
    /// Full URL of the external API-key verify endpoint.
    pub external_api_key_url: Option<String>,
    /// SSO userinfo endpoint for opaque tokens.
    pub userinfo_url: Option<String>,
    /// This server's resource URL (RFC 9728), e.g. `https://fs.example.com/mcp`.
    pub resource_url: Option<String>,
    pub authorization_servers: Vec<String>,
    /// Negative cache and per-source limit of remote checks.
    pub remote_limits: guard::RemoteLimits,
}

/// Verifies credentials; share it as `Arc<Authenticator>`.
#[derive(Debug)]
pub struct Authenticator {
    dev_mode: bool,
    dev_subject: String,
    jwt: Option<JwksVerifier>,
    api_keys: Option<ApiKeyStore>,
    external: Option<ExternalKeyVerifier>,
    userinfo: Option<UserinfoVerifier>,
    guard: guard::RemoteGuard,
    metadata_url: Option<String>,
}

impl std::fmt::Debug for ExternalKeyVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExternalKeyVerifier")
    }
}

impl std::fmt::Debug for UserinfoVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserinfoVerifier")
    }
}

const MAX_HEADER_ID: usize = 128;

/// Read a header as UTF-8 text (non-ASCII display names arrive as raw UTF-8 bytes).
fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    let v = headers.get(name)?;
    let s = std::str::from_utf8(v.as_bytes()).ok()?.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

fn valid_dev_id(s: &str) -> bool {
    s.len() <= MAX_HEADER_ID
        && s != "system"
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@' | b':'))
}

/// The bearer token of an `Authorization` header (scheme matched case-insensitively).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl Authenticator {
    /// Build the verifiers the configuration names.
    pub fn new(cfg: AuthConfig) -> Authenticator {
        let dev_subject = if cfg.dev_subject.trim().is_empty() {
            "dev-agent".to_owned()
        } else {
            cfg.dev_subject
        };
        Authenticator {
            dev_mode: cfg.dev_mode,
            dev_subject,
            jwt: cfg.jwt.map(JwksVerifier::new),
            api_keys: cfg.api_keys,
            external: cfg
                .external_api_key_url
                .map(|u| ExternalKeyVerifier::new(u, REMOTE_TIMEOUT)),
            userinfo: cfg
                .userinfo_url
                .map(|u| UserinfoVerifier::new(u, REMOTE_TIMEOUT)),
            guard: guard::RemoteGuard::new(cfg.remote_limits),
            metadata_url: cfg.resource_url.as_deref().map(resource_metadata_url),
        }
    }

    /// Whether this authenticator skips verification.
    pub fn dev_mode(&self) -> bool {
        self.dev_mode
    }

    /// The RFC 9728 metadata URL advertised on 401s, if a resource URL is configured.
    pub fn metadata_url(&self) -> Option<&str> {
        self.metadata_url.as_deref()
    }

    /// The JWT verifier, when JWT authentication is configured.
    pub fn jwks(&self) -> Option<&JwksVerifier> {
        self.jwt.as_ref()
    }

    /// Prefetch the JWKS (if configured) so the first request does not pay for it. A failure is
    /// logged, not fatal: verification retries on demand.
    pub async fn warm_up(&self) {
        if let Some(j) = &self.jwt
            && let Err(e) = j.prefetch().await
        {
            tracing::warn!(error = %e, "JWKS prefetch failed; will retry on the first request");
        }
    }

    /// The response for a failed authentication (adds `resource_metadata`).
    pub fn reject(&self, err: &AuthError) -> Response {
        err.to_response(self.metadata_url.as_deref())
    }

    /// 403 for an authenticated caller that lacks `scope`: JSON
    /// `{"error":{"code":"FORBIDDEN",…}}` and `WWW-Authenticate: Bearer error="insufficient_scope",
    /// scope="…"` (RFC 6750 §3.1).
    pub fn insufficient_scope(&self, scope: &str) -> Response {
        let message = format!("this operation needs the '{scope}' scope");
        let body = serde_json::json!({ "error": { "code": "FORBIDDEN", "message": message } });
        let mut resp = (StatusCode::FORBIDDEN, Json(body)).into_response();
        let mut v = format!(
            "Bearer error=\"insufficient_scope\", scope=\"{}\"",
            quote_safe(scope)
        );
        if let Some(url) = &self.metadata_url {
            v.push_str(&format!(", resource_metadata=\"{}\"", quote_safe(url)));
        }
        if let Ok(hv) = HeaderValue::from_str(&v) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, hv);
        }
        resp
    }

    /// Authenticate a request from its headers (remote checks counted against one shared
    /// "unknown source"; prefer [`Authenticator::authenticate_from`]).
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, AuthError> {
        self.authenticate_from(headers, None).await
    }

    /// Authenticate a request from its headers; `source` is the client address, which bounds
    /// how many remote checks of unknown credentials it can cause.
    pub async fn authenticate_from(
        &self,
        headers: &HeaderMap,
        source: Option<IpAddr>,
    ) -> Result<Identity, AuthError> {
        if self.dev_mode {
            return self.dev_identity(headers);
        }
        let token = bearer_token(headers).ok_or(AuthError::Missing)?;
        let res = self.verify_token_from(token, source).await;
        let label = match &res {
            Ok(id) => method_label(id.method),
            Err(e) => e.reason(),
        };
        metrics::counter!("auth_requests_total", "result" => label).increment(1);
        if let Err(e) = &res {
            tracing::debug!(reason = e.reason(), error = %e, "authentication failed");
        }
        res
    }

    fn dev_identity(&self, headers: &HeaderMap) -> Result<Identity, AuthError> {
        let subject = match header_text(headers, "x-agent-id") {
            Some(a) if valid_dev_id(&a) => a,
            Some(_) => {
                return Err(AuthError::Invalid(
                    "X-Agent-ID must be 1-128 characters of [A-Za-z0-9_.@:-] and not \"system\""
                        .into(),
                ));
            }
            None => self.dev_subject.clone(),
        };
        let acting_user = match header_text(headers, "x-user-id") {
            Some(u) if valid_dev_id(&u) => Some(u),
            Some(_) => {
                return Err(AuthError::Invalid(
                    "X-User-ID must be 1-128 characters of [A-Za-z0-9_.@:-]".into(),
                ));
            }
            None => None,
        };
        let name = header_text(headers, "x-user-name").map(|n| n.chars().take(200).collect());
        Ok(Identity {
            subject,
            scopes: Scopes::ALL,
            name,
            email: None,
            organization: None,
            method: AuthMethod::Dev,
            acting_user,
        })
    }

    /// Verify a bearer token (without the `Bearer ` prefix).
    pub async fn verify_token(&self, token: &str) -> Result<Identity, AuthError> {
        self.verify_token_from(token, None).await
    }

    /// A remote check of `token` through the negative cache and `source`'s budget.
    async fn remote<F, Fut>(
        &self,
        token: &str,
        source: Option<IpAddr>,
        check: F,
    ) -> Result<Identity, AuthError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Identity, AuthError>>,
    {
        let key = hash_key(token);
        if let Some(e) = self.guard.cached_rejection(&key) {
            return Err(e);
        }
        self.guard.admit(source)?;
        let res = check().await;
        if let Err(e) = &res {
            self.guard.remember(key, e);
        }
        res
    }

    /// [`Authenticator::verify_token`] for a client at `source`.
    pub async fn verify_token_from(
        &self,
        token: &str,
        source: Option<IpAddr>,
    ) -> Result<Identity, AuthError> {
        if token.len() > 16 * 1024 {
            return Err(AuthError::Invalid("token too long".into()));
        }
        if token.starts_with(API_KEY_PREFIX) {
            let store = self
                .api_keys
                .as_ref()
                .ok_or_else(|| AuthError::Invalid("API keys are not accepted here".into()))?;
            let info = store
                .verify(token)
                .await
                .map_err(|e| {
                    tracing::error!(error = %format!("{e:#}"), "API key lookup failed");
                    AuthError::Unavailable("API key lookup failed".into())
                })?
                .ok_or_else(|| AuthError::Invalid("unknown or revoked API key".into()))?;
            return Ok(Identity {
                subject: info.owner,
                scopes: info.scopes,
                name: Some(info.name).filter(|n| !n.is_empty()),
                email: None,
                organization: None,
                method: AuthMethod::ApiKey,
                acting_user: None,
            });
        }
        if ExternalKeyVerifier::handles(token) {
            let ext = self.external.as_ref().ok_or_else(|| {
                AuthError::Invalid("external API keys are not accepted here".into())
            })?;
            if ext.is_cached(token) {
                return ext.verify(token).await;
            }
            return self.remote(token, source, || ext.verify(token)).await;
        }
        let looks_jwt = looks_like_jwt(token);
        if looks_jwt && let Some(jwt) = &self.jwt {
            // Decided here alone: a JWT the JWKS rejects is never retried at userinfo.
            return jwt.verify(token).await.map(identity_from_claims);
        }
        if let Some(ui) = &self.userinfo {
            if ui.is_cached(token) {
                return ui.verify(token).await;
            }
            return self.remote(token, source, || ui.verify(token)).await;
        }
        if looks_jwt {
            Err(AuthError::Invalid(
                "JWT authentication is not configured".into(),
            ))
        } else {
            Err(AuthError::Invalid("unsupported token format".into()))
        }
    }
}

/// Three dot-separated base64url segments, header and payload non-empty: the compact JWS form.
pub fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && !parts[0].is_empty()
        && !parts[1].is_empty()
        && parts.iter().all(|p| {
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'=')
        })
}

fn method_label(m: AuthMethod) -> &'static str {
    match m {
        AuthMethod::Dev => "dev",
        AuthMethod::Jwt => "jwt",
        AuthMethod::ApiKey => "api_key",
        AuthMethod::ExternalApiKey => "external_api_key",
        AuthMethod::Userinfo => "userinfo",
    }
}

/// The identity a verified JWT describes (`name` falls back to `email`).
pub fn identity_from_claims(c: Claims) -> Identity {
    Identity {
        subject: c.sub,
        scopes: c.scope,
        name: c.name.or_else(|| c.email.clone()),
        email: c.email,
        organization: c.organization,
        method: AuthMethod::Jwt,
        acting_user: None,
    }
}

/// axum middleware: authenticate, put the [`Identity`] into the request extensions, or answer
/// 401/503. Use with `axum::middleware::from_fn_with_state(auth, require_auth)`.
pub async fn require_auth(
    State(auth): State<Arc<Authenticator>>,
    mut req: Request,
    next: Next,
) -> Response {
    match auth.authenticate_from(req.headers(), peer_ip(&req)).await {
        Ok(id) => {
            req.extensions_mut().insert(id);
            next.run(req).await
        }
        Err(e) => auth.reject(&e),
    }
}

/// The client address of a request served by [`crate::conn`] or `axum::serve` with connect info.
pub fn peer_ip(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// RFC 9728 protected-resource metadata at `/.well-known/oauth-protected-resource` and, when the
/// resource URL has a path (`https://h/mcp`), also at `/.well-known/oauth-protected-resource/mcp`.
pub fn protected_resource_metadata_route(
    resource: String,
    authorization_servers: Vec<String>,
    scopes: Vec<String>,
) -> Router {
    let (_, path) = split_resource(&resource);
    let suffixed = (!path.is_empty()).then(|| format!("{PROTECTED_RESOURCE_PATH}{path}"));
    let doc = Arc::new(serde_json::json!({
        "resource": resource,
        "authorization_servers": authorization_servers,
        "scopes_supported": scopes,
        "bearer_methods_supported": ["header"],
        "resource_name": "Panaversity",
    }));
    let handler = move || {
        let doc = doc.clone();
        async move {
            (
                [(header::CACHE_CONTROL, "public, max-age=3600")],
                Json((*doc).clone()),
            )
        }
    };
    let mut router = Router::new().route(PROTECTED_RESOURCE_PATH, get(handler.clone()));
    if let Some(p) = suffixed {
        router = router.route(&p, get(handler));
    }
    router
}

/// `PANAVERSITY_ALLOW_DEV_MODE_PUBLIC` through the one boolean parser (the `allow_public` of
/// [`check_dev_mode`]); unset is `false`, an unreadable value an error.
pub fn dev_mode_public_allowed_from_env() -> Result<bool, String> {
    crate::boolean::env_bool("PANAVERSITY_ALLOW_DEV_MODE_PUBLIC").map(|v| v.unwrap_or(false))
}

/// Guard against running dev mode (no authentication) by accident. Always logs a loud warning in
/// dev mode; refuses a non-loopback bind address unless `allow_public`
/// (`PANAVERSITY_ALLOW_DEV_MODE_PUBLIC=true`).
pub fn check_dev_mode(dev_mode: bool, bind: SocketAddr, allow_public: bool) -> anyhow::Result<()> {
    if !dev_mode {
        return Ok(());
    }
    tracing::warn!(
        %bind,
        "DEV MODE: authentication is DISABLED; every request is trusted and identities come from \
         X-Agent-ID / X-User-ID headers. Never use this in production."
    );
    if !bind.ip().is_loopback() && !allow_public {
        anyhow::bail!(
            "refusing to start in dev mode (no authentication) on non-loopback address {bind}; \
             bind to 127.0.0.1, disable dev mode, or set PANAVERSITY_ALLOW_DEV_MODE_PUBLIC=true \
             if you really mean it"
        );
    }
    if !bind.ip().is_loopback() {
        tracing::warn!(%bind, "DEV MODE is exposed on a non-loopback address (explicitly allowed)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_shape_and_claims_payloads() {
        for jwt in ["eyJh.eyJz.sig", "a.b.", "a-_=.b.c"] {
            assert!(looks_like_jwt(jwt), "{jwt}");
        }
        for not in [
            "opaque", "a.b", "a..c", ".b.c", "a.b.c.d", "a b.c.d", "a.b.c/d",
        ] {
            assert!(!looks_like_jwt(not), "{not}");
        }
        let c = jwks::claims_from_payload(br#"{"sub":"u1","scope":"read write"}"#).unwrap();
        assert_eq!(c.sub, "u1");
        assert!(c.scope.read && c.scope.write && !c.scope.admin);
        for bad in [&br#"{}"#[..], br#"{"sub":"system"}"#, b"[", br#"{"sub":7}"#] {
            assert!(jwks::claims_from_payload(bad).is_err());
        }
    }

    #[test]
    fn metadata_url_inserts_well_known() {
        assert_eq!(
            resource_metadata_url("https://fs.example.com/mcp"),
            "https://fs.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            resource_metadata_url("http://127.0.0.1:8000"),
            "http://127.0.0.1:8000/.well-known/oauth-protected-resource"
        );
        assert_eq!(
            resource_metadata_url("http://h:1/"),
            "http://h:1/.well-known/oauth-protected-resource"
        );
    }

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert_eq!(bearer_token(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer_token(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer_token(&h), None);
    }

    #[test]
    fn dev_mode_guard() {
        let lo: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8000".parse().unwrap();
        assert!(check_dev_mode(true, lo, false).is_ok());
        assert!(check_dev_mode(true, any, false).is_err());
        assert!(check_dev_mode(true, any, true).is_ok());
        assert!(check_dev_mode(false, any, false).is_ok());
    }

    #[tokio::test]
    async fn dev_identity_from_headers() {
        let a = Authenticator::new(AuthConfig {
            dev_mode: true,
            ..Default::default()
        });
        let mut h = HeaderMap::new();
        let id = a.authenticate(&h).await.unwrap();
        assert_eq!(id.subject, "dev-agent");
        assert_eq!(id.scopes, Scopes::ALL);
        h.insert("x-agent-id", HeaderValue::from_static("agent-7"));
        h.insert("x-user-id", HeaderValue::from_static("u42"));
        h.insert(
            "x-user-name",
            HeaderValue::from_bytes("Zoë".as_bytes()).unwrap(),
        );
        let id = a.authenticate(&h).await.unwrap();
        assert_eq!(id.subject, "agent-7");
        assert_eq!(id.acting_user.as_deref(), Some("u42"));
        assert_eq!(id.name.as_deref(), Some("Zoë"));
        assert_eq!(id.method, AuthMethod::Dev);
        h.insert("x-agent-id", HeaderValue::from_static("system"));
        assert!(a.authenticate(&h).await.is_err());
    }

    #[test]
    fn error_statuses() {
        assert_eq!(AuthError::Missing.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(AuthError::Expired.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            AuthError::Unavailable("x".into()).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let r = AuthError::Invalid("bad \"quote\"".into()).to_response(Some("http://h/x"));
        let w = r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(w.starts_with("Bearer error=\"invalid_token\""));
        assert!(w.ends_with("resource_metadata=\"http://h/x\""));
        let a = Authenticator::new(AuthConfig {
            resource_url: Some("https://fs.example.com/mcp".into()),
            ..Default::default()
        });
        let r = a.insufficient_scope("write");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let w = r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(
            w.contains("error=\"insufficient_scope\", scope=\"write\""),
            "{w}"
        );
        assert!(
            w.contains("/.well-known/oauth-protected-resource/mcp"),
            "{w}"
        );
    }
}
