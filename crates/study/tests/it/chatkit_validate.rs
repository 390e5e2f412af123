//! Every response body and event we send validates against the real `openai-chatkit` types
//! (crates/study/tests/chatkit_validate.py, run with `$CHATKIT_PYTHON`, default `python3`).

use std::io::Write;
use std::process::Command;

use platform::db::TestDb;
use serde_json::json;
use study::chatkit::Timestamp;
use study::chatkit::types::{ItemBody, ThreadItem, ToolCallStatus};
use study::store::Owner;

use crate::support::*;

fn required() -> bool {
    std::env::var("REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

#[tokio::test]
async fn chatkit_python_types_accept_everything_we_send() {
    let python = std::env::var("CHATKIT_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import chatkit.types"])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        let msg = format!(
            "{python} cannot import openai-chatkit (install crates/study/tests/requirements.txt and set CHATKIT_PYTHON)"
        );
        if required() {
            panic!("{msg}");
        }
        eprintln!("SKIPPED chatkit validation: {msg}");
        return;
    }

    let srv = TestServer::start(TestDb::sqlite()).await;
    let req = srv.request_q(
        "val",
        &create_body("\u{200B}", "teach"),
        "lesson_path=01-intro/01-welcome",
    );
    let first = srv.stream_with(req).await;
    let tid = first.events[0]["thread"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    srv.stream("val", add_body(&tid, "and #notice")).await;
    srv.stream("val", add_body(&tid, "then #fail")).await;
    let owner = Owner::new("val", None);
    srv.store
        .add_item(
            &owner,
            &ThreadItem {
                id: "tc_1".into(),
                thread_id: tid.clone(),
                created_at: Timestamp::now(),
                body: ItemBody::ClientToolCall {
                    status: ToolCallStatus::Pending,
                    call_id: "call_1".into(),
                    name: "get_selection".into(),
                    arguments: Default::default(),
                    output: None,
                },
            },
        )
        .await
        .unwrap();
    srv.stream(
        "val",
        json!({"type":"threads.add_client_tool_output","params":{"thread_id":tid,"result":"ok"}}),
    )
    .await;
    srv.store
        .add_item(
            &owner,
            &ThreadItem {
                id: "msg_si".into(),
                thread_id: tid.clone(),
                created_at: Timestamp::now(),
                body: ItemBody::StructuredInput {
                    status: "pending".into(),
                    inputs: vec![
                        json!({"id":"q1","question":"Pick","type":"multiple_choice","options":[{"value":"A"}],"multiple":false}),
                        json!({"id":"q2","question":"Why?","type":"freeform"}),
                    ],
                },
            },
        )
        .await
        .unwrap();
    srv.stream(
        "val",
        json!({"type":"threads.add_structured_input","params":{"thread_id":tid,"item_id":"msg_si","input":{"status":"answered","answers":{"q1":{"values":["A"]}}}}}),
    )
    .await;
    srv.stream(
        "val",
        json!({"type":"threads.custom_action","params":{"thread_id":tid,"action":{"type":"x"}}}),
    )
    .await;
    let user_item = first.events[1]["item"]["id"].as_str().unwrap().to_string();
    srv.stream(
        "val",
        json!({"type":"threads.retry_after_item","params":{"thread_id":tid,"item_id":user_item}}),
    )
    .await;
    srv.stream("val", add_body(&tid, "second")).await;
    srv.create_thread("val", "another thread").await;
    srv.call(
        "val",
        json!({"type":"threads.get_by_id","params":{"thread_id":tid}}),
    )
    .await;
    srv.call("val", json!({"type":"threads.list","params":{"limit":1}}))
        .await;
    srv.call("val", json!({"type":"threads.list","params":{}}))
        .await;
    srv.call(
        "val",
        json!({"type":"items.list","params":{"thread_id":tid,"limit":2,"order":"asc"}}),
    )
    .await;
    srv.call(
        "val",
        json!({"type":"items.list","params":{"thread_id":tid}}),
    )
    .await;
    srv.call(
        "val",
        json!({"type":"threads.update","params":{"thread_id":tid,"title":"Renamed"}}),
    )
    .await;
    srv.call("val", json!({"type":"items.feedback","params":{"thread_id":tid,"item_ids":[user_item],"kind":"positive"}}))
        .await;
    srv.call(
        "val",
        json!({"type":"threads.delete","params":{"thread_id":tid}}),
    )
    .await;

    let captured = srv.captured.lock().unwrap().clone();
    let kinds: std::collections::BTreeSet<&str> = captured.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["empty", "event", "items_page", "thread", "threads_page"]
    );
    let event_types: std::collections::BTreeSet<String> = captured
        .iter()
        .filter(|c| c.kind == "event")
        .map(|c| event_type(&serde_json::from_str(&c.raw).unwrap()))
        .collect();
    for t in [
        "thread.created",
        "thread.updated",
        "thread.item.added",
        "thread.item.done",
        "thread.item.replaced",
        "thread.item.updated:assistant_message.content_part.text_delta",
        "stream_options",
        "progress_update",
        "notice",
        "error",
    ] {
        assert!(event_types.contains(t), "scenario did not produce {t}");
    }

    let mut file = tempfile::NamedTempFile::new().unwrap();
    for c in &captured {
        writeln!(file, "{}", json!({"kind": c.kind, "raw": c.raw})).unwrap();
    }
    file.flush().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/chatkit_validate.py");
    let out = Command::new(&python)
        .arg(script)
        .arg(file.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "chatkit validation failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(&format!("validated {} documents", captured.len())),
        "{stdout}"
    );
}
