//! Drop-in settings: the server started with the Python Study Mode API's environment
//! (`SSO_URL` at a local JWKS + userinfo server, `STUDY_MODE_CHATKIT_*`, `CONTENT_CACHE_TTL`,
//! `LOG_LEVEL`, …) authenticates ChatKit calls with a JWT from the SSO's JWKS and with an opaque
//! token through `/api/auth/oauth2/userinfo`; settings it cannot honour stop the start naming the
//! replacement.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::RngCore;
use rsa::pkcs1::EncodeRsaPrivateKey;
use serde_json::{Value, json};

use crate::support::{Server, ServerOpts, TempData, backends, client, now, spawn_router};

struct TestRng;
impl rsa::rand_core::RngCore for TestRng {
    fn next_u32(&mut self) -> u32 {
        rand::rng().next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        rand::rng().next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        rand::rng().fill_bytes(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        rand::rng().fill_bytes(dest);
        Ok(())
    }
}
impl rsa::rand_core::CryptoRng for TestRng {}

#[derive(Clone)]
struct Sso {
    jwks: Arc<Value>,
    /// Paths of userinfo calls and the bearer they carried.
    userinfo_calls: Arc<Mutex<Vec<String>>>,
}

async fn jwks(State(s): State<Sso>) -> Json<Value> {
    Json((*s.jwks).clone())
}

async fn userinfo(
    State(s): State<Sso>,
    headers: HeaderMap,
) -> (axum::http::StatusCode, Json<Value>) {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    s.userinfo_calls.lock().unwrap().push(auth.clone());
    if auth == "Bearer opaque-session-token" {
        (
            axum::http::StatusCode::OK,
            Json(json!({"sub": "opaque-student", "name": "Opaque", "email": "o@example.com"})),
        )
    } else {
        (
            axum::http::StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_token"})),
        )
    }
}

async fn list_threads(base: &str, token: Option<&str>) -> u16 {
    let mut req = client()
        .post(format!("{base}/chatkit"))
        .json(&json!({"type": "threads.list", "params": {"limit": 5}}));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn the_predecessors_environment_authenticates_and_refuses_what_it_cannot_honour() {
    let key = rsa::RsaPrivateKey::new(&mut TestRng, 2048).unwrap();
    let der = key.to_pkcs1_der().unwrap();
    let enc = EncodingKey::from_rsa_der(der.as_bytes());
    let mut jwk = Jwk::from_encoding_key(&enc, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some("sso-1".into());
    let sso = Sso {
        jwks: Arc::new(json!({"keys": [serde_json::to_value(&jwk).unwrap()]})),
        userinfo_calls: Arc::new(Mutex::new(Vec::new())),
    };
    let app = Router::new()
        .route("/api/auth/jwks", get(jwks))
        .route("/api/auth/oauth2/userinfo", get(userinfo))
        .with_state(sso.clone());
    let sso_url = format!("http://{}", spawn_router(app).await);

    // A Better Auth id_token: RS256 with a kid; the predecessor checked neither iss nor aud.
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("sso-1".into());
    let claims = json!({"sub": "jwt-student", "iat": now(), "exp": now() + 600,
                        "iss": "https://whatever.example", "aud": "learn-app", "name": "Jay"});
    let token = jsonwebtoken::encode(&h, &claims, &enc).unwrap();

    for (label, db_url, _guard) in backends().await {
        let tmp = TempData::new();
        let mut opts = ServerOpts::default()
            .env("SSO_URL", &sso_url)
            .env("CONTENT_CACHE_TTL", "86400")
            .env("LOG_LEVEL", "INFO")
            .env("DEBUG", "false")
            .env("DEV_MODE", "false")
            .env("DEV_USER_ID", "dev-user-123")
            .env("REDIS_MAX_CONNECTIONS", "10")
            .env("STUDY_MODE_CHATKIT_POOL_SIZE", "4")
            .env("STUDY_MODE_CHATKIT_MAX_OVERFLOW", "2")
            .env("STUDY_MODE_CHATKIT_STATEMENT_TIMEOUT", "30000")
            .env("STUDY_MODE_CHATKIT_SCHEMA_NAME", "study_mode_chat")
            .env("METERING_ENABLED", "false");
        if let Some(url) = &db_url {
            // The predecessor's SQLAlchemy spelling.
            let url = url.replacen("postgres://", "postgresql+asyncpg://", 1);
            opts = opts.env("STUDY_MODE_CHATKIT_DATABASE_URL", &url);
        }
        let server = Server::start(&tmp.data(), opts).await;
        let base = server.base.clone();
        assert_eq!(list_threads(&base, None).await, 401, "{label}");
        assert_eq!(
            list_threads(&base, Some(&token)).await,
            200,
            "{label}: JWT via SSO_URL JWKS"
        );
        assert_eq!(
            list_threads(&base, Some("opaque-session-token")).await,
            200,
            "{label}: opaque token via the predecessor's userinfo path"
        );
        assert_eq!(
            list_threads(&base, Some("not-a-session")).await,
            401,
            "{label}"
        );
        assert!(
            sso.userinfo_calls
                .lock()
                .unwrap()
                .contains(&"Bearer opaque-session-token".to_string())
        );
        let log = server.log();
        assert!(log.contains("SSO_URL → PANAVERSITY_JWKS_URL"), "{log}");
        assert!(
            log.contains("CONTENT_CACHE_TTL → STUDY_LESSON_CACHE_TTL_SECS"),
            "{log}"
        );
        if db_url.is_some() {
            assert!(
                log.contains("database=\"postgres\"") || log.contains("database=postgres"),
                "{label}: {log}"
            );
        }
        server.stop().await;
    }

    // What cannot be honoured stops the start and names the replacement.
    for (k, v, needle) in [
        ("METERING_ENABLED", "true", "unset METERING_ENABLED"),
        ("STUDY_MODE_CHATKIT_SCHEMA_NAME", "tenant_a", "search_path"),
        ("REDIS_PASSWORD", "secret", "set REDIS_URL"),
    ] {
        let tmp = TempData::new();
        let err = Server::try_start(&tmp.data(), ServerOpts::default().env(k, v))
            .await
            .err()
            .unwrap_or_else(|| panic!("{k}={v} must be refused"));
        assert!(err.contains(k) && err.contains(needle), "{k}: {err}");
    }
}
