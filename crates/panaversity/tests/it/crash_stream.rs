//! Crash-safe streaming: `kill -9` of the server while a ChatKit reply streams from a slow
//! OpenAI-compatible model. After a restart on the same database (SQLite file and PostgreSQL) the
//! thread holds the user message and a non-empty prefix of the reply, at least what the client
//! had seen 700 ms (a checkpoint interval plus slack) before the kill, shown as interrupted; the next turn works and
//! the model sees the partial reply in its history.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use axum::routing::post;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::support::{LESSON_DOC, Server, ServerOpts, TempData, backends, client, spawn_router};

const WORDS: usize = 40;
const DELAY: Duration = Duration::from_millis(100);

fn word(i: usize) -> String {
    format!("word{i} ")
}

pub(crate) fn full_reply() -> String {
    (0..WORDS).map(word).collect()
}

/// A model streaming `word0 word1 …` one chunk every 100 ms; records every request body.
pub(crate) async fn start_llm(requests: Arc<Mutex<Vec<Value>>>) -> String {
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move |body: axum::Json<Value>| {
            let requests = requests.clone();
            async move {
                let streamed = body["stream"] == json!(true);
                requests.lock().unwrap().push(body.0);
                if !streamed {
                    let v = json!({"id": "c", "object": "chat.completion", "created": 0,
                        "model": "fake", "choices": [{"index": 0, "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "A title"}}]});
                    return Response::builder()
                        .header("content-type", "application/json")
                        .body(Body::from(v.to_string()))
                        .unwrap();
                }
                let chunks = futures::stream::iter(0..=WORDS).then(|i| async move {
                    tokio::time::sleep(DELAY).await;
                    let data = if i < WORDS {
                        json!({"id": "c1", "object": "chat.completion.chunk", "created": 0,
                               "model": "fake", "choices": [{"index": 0,
                               "delta": {"content": word(i)}, "finish_reason": null}]})
                        .to_string()
                    } else {
                        "[DONE]".to_string()
                    };
                    Ok::<_, Infallible>(Bytes::from(format!("data: {data}\n\n")))
                });
                Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(Body::from_stream(chunks))
                    .unwrap()
            }
        }),
    );
    let addr = spawn_router(app).await;
    format!("http://{addr}/v1")
}

pub(crate) fn deltas(text: &str) -> String {
    crate::support::sse_events(text)
        .iter()
        .filter(|e| e["update"]["type"] == "assistant_message.content_part.text_delta")
        .filter_map(|e| e["update"]["delta"].as_str().map(str::to_string))
        .collect()
}

async fn items(base: &str, thread_id: &str) -> Vec<Value> {
    let v: Value = client()
        .post(format!("{base}/chatkit"))
        .header("x-user-id", "crash-student")
        .json(&json!({"type": "items.list", "params": {"thread_id": thread_id, "order": "asc"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .clone()
}

#[tokio::test]
async fn kill_9_mid_stream_keeps_the_partial_reply_and_the_next_turn_works() {
    for (label, db_url, _guard) in backends().await {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let llm = start_llm(requests.clone()).await;
        let tmp = TempData::new();
        let mut opts = ServerOpts::dev()
            .env("OPENAI_BASE_URL", &llm)
            .env("OPENAI_API_KEY", "sk-test-not-real")
            .env("STUDY_STREAM_LEASE_SECS", "1");
        if let Some(url) = &db_url {
            opts = opts.env("DATABASE_URL", url);
        }
        let server = Server::start(&tmp.data(), opts.clone()).await;
        let resp = client()
            .post(format!("{}/chatkit?lesson_path={LESSON_DOC}", server.base))
            .header("x-user-id", "crash-student")
            .json(&crate::support::threads_create(
                "Explain programs slowly",
                "ask",
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{label}");
        let mut stream = resp.bytes_stream();
        let mut text = String::new();
        while deltas(&text).len() < word(0).len() * 6 {
            let chunk = tokio::time::timeout(Duration::from_secs(30), stream.next())
                .await
                .expect("tokens in time")
                .expect("stream ended early")
                .unwrap();
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        let seen = deltas(&text);
        let thread_id = crate::support::sse_events(&text)[0]["thread"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        // One checkpoint interval (250 ms) and slack for a loaded machine, then a real SIGKILL
        // (the reply has ~3 s to go, so only checkpoints can have saved what was seen).
        tokio::time::sleep(Duration::from_millis(700)).await;
        let mut server = server;
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(server.pid(), libc::SIGKILL) }, 0);
        let status = server.wait(Duration::from_secs(10)).await;
        assert!(!status.success(), "{label}: killed");
        drop(stream);

        let server = Server::start(&tmp.data(), opts).await;
        // After the stream lease (1 s) the reply is shown as interrupted.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let stored = items(&server.base, &thread_id).await;
        assert_eq!(stored.len(), 2, "{label}: {stored:?}");
        assert_eq!(stored[0]["type"], "user_message");
        assert_eq!(stored[1]["type"], "assistant_message");
        let shown = stored[1]["content"][0]["text"]
            .as_str()
            .unwrap()
            .to_string();
        let note = study::store::INCOMPLETE_NOTE;
        let prefix = shown
            .strip_suffix(note)
            .unwrap_or_else(|| panic!("{label}: not marked interrupted: {shown:?}"));
        assert!(
            prefix.starts_with(&seen) && full_reply().starts_with(prefix),
            "{label}: stored {prefix:?} must cover what the client saw {seen:?}"
        );
        assert!(
            prefix.len() < full_reply().len(),
            "{label}: killed mid-stream"
        );

        // The next turn works and the model sees the partial reply.
        let before = requests.lock().unwrap().len();
        let next = client()
            .post(format!("{}/chatkit", server.base))
            .header("x-user-id", "crash-student")
            .json(&json!({"type": "threads.add_user_message", "params": {
                "thread_id": thread_id, "input": {
                "content": [{"type": "input_text", "text": "Please go on"}],
                "attachments": [], "inference_options": {"model": "ask"}}}}))
            .send()
            .await
            .unwrap();
        assert_eq!(next.status(), 200);
        let next = next.text().await.unwrap();
        assert_eq!(deltas(&next), full_reply(), "{label}: {next}");
        let sent = requests.lock().unwrap()[before..]
            .iter()
            .find(|b| b["stream"] == json!(true))
            .expect("a streamed call")
            .to_string();
        assert!(
            sent.contains(prefix.trim_end()),
            "{label}: history has the partial reply"
        );
        let stored = items(&server.base, &thread_id).await;
        assert_eq!(stored.len(), 4, "{label}");
        assert_eq!(stored[3]["content"][0]["text"], full_reply().as_str());
        server.stop().await;
    }
}

#[tokio::test]
async fn sigterm_lets_a_turn_whose_client_left_finish_and_store_its_reply() {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let llm = start_llm(requests.clone()).await;
    let tmp = TempData::new();
    let opts = ServerOpts::dev()
        .env("OPENAI_BASE_URL", &llm)
        .env("OPENAI_API_KEY", "sk-test-not-real");
    let mut server = Server::start(&tmp.data(), opts.clone()).await;
    let resp = client()
        .post(format!("{}/chatkit", server.base))
        .header("x-user-id", "crash-student")
        .json(&crate::support::threads_create("Explain programs", "ask"))
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    let mut text = String::new();
    while deltas(&text).is_empty() {
        let chunk = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("tokens in time")
            .expect("stream ended early")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let thread_id = crate::support::sse_events(&text)[0]["thread"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    drop(stream); // the student closed the page
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.sigterm();
    let status = server.wait(Duration::from_secs(40)).await;
    assert!(status.success(), "exit {status}:\n{}", server.log());
    assert!(
        server.log().contains("waiting for running tutor turns"),
        "{}",
        server.log()
    );
    let server = Server::start(&tmp.data(), opts).await;
    let stored = items(&server.base, &thread_id).await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(
        stored[1]["content"][0]["text"],
        full_reply().as_str(),
        "the whole reply, not marked interrupted"
    );
    server.stop().await;
}
