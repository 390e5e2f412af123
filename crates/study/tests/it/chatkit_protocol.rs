//! `/chatkit` over real HTTP on SQLite and PostgreSQL: every request type, golden event order,
//! errors before streaming, cancellation, tutor failure, isolation and rate limits.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use study::chatkit::types::{ItemBody, ThreadItem, ToolCallStatus};
use study::chatkit::{Timestamp, UserMessageContent};
use study::store::Owner;

use crate::support::*;

#[tokio::test]
async fn create_stream_matches_the_golden_transcript() {
    for srv in TestServer::all().await {
        let req = srv.request_q(
            "alice",
            &create_body("\u{200B}", "teach"),
            "lesson_path=01-Part%2F02-Chapter%2F03-lesson&user_name=Alice&selected_text=a%20variable&user_id=ignored",
        );
        let s = srv.stream_with(req).await;
        assert_eq!(s.status, 200, "{}: {}", srv.backend, s.text);
        assert_eq!(
            s.headers["content-type"],
            "text/event-stream; charset=utf-8"
        );
        assert_eq!(s.headers["cache-control"], "no-cache");
        assert_eq!(s.headers["x-accel-buffering"], "no");
        assert!(s.headers.contains_key("x-ratelimit-limit"));

        let mut expected = vec![
            json!({"type":"thread.created","thread":{"id":"<id>","created_at":"<ts>","status":{"type":"active"},"metadata":{},"items":{"data":[],"has_more":false}}}),
            json!({"type":"thread.item.done","item":{"id":"<id>","thread_id":"<id>","created_at":"<ts>","type":"user_message","content":[{"type":"input_text","text":"\u{200B}"}],"attachments":[],"inference_options":{"model":"teach"}}}),
            json!({"type":"stream_options","stream_options":{"allow_cancel":true}}),
            json!({"type":"progress_update","icon":"search","text":"Loading lesson..."}),
            json!({"type":"thread.item.added","item":{"id":"<id>","thread_id":"<id>","created_at":"<ts>","type":"assistant_message","content":[]}}),
            json!({"type":"thread.item.updated","item_id":"<id>","update":{"type":"assistant_message.content_part.added","content_index":0,"content":{"annotations":[],"text":"","type":"output_text"}}}),
        ];
        for d in DEFAULT_DELTAS {
            expected.push(json!({"type":"thread.item.updated","item_id":"<id>","update":{"type":"assistant_message.content_part.text_delta","content_index":0,"delta":d}}));
        }
        let full = default_text();
        expected.push(json!({"type":"thread.item.updated","item_id":"<id>","update":{"type":"assistant_message.content_part.done","content_index":0,"content":{"annotations":[],"text":full,"type":"output_text"}}}));
        expected.push(json!({"type":"thread.item.done","item":{"id":"<id>","thread_id":"<id>","created_at":"<ts>","type":"assistant_message","content":[{"annotations":[],"text":full,"type":"output_text"}]}}));
        expected.push(json!({"type":"thread.updated","thread":{"title":"📚 Lesson","id":"<id>","created_at":"<ts>","status":{"type":"active"},"metadata":{},"items":{"data":[],"has_more":false}}}));
        let masked: Vec<Value> = s.events.iter().map(mask).collect();
        assert_eq!(masked, expected, "{}", srv.backend);

        // Ids are consistent across events and carry 128 random bits.
        let thread_id = s.events[0]["thread"]["id"].as_str().unwrap();
        assert!(thread_id.starts_with("thr_") && thread_id.len() == 36);
        let user_id = s.events[1]["item"]["id"].as_str().unwrap();
        assert!(user_id.starts_with("msg_") && user_id.len() == 36);
        let asst = s.events[4]["item"]["id"].as_str().unwrap();
        assert_eq!(s.events[5]["item_id"], asst);
        assert_eq!(s.events[11]["item"]["id"], asst);
        assert_eq!(s.events[12]["thread"]["id"], thread_id);

        // The tutor saw the query parameters, the mode and an empty history.
        let inputs = srv.tutor.inputs.lock().unwrap().clone();
        assert_eq!(inputs.len(), 1);
        let i = &inputs[0];
        assert_eq!(i.thread_id, thread_id);
        assert_eq!(i.user_id, "alice");
        assert_eq!(
            i.lesson_path.as_deref(),
            Some("01-Part/02-Chapter/03-lesson")
        );
        assert_eq!(i.user_name.as_deref(), Some("Alice"));
        assert_eq!(i.selected_text.as_deref(), Some("a variable"));
        assert_eq!(i.mode, study::Mode::Teach);
        assert_eq!(i.user_text, "\u{200B}");
        assert!(i.history.is_empty());
        assert_eq!(i.state, Value::Null);

        // Both messages are durable, in order, with every character.
        let items = srv.items("alice", thread_id).await;
        assert_eq!(items.len(), 2);
        assert_eq!(items[0]["id"], user_id);
        assert_eq!(items[1]["content"][0]["text"], full);
    }
}

#[tokio::test]
async fn add_user_message_passes_history_and_state_and_keeps_the_title() {
    for srv in TestServer::all().await {
        let (thread_id, _) = srv.create_thread("bob", "What is Python?").await;
        let s = srv
            .stream("bob", {
                let mut b = add_body(&thread_id, "and a list?");
                b["params"]["input"]["inference_options"]["model"] = json!("ask");
                b
            })
            .await;
        assert_eq!(s.status, 200, "{}", s.text);
        let types = s.types();
        assert_eq!(types[0], "thread.item.done");
        assert_eq!(types[1], "stream_options");
        assert_eq!(
            types[2], "thread.item.added",
            "no progress without a lesson_path"
        );
        assert_eq!(
            types.last().unwrap(),
            "thread.item.done",
            "no title on turn 2"
        );
        assert_eq!(s.events[0]["item"]["inference_options"]["model"], "ask");

        let inputs = srv.tutor.inputs.lock().unwrap().clone();
        let second = &inputs[1];
        assert_eq!(second.mode, study::Mode::Ask);
        assert_eq!(second.user_text, "and a list?");
        assert_eq!(second.history.len(), 2);
        assert_eq!(second.history[0].role, study::Role::User);
        assert_eq!(second.history[0].text, "What is Python?");
        assert_eq!(second.history[1].role, study::Role::Assistant);
        assert_eq!(second.history[1].text, default_text());
        assert_eq!(second.state, json!({"turn": 1, "prev": null}));

        // Fallback title from the first words, then kept.
        let (_, _, t) = srv
            .call(
                "bob",
                json!({"type":"threads.get_by_id","params":{"thread_id":thread_id}}),
            )
            .await;
        assert_eq!(t["title"], "What is Python?");
        assert_eq!(t["items"]["data"].as_array().unwrap().len(), 4);
        assert_eq!(t["metadata"], json!({}));
        let stored = srv
            .store
            .load_thread(&Owner::new("bob", None), &thread_id)
            .await
            .unwrap();
        assert_eq!(
            stored.tutor_state,
            json!({"turn": 2, "prev": {"turn": 1, "prev": null}})
        );
    }
}

#[tokio::test]
async fn user_title_is_never_overwritten() {
    for srv in TestServer::all().await {
        let owner = Owner::new("carol", None);
        let (thread_id, _) = srv.create_thread("carol", "first words here").await;
        let (st, _, t) = srv
            .call(
                "carol",
                json!({"type":"threads.update","params":{"thread_id":thread_id,"title":"My notes"}}),
            )
            .await;
        assert_eq!(st, 200);
        assert_eq!(t["title"], "My notes");
        assert_eq!(t["items"], json!({"data":[],"has_more":false}));
        // A generated title arriving later does not replace it.
        let after = srv
            .store
            .set_title(&owner, &thread_id, "Generated", false)
            .await
            .unwrap();
        assert_eq!(after.meta.title.as_deref(), Some("My notes"));
        assert!(after.title_set_by_user);
    }
}

#[tokio::test]
async fn list_update_delete_and_feedback() {
    for srv in TestServer::all().await {
        let (empty_status, _, empty) = srv
            .call("dora", json!({"type":"threads.list","params":{}}))
            .await;
        assert_eq!(empty_status, 200);
        assert_eq!(empty, json!({"data":[],"has_more":false}));

        let (t1, _) = srv.create_thread("dora", "one").await;
        let (t2, _) = srv.create_thread("dora", "two").await;
        let (_, _, list) = srv
            .call(
                "dora",
                json!({"type":"threads.list","params":{"limit":null,"order":"desc","after":null}}),
            )
            .await;
        let ids: Vec<&str> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, vec![t2.as_str(), t1.as_str()]);
        assert_eq!(
            list["data"][0]["items"],
            json!({"data":[],"has_more":false})
        );
        assert_eq!(list["has_more"], false);
        assert!(list.get("after").is_none());

        let items = srv.items("dora", &t1).await;
        let asst = items[1]["id"].as_str().unwrap().to_string();
        let (st, _, fb) = srv
            .call(
                "dora",
                json!({"type":"items.feedback","params":{"thread_id":t1,"item_ids":[asst],"kind":"negative"}}),
            )
            .await;
        assert_eq!((st, fb), (200, json!({})));
        let stored = srv
            .store
            .feedback(&Owner::new("dora", None), &asst)
            .await
            .unwrap();
        assert_eq!(stored.as_deref(), Some("negative"));
        let (st, _, err) = srv
            .call(
                "dora",
                json!({"type":"items.feedback","params":{"thread_id":t1,"item_ids":["msg_nope"],"kind":"positive"}}),
            )
            .await;
        assert_eq!(st, 404, "{err}");

        let (st, _, del) = srv
            .call(
                "dora",
                json!({"type":"threads.delete","params":{"thread_id":t1}}),
            )
            .await;
        assert_eq!((st, del), (200, json!({})));
        let (st, _, _) = srv
            .call(
                "dora",
                json!({"type":"threads.get_by_id","params":{"thread_id":t1}}),
            )
            .await;
        assert_eq!(st, 404);
        let (st, _, _) = srv
            .call(
                "dora",
                json!({"type":"threads.delete","params":{"thread_id":t1}}),
            )
            .await;
        assert_eq!(st, 404);
        let (_, _, list) = srv
            .call("dora", json!({"type":"threads.list","params":{}}))
            .await;
        assert_eq!(list["data"].as_array().unwrap().len(), 1);
    }
}

async fn page_ids(
    srv: &TestServer,
    user: &str,
    params: Value,
    kind: &str,
) -> (Vec<String>, bool, Option<String>) {
    let (st, _, page) = srv.call(user, json!({"type":kind,"params":params})).await;
    assert_eq!(st, 200, "{page}");
    let ids = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    let after = page.get("after").map(|a| a.as_str().unwrap().to_string());
    assert_eq!(
        after.is_some(),
        page["has_more"] == true,
        "after iff has_more: {page}"
    );
    (ids, page["has_more"] == true, after)
}

#[tokio::test]
async fn pagination_edges_for_threads_and_items() {
    for srv in TestServer::all().await {
        let mut threads = Vec::new();
        for i in 0..5 {
            threads.push(srv.create_thread("erin", &format!("t{i}")).await.0);
        }
        let p = |limit: i64, order: &str, after: Option<&str>| json!({"limit":limit,"order":order,"after":after});
        // Pages of 2 ascending: 2 + 2 + 1.
        let (a, more, after) = page_ids(&srv, "erin", p(2, "asc", None), "threads.list").await;
        assert_eq!((a.as_slice(), more), (&threads[0..2], true));
        let (b, more, after) =
            page_ids(&srv, "erin", p(2, "asc", after.as_deref()), "threads.list").await;
        assert_eq!((b.as_slice(), more), (&threads[2..4], true));
        let (c, more, after) =
            page_ids(&srv, "erin", p(2, "asc", after.as_deref()), "threads.list").await;
        assert_eq!((c.as_slice(), more, after), (&threads[4..5], false, None));
        // Exact boundary: a limit equal to the count has no more.
        let (all, more, _) = page_ids(&srv, "erin", p(5, "asc", None), "threads.list").await;
        assert_eq!((all.as_slice(), more), (&threads[..], false));
        let (four, more, after) = page_ids(&srv, "erin", p(4, "asc", None), "threads.list").await;
        assert_eq!((four.as_slice(), more), (&threads[0..4], true));
        let (last, more, _) =
            page_ids(&srv, "erin", p(4, "asc", after.as_deref()), "threads.list").await;
        assert_eq!((last.as_slice(), more), (&threads[4..5], false));
        // After the last element: empty.
        let (none, more, _) =
            page_ids(&srv, "erin", p(4, "asc", Some(&threads[4])), "threads.list").await;
        assert!(none.is_empty() && !more);
        // Descending.
        let mut rev = threads.clone();
        rev.reverse();
        let (d1, more, after) = page_ids(&srv, "erin", p(3, "desc", None), "threads.list").await;
        assert_eq!((d1.as_slice(), more), (&rev[0..3], true));
        let (d2, more, _) =
            page_ids(&srv, "erin", p(3, "desc", after.as_deref()), "threads.list").await;
        assert_eq!((d2.as_slice(), more), (&rev[3..5], false));
        // Bad limit and unknown cursor.
        let (st, _, e) = srv
            .call("erin", json!({"type":"threads.list","params":{"limit":0}}))
            .await;
        assert_eq!(
            (st, e["error"]["code"].as_str()),
            (400, Some("INVALID_INPUT"))
        );
        let (st, _, _) = srv
            .call(
                "erin",
                json!({"type":"threads.list","params":{"after":"thr_missing"}}),
            )
            .await;
        assert_eq!(st, 404);

        // Items with identical timestamps page by id, without skips or duplicates.
        let owner = Owner::new("erin", None);
        let tid = &threads[0];
        let ts = Timestamp::from_micros(4_000_000_000_000_000);
        let mut same: Vec<String> = (0..7).map(|i| format!("msg_same{i:02}")).collect();
        for id in &same {
            srv.store
                .add_item(
                    &owner,
                    &ThreadItem {
                        id: id.clone(),
                        thread_id: tid.clone(),
                        created_at: ts,
                        body: ItemBody::UserMessage {
                            content: vec![UserMessageContent::InputText { text: id.clone() }],
                            attachments: vec![],
                            quoted_text: None,
                            inference_options: Default::default(),
                        },
                    },
                )
                .await
                .unwrap();
        }
        let existing = srv.items("erin", tid).await;
        let mut expected: Vec<String> = existing[..2]
            .iter()
            .map(|v| v["id"].as_str().unwrap().to_string())
            .collect();
        expected.append(&mut same.clone());
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (ids, more, next) = page_ids(
                &srv,
                "erin",
                json!({"thread_id":tid,"limit":3,"order":"asc","after":after}),
                "items.list",
            )
            .await;
            seen.extend(ids);
            if !more {
                break;
            }
            after = next;
        }
        assert_eq!(seen, expected);
        let mut seen_desc = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (ids, more, next) = page_ids(
                &srv,
                "erin",
                json!({"thread_id":tid,"limit":4,"after":after}),
                "items.list",
            )
            .await;
            seen_desc.extend(ids);
            if !more {
                break;
            }
            after = next;
        }
        same.reverse();
        expected.reverse();
        assert_eq!(seen_desc, expected);
    }
}

#[tokio::test]
async fn retry_after_item_replaces_the_answer() {
    for srv in TestServer::all().await {
        let (tid, first) = srv.create_thread("fay", "first question").await;
        let first_user = first.events[1]["item"]["id"].as_str().unwrap().to_string();
        srv.stream("fay", add_body(&tid, "second question")).await;
        assert_eq!(srv.items("fay", &tid).await.len(), 4);

        let s = srv
            .stream(
                "fay",
                json!({"type":"threads.retry_after_item","params":{"thread_id":tid,"item_id":first_user}}),
            )
            .await;
        assert_eq!(s.status, 200, "{}", s.text);
        let types = s.types();
        assert_eq!(types[0], "stream_options");
        assert_eq!(types.last().unwrap(), "thread.item.done");
        let items = srv.items("fay", &tid).await;
        assert_eq!(items.len(), 2);
        assert_eq!(items[0]["id"], first_user);
        assert_eq!(items[1]["type"], "assistant_message");
        let inputs = srv.tutor.inputs.lock().unwrap().clone();
        assert_eq!(inputs.last().unwrap().user_text, "first question");
        assert!(inputs.last().unwrap().history.is_empty());

        // Retrying on an assistant message is a 400, on a missing item a 404.
        let asst = items[1]["id"].as_str().unwrap();
        let (st, _, _) = srv
            .call("fay", json!({"type":"threads.retry_after_item","params":{"thread_id":tid,"item_id":asst}}))
            .await;
        assert_eq!(st, 400);
        let (st, _, _) = srv
            .call("fay", json!({"type":"threads.retry_after_item","params":{"thread_id":tid,"item_id":"msg_x"}}))
            .await;
        assert_eq!(st, 404);
    }
}

#[tokio::test]
async fn client_disconnect_saves_partial_assistant_text() {
    for srv in TestServer::all().await {
        let resp = srv
            .request("gus", &create_body("teach me #slow", "teach"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.bytes_stream();
        let mut seen = String::new();
        let mut thread_id = None;
        while !seen.contains("tick2 ") {
            let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
                .await
                .expect("no frame")
                .expect("stream ended")
                .unwrap();
            seen.push_str(std::str::from_utf8(&chunk).unwrap());
            if thread_id.is_none()
                && let Some(f) = parse_sse_prefix(&seen).first()
            {
                let v: Value = serde_json::from_str(f).unwrap();
                thread_id = v["thread"]["id"].as_str().map(str::to_string);
            }
        }
        drop(body); // the client goes away mid-stream
        let tid = thread_id.unwrap();

        // The tutor stream is dropped (the LLM call is cancelled) ...
        let dropped = srv.tutor.slow_dropped.clone();
        eventually(10, || {
            let d = dropped.clone();
            async move { d.load(Ordering::SeqCst).then_some(()) }
        })
        .await;
        // ... and the partial answer is saved.
        let items = eventually(10, || async {
            let items = srv.items("gus", &tid).await;
            (items.len() == 2).then_some(items)
        })
        .await;
        let text = items[1]["content"][0]["text"].as_str().unwrap().to_string();
        assert!(text.starts_with("tick0 tick1 tick2 "), "{text}");
        let sent = srv.tutor.slow_sent.load(Ordering::SeqCst);
        assert!(sent < 2000, "the tutor kept running after the disconnect");
        // Every saved tick is whole: the text is a prefix of what the tutor produced.
        let produced: String = (0..sent).map(|i| format!("tick{i} ")).collect();
        assert!(produced.starts_with(&text));
    }
}

fn parse_sse_prefix(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter(|f| !f.is_empty())
        .filter_map(|f| f.strip_prefix("data: ").map(str::to_string))
        .filter(|f| serde_json::from_str::<Value>(f).is_ok())
        .collect()
}

#[tokio::test]
async fn tutor_failure_sends_an_error_event_and_closes() {
    for srv in TestServer::all().await {
        let (tid, s) = srv.create_thread("hal", "please #fail").await;
        let types = s.types();
        assert_eq!(
            types,
            vec![
                "thread.created",
                "thread.item.done",
                "stream_options",
                "thread.item.added",
                "thread.item.updated:assistant_message.content_part.added",
                "thread.item.updated:assistant_message.content_part.text_delta",
                "thread.item.updated:assistant_message.content_part.done",
                "thread.item.done",
                "thread.updated",
                "error",
            ],
            "{}",
            srv.backend
        );
        assert_eq!(
            s.events.last().unwrap(),
            &json!({"type":"error","code":"custom","message":"Tutor exploded","allow_retry":true})
        );
        assert!(!s.text.contains("never sent"));
        let items = srv.items("hal", &tid).await;
        assert_eq!(
            items[1]["content"][0]["text"],
            format!("Partial {}", study::store::INCOMPLETE_NOTE),
            "a failed reply is shown as interrupted"
        );

        // A notice passes through; a silent tutor produces no assistant item.
        let s = srv.stream("hal", add_body(&tid, "#notice")).await;
        assert!(
            s.events.contains(
                &json!({"type":"notice","level":"warning","message":"No LLM configured"})
            )
        );
        let s = srv.stream("hal", add_body(&tid, "#silent")).await;
        assert_eq!(s.types(), vec!["thread.item.done", "stream_options"]);
        // A panicking tutor still ends the stream with a retryable error event.
        let s = srv.stream("hal", add_body(&tid, "#panic")).await;
        assert_eq!(
            s.events.last().unwrap(),
            &json!({"type":"error","code":"stream.error","allow_retry":true})
        );
    }
}

#[tokio::test]
async fn errors_before_streaming() {
    let srv = TestServer::start(platform::db::TestDb::sqlite()).await;
    let raw = |body: &'static str| {
        srv.http
            .post(&srv.url)
            .header("x-user-id", "ivy")
            .body(body)
            .send()
    };
    let r = raw("not json").await.unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "INVALID_INPUT");
    let r = raw(r#"{"type":"threads.fly","params":{}}"#).await.unwrap();
    assert_eq!(r.status(), 400);
    let r = raw(r#"{"type":"threads.create","params":{"input":{"content":[]}}}"#)
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = raw(r#"{"type":"threads.get_by_id"}"#).await.unwrap();
    assert_eq!(r.status(), 400);

    // Unknown thread → 404 JSON, not an empty 200 stream.
    let (st, h, e) = srv.call("ivy", add_body("thr_missing", "hi")).await;
    assert_eq!(st, 404);
    assert!(
        h["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(e["error"]["code"], "NOT_FOUND");

    // Attachments and unsupported request types.
    let mut b = create_body("hi", "teach");
    b["params"]["input"]["attachments"] = json!(["atc_1"]);
    let (st, _, _) = srv.call("ivy", b).await;
    assert_eq!(st, 400);
    for body in [
        json!({"type":"attachments.create","params":{"name":"a.png","size":1,"mime_type":"image/png"}}),
        json!({"type":"attachments.delete","params":{"attachment_id":"atc_1"}}),
        json!({"type":"input.transcribe","params":{"audio_base64":"","mime_type":"audio/webm"}}),
    ] {
        let (st, _, e) = srv.call("ivy", body).await;
        assert_eq!(st, 501);
        assert_eq!(e["error"]["code"], "NOT_SUPPORTED");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not supported")
        );
    }

    // No identity → 401; oversized body → 413.
    let r = srv
        .http
        .post(&srv.url)
        .body(create_body("hi", "teach").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let big = create_body(&"x".repeat(BODY_LIMIT + 1), "teach");
    let (st, _, e) = srv.call("ivy", big).await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (413, Some("PAYLOAD_TOO_LARGE"))
    );
}

#[tokio::test]
async fn custom_action_tool_output_and_structured_input() {
    for srv in TestServer::all().await {
        let owner = Owner::new("jon", None);
        let (tid, _) = srv.create_thread("jon", "hello").await;

        let s = srv
            .stream(
                "jon",
                json!({"type":"threads.custom_action","params":{"thread_id":tid,"item_id":null,"action":{"type":"quiz.answer","payload":{"a":1}}}}),
            )
            .await;
        assert_eq!(s.status, 200);
        assert_eq!(s.types(), vec!["stream_options", "error"]);
        assert_eq!(s.events[1]["code"], "custom");
        assert_eq!(s.events[1]["allow_retry"], false);
        assert!(
            s.events[1]["message"]
                .as_str()
                .unwrap()
                .contains("not supported")
        );

        // No pending client tool call → 400.
        let body = json!({"type":"threads.add_client_tool_output","params":{"thread_id":tid,"result":{"ok":true}}});
        let (st, _, _) = srv.call("jon", body.clone()).await;
        assert_eq!(st, 400);
        let call = ThreadItem {
            id: "tc_pending".into(),
            thread_id: tid.clone(),
            created_at: Timestamp::now(),
            body: ItemBody::ClientToolCall {
                status: ToolCallStatus::Pending,
                call_id: "call_1".into(),
                name: "get_selection".into(),
                arguments: Default::default(),
                output: None,
            },
        };
        srv.store.add_item(&owner, &call).await.unwrap();
        let s = srv.stream("jon", body).await;
        assert_eq!(s.status, 200);
        assert_eq!(s.types(), vec!["stream_options"]);
        let saved = srv
            .store
            .load_item(&owner, &tid, "tc_pending")
            .await
            .unwrap();
        match saved.body {
            ItemBody::ClientToolCall { status, output, .. } => {
                assert_eq!(status, ToolCallStatus::Completed);
                assert_eq!(output, Some(json!({"ok":true})));
            }
            other => panic!("{other:?}"),
        }

        // Structured input.
        let si = ThreadItem {
            id: "msg_structured".into(),
            thread_id: tid.clone(),
            created_at: Timestamp::now(),
            body: ItemBody::StructuredInput {
                status: "pending".into(),
                inputs: vec![
                    json!({"id":"q1","question":"Pick one","type":"multiple_choice","options":[{"value":"A"},{"value":"B"}],"multiple":false}),
                ],
            },
        };
        srv.store.add_item(&owner, &si).await.unwrap();
        let body = json!({"type":"threads.add_structured_input","params":{"thread_id":tid,"item_id":"msg_structured","input":{"status":"answered","answers":{"q1":{"values":["B","A"]}}}}});
        let s = srv.stream("jon", body.clone()).await;
        assert_eq!(s.status, 200, "{}", s.text);
        assert_eq!(s.types(), vec!["stream_options", "thread.item.replaced"]);
        assert_eq!(s.events[1]["item"]["status"], "answered");
        assert_eq!(
            s.events[1]["item"]["inputs"][0]["answer"],
            json!({"values":["B"],"skipped":false})
        );
        let stored = srv
            .store
            .load_item(&owner, &tid, "msg_structured")
            .await
            .unwrap();
        assert!(
            matches!(stored.body, ItemBody::StructuredInput { ref status, .. } if status == "answered")
        );
        // Not pending any more → 400; not a structured input → 400; unknown → 404.
        let (st, _, _) = srv.call("jon", body).await;
        assert_eq!(st, 400);
        let (st, _, _) = srv
            .call("jon", json!({"type":"threads.add_structured_input","params":{"thread_id":tid,"item_id":"tc_pending","input":{}}}))
            .await;
        assert_eq!(st, 400);
        let (st, _, _) = srv
            .call("jon", json!({"type":"threads.add_structured_input","params":{"thread_id":tid,"item_id":"msg_nope","input":{}}}))
            .await;
        assert_eq!(st, 404);
    }
}

/// User B gets 404 for user A's thread on every request type; A's threads never show up in B's
/// list. The same user in another organization is another owner.
#[tokio::test]
async fn cross_user_isolation_on_every_request_type() {
    for srv in TestServer::all().await {
        let (tid, s) = srv.create_thread("alice", "secret").await;
        let user_item = s.events[1]["item"]["id"].as_str().unwrap().to_string();
        let asst = s.events[3]["item"]["id"].as_str().unwrap().to_string();
        let requests = vec![
            add_body(&tid, "let me in"),
            json!({"type":"threads.retry_after_item","params":{"thread_id":tid,"item_id":user_item}}),
            json!({"type":"threads.add_client_tool_output","params":{"thread_id":tid,"result":{}}}),
            json!({"type":"threads.custom_action","params":{"thread_id":tid,"action":{"type":"x"}}}),
            json!({"type":"threads.add_structured_input","params":{"thread_id":tid,"item_id":user_item,"input":{}}}),
            json!({"type":"threads.get_by_id","params":{"thread_id":tid}}),
            json!({"type":"threads.update","params":{"thread_id":tid,"title":"pwned"}}),
            json!({"type":"threads.delete","params":{"thread_id":tid}}),
            json!({"type":"items.list","params":{"thread_id":tid}}),
            json!({"type":"items.feedback","params":{"thread_id":tid,"item_ids":[asst],"kind":"negative"}}),
        ];
        for body in &requests {
            let (st, _, e) = srv.call("mallory", body.clone()).await;
            assert_eq!(st, 404, "{} {body}: {e}", srv.backend);
            assert_eq!(e["error"]["code"], "NOT_FOUND");
            // Same answer as for a thread that does not exist at all.
            let mut missing = body.clone();
            missing["params"]["thread_id"] = json!("thr_00000000000000000000000000000000");
            let (st2, _, e2) = srv.call("mallory", missing).await;
            assert_eq!(st2, 404);
            assert_eq!(e2["error"]["code"], e["error"]["code"]);
        }
        // Another organization of the same user id is another owner.
        let r = srv
            .request(
                "alice",
                &json!({"type":"threads.get_by_id","params":{"thread_id":tid}}),
            )
            .header("x-org-id", "other-org")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);

        srv.create_thread("mallory", "mine").await;
        let (_, _, list) = srv
            .call(
                "mallory",
                json!({"type":"threads.list","params":{"limit":100}}),
            )
            .await;
        let ids: Vec<&str> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 1);
        assert!(!ids.contains(&tid.as_str()));
        // Alice's thread is untouched.
        let items = srv.items("alice", &tid).await;
        assert_eq!(items.len(), 2);
        let (_, _, t) = srv
            .call(
                "alice",
                json!({"type":"threads.get_by_id","params":{"thread_id":tid}}),
            )
            .await;
        assert_eq!(t["title"], "secret");
        assert!(
            srv.store
                .feedback(&Owner::new("alice", None), &asst)
                .await
                .unwrap()
                .is_none()
        );
    }
}

#[tokio::test]
async fn rate_limit_answers_429_with_headers() {
    let srv = TestServer::start_with_limit(platform::db::TestDb::sqlite(), 2).await;
    let (tid, first) = srv.create_thread("kim", "one").await;
    assert_eq!(first.headers["x-ratelimit-limit"], "2");
    assert_eq!(first.headers["x-ratelimit-remaining"], "1");
    assert_eq!(first.headers["x-ratelimit-reset"], "43");
    let second = srv.stream("kim", add_body(&tid, "two")).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.headers["x-ratelimit-remaining"], "0");

    let (st, h, e) = srv.call("kim", add_body(&tid, "three")).await;
    assert_eq!(st, 429);
    assert_eq!(h["retry-after"], "43");
    assert_eq!(h["x-ratelimit-limit"], "2");
    assert_eq!(h["x-ratelimit-remaining"], "0");
    assert_eq!(e["error"]["code"], "RATE_LIMITED");
    assert_eq!(e["error"]["limit"], 2);
    // Nothing was written for the refused message.
    assert_eq!(srv.items("kim", &tid).await.len(), 4);
    // Retry is message-creating too; reads are not limited.
    let (st, _, _) = srv
        .call(
            "kim",
            json!({"type":"threads.retry_after_item","params":{"thread_id":tid,"item_id":"msg_x"}}),
        )
        .await;
    assert_eq!(st, 429);
    let (st, h, _) = srv
        .call("kim", json!({"type":"threads.list","params":{}}))
        .await;
    assert_eq!(st, 200);
    assert!(!h.contains_key("x-ratelimit-limit"));
    // The limit is per user.
    let (_, other) = srv.create_thread("lee", "hi").await;
    assert_eq!(other.status, 200);
    assert_eq!(
        srv.limiter.counts.lock().unwrap().get("study:msg:kim"),
        Some(&4)
    );
}

/// Every write is committed before the event that announces it: reading the stream frame by
/// frame, the store already holds what each `thread.item.done` / `thread.updated` announces.
#[tokio::test]
async fn writes_are_durable_before_their_event() {
    for srv in TestServer::all().await {
        let resp = srv
            .request("nia", &create_body("durable?", "teach"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.bytes_stream();
        let mut buf = String::new();
        let mut checked = Vec::new();
        while let Some(chunk) = body.next().await {
            buf.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
            while let Some(end) = buf.find("\n\n") {
                let frame = buf[..end].strip_prefix("data: ").unwrap().to_string();
                buf.drain(..end + 2);
                let ev: Value = serde_json::from_str(&frame).unwrap();
                let owner = Owner::new("nia", None);
                match ev["type"].as_str().unwrap() {
                    "thread.created" => {
                        let tid = ev["thread"]["id"].as_str().unwrap();
                        assert!(srv.store.load_thread(&owner, tid).await.is_ok());
                        checked.push("thread");
                    }
                    "thread.item.done" => {
                        let item = &ev["item"];
                        let stored = srv
                            .store
                            .load_item(
                                &owner,
                                item["thread_id"].as_str().unwrap(),
                                item["id"].as_str().unwrap(),
                            )
                            .await
                            .expect("announced item is stored");
                        assert_eq!(&serde_json::to_value(&stored).unwrap(), item);
                        checked.push("item");
                    }
                    "thread.updated" => {
                        let tid = ev["thread"]["id"].as_str().unwrap();
                        let t = srv.store.load_thread(&owner, tid).await.unwrap();
                        assert_eq!(t.meta.title.as_deref(), ev["thread"]["title"].as_str());
                        checked.push("title");
                    }
                    _ => {}
                }
            }
        }
        assert_eq!(
            checked,
            ["thread", "item", "item", "title"],
            "{}",
            srv.backend
        );
    }
}
