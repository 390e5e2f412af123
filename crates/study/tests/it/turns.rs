//! Turns that outlive their request: the reply is stored from its first token and checkpointed
//! while it streams, a client can leave and re-attach (`threads.resume_stream`) without a second
//! tutor call, `threads.stop_stream` stops a turn, and a repeated submission makes one turn.

use std::time::Duration;

use platform::db::TestDb;
use serde_json::{Value, json};
use study::store::Owner;
use study::turns::StreamSettings;

use crate::llm_e2e::validate_with_python;
use crate::support::*;

/// A server whose turns keep running for a minute without a client.
async fn resumable(db: TestDb, dedupe: Duration) -> TestServer {
    let streams = StreamSettings {
        detached_limit: Duration::from_secs(60),
        ..StreamSettings::default()
    };
    TestServer::start_opts(db, 1000, streams, dedupe).await
}

/// An open SSE response read frame by frame.
struct Open {
    resp: reqwest::Response,
    buf: String,
    frames: Vec<String>,
}

impl Open {
    async fn new(srv: &TestServer, req: reqwest::RequestBuilder) -> Open {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let _ = srv;
        Open {
            resp,
            buf: String::new(),
            frames: Vec::new(),
        }
    }

    /// Read until `n` frames arrived (or the end); false at the end.
    async fn read_to(&mut self, n: usize) -> bool {
        while self.frames.len() < n {
            while let Some(end) = self.buf.find("\n\n") {
                let frame = self.buf[..end].to_string();
                self.buf.drain(..end + 2);
                let json = frame.strip_prefix("data: ").expect("data frame");
                self.frames.push(json.to_string());
            }
            if self.frames.len() >= n {
                break;
            }
            match tokio::time::timeout(Duration::from_secs(10), self.resp.chunk())
                .await
                .expect("no frame in 10 s")
                .unwrap()
            {
                Some(c) => self.buf.push_str(std::str::from_utf8(&c).unwrap()),
                None => return false,
            }
        }
        true
    }

    fn events(&self) -> Vec<Value> {
        self.frames
            .iter()
            .map(|f| serde_json::from_str(f).unwrap())
            .collect()
    }

    fn capture(&self, srv: &TestServer) {
        let mut cap = srv.captured.lock().unwrap();
        for f in &self.frames {
            cap.push(Captured {
                kind: "event",
                raw: f.clone(),
            });
        }
    }
}

fn deltas(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["update"]["type"] == "assistant_message.content_part.text_delta")
        .filter_map(|e| e["update"]["delta"].as_str())
        .collect()
}

fn resume_body(thread_id: &str, after: usize) -> Value {
    json!({"type": "threads.resume_stream", "params": {"thread_id": thread_id, "after": after}})
}

/// The stored (raw) text of the thread's assistant reply, if any.
async fn stored_reply(srv: &TestServer, user: &str, tid: &str) -> Option<String> {
    let items = srv
        .store
        .recent_items(&Owner::new(user, None), tid, None, 10)
        .await
        .unwrap();
    items
        .iter()
        .find(|i| matches!(i.body, study::chatkit::ItemBody::AssistantMessage { .. }))
        .and_then(|i| i.message_text())
}

#[tokio::test]
async fn the_reply_is_stored_from_its_first_token_and_checkpointed_while_it_streams() {
    for db in TestDb::all().await {
        let srv = resumable(db, Duration::ZERO).await;
        let ctx = srv.backend;
        let mut open = Open::new(&srv, srv.request("cp", &create_body("#drip", "teach"))).await;
        // thread.created, user item, stream_options, item.added, part.added, first delta.
        assert!(open.read_to(6).await);
        let events = open.events();
        assert_eq!(
            event_type(&events[5]),
            "thread.item.updated:assistant_message.content_part.text_delta",
            "{ctx}"
        );
        let tid = events[0]["thread"]["id"].as_str().unwrap().to_string();
        // The item was written before it was announced.
        let first = stored_reply(&srv, "cp", &tid)
            .await
            .expect("stored at once");
        assert_eq!(first, "w0 ", "{ctx}");

        // Whatever the client has seen is stored within the checkpoint interval (250 ms; the
        // check allows slack for a loaded machine).
        for _ in 0..2 {
            assert!(open.read_to(open.frames.len() + 4).await);
            let seen = deltas(&open.events());
            tokio::time::sleep(Duration::from_millis(500)).await;
            let stored = stored_reply(&srv, "cp", &tid).await.unwrap();
            assert!(
                stored.starts_with(&seen) && drip_text().starts_with(&stored),
                "{ctx}: stored {stored:?} does not cover seen {seen:?}"
            );
            let owner = Owner::new("cp", None);
            if stored != drip_text() {
                assert_eq!(srv.store.streaming_count(&owner, &tid).await.unwrap(), 1);
            }
        }
        assert!(open.read_to(usize::MAX).await.eq(&false));
        assert_eq!(deltas(&open.events()), drip_text(), "{ctx}");
        let owner = Owner::new("cp", None);
        assert_eq!(stored_reply(&srv, "cp", &tid).await.unwrap(), drip_text());
        assert_eq!(srv.store.streaming_count(&owner, &tid).await.unwrap(), 0);
        open.capture(&srv);
        validate_with_python(&srv.captured.lock().unwrap());
    }
}

#[tokio::test]
async fn a_client_that_leaves_reattaches_and_gets_the_rest_without_a_second_call() {
    for db in TestDb::all().await {
        let srv = resumable(db, Duration::ZERO).await;
        let ctx = srv.backend;
        let mut first = Open::new(&srv, srv.request("ra", &create_body("#drip", "teach"))).await;
        assert!(first.read_to(8).await);
        let tid = first.events()[0]["thread"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let seen = first.frames.len();
        first.capture(&srv);
        let first_frames = first.frames.clone();
        drop(first); // the page is closed mid-answer

        // The turn keeps going without a client.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rest = srv.stream("ra", resume_body(&tid, seen)).await;
        assert_eq!(rest.status, 200, "{ctx} {}", rest.text);
        assert!(rest.headers.get("x-study-turn-id").is_some());
        let mut all: Vec<Value> = first_frames
            .iter()
            .map(|f| serde_json::from_str(f).unwrap())
            .collect();
        all.extend(rest.events.iter().cloned());
        assert_eq!(
            deltas(&all),
            drip_text(),
            "{ctx}: nothing lost, nothing twice"
        );
        let done = all
            .iter()
            .rev()
            .find(|e| e["type"] == "thread.item.done")
            .unwrap();
        assert_eq!(done["item"]["content"][0]["text"], drip_text().as_str());
        assert_eq!(
            srv.tutor.inputs.lock().unwrap().len(),
            1,
            "{ctx}: re-attaching never asks the tutor again"
        );

        // A just-finished turn can be re-attached from the start: the same frames.
        let again = srv.stream("ra", resume_body(&tid, 0)).await;
        assert_eq!(again.events, all, "{ctx}");

        // Only the owner can re-attach; a thread without a kept turn says so.
        let other = srv.stream("intruder", resume_body(&tid, 0)).await;
        assert_eq!(other.status, 404, "{ctx}");
        let (status, _, body) = srv
            .call(
                "ra",
                json!({"type":"threads.stop_stream","params":{"thread_id": tid}}),
            )
            .await;
        assert_eq!((status, body), (200, json!({"stopped": false})));
        validate_with_python(&srv.captured.lock().unwrap());
    }
}

#[tokio::test]
async fn stop_stream_stops_the_turn_and_keeps_the_partial_reply() {
    let srv = resumable(TestDb::sqlite(), Duration::ZERO).await;
    let mut open = Open::new(&srv, srv.request("st", &create_body("#slow", "teach"))).await;
    assert!(open.read_to(8).await);
    let tid = open.events()[0]["thread"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _, body) = srv
        .call(
            "st",
            json!({"type":"threads.stop_stream","params":{"thread_id": tid}}),
        )
        .await;
    assert_eq!((status, body), (200, json!({"stopped": true})));
    assert!(!open.read_to(usize::MAX).await, "the stream ends");
    let events = open.events();
    let done = events.last().unwrap();
    assert_eq!(done["type"], "thread.item.done", "{events:?}");
    let text = done["item"]["content"][0]["text"].as_str().unwrap();
    assert_eq!(text, deltas(&events));
    assert_eq!(stored_reply(&srv, "st", &tid).await.as_deref(), Some(text));
    eventually(5, || async {
        srv.tutor
            .slow_dropped
            .load(std::sync::atomic::Ordering::SeqCst)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_repeated_submission_makes_one_turn() {
    for db in TestDb::all().await {
        let srv = resumable(db, Duration::from_secs(10)).await;
        let ctx = srv.backend;
        let calls = || srv.tutor.inputs.lock().unwrap().len();

        // The same Idempotency-Key: the second request gets the first one's stream.
        let keyed = || {
            srv.request("dup", &create_body("What is a loop?", "teach"))
                .header("idempotency-key", "create-1")
        };
        let a = srv.stream_with(keyed()).await;
        let b = srv.stream_with(keyed()).await;
        assert_eq!(a.events, b.events, "{ctx}");
        assert_eq!(calls(), 1, "{ctx}");
        let tid = a.events[0]["thread"]["id"].as_str().unwrap().to_string();

        // Racing copies of one keyed request: one turn.
        let racing = || {
            srv.request("dup", &add_body(&tid, "Tell me more"))
                .header("idempotency-key", "add-7")
        };
        let (x, y) = tokio::join!(srv.stream_with(racing()), srv.stream_with(racing()));
        assert_eq!((x.status, y.status), (200, 200));
        assert_eq!(calls(), 2, "{ctx}: racing copies make one turn");
        assert_eq!(deltas(&x.events), deltas(&y.events));

        // Without a key: the same text again within the window is the same turn.
        srv.stream("dup", add_body(&tid, "And then?")).await;
        let again = srv.stream("dup", add_body(&tid, "And then?")).await;
        assert_eq!(calls(), 3, "{ctx}");
        assert_eq!(deltas(&again.events), default_text());
        let items = srv.items("dup", &tid).await;
        assert_eq!(items.len(), 6, "{ctx}: three turns of two items: {items:?}");

        // A repeat after a failed turn is a new attempt.
        srv.stream("dup", add_body(&tid, "#fail now")).await;
        srv.stream("dup", add_body(&tid, "#fail now")).await;
        assert_eq!(calls(), 5, "{ctx}");

        let (_, _, list) = srv
            .call("dup", json!({"type":"threads.list","params":{"limit": 10}}))
            .await;
        assert_eq!(list["data"].as_array().unwrap().len(), 1, "{ctx}");
        validate_with_python(&srv.captured.lock().unwrap());
    }
}

#[tokio::test]
async fn a_client_reattaches_through_another_replica_via_redis_and_stops_there() {
    let Some(url) = platform::db::test_redis_url() else {
        eprintln!("REDIS_URL not set: skipping");
        return;
    };
    for db in TestDb::all().await {
        let prefix = format!("test:turns:{}:", uuid::Uuid::new_v4().simple());
        let bus = std::sync::Arc::new(
            study::turns::RedisBus::connect(&url, &prefix, Duration::from_secs(60))
                .await
                .unwrap(),
        );
        let streams = StreamSettings {
            detached_limit: Duration::from_secs(60),
            ..StreamSettings::default()
        };
        let a = resumable(db, Duration::ZERO).await;
        let a = a.replica(streams, bus.clone()).await; // replica A (mirrors to Redis)
        let b = a.replica(streams, bus.clone()).await; // replica B, same database
        let ctx = a.backend;

        let mut first = Open::new(&a, a.request("rx", &create_body("#drip", "teach"))).await;
        assert!(first.read_to(8).await);
        let tid = first.events()[0]["thread"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let seen = first.frames.len();
        let mut all = first.events();
        first.capture(&b);
        drop(first);

        let rest = b.stream("rx", resume_body(&tid, seen)).await;
        assert_eq!(rest.status, 200, "{ctx} {}", rest.text);
        all.extend(rest.events.iter().cloned());
        assert_eq!(
            deltas(&all),
            drip_text(),
            "{ctx}: the rest through replica B"
        );
        assert_eq!(all.last().unwrap()["type"], "thread.updated", "{ctx}");
        assert_eq!(a.tutor.inputs.lock().unwrap().len(), 1);
        assert_eq!(
            b.tutor.inputs.lock().unwrap().len(),
            0,
            "{ctx}: no second call"
        );
        assert!(b.turns.is_empty(), "B ran no turn");
        let other = b.stream("intruder", resume_body(&tid, 0)).await;
        assert_eq!(other.status, 404);

        // A stop sent to B stops the turn running on A.
        let tid2 = {
            let mut s = Open::new(&a, a.request("rx", &create_body("#slow", "teach"))).await;
            assert!(s.read_to(8).await);
            let tid2 = s.events()[0]["thread"]["id"].as_str().unwrap().to_string();
            let (status, _, body) = b
                .call(
                    "rx",
                    json!({"type":"threads.stop_stream","params":{"thread_id": tid2}}),
                )
                .await;
            assert_eq!((status, body), (200, json!({"stopped": true})));
            assert!(!s.read_to(usize::MAX).await, "{ctx}: the stream on A ends");
            assert_eq!(s.events().last().unwrap()["type"], "thread.item.done");
            tid2
        };
        let reply = stored_reply(&b, "rx", &tid2).await.unwrap();
        assert!(reply.starts_with("tick0 "), "{ctx}: {reply}");
        validate_with_python(&b.captured.lock().unwrap());
    }
}
