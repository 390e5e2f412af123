//! Graceful shutdown: SIGTERM while a ChatKit answer is still streaming from a slow
//! OpenAI-compatible model; the server finishes the stream (every token reaches the client, the
//! message is stored) and exits 0.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::support::{LESSON_DOC, Server, ServerOpts, TempData, client, spawn_router, sse_events};

/// What the fake model says, one SSE chunk per word.
const WORDS: &[&str] = &[
    "A ",
    "program ",
    "is ",
    "a ",
    "list ",
    "of ",
    "precise ",
    "instructions.",
];
const DELAY: Duration = Duration::from_millis(400);

/// `POST /v1/chat/completions`: streams WORDS slowly as Chat Completions chunks.
async fn start_slow_llm(calls: Arc<AtomicUsize>) -> String {
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move |body: axum::Json<Value>| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                assert_eq!(body["stream"], json!(true));
                crate::support::streamed_slowly(WORDS, DELAY)
            }
        }),
    );
    let addr = spawn_router(app).await;
    format!("http://{addr}/v1")
}

#[tokio::test]
async fn sigterm_lets_an_open_stream_finish_then_exits_0() {
    let calls = Arc::new(AtomicUsize::new(0));
    let llm = start_slow_llm(calls.clone()).await;
    let tmp = TempData::new();
    let opts = ServerOpts::dev()
        .env("OPENAI_BASE_URL", &llm)
        .env("OPENAI_API_KEY", "sk-test-not-real");
    let mut server = Server::start(&tmp.data(), opts).await;
    let base = server.base.clone();

    let resp = client()
        .post(format!("{base}/chatkit?lesson_path={LESSON_DOC}"))
        .header("x-user-id", "student-9")
        .json(&crate::support::threads_create(
            "What is a program, in one sentence?",
            "ask",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut text = String::new();
    // Read until the first words arrived, then ask the server to stop.
    while !text.contains("program ") {
        let chunk = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("first tokens in time")
            .expect("stream ended before the first tokens")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    server.sigterm();
    // The rest still arrives.
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("stream continues after SIGTERM")
    {
        text.push_str(&String::from_utf8_lossy(&chunk.expect("stream not cut")));
    }
    let events = sse_events(&text);
    let done = events
        .iter()
        .rev()
        .find(|e| e["type"] == "thread.item.done" && e["item"]["type"] == "assistant_message")
        .unwrap_or_else(|| panic!("no finished assistant message:\n{text}"));
    assert_eq!(
        done["item"]["content"][0]["text"],
        json!(WORDS.concat()),
        "{text}"
    );
    assert!(
        !events.iter().any(|e| e["type"] == "error"),
        "no error event:\n{text}"
    );
    let status = server.wait(Duration::from_secs(30)).await;
    assert!(status.success(), "exit {status}:\n{}", server.log());
    assert!(
        server.log().contains("SIGTERM received"),
        "{}",
        server.log()
    );
    assert!(calls.load(Ordering::SeqCst) >= 1);

    // The finished answer was stored: a new server on the same data dir returns it.
    let server = Server::start(&tmp.data(), ServerOpts::dev()).await;
    let thread_id = events[0]["thread"]["id"].as_str().unwrap().to_string();
    let items: Value = client()
        .post(format!("{}/chatkit", server.base))
        .header("x-user-id", "student-9")
        .json(&json!({"type": "items.list", "params": {"thread_id": thread_id, "order": "asc"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let assistant = items["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{items}"))
        .iter()
        .find(|i| i["type"] == "assistant_message")
        .unwrap_or_else(|| panic!("no stored assistant message: {items}"))
        .clone();
    assert_eq!(assistant["content"][0]["text"], json!(WORDS.concat()));
    server.stop().await;
}
