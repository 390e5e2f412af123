//! `mcp_router_with_auth` with the platform authenticator: dev mode identities reach the tools
//! and the audit log; in production mode `/mcp` needs credentials while signed archive URLs work
//! without any.

use std::sync::Arc;

use platform::auth::{AuthConfig, Authenticator};
use serde_json::{Value, json};

use crate::support::{BOOK, start_with};

async fn post(base: &str, headers: &[(&str, &str)], body: Value) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json::<Value>().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn dev_mode_identity_is_the_audit_agent() {
    let auth = Arc::new(Authenticator::new(AuthConfig {
        dev_mode: true,
        dev_subject: "dev-agent".into(),
        ..AuthConfig::default()
    }));
    let server = start_with(platform::db::TestDb::sqlite(), Some(auth)).await;
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "write_content",
        "arguments": {"book_id": BOOK, "path": "content/01-Part/01-Chapter/01-a.md", "content": "x\n", "user_id": "u-7"}}});
    let (status, v) = post(
        &server.base,
        &[("x-agent-id", "agent-42"), ("x-user-id", "u-7")],
        call,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"]["isError"], json!(false), "{v}");
    let page = server
        .engine
        .audit()
        .query(&pfs::audit::AuditQuery::default())
        .await
        .unwrap();
    assert_eq!(page.rows[0].agent_id, "agent-42");
    assert_eq!(page.rows[0].user_id, "u-7");
}

#[tokio::test]
async fn production_mode_requires_credentials_but_honours_signed_urls() {
    // No verifier configured: every credential is rejected.
    let auth = Arc::new(Authenticator::new(AuthConfig::default()));
    let server = start_with(platform::db::TestDb::sqlite(), Some(auth)).await;
    let (status, _) = post(
        &server.base,
        &[],
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}),
    )
    .await;
    assert_eq!(status, 401);
    let http = reqwest::Client::new();
    let unsigned = http
        .get(format!(
            "{}/books/{BOOK}/archive?scope=content",
            server.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    assert!(unsigned.headers().contains_key("www-authenticate"));
    let expires = chrono::Utc::now().timestamp() + 60;
    let sig = pfs_mcp::sign::sign(
        &server.state.config.archive_signing_key,
        BOOK,
        "content",
        None,
        expires,
    );
    let signed = http
        .get(format!(
            "{}/books/{BOOK}/archive?scope=content&expires={expires}&sig={sig}",
            server.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 200);
    assert_eq!(signed.headers()["content-type"], "application/zip");
}
