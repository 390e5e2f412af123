//! End to end: `/chatkit` (protocol layer + store) driving the real `StudyTutor` over the fake
//! LLM. No byte of any response may contain an answer key.

use std::sync::Arc;

use axum::Extension;
use platform::db::TestDb;
use platform::identity::{AuthMethod, Identity, Scopes};
use serde_json::{Value, json};
use study::lessons::{CacheConfig, LessonService, LocalDocsSource};
use study::server::{StudyState, chatkit_router};
use study::store::ThreadStore;
use study::turn::Tutor;
use study::tutor::StudyTutor;
use study::tutor::prompts::{ASKER, TEACHER};

use crate::fake_llm::Step;
use crate::support::{CountingLimiter, add_body, create_body, parse_sse};
use crate::tutor_teach::{KEY1, KEY2, env, push_check, push_teach, push_verdict};

struct Server {
    url: String,
    http: reqwest::Client,
    _db: TestDb,
}

async fn start(db: TestDb, tutor: Arc<dyn Tutor>) -> Server {
    platform::install_crypto_provider();
    let store = ThreadStore::new(db.connect().await);
    store.migrate_up().await.unwrap();
    let app = chatkit_router(StudyState::new(
        store,
        tutor,
        Arc::new(CountingLimiter::new(1000)),
        64 * 1024,
    ))
    .layer(Extension(Identity {
        subject: "student-1".into(),
        scopes: Scopes::ALL,
        name: Some("Ada".into()),
        email: None,
        organization: None,
        method: AuthMethod::Jwt,
        acting_user: None,
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server {
        url: format!("http://{addr}/chatkit"),
        http: reqwest::Client::new(),
        _db: db,
    }
}

impl Server {
    /// POST a ChatKit request for the test lesson; returns (status, raw body).
    async fn post(&self, body: &Value) -> (u16, String) {
        self.post_q(body, "lesson_path=01-Rust/02-ownership&user_name=Ada")
            .await
    }

    /// POST a ChatKit request with this (encoded) query string.
    async fn post_q(&self, body: &Value, query: &str) -> (u16, String) {
        let r = self
            .http
            .post(format!("{}?{query}", self.url))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    }
}

fn assistant_text(raw: &str) -> String {
    let mut text = String::new();
    for f in parse_sse(raw) {
        let e: Value = serde_json::from_str(&f).unwrap();
        if e["type"] == "thread.item.done" && e["item"]["type"] == "assistant_message" {
            text = e["item"]["content"][0]["text"]
                .as_str()
                .unwrap_or("")
                .to_string();
        }
    }
    text
}

fn assert_clean(raw: &str, keys: &[&str]) {
    let lower = raw.to_lowercase();
    for k in keys {
        assert!(
            !lower.contains(&k.to_lowercase()),
            "answer key {k:?} appears in a response: {raw}"
        );
    }
}

#[tokio::test]
async fn chatkit_teach_session_never_leaks_the_key() {
    for db in TestDb::all().await {
        platform::install_crypto_provider();
        let e = env(3).await;
        let llm = e.llm.clone();
        let srv = start(db, Arc::new(e.tutor.clone())).await;

        // Open the panel: the zero-width trigger starts teaching.
        push_check(&llm, "Who owns a value?", KEY1);
        push_teach(&llm, &["Hi Ada! ", "Owners first. "]);
        let (status, raw) = srv.post(&create_body("\u{200B}", "teach")).await;
        assert_eq!(status, 200, "{raw}");
        assert_clean(&raw, &[KEY1]);
        let first: Value = serde_json::from_str(&parse_sse(&raw)[0]).unwrap();
        let thread_id = first["thread"]["id"].as_str().unwrap().to_string();
        let text = assistant_text(&raw);
        assert!(text.starts_with("Hi Ada! Owners first. "), "{text}");
        assert!(text.ends_with("**Check your understanding:** Who owns a value?"));
        assert!(
            raw.contains("📚 Ownership in Rust"),
            "title set from the lesson"
        );

        // A wrong answer: the judge and the streamed model both echo the key.
        push_verdict(&llm, "incorrect", &format!("It is: {KEY1}"));
        push_teach(&llm, &["Not yet. ", KEY1, " Think again."]);
        let (status, raw) = srv.post(&add_body(&thread_id, "many owners")).await;
        assert_eq!(status, 200, "{raw}");
        assert_clean(&raw, &[KEY1]);
        assert!(assistant_text(&raw).contains("**Try again:** Who owns a value?"));

        // The right answer advances to section 2, with a new key.
        push_verdict(&llm, "correct", "");
        push_check(&llm, "What does borrowing give you?", KEY2);
        push_teach(&llm, &["Correct! ", "Borrowing now."]);
        let (status, raw) = srv.post(&add_body(&thread_id, "exactly one")).await;
        assert_eq!(status, 200, "{raw}");
        assert_clean(&raw, &[KEY1, KEY2]);
        assert!(assistant_text(&raw).ends_with("What does borrowing give you?"));

        // Retrying that turn (ChatKit "retry") re-judges the same answer against the same
        // question: still section 2, never section 3.
        let (_, raw_items) = srv
            .post(&json!({"type":"items.list","params":{"thread_id":thread_id,"limit":100,"order":"asc"}}))
            .await;
        let items: Value = serde_json::from_str(&raw_items).unwrap();
        let answer_item = items["data"]
            .as_array()
            .unwrap()
            .iter()
            .rfind(|i| i["type"] == "user_message" && i["content"][0]["text"] == "exactly one")
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        push_verdict(&llm, "correct", "");
        push_check(&llm, "What does borrowing give you?", KEY2);
        push_teach(&llm, &["Correct! ", "Borrowing now."]);
        let n = llm.request_count();
        let (status, raw) = srv
            .post(&json!({"type":"threads.retry_after_item","params":{"thread_id":thread_id,"item_id":answer_item}}))
            .await;
        assert_eq!(status, 200, "{raw}");
        assert_clean(&raw, &[KEY1, KEY2]);
        let judge = llm.requests()[n..]
            .iter()
            .find(|r| {
                r["messages"][0]["content"]
                    .as_str()
                    .unwrap()
                    .starts_with("ROLE: answer judge.")
            })
            .cloned()
            .unwrap();
        assert!(
            judge["messages"][0]["content"]
                .as_str()
                .unwrap()
                .contains("Who owns a value?")
        );

        // Resuming the thread continues at section 2 (state persisted by the protocol layer).
        push_teach(&llm, &["Welcome back."]);
        let n = llm.request_count();
        let (status, raw) = srv.post(&add_body(&thread_id, "Teach me")).await;
        assert_eq!(status, 200, "{raw}");
        assert_clean(&raw, &[KEY1, KEY2]);
        let resumed = &llm.requests()[n];
        let sys = resumed["messages"][0]["content"].as_str().unwrap();
        assert!(sys.starts_with(TEACHER));
        assert!(sys.contains("Section 2 of 3"), "{sys}");
        // The model saw the earlier conversation.
        let all = crate::fake_llm::all_message_text(resumed);
        assert!(all.contains("exactly one"));
        assert!(all.contains("Borrowing now."));

        // Nothing the client can read back contains a key either.
        for body in [
            json!({"type":"items.list","params":{"thread_id":thread_id,"limit":100,"order":"asc"}}),
            json!({"type":"threads.get_by_id","params":{"thread_id":thread_id}}),
            json!({"type":"threads.list","params":{"limit":10,"order":"desc"}}),
        ] {
            let (status, raw) = srv.post(&body).await;
            assert_eq!(status, 200, "{raw}");
            assert_clean(&raw, &[KEY1, KEY2]);
        }
    }
}

#[tokio::test]
async fn chatkit_ask_mode_uses_the_selected_text() {
    let db = TestDb::sqlite();
    let e = env(3).await;
    e.llm.push_when(
        |b: &Value| {
            b["messages"][0]["content"]
                .as_str()
                .is_some_and(|s| s.starts_with(ASKER))
        },
        Step::reply(&["A **String** ", "owns its heap buffer. "]),
    );
    let srv = start(db, Arc::new(e.tutor.clone())).await;
    let (status, raw) = srv
        .post_q(
            &create_body("What does this line do?", "ask"),
            "lesson_path=01-Rust/02-ownership&selected_text=let%20s%20%3D%20String%3A%3Anew()%3B",
        )
        .await;
    assert_eq!(status, 200, "{raw}");
    assert_eq!(assistant_text(&raw), "A **String** owns its heap buffer. ");
    let req = &e.llm.requests()[0];
    assert_eq!(req["model"], "ask-model");
    let sys = req["messages"][0]["content"].as_str().unwrap();
    assert!(sys.contains("let s = String::new();"), "{sys}");
    assert!(sys.contains("Ownership in Rust"));
}

#[tokio::test]
async fn chatkit_without_llm_says_so() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("l.md"), "# L\n\ntext").unwrap();
    let lessons = Arc::new(LessonService::new(
        Arc::new(LocalDocsSource::new(dir.path()).unwrap()),
        CacheConfig::memory(),
    ));
    let srv = start(db, Arc::new(StudyTutor::new(lessons, None))).await;
    let (status, raw) = srv
        .post_q(&create_body("\u{200B}", "teach"), "lesson_path=l")
        .await;
    assert_eq!(status, 200, "{raw}");
    assert!(raw.contains("No LLM provider is configured"), "{raw}");
    assert!(assistant_text(&raw).contains("no language model is configured"));
}
