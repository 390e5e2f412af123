//! The external API-key server and the SSO userinfo endpoint, as local axum servers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use platform::auth::{AuthConfig, AuthError, Authenticator};
use platform::{AuthMethod, Scopes};
use serde_json::{Value, json};

use crate::jwks::{claims, config, rsa_key, sign, start_jwks};
use crate::{init, spawn};

#[derive(Default)]
struct Fake {
    hits: AtomicUsize,
    broken: AtomicBool,
}

async fn verify_key(State(f): State<Arc<Fake>>, Json(body): Json<Value>) -> Response {
    f.hits.fetch_add(1, Ordering::SeqCst);
    if f.broken.load(Ordering::SeqCst) {
        return StatusCode::BAD_GATEWAY.into_response();
    }
    match body["key"].as_str() {
        Some("pana_good") => Json(json!({
            "valid": true,
            "key": {"id": "k1", "userId": "user-9", "name": "CI",
                    "permissions": {"read": ["*"], "write": ["*"]}}
        }))
        .into_response(),
        Some("sk_live_nouser") => {
            Json(json!({"valid": true, "key": {"permissions": {}}})).into_response()
        }
        _ => Json(json!({"valid": false, "error": {"code": "KEY_NOT_FOUND"}})).into_response(),
    }
}

async fn userinfo(State(f): State<Arc<Fake>>, headers: HeaderMap) -> Response {
    f.hits.fetch_add(1, Ordering::SeqCst);
    if f.broken.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match auth {
        "Bearer opaque-good" | "Bearer aaa.bbb.ccc" => Json(json!({
            "sub": "u-77", "email": "zoe@example.com", "name": "Zoë",
            "organization_id": "org-7"
        }))
        .into_response(),
        _ => (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_token"})),
        )
            .into_response(),
    }
}

async fn start_fake() -> (Arc<Fake>, String) {
    init();
    let f = Arc::new(Fake::default());
    let app = Router::new()
        .route("/api/api-key/verify", post(verify_key))
        .route("/api/auth/oauth2/userinfo", get(userinfo))
        .with_state(f.clone());
    let addr = spawn(app).await;
    (f, format!("http://{addr}"))
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    h
}

#[tokio::test]
async fn external_api_keys_are_verified_and_cached() {
    let (fake, base) = start_fake().await;
    let auth = Authenticator::new(AuthConfig {
        external_api_key_url: Some(format!("{base}/api/api-key/verify")),
        ..Default::default()
    });
    let id = auth.authenticate(&bearer("pana_good")).await.unwrap();
    assert_eq!(id.subject, "user-9");
    assert_eq!(id.method, AuthMethod::ExternalApiKey);
    assert_eq!(
        id.scopes,
        Scopes {
            read: true,
            write: true,
            admin: false
        }
    );
    assert_eq!(fake.hits.load(Ordering::SeqCst), 1);
    // Cached: no second call.
    auth.authenticate(&bearer("pana_good")).await.unwrap();
    assert_eq!(fake.hits.load(Ordering::SeqCst), 1);

    // A rejection is remembered for a while (negative cache): asked once.
    for _ in 0..2 {
        let e = auth.authenticate(&bearer("sk_test_bad")).await.unwrap_err();
        assert!(matches!(e, AuthError::Invalid(_)), "{e:?}");
    }
    assert_eq!(fake.hits.load(Ordering::SeqCst), 2);
    // A valid answer without an owner is refused (never "unknown").
    let e = auth
        .authenticate(&bearer("sk_live_nouser"))
        .await
        .unwrap_err();
    assert!(matches!(e, AuthError::Invalid(_)), "{e:?}");

    // Server trouble is 503, not 401.
    fake.broken.store(true, Ordering::SeqCst);
    let e = auth.authenticate(&bearer("pana_other")).await.unwrap_err();
    assert!(matches!(e, AuthError::Unavailable(_)), "{e:?}");
    // The cached key keeps working meanwhile.
    assert!(auth.authenticate(&bearer("pana_good")).await.is_ok());

    // Without an external verifier these prefixes are refused.
    let plain = Authenticator::new(AuthConfig::default());
    assert!(matches!(
        plain.authenticate(&bearer("pana_good")).await,
        Err(AuthError::Invalid(_))
    ));
}

#[tokio::test]
async fn opaque_tokens_use_userinfo() {
    let (fake, base) = start_fake().await;
    let auth = Authenticator::new(AuthConfig {
        userinfo_url: Some(format!("{base}/api/auth/oauth2/userinfo")),
        ..Default::default()
    });
    let id = auth.authenticate(&bearer("opaque-good")).await.unwrap();
    assert_eq!(id.subject, "u-77");
    assert_eq!(id.method, AuthMethod::Userinfo);
    assert_eq!(id.name.as_deref(), Some("Zoë"));
    assert_eq!(id.organization.as_deref(), Some("org-7"));
    auth.authenticate(&bearer("opaque-good")).await.unwrap();
    assert_eq!(fake.hits.load(Ordering::SeqCst), 1, "cached");

    let e = auth.authenticate(&bearer("opaque-bad")).await.unwrap_err();
    assert!(matches!(e, AuthError::Invalid(_)), "{e:?}");

    fake.broken.store(true, Ordering::SeqCst);
    let e = auth.authenticate(&bearer("opaque-new")).await.unwrap_err();
    assert!(matches!(e, AuthError::Unavailable(_)), "{e:?}");

    // Without userinfo, an opaque token is refused.
    let plain = Authenticator::new(AuthConfig::default());
    assert!(matches!(
        plain.authenticate(&bearer("opaque-good")).await,
        Err(AuthError::Invalid(_))
    ));
}

#[tokio::test]
async fn a_jwt_is_decided_by_the_jwks_alone() {
    let (fake, base) = start_fake().await;
    let k = rsa_key("k1");
    let jwks = start_jwks(&[&k]).await;
    let auth = Authenticator::new(AuthConfig {
        jwt: Some(config(&jwks.url())),
        userinfo_url: Some(format!("{base}/api/auth/oauth2/userinfo")),
        ..Default::default()
    });
    // A real JWT verifies locally.
    let id = auth
        .authenticate(&bearer(&sign(&k, &claims("jwt-user"))))
        .await
        .unwrap();
    assert_eq!(id.method, AuthMethod::Jwt);
    // A JWT-shaped token the JWKS rejects is rejected, even though the SSO's userinfo would
    // accept it (that retry let wrong-audience tokens in): userinfo is never asked.
    let e = auth.authenticate(&bearer("aaa.bbb.ccc")).await.unwrap_err();
    assert!(matches!(e, AuthError::Invalid(_)), "{e:?}");
    assert_eq!(fake.hits.load(Ordering::SeqCst), 0);
    // Opaque tokens still go to userinfo.
    let id = auth.authenticate(&bearer("opaque-good")).await.unwrap();
    assert_eq!(id.method, AuthMethod::Userinfo);
    assert_eq!(fake.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn remote_checks_are_limited_per_source() {
    let (fake, base) = start_fake().await;
    let auth = Authenticator::new(AuthConfig {
        userinfo_url: Some(format!("{base}/api/auth/oauth2/userinfo")),
        remote_limits: platform::auth::guard::RemoteLimits {
            negative_ttl: std::time::Duration::from_secs(30),
            per_source_per_minute: 3,
        },
        ..Default::default()
    });
    let a = Some(std::net::IpAddr::from([10, 1, 1, 1]));
    let b = Some(std::net::IpAddr::from([10, 1, 1, 2]));
    for i in 0..3 {
        let e = auth
            .authenticate_from(&bearer(&format!("opaque-bad-{i}")), a)
            .await
            .unwrap_err();
        assert!(matches!(e, AuthError::Invalid(_)), "{e:?}");
    }
    let e = auth
        .authenticate_from(&bearer("opaque-bad-9"), a)
        .await
        .unwrap_err();
    assert!(matches!(e, AuthError::RateLimited(_)), "{e:?}");
    assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(fake.hits.load(Ordering::SeqCst), 3);
    // Another address has its own budget; a cached good token costs nothing.
    auth.authenticate_from(&bearer("opaque-good"), b)
        .await
        .unwrap();
    auth.authenticate_from(&bearer("opaque-good"), a)
        .await
        .unwrap();
    assert_eq!(fake.hits.load(Ordering::SeqCst), 4);
}
