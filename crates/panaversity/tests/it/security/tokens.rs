//! Finding 4: with `PANAVERSITY_AUTH_SERVER_URL` set, a JWT rejected for a wrong or missing
//! `aud`/`iss` was retried at the SSO's userinfo endpoint and accepted when that endpoint took
//! it. Finding 5: every rejected credential was forwarded to the SSO one-to-one.
//! Now a JWT-shaped token is decided by the JWKS alone; opaque tokens go to userinfo through a
//! negative cache and a per-source limit (429 `RATE_LIMITED` beyond it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde_json::{Value, json};

use super::HealthProbe;
use crate::jwt::{AUD, ISS, claims, rsa_key, sign};
use crate::support::{Server, ServerOpts, TempData, spawn_router};

/// A fake SSO: JWKS, and a userinfo endpoint that accepts any JWT-shaped token (the behaviour
/// that made the bypass possible), `good-…` opaque tokens, and rejects `bad-…` ones.
async fn start_sso(jwks: Value, calls: Arc<AtomicU64>) -> String {
    let jwks = Arc::new(jwks);
    let app = Router::new()
        .route(
            "/api/auth/jwks",
            get(move || {
                let d = jwks.clone();
                async move { Json((*d).clone()) }
            }),
        )
        .route(
            "/api/auth/oauth2/userinfo",
            get(move |headers: HeaderMap| {
                let calls = calls.clone();
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let token = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "))
                        .unwrap_or("")
                        .to_string();
                    if token.starts_with("good-") {
                        (
                            StatusCode::OK,
                            Json(json!({"sub": "olivia", "scope": "read"})),
                        )
                    } else if token.contains('.') {
                        (
                            StatusCode::OK,
                            Json(json!({"sub": "mallory", "scope": "read write admin"})),
                        )
                    } else {
                        (
                            StatusCode::UNAUTHORIZED,
                            Json(json!({"error": "invalid_token"})),
                        )
                    }
                }
            }),
        );
    format!("http://{}", spawn_router(app).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwts_are_decided_by_jwks_and_bad_tokens_do_not_flood_the_sso() {
    let key = rsa_key("sso-key-sec");
    let calls = Arc::new(AtomicU64::new(0));
    let sso = start_sso(json!({"keys": [key.jwk.clone()]}), calls.clone()).await;
    let tmp = TempData::new();
    let opts = ServerOpts::default()
        .env("PANAVERSITY_AUTH_SERVER_URL", &sso)
        .env("PANAVERSITY_JWT_ISSUER", ISS)
        .env("PANAVERSITY_JWT_AUDIENCE", AUD)
        .env("PANAVERSITY_AUTH_REMOTE_PER_MINUTE", "10")
        .env("PANAVERSITY_NO_SAMPLE", "1");
    let server = Server::start(&tmp.data(), opts).await;
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}});

    // Finding 4: wrong / missing aud and iss are 401, and userinfo is never asked.
    let mut wrong_aud = claims("mallory", "read write admin");
    wrong_aud["aud"] = json!("another-service");
    let mut no_aud = claims("mallory", "read write admin");
    no_aud.as_object_mut().unwrap().remove("aud");
    let mut wrong_iss = claims("mallory", "read write admin");
    wrong_iss["iss"] = json!("https://evil.example");
    let mut no_iss = claims("mallory", "read write admin");
    no_iss.as_object_mut().unwrap().remove("iss");
    for (what, c) in [
        ("wrong aud", wrong_aud),
        ("no aud", no_aud),
        ("wrong iss", wrong_iss),
        ("no iss", no_iss),
    ] {
        let a = server.mcp_bearer(&sign(&key, &c)).raw(list.clone()).await;
        assert_eq!(a.status, 401, "{what}: {a:?}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "a JWT reached userinfo");
    // A correct JWT still works (JWKS only).
    let a = server
        .mcp_bearer(&sign(&key, &claims("alice", "read")))
        .raw(list.clone())
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    // Opaque tokens still go to userinfo; a good one is cached.
    for _ in 0..3 {
        let a = server
            .mcp_bearer("good-olivia-token")
            .raw(list.clone())
            .await;
        assert_eq!(a.status, 200, "{a:?}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Finding 5: the same bad token 30 times costs one userinfo call (negative cache) ...
    let probe = HealthProbe::start(&server.base);
    for _ in 0..30 {
        let a = server.mcp_bearer("bad-same-token").raw(list.clone()).await;
        assert_eq!(a.status, 401, "{a:?}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // ... and 30 different bad tokens from one client cost at most the per-source budget (10 a
    // minute, two already spent); the rest are 429 RATE_LIMITED without reaching the SSO.
    let mut limited = 0;
    for i in 0..30 {
        let a = server
            .mcp_bearer(&format!("bad-token-{i}"))
            .raw(list.clone())
            .await;
        match a.status {
            401 => {}
            429 => {
                assert_eq!(a.body["error"]["code"], "RATE_LIMITED", "{a:?}");
                assert!(a.headers.get("retry-after").is_some(), "{a:?}");
                limited += 1;
            }
            s => panic!("unexpected {s}: {a:?}"),
        }
    }
    probe.finish("credential flood").await;
    let total = calls.load(Ordering::SeqCst);
    println!("30 bad tokens: {total} userinfo calls in all, {limited} answered 429");
    assert!(total <= 10, "{total} userinfo calls");
    assert!(limited >= 20, "{limited}");
    // The cached good token is unaffected by the exhausted budget.
    let a = server
        .mcp_bearer("good-olivia-token")
        .raw(list.clone())
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    server.stop().await;
}
