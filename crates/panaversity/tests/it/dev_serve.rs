//! `panaversity serve --dev` with the embedded defaults: the sample book, MCP, health, metrics,
//! request ids, ChatKit without an LLM, suggestions, restart without reseeding, and the dev-mode
//! bind guard.

use serde_json::{Value, json};

use crate::support::{
    BOOK, LESSON, LESSON_DOC, Server, ServerOpts, TempData, cli, client, sample_bytes, sse_events,
};

/// Audit rows written by the sample seeding (agent `panaversity-sample-seed`), via the tool.
async fn seed_rows(mcp: &crate::support::Mcp) -> usize {
    let page = mcp
        .ok(
            "query_audit_log",
            json!({"agent_id": "panaversity-sample-seed", "limit": 500}),
        )
        .await;
    audit_rows(&page).len()
}

/// The rows of a query_audit_log result (whatever the list is called).
pub fn audit_rows(page: &Value) -> Vec<Value> {
    ["rows", "entries", "items"]
        .iter()
        .find_map(|k| page.get(*k).and_then(Value::as_array).cloned())
        .unwrap_or_else(|| panic!("no rows in {page}"))
}

#[tokio::test]
async fn dev_server_end_to_end_and_restart_keeps_state() {
    let tmp = TempData::new();
    let data = tmp.data();
    let server = Server::start(&data, ServerOpts::dev()).await;
    assert!(
        server.log().contains("loaded the sample book"),
        "{}",
        server.log()
    );
    let http = client();
    let base = server.base.clone();

    // Liveness and readiness.
    let r = http.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "ok", "{v}");
    let r = http
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "ok", "{v}");
    let names: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(
        names.contains(&"database") && names.contains(&"storage"),
        "{v}"
    );

    // Request ids: a sane client id is echoed, otherwise one is generated.
    let r = http
        .get(format!("{base}/health"))
        .header("x-request-id", "e2e-req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "e2e-req-42");
    let r = http.get(format!("{base}/health")).send().await.unwrap();
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(!generated.is_empty());
    let r = http
        .get(format!("{base}/health"))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    assert_ne!(r.headers()["x-request-id"], "bad id with spaces");

    // MCP: the sample book is there and a lesson reads back byte-exact.
    let mcp = server.mcp(&[("x-agent-id", "e2e-dev-agent")]);
    let tools = mcp.tool_names().await;
    for t in [
        "read_content",
        "write_content",
        "list_books",
        "query_audit_log",
    ] {
        assert!(tools.iter().any(|n| n == t), "{t} missing from {tools:?}");
    }
    let books = mcp.ok("list_books", json!({})).await;
    let ids: Vec<&str> = books["books"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["book_id"].as_str())
        .collect();
    assert_eq!(ids, vec![BOOK], "{books}");
    let lesson = mcp
        .ok("read_content", json!({"book_id": BOOK, "path": LESSON}))
        .await;
    let expected = String::from_utf8(sample_bytes(LESSON)).unwrap();
    assert_eq!(lesson["content"], json!(expected));
    assert_eq!(lesson["source"], json!("base"));
    let seeded = seed_rows(&mcp).await;
    assert!(seeded >= 24, "sample seeding wrote {seeded} audit rows");

    // A write in dev mode is audited under the X-Agent-ID.
    let new_path = "content/01-Foundations/01-What-Is-A-Program/04-e2e-dev.md";
    let w = mcp
        .ok(
            "write_content",
            json!({"book_id": BOOK, "path": new_path, "content": "# Dev\n\nwritten by the e2e test\n"}),
        )
        .await;
    assert_eq!(w["mode"], "created", "{w}");
    let page = mcp
        .ok(
            "query_audit_log",
            json!({"book_id": BOOK, "agent_id": "e2e-dev-agent"}),
        )
        .await;
    let rows = audit_rows(&page);
    assert_eq!(rows.len(), 1, "{page}");
    assert_eq!(rows[0]["path"], json!(new_path));
    // Delete a sample lesson: a restart must not bring it back.
    let gone = "content/01-Foundations/01-What-Is-A-Program/02-values-and-names.md";
    let d = mcp
        .ok("delete_content", json!({"book_id": BOOK, "path": gone}))
        .await;
    assert_eq!(d["existed"], json!(true), "{d}");

    // ChatKit: threads.create streams SSE and ends with the assistant message (a notice, no LLM).
    let r = http
        .post(format!("{base}/chatkit?lesson_path={LESSON_DOC}"))
        .header("x-user-id", "student-1")
        .header("content-type", "application/json")
        .json(&crate::support::threads_create("Teach me", "teach"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = r.text().await.unwrap();
    let events = sse_events(&text);
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"thread.created"), "{text}");
    assert!(kinds.contains(&"notice"), "no notice in {kinds:?}");
    let done: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "thread.item.done")
        .collect();
    let last = done.last().expect("an item.done event");
    assert_eq!(last["item"]["type"], "assistant_message", "{text}");
    let answer = last["item"]["content"][0]["text"].as_str().unwrap();
    assert!(
        answer.contains("no language model is configured"),
        "{answer}"
    );
    // Nothing about items after the assistant message is done.
    let last_pos = events
        .iter()
        .rposition(|e| e["type"] == "thread.item.done")
        .unwrap();
    assert!(
        events[last_pos + 1..]
            .iter()
            .all(|e| !e["type"].as_str().unwrap_or("").starts_with("thread.item")),
        "{text}"
    );
    // The thread is stored for this user.
    let thread_id = events[0]["thread"]["id"].as_str().unwrap().to_string();
    let r = http
        .post(format!("{base}/chatkit"))
        .header("x-user-id", "student-1")
        .json(&json!({"type": "threads.get_by_id", "params": {"thread_id": thread_id}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["id"], json!(thread_id), "{t}");

    // Suggestions: three, drawn from the lesson, in both modes.
    for mode in ["teach", "ask"] {
        let r = http
            .get(format!(
                "{base}/chatkit/suggestions?mode={mode}&lesson_path={LESSON_DOC}"
            ))
            .header("x-user-id", "student-1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        let s = v["suggestions"].as_array().unwrap();
        assert_eq!(s.len(), 3, "{v}");
        assert!(
            s.iter().all(|x| x.as_str().is_some_and(|t| !t.is_empty())),
            "{v}"
        );
    }

    // Metrics after those calls.
    let m = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("http_requests_total"), "{m}");
    assert!(
        m.lines()
            .any(|l| l.starts_with("panaversityfs_") && !l.starts_with('#')),
        "{m}"
    );

    // Restart on the same data dir: the sample is not loaded again.
    server.stop().await;
    let server = Server::start(&data, ServerOpts::dev()).await;
    let mcp = server.mcp(&[]);
    assert_eq!(seed_rows(&mcp).await, seeded);
    mcp.err(
        "read_content",
        json!({"book_id": BOOK, "path": gone}),
        "NOT_FOUND",
    )
    .await;
    let again = mcp
        .ok("read_content", json!({"book_id": BOOK, "path": new_path}))
        .await;
    assert_eq!(
        again["content"],
        json!("# Dev\n\nwritten by the e2e test\n")
    );
    assert!(
        !server.log().contains("loaded the sample book"),
        "{}",
        server.log()
    );
    server.stop().await;
}

#[tokio::test]
async fn dev_mode_refuses_a_public_bind_unless_allowed() {
    let tmp = TempData::new();
    let data = tmp.data();
    let out = cli(&data, &[], &["serve", "--dev", "--bind", "0.0.0.0:0"]).await;
    assert_ne!(out.code(), 0, "{out:?}");
    assert!(
        out.stderr.contains("refusing to start in dev mode"),
        "{out:?}"
    );
    // The same through the predecessor's DEV_MODE variable.
    let out = cli(
        &data,
        &[("DEV_MODE", "true")],
        &["serve", "--bind", "0.0.0.0:0"],
    )
    .await;
    assert_ne!(out.code(), 0, "{out:?}");
    assert!(
        out.stderr.contains("PANAVERSITY_ALLOW_DEV_MODE_PUBLIC"),
        "{out:?}"
    );

    // Explicitly allowed: it starts (and is reachable through loopback).
    let opts = ServerOpts {
        serve_args: vec!["--dev".into(), "--bind".into(), "0.0.0.0:0".into()],
        no_bind: true,
        ..Default::default()
    }
    .env("PANAVERSITY_ALLOW_DEV_MODE_PUBLIC", "true")
    .env("PANAVERSITY_NO_SAMPLE", "true");
    let server = Server::start(&data, opts).await;
    let books = server.mcp(&[]).ok("list_books", json!({})).await;
    assert_eq!(books["count"], json!(0), "{books}");
    server.stop().await;
}

#[tokio::test]
async fn only_flag_serves_one_service() {
    let tmp = TempData::new();
    let data = tmp.data();
    let http = client();
    let chatkit = json!({"type": "threads.list", "params": {"limit": 5}});

    let server = Server::start(
        &data,
        ServerOpts {
            serve_args: vec!["--dev".into(), "--only".into(), "fs".into()],
            ..Default::default()
        },
    )
    .await;
    let books = server.mcp(&[]).ok("list_books", json!({})).await;
    assert_eq!(books["count"], json!(1), "{books}");
    let r = http
        .post(format!("{}/chatkit", server.base))
        .header("x-user-id", "student-1")
        .json(&chatkit)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "--only fs has no /chatkit");
    server.stop().await;

    let server = Server::start(
        &data,
        ServerOpts {
            serve_args: vec!["--dev".into(), "--only".into(), "study".into()],
            ..Default::default()
        },
    )
    .await;
    let r = http
        .post(format!("{}/chatkit", server.base))
        .header("x-user-id", "student-1")
        .json(&chatkit)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"], json!([]), "{v}");
    let a = server
        .mcp(&[])
        .raw(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}))
        .await;
    assert_eq!(a.status, 404, "--only study has no /mcp");
    server.stop().await;
}
