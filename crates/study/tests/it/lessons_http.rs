//! `GET /chatkit/suggestions` and `POST /admin/invalidate-cache` over HTTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Extension;
use platform::identity::{AuthMethod, Identity, Scopes};
use platform::ratelimit::{Decision, RateLimiter};
use serde_json::{Value, json};
use study::lessons::{CacheConfig, Lesson, LessonService};
use study::suggestions::{lesson_routes, suggestions_for};
use study::turn::Mode;

use crate::lessons_cache::TestSource;

/// Allows `limit` requests per key prefix, then denies; records the keys.
struct Limit {
    limit: u64,
    used: AtomicU64,
    keys: std::sync::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl RateLimiter for Limit {
    async fn check(&self, key: &str) -> Decision {
        self.keys.lock().unwrap().push(key.to_string());
        let n = self.used.fetch_add(1, Ordering::SeqCst) + 1;
        Decision {
            allowed: n <= self.limit,
            limit: self.limit,
            remaining: self.limit.saturating_sub(n),
            reset_after: Duration::from_secs(30),
            failed_open: false,
        }
    }
    fn backend(&self) -> &'static str {
        "test"
    }
}

fn identity(user: &str) -> Identity {
    Identity {
        subject: user.into(),
        scopes: Scopes::ALL,
        name: None,
        email: None,
        organization: None,
        method: AuthMethod::Jwt,
        acting_user: None,
    }
}

const LESSON: &str = "---\ntitle: Variables in Python\n---\n# Variables in Python\n\nA **variable** is a name bound to a value; an **assignment** binds it. Enough text to make this a real section of the lesson for the tests here.\n\n## Naming rules\n\nNames use `snake_case` and cannot start with a digit. More words here so the section is large enough to stand alone in the chunker, with a few more words for good measure.\n\n## Reassignment\n\nYou can rebind a name to a new value at any time, even of another type; Python is dynamically typed, which this section explains at some length for the chunker.\n";

async fn serve(
    secret: Option<&str>,
    limit: u64,
    with_identity: bool,
) -> (String, Arc<TestSource>, Arc<Limit>) {
    let src = TestSource::with_text(LESSON);
    let lessons = Arc::new(LessonService::new(src.clone(), CacheConfig::memory()));
    let limiter = Arc::new(Limit {
        limit,
        used: AtomicU64::new(0),
        keys: Default::default(),
    });
    let mut app = lesson_routes(lessons, limiter.clone(), secret.map(str::to_string));
    if with_identity {
        app = app.layer(Extension(identity("alice")));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), src, limiter)
}

fn http() -> reqwest::Client {
    study::llm::ensure_crypto_provider();
    reqwest::Client::new()
}

#[test]
fn suggestions_come_from_the_lesson() {
    let l = Lesson::parse("01/02-vars", LESSON);
    let teach = suggestions_for(Some(&l), Mode::Teach);
    assert_eq!(teach.len(), 3);
    assert_eq!(teach[0], "Teach me \"Variables in Python\" step by step");
    assert_eq!(teach[1], "What is variable, and why does it matter?");
    assert_eq!(teach[2], "Quiz me on \"Reassignment\"");
    let ask = suggestions_for(Some(&l), Mode::Ask);
    assert_eq!(
        ask,
        [
            "Summarize \"Variables in Python\" in three points",
            "What does variable mean?",
            "Give me an example of \"Naming rules\"",
        ]
    );
    // Deterministic.
    assert_eq!(suggestions_for(Some(&l), Mode::Ask), ask);
    // No lesson: generic ones.
    assert_eq!(suggestions_for(None, Mode::Ask).len(), 3);
    // A lesson with nothing to draw from is padded with generic suggestions.
    let bare = Lesson::parse("x/y", "Just text.");
    let s = suggestions_for(Some(&bare), Mode::Teach);
    assert_eq!(s.len(), 3);
    assert_eq!(s[1], "What topics are covered here?");
}

#[tokio::test]
async fn suggestions_endpoint() {
    let (base, src, limiter) = serve(None, 3, true).await;
    let c = http();
    let r = c
        .get(format!(
            "{base}/chatkit/suggestions?mode=ask&lesson_path=01-Python/02-vars"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ratelimit-limit"], "3");
    assert_eq!(r.headers()["x-ratelimit-remaining"], "2");
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["suggestions"][0],
        "Summarize \"Variables in Python\" in three points"
    );
    assert_eq!(v["suggestions"].as_array().unwrap().len(), 3);
    assert_eq!(limiter.keys.lock().unwrap()[0], "study:suggestions:alice");

    // No lesson path: generic teach suggestions.
    let v: Value = c
        .get(format!("{base}/chatkit/suggestions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["suggestions"][0], "What topics are covered here?");

    // Bad mode → 400 (not counted); traversal → 400 and the source is never asked.
    let r = c
        .get(format!("{base}/chatkit/suggestions?mode=shout"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .get(format!(
            "{base}/chatkit/suggestions?lesson_path=..%2F..%2Fetc%2Fpasswd"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "INVALID_PATH");
    assert_eq!(src.fetches.load(Ordering::SeqCst), 1);

    // Rate limited: the 4th counted request is refused with 429 and Retry-After.
    let r = c
        .get(format!("{base}/chatkit/suggestions?mode=teach"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "30");

    // Without an identity (no auth middleware ran) → 401.
    let (base, _, _) = serve(None, 3, false).await;
    let r = c
        .get(format!("{base}/chatkit/suggestions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn invalidate_cache_endpoint() {
    let (base, src, _) = serve(Some("s3cret"), 100, true).await;
    let c = http();
    let url = format!("{base}/admin/invalidate-cache");
    let get = |p: &'static str| {
        let c = c.clone();
        let base = base.clone();
        async move {
            let r = c
                .get(format!("{base}/chatkit/suggestions?lesson_path={p}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    get("a/one").await;
    get("a/two").await;
    assert_eq!(src.fetches.load(Ordering::SeqCst), 2);

    // Missing or wrong secret → 401, nothing invalidated.
    let r = c.post(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(&url)
        .header("X-Admin-Secret", "s3cret!")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "UNAUTHORIZED");

    // Selected paths.
    let r = c
        .post(&url)
        .header("X-Admin-Secret", "s3cret")
        .json(&json!(["a/one"]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v,
        json!({"status": "ok", "invalidated_count": 1, "paths": ["a/one"]})
    );
    get("a/one").await;
    get("a/two").await;
    assert_eq!(src.fetches.load(Ordering::SeqCst), 3);

    // Malformed bodies → 400.
    for body in ["{\"a\":1}", "[1,2]", "not json"] {
        let r = c
            .post(&url)
            .header("X-Admin-Secret", "s3cret")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
    }

    // No body: everything.
    let r = c
        .post(&url)
        .header("X-Admin-Secret", "s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["scope"], "all");
    assert_eq!(v["invalidated_count"], 2);
    get("a/one").await;
    get("a/two").await;
    assert_eq!(src.fetches.load(Ordering::SeqCst), 5);

    // No secret configured → the endpoint is disabled.
    let (base, _, _) = serve(None, 100, true).await;
    let r = c
        .post(format!("{base}/admin/invalidate-cache"))
        .header("X-Admin-Secret", "")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
