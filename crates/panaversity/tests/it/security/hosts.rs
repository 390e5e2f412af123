//! Finding 8: in dev mode (identity from headers) the Host allow-list (DNS-rebinding protection)
//! covered `/mcp` only; the archive route, `/chatkit`, `/chatkit/suggestions` and `/metrics`
//! answered any Host. Now every route checks it: 403 `FORBIDDEN_HOST`.

use serde_json::Value;

use crate::support::{BOOK, Server, ServerOpts, TempData, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_checks_the_host_on_every_route() {
    let tmp = TempData::new();
    let server = Server::start(&tmp.data(), ServerOpts::dev()).await;
    let http = client();
    let base = &server.base;
    let routes: Vec<(reqwest::Method, String)> = vec![
        (
            reqwest::Method::GET,
            format!("/books/{BOOK}/archive?scope=content"),
        ),
        (
            reqwest::Method::GET,
            format!("/books/{BOOK}/archive?scope=content&user_id=victim"),
        ),
        (reqwest::Method::POST, "/chatkit".into()),
        (
            reqwest::Method::GET,
            "/chatkit/suggestions?mode=teach".into(),
        ),
        (reqwest::Method::GET, "/metrics".into()),
        (reqwest::Method::GET, "/health/ready".into()),
        (reqwest::Method::POST, "/mcp".into()),
    ];
    for (method, path) in &routes {
        let r = http
            .request(method.clone(), format!("{base}{path}"))
            .header("host", "rebind.attacker.example")
            .header("x-user-id", "victim")
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{method} {path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "FORBIDDEN_HOST", "{method} {path}: {v}");
    }
    // The allowed names (any port) still work.
    for host in ["127.0.0.1", "localhost:8000", "[::1]:9"] {
        let r = http
            .get(format!("{base}/metrics"))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{host}");
    }
    let r = http
        .get(format!("{base}/books/{BOOK}/archive?scope=content"))
        .header("x-user-id", "victim")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.stop().await;
}
