//! The HTTP assembly over real servers: auth middleware + RFC 9728, health/ready/metrics, CORS,
//! body limit, request ids, panics, timeouts, rate-limit responses, graceful shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use axum::extract::Path;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use http::StatusCode;
use platform::Identity;
use platform::auth::{AuthConfig, Authenticator, protected_resource_metadata_route, require_auth};
use platform::http::{CheckResult, HttpOptions, ReadyCheck, common_layers, health_router, serve};
use platform::ratelimit::{Decision, too_many_requests};
use serde_json::Value;

use crate::jwks::{claims, config, rsa_key, sign, start_jwks};
use crate::{client, init, spawn};

async fn whoami(Extension(id): Extension<Identity>) -> Json<Identity> {
    Json(id)
}

#[tokio::test]
async fn require_auth_over_a_real_server() {
    let k = rsa_key("k1");
    let jwks = start_jwks(&[&k]).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let resource = format!("http://{addr}/mcp");
    let auth = Arc::new(Authenticator::new(AuthConfig {
        jwt: Some(config(&jwks.url())),
        resource_url: Some(resource.clone()),
        authorization_servers: vec!["https://sso.test".into()],
        ..Default::default()
    }));
    let protected = Router::new()
        .route("/mcp", post(whoami).get(whoami))
        .layer(axum::middleware::from_fn_with_state(auth, require_auth));
    let app = common_layers(
        protected.merge(protected_resource_metadata_route(
            resource.clone(),
            vec!["https://sso.test".into()],
            vec!["read".into(), "write".into(), "admin".into()],
        )),
        &HttpOptions::default(),
    );
    tokio::spawn(serve(app, listener, std::future::pending()));
    let c = client();

    // No token: 401 + WWW-Authenticate pointing at the metadata.
    let r = c.get(format!("http://{addr}/mcp")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let www = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    let meta_url = format!("http://{addr}/.well-known/oauth-protected-resource/mcp");
    assert!(www.starts_with("Bearer error=\"invalid_token\""), "{www}");
    assert!(
        www.contains(&format!("resource_metadata=\"{meta_url}\"")),
        "{www}"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "UNAUTHORIZED");

    // Bad token: 401 too.
    let r = c
        .get(format!("http://{addr}/mcp"))
        .bearer_auth("a.b.c")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().contains_key("www-authenticate"));

    // The metadata document, at both well-known locations.
    for url in [
        meta_url.clone(),
        format!("http://{addr}/.well-known/oauth-protected-resource"),
    ] {
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{url}");
        let m: Value = r.json().await.unwrap();
        assert_eq!(m["resource"], resource.as_str());
        assert_eq!(m["authorization_servers"][0], "https://sso.test");
        assert_eq!(m["scopes_supported"][2], "admin");
    }

    // A valid token: the handler sees the identity.
    let r = c
        .post(format!("http://{addr}/mcp"))
        .bearer_auth(sign(&k, &claims("agent-42")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let id: Value = r.json().await.unwrap();
    assert_eq!(id["subject"], "agent-42");
    assert_eq!(id["method"], "jwt");
}

#[tokio::test]
async fn dev_mode_middleware_takes_ids_from_headers() {
    init();
    let auth = Arc::new(Authenticator::new(AuthConfig {
        dev_mode: true,
        dev_subject: "dev-agent".into(),
        ..Default::default()
    }));
    let app = Router::new()
        .route("/me", get(whoami))
        .layer(axum::middleware::from_fn_with_state(auth, require_auth));
    let addr = spawn(app).await;
    let c = client();
    let id: Value = c
        .get(format!("http://{addr}/me"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(id["subject"], "dev-agent");
    assert_eq!(id["method"], "dev");
    let id: Value = c
        .get(format!("http://{addr}/me"))
        .header("x-agent-id", "claude-1")
        .header("x-user-id", "student-5")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(id["subject"], "claude-1");
    assert_eq!(id["acting_user"], "student-5");
}

/// A readiness check whose outcome the test controls: 0 all ok, 1 non-critical down,
/// 2 critical down, 3 hangs.
struct Switch(AtomicU8);

#[async_trait::async_trait]
impl ReadyCheck for Switch {
    async fn check(&self) -> Vec<CheckResult> {
        match self.0.load(Ordering::SeqCst) {
            0 => vec![
                CheckResult::pass("database", true),
                CheckResult::pass("redis", false),
            ],
            1 => vec![
                CheckResult::pass("database", true),
                CheckResult::fail("redis", false, "connection refused"),
            ],
            2 => vec![
                CheckResult::fail("database", true, "pool timed out"),
                CheckResult::pass("redis", false),
            ],
            _ => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                vec![]
            }
        }
    }
}

#[tokio::test]
async fn health_ready_and_metrics() {
    init();
    let metrics = platform::telemetry::install_metrics().unwrap();
    // Idempotent: the same recorder.
    let again = platform::telemetry::install_metrics().unwrap();
    let sw = Arc::new(Switch(AtomicU8::new(0)));
    let app = common_layers(
        health_router(sw.clone(), metrics).route(
            "/items/{id}",
            get(|Path(id): Path<String>| async move { id }),
        ),
        &HttpOptions::default(),
    );
    let addr = spawn(app).await;
    let c = client();

    let r = c.get(format!("http://{addr}/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["status"], "ok");

    let ready = |c: reqwest::Client| async move {
        let r = c
            .get(format!("http://{addr}/health/ready"))
            .send()
            .await
            .unwrap();
        let s = r.status();
        (s, r.json::<Value>().await.unwrap())
    };
    let (s, b) = ready(c.clone()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["status"], "ok");
    assert_eq!(b["checks"].as_array().unwrap().len(), 2);

    sw.0.store(1, Ordering::SeqCst);
    let (s, b) = ready(c.clone()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["status"], "degraded");
    assert_eq!(b["checks"][1]["ok"], false);
    assert_eq!(b["checks"][1]["detail"], "connection refused");

    sw.0.store(2, Ordering::SeqCst);
    let (s, b) = ready(c.clone()).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(b["status"], "unavailable");

    sw.0.store(3, Ordering::SeqCst);
    let t = std::time::Instant::now();
    let (s, _) = ready(c.clone()).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(t.elapsed() < Duration::from_secs(10));

    for _ in 0..3 {
        c.get(format!("http://{addr}/items/abc"))
            .send()
            .await
            .unwrap();
    }
    let r = c
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("http_requests_total")
            && l.contains("route=\"/items/{id}\"")
            && l.contains("status=\"200\"")),
        "{text}"
    );
    assert!(
        text.contains("http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert_eq!(again.render().is_empty(), text.is_empty());
}

#[tokio::test]
async fn cors_allow_list() {
    init();
    let opts = HttpOptions {
        allowed_origins: vec!["https://learn.example.com".into(), "*".into()],
        ..Default::default()
    };
    let app = common_layers(Router::new().route("/x", get(|| async { "x" })), &opts);
    let addr = spawn(app).await;
    let c = client();

    let r = c
        .get(format!("http://{addr}/x"))
        .header("origin", "https://learn.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://learn.example.com"
    );
    assert_eq!(r.headers()["access-control-allow-credentials"], "true");

    let r = c
        .get(format!("http://{addr}/x"))
        .header("origin", "https://evil.example.com")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());

    // Preflight.
    let r = c
        .request(reqwest::Method::OPTIONS, format!("http://{addr}/x"))
        .header("origin", "https://learn.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://learn.example.com"
    );
    let allowed = r.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");
    // A ChatKit custom fetch sends Idempotency-Key (retried messages make one turn).
    assert!(allowed.contains("idempotency-key"), "{allowed}");
    let r = c
        .request(reqwest::Method::OPTIONS, format!("http://{addr}/x"))
        .header("origin", "https://evil.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn body_limit_request_id_panic_and_timeout() {
    init();
    let opts = HttpOptions {
        max_body_bytes: 1024,
        request_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let app = common_layers(
        Router::new()
            .route("/echo", post(|b: Bytes| async move { b.len().to_string() }))
            .route(
                "/boom",
                get(|| async {
                    if std::hint::black_box(true) {
                        panic!("handler bug");
                    }
                    "unreachable"
                }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            ),
        &opts,
    );
    let addr = spawn(app).await;
    let c = client();

    let r = c
        .post(format!("http://{addr}/echo"))
        .body(vec![b'a'; 512])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "512");

    let r = c
        .post(format!("http://{addr}/echo"))
        .body(vec![b'a'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Chunked (no Content-Length) bodies are limited too.
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        (0..8).map(|_| Ok(Bytes::from(vec![b'b'; 512]))).collect();
    let r = c
        .post(format!("http://{addr}/echo"))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Request ids: echoed when sane, generated otherwise.
    let r = c
        .post(format!("http://{addr}/echo"))
        .header("x-request-id", "req-123.abc")
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-123.abc");
    let r = c
        .post(format!("http://{addr}/echo"))
        .body("hi")
        .send()
        .await
        .unwrap();
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");
    let r = c
        .post(format!("http://{addr}/echo"))
        .header("x-request-id", "has spaces <script>")
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_ne!(r.headers()["x-request-id"], "has spaces <script>");

    // A panicking handler: 500 JSON, and the server keeps serving.
    let r = c.get(format!("http://{addr}/boom")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(r.headers().contains_key("x-request-id"));
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], "INTERNAL");

    // Too slow: 503 JSON after the timeout.
    let t = std::time::Instant::now();
    let r = c.get(format!("http://{addr}/slow")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(t.elapsed() < Duration::from_secs(2));
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], "TIMEOUT");

    let r = c
        .post(format!("http://{addr}/echo"))
        .body("still alive")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn rate_limited_response_shape() {
    init();
    let app = Router::new().route(
        "/limited",
        get(|| async {
            too_many_requests(&Decision {
                allowed: false,
                limit: 20,
                remaining: 0,
                reset_after: Duration::from_millis(42_500),
                failed_open: false,
            })
        }),
    );
    let addr = spawn(app).await;
    let r = client()
        .get(format!("http://{addr}/limited"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "43");
    assert_eq!(r.headers()["x-ratelimit-limit"], "20");
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    assert_eq!(r.headers()["x-ratelimit-reset"], "43");
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], "RATE_LIMITED");
    assert_eq!(b["error"]["limit"], 20);
    assert_eq!(b["error"]["reset_after_ms"], 42_500);
}

#[tokio::test]
async fn graceful_shutdown_drains_in_flight_requests() {
    init();
    let app = Router::new().route(
        "/work",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            "done"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(app, listener, async move {
        let _ = rx.await;
    }));
    let c = client();
    let inflight = tokio::spawn(async move {
        c.get(format!("http://{addr}/work"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    tx.send(()).unwrap();
    assert_eq!(inflight.await.unwrap(), "done");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server stops after draining")
        .unwrap()
        .unwrap();
    // New connections are refused after shutdown.
    assert!(
        client()
            .get(format!("http://{addr}/work"))
            .send()
            .await
            .is_err()
    );
}
