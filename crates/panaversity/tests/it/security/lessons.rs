//! Finding 7: a lesson path with one 300-character segment (any authenticated caller) turned the
//! public `/health/ready` to `degraded` and printed the server's absolute docs directory. Now
//! lesson paths are validated before any source is asked (400 `INVALID_PATH`), readiness covers
//! only the server's own dependencies, and no response carries a server path.

use serde_json::Value;

use crate::support::{Server, ServerOpts, TempData, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lesson_segments_are_rejected_and_readiness_holds() {
    let tmp = TempData::new();
    let server = Server::start(&tmp.data(), ServerOpts::dev()).await;
    let http = client();
    let data_dir = tmp.data().canonicalize().unwrap();
    let data_dir = data_dir.to_string_lossy().to_string();
    let long = format!("01-Foundations/{}", "x".repeat(300));
    for _ in 0..3 {
        let r = http
            .get(format!(
                "{}/chatkit/suggestions?mode=teach&lesson_path={long}",
                server.base
            ))
            .header("x-user-id", "student-1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let text = r.text().await.unwrap();
        assert!(text.contains("INVALID_PATH"), "{text}");
        assert!(!text.contains(&data_dir), "server path leaked: {text}");
    }
    let r = http
        .get(format!("{}/health/ready", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(!text.contains(&data_dir), "server path leaked: {text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["status"], "ok", "{v}");
    server.stop().await;
}
