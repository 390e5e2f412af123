//! `panaversity fs stdio`: MCP over the process's stdin/stdout, as Claude Code runs it. stdout
//! must carry only JSON-RPC messages; logs belong on stderr.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::support::{BOOK, LESSON, TempData, cli_ok, command, sample_bytes};

#[tokio::test]
async fn stdio_session_over_the_real_process() {
    let tmp = TempData::new();
    let data = tmp.data();
    let mut child = command(tmp.dir.path())
        .arg("--data-dir")
        .arg(&data)
        .args(["fs", "stdio"])
        .env("PANAVERSITY_STDIO_AGENT_ID", "stdio-e2e")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fs stdio");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = child.stderr.take().unwrap();
    let stderr_task = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    let mut seen: Vec<String> = Vec::new();

    // Every stdout line must be a JSON-RPC 2.0 message; return the response with `id`.
    let mut rpc = async |msg: Value, id: Option<i64>| -> Option<Value> {
        stdin
            .write_all(format!("{msg}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
        let id = id?;
        loop {
            let line = tokio::time::timeout(Duration::from_secs(60), stdout.next_line())
                .await
                .expect("stdio answer in time")
                .expect("read stdout")
                .expect("stdout closed early");
            seen.push(line.clone());
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line:?}"));
            assert_eq!(v["jsonrpc"], json!("2.0"), "not JSON-RPC: {line}");
            if v["id"] == json!(id) {
                return Some(v);
            }
        }
    };

    let init = rpc(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "e2e", "version": "0"}}}),
        Some(1),
    )
    .await
    .unwrap();
    assert!(init["result"]["serverInfo"]["name"].is_string(), "{init}");
    assert!(
        init["result"]["capabilities"]["tools"].is_object(),
        "{init}"
    );
    rpc(
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        None,
    )
    .await;

    let list = rpc(
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}),
        Some(2),
    )
    .await
    .unwrap();
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names.len(), 19, "{names:?}");
    assert!(
        names.contains(&"read_content") && names.contains(&"write_content"),
        "{names:?}"
    );

    // The sample book was loaded on first start; a lesson reads back byte-exact.
    let r = rpc(
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
            "name": "read_content", "arguments": {"book_id": BOOK, "path": LESSON}}}),
        Some(3),
    )
    .await
    .unwrap();
    assert_eq!(r["result"]["isError"], json!(false), "{r}");
    let expected = String::from_utf8(sample_bytes(LESSON)).unwrap();
    assert_eq!(r["result"]["structuredContent"]["content"], json!(expected));
    let hash = r["result"]["structuredContent"]["file_hash_sha256"]
        .as_str()
        .unwrap()
        .to_string();

    // Update it with the hash protocol (wrapped arguments, as the predecessor's clients send).
    let w = rpc(
        json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {
            "name": "write_content", "arguments": {"params": {
                "book_id": BOOK, "path": LESSON, "content": "# Rewritten over stdio\n",
                "expected_hash": hash}}}}),
        Some(4),
    )
    .await
    .unwrap();
    assert_eq!(w["result"]["isError"], json!(false), "{w}");
    assert_eq!(w["result"]["structuredContent"]["mode"], json!("updated"));
    // Without the hash: HASH_REQUIRED.
    let e = rpc(
        json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {
            "name": "write_content", "arguments": {
                "book_id": BOOK, "path": LESSON, "content": "again\n"}}}),
        Some(5),
    )
    .await
    .unwrap();
    assert_eq!(e["result"]["isError"], json!(true), "{e}");
    assert!(
        e["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("HASH_REQUIRED"),
        "{e}"
    );
    let r = rpc(
        json!({"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": {
            "name": "read_content", "arguments": {"book_id": BOOK, "path": LESSON}}}),
        Some(6),
    )
    .await
    .unwrap();
    assert_eq!(
        r["result"]["structuredContent"]["content"],
        json!("# Rewritten over stdio\n")
    );

    // Closing stdin ends the session cleanly.
    drop(stdin);
    let mut rest = Vec::new();
    while let Ok(Some(line)) = stdout.next_line().await {
        rest.push(line);
    }
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("fs stdio exits after stdin closes")
        .unwrap();
    let logs = stderr_task.await.unwrap();
    assert!(status.success(), "exit {status}; stderr:\n{logs}");
    assert!(
        rest.is_empty(),
        "non-JSON-RPC output on stdout after the session: {rest:?}"
    );
    assert!(seen.len() >= 6, "{seen:?}");
    // The logs went to stderr.
    assert!(logs.contains("loaded the sample book"), "stderr:\n{logs}");

    // The write is audited under the stdio agent id.
    let q = cli_ok(
        &data,
        &[],
        &["fs", "audit", "query", "--agent-id", "stdio-e2e", "--json"],
    )
    .await;
    let rows = q.json()["rows"].as_array().unwrap().clone();
    // Newest first: the refused write (HASH_REQUIRED), then the update.
    assert_eq!(rows.len(), 2, "{}", q.stdout);
    assert!(rows.iter().all(|r| r["path"] == json!(LESSON)));
    assert!(
        rows.iter()
            .all(|r| r["operation"] == json!("write_content"))
    );
    assert_eq!(rows[0]["status"], json!("error"), "{}", q.stdout);
    assert_eq!(rows[1]["status"], json!("success"), "{}", q.stdout);
    assert_eq!(rows[1]["prev_hash"], json!(hash), "{}", q.stdout);
}
