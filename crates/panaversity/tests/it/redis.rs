//! `REDIS_URL`: a non-critical readiness check and the shared rate limit. With Redis reachable
//! (mandatory under REQUIRE_SERVICES=1) `/health/ready` reports it `ok` and the per-user limit
//! answers 429 past `STUDY_RATE_LIMIT`; with Redis down the server still starts, readiness is
//! 200 `degraded`, and requests fail open.

use serde_json::{Value, json};

use crate::support::{LESSON_DOC, Server, ServerOpts, TempData, client};

async fn ready(base: &str) -> (u16, Value) {
    let r = client()
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn redis_check(v: &Value) -> Value {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "redis")
        .cloned()
        .unwrap_or_else(|| panic!("no redis check: {v}"))
}

async fn suggestions(base: &str, user: &str) -> u16 {
    client()
        .get(format!(
            "{base}/chatkit/suggestions?mode=ask&lesson_path={LESSON_DOC}"
        ))
        .header("x-user-id", user)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn redis_backed_limits_and_readiness() {
    let Some(url) = platform::db::test_redis_url() else {
        eprintln!("REDIS_URL not set; skipping the reachable-Redis half");
        return;
    };
    let tmp = TempData::new();
    let opts = ServerOpts::dev()
        .env("REDIS_URL", &url)
        .env("STUDY_RATE_LIMIT", "2")
        .env("STUDY_RATE_WINDOW_SECONDS", "60");
    let server = Server::start(&tmp.data(), opts).await;
    let (status, v) = ready(&server.base).await;
    assert_eq!(status, 200);
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(redis_check(&v)["ok"], json!(true), "{v}");
    // A user id unique to this run (the limiter's keys live in the shared Redis).
    let user = format!(
        "rl-e2e-{}",
        std::process::id() as u64 * 1000 + crate::support::now() % 1000
    );
    assert_eq!(suggestions(&server.base, &user).await, 200);
    assert_eq!(suggestions(&server.base, &user).await, 200);
    assert_eq!(suggestions(&server.base, &user).await, 429);
    // Another user has their own budget.
    assert_eq!(suggestions(&server.base, &format!("{user}-b")).await, 200);
    server.stop().await;
}

#[tokio::test]
async fn redis_down_is_degraded_not_down() {
    // A loopback port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let tmp = TempData::new();
    let opts = ServerOpts::dev().env("REDIS_URL", &format!("redis://127.0.0.1:{port}/"));
    let server = Server::start(&tmp.data(), opts).await;
    let (status, v) = ready(&server.base).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "degraded", "{v}");
    let check = redis_check(&v);
    assert_eq!(check["ok"], json!(false), "{v}");
    assert_eq!(check["critical"], json!(false), "{v}");
    // The rate limiter fails open: students are still served.
    assert_eq!(suggestions(&server.base, "student-x").await, 200);
    let m = client()
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("ratelimit_failopen_total"), "{m}");
    server.stop().await;
}
