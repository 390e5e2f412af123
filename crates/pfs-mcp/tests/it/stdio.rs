//! The stdio transport, in process: newline-delimited JSON-RPC over a duplex stream.

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::support::{BOOK, identity, start};

#[tokio::test]
async fn stdio_session_runs_tools_as_the_configured_identity() {
    let server = start(platform::db::TestDb::sqlite()).await;
    let (client, srv) = tokio::io::duplex(1 << 20);
    let (srv_read, srv_write) = tokio::io::split(srv);
    let state = server.state.clone();
    let task = tokio::spawn(async move {
        pfs_mcp::serve_io(
            state,
            identity("stdio-agent", "read write"),
            srv_read,
            srv_write,
        )
        .await
    });
    let (client_read, mut client_write) = tokio::io::split(client);
    let mut lines = BufReader::new(client_read).lines();
    let mut send = async |v: Value| {
        client_write
            .write_all(format!("{v}\n").as_bytes())
            .await
            .unwrap();
        client_write.flush().await.unwrap();
    };
    send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "duplex-test", "version": "0"}}}),
    )
    .await;
    let init: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(
        init["result"]["serverInfo"]["name"],
        json!("panaversity_fs"),
        "{init}"
    );
    send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;
    send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "write_content",
        "arguments": {"params": {"book_id": BOOK, "path": "content/01-Part/01-Chapter/01-a.md", "content": "hi\n"}}}}))
    .await;
    let w: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(w["result"]["isError"], json!(false), "{w}");
    assert_eq!(w["result"]["structuredContent"]["mode"], json!("created"));
    send(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "query_audit_log",
        "arguments": {}}}))
    .await;
    let q: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    let body: Value =
        serde_json::from_str(q["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(
        body["error"]["code"],
        json!("FORBIDDEN"),
        "stdio identity has no admin scope"
    );

    // The audit row carries the stdio identity as agent.
    let page = server
        .engine
        .audit()
        .query(&pfs::audit::AuditQuery::default())
        .await
        .unwrap();
    assert_eq!(page.rows[0].agent_id, "stdio-agent");
    drop(client_write);
    drop(lines);
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
    assert!(
        ended.is_ok(),
        "server ends when the client closes the stream"
    );
}
