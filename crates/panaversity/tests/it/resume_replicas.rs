//! Resumable streams across server processes: two `panaversity serve` processes on one
//! PostgreSQL database and one Redis (`STUDY_STREAM_BUS=redis`). A client reading a reply from
//! the first closes its connection mid-answer and re-attaches through the second with
//! `threads.resume_stream`; it receives the rest of the same reply, and the fake LLM's request log
//! shows a single streamed call.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;

use crate::crash_stream::{deltas, full_reply, start_llm};
use crate::support::{Server, ServerOpts, TempData, client, sse_events};

#[tokio::test]
async fn a_reply_left_on_one_server_is_finished_through_another() {
    let Some(pg) = platform::db::TestDb::postgres().await else {
        eprintln!("DATABASE_URL not set: skipping (two processes need a shared PostgreSQL)");
        return;
    };
    let Some(redis) = platform::db::test_redis_url() else {
        eprintln!("REDIS_URL not set: skipping");
        return;
    };
    let requests = Arc::new(Mutex::new(Vec::new()));
    let llm = start_llm(requests.clone()).await;
    let opts = ServerOpts::dev()
        .env("OPENAI_BASE_URL", &llm)
        .env("OPENAI_API_KEY", "sk-test-not-real")
        .env("DATABASE_URL", &pg.url)
        .env("REDIS_URL", &redis)
        .env("STUDY_STREAM_BUS", "redis")
        .env("PANAVERSITY_NO_SAMPLE", "true");
    let (ta, tb) = (TempData::new(), TempData::new());
    let a = Server::start(&ta.data(), opts.clone()).await;
    let b = Server::start(&tb.data(), opts).await;

    let resp = client()
        .post(format!("{}/chatkit", a.base))
        .header("x-user-id", "roaming-student")
        .json(&crate::support::threads_create("Explain programs", "ask"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut text = String::new();
    while deltas(&text).len() < 20 {
        let chunk = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("tokens in time")
            .expect("stream ended early")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    // Only whole frames count as received.
    let received = &text[..text.rfind("\n\n").unwrap() + 2];
    let frames = sse_events(received);
    let thread_id = frames[0]["thread"]["id"].as_str().unwrap().to_string();
    drop(stream); // the connection to A is gone

    let rest = client()
        .post(format!("{}/chatkit", b.base))
        .header("x-user-id", "roaming-student")
        .json(&json!({"type": "threads.resume_stream",
                      "params": {"thread_id": thread_id, "after": frames.len()}}))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 200);
    let rest = rest.text().await.unwrap();
    assert_eq!(
        format!("{}{}", deltas(received), deltas(&rest)),
        full_reply(),
        "the same reply, nothing lost or repeated"
    );
    assert!(rest.contains("\"type\":\"thread.item.done\""), "{rest}");
    let streamed = requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r["stream"] == json!(true))
        .count();
    assert_eq!(streamed, 1, "one LLM call for the whole reply");
    a.stop().await;
    b.stop().await;
}
