//! HTTP hardening of the served binary: CORS allow-list (never `*`), request body limits, and the
//! `Host` check on `/mcp` (DNS rebinding).

use serde_json::json;

use crate::support::{Server, ServerOpts, TempData, client};

#[tokio::test]
async fn cors_body_limits_and_host_check() {
    let tmp = TempData::new();
    let opts = ServerOpts::dev()
        .env(
            "ALLOWED_ORIGINS",
            "https://book.example, https://admin.example",
        )
        .env("PANAVERSITY_MAX_BODY_BYTES", "4096")
        .env("STUDY_MAX_BODY_BYTES", "2048")
        .env("PANAVERSITY_NO_SAMPLE", "true");
    let server = Server::start(&tmp.data(), opts).await;
    let http = client();
    let base = &server.base;

    // CORS: an allowed origin is echoed exactly; another gets no allow header; never `*`.
    for path in ["/mcp", "/chatkit"] {
        let r = http
            .request(reqwest::Method::OPTIONS, format!("{base}{path}"))
            .header("origin", "https://book.example")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,authorization",
            )
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        assert_eq!(
            r.headers()["access-control-allow-origin"],
            "https://book.example",
            "{path}"
        );
        let r = http
            .request(reqwest::Method::OPTIONS, format!("{base}{path}"))
            .header("origin", "https://evil.example")
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
        assert!(
            r.headers().get("access-control-allow-origin").is_none(),
            "{path}: {:?}",
            r.headers()
        );
    }
    let r = http
        .get(format!("{base}/health"))
        .header("origin", "https://admin.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://admin.example"
    );

    // Body limits: /mcp beyond PANAVERSITY_MAX_BODY_BYTES, /chatkit beyond STUDY_MAX_BODY_BYTES.
    let big = "x".repeat(8 * 1024);
    let r = http
        .post(format!("{base}/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "write_content", "arguments": {"book_id": "big-book",
            "path": "content/01-Part/01-Chapter/01-a.md", "content": big}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = http
        .post(format!("{base}/chatkit"))
        .header("x-user-id", "student-1")
        .json(&json!({"type": "threads.create", "params": {"input": {
            "content": [{"type": "input_text", "text": "x".repeat(3000)}],
            "attachments": [], "inference_options": {}}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // A small request still works.
    let ok = server.mcp(&[]).ok("list_books", json!({})).await;
    assert_eq!(ok["count"], json!(0));

    // DNS rebinding: /mcp refuses a foreign Host header.
    let r = http
        .post(format!("{base}/mcp"))
        .header("host", "evil.example")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    server.stop().await;
}
