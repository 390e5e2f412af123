//! With both services in one process and no STUDY_LESSON_SOURCE, the tutor reads lessons from
//! this server's own book store: an agent's overlay edit for a student (MCP `write_content` with
//! `user_id`) is the lesson that student is taught, another student still gets the base, and
//! the lesson may be named in the MCP form (`content/….md`) or the Docusaurus form.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::post;
use serde_json::{Value, json};

use crate::support::{
    BOOK, LESSON, LESSON_DOC, Server, ServerOpts, TempData, client, spawn_router,
};

/// A model answering "ok" (one SSE chunk) and recording every request body.
async fn start_llm(requests: Arc<Mutex<Vec<Value>>>) -> String {
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move |body: axum::Json<Value>| {
            let requests = requests.clone();
            async move {
                requests.lock().unwrap().push(body.0);
                crate::support::streamed_ok()
            }
        }),
    );
    format!("http://{}/v1", spawn_router(app).await)
}

async fn ask(base: &str, user: &str, lesson: &str) -> String {
    let r = client()
        .post(format!("{base}/chatkit?lesson_path={lesson}"))
        .header("x-user-id", user)
        .json(&crate::support::threads_create(
            "Summarise this lesson",
            "ask",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

#[tokio::test]
async fn the_tutor_teaches_the_students_overlay_from_the_servers_own_book_store() {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let llm = start_llm(requests.clone()).await;
    let tmp = TempData::new();
    let opts = ServerOpts::dev()
        .env("OPENAI_BASE_URL", &llm)
        .env("OPENAI_API_KEY", "sk-test-not-real");
    let server = Server::start(&tmp.data(), opts).await;
    assert!(
        server.log().contains("source=Pfs"),
        "default source: {}",
        server.log()
    );

    // An agent personalises the lesson for student-ov (an overlay), in the MCP path form.
    let mcp = server.mcp(&[("x-agent-id", "tutor-source-agent")]);
    let marker = "OVERLAY-MARKER-7f3a";
    mcp.ok(
        "write_content",
        json!({"book_id": BOOK, "path": LESSON, "user_id": "student-ov",
               "content": format!("# Instructions\n\nA personal version: {marker}.\n")}),
    )
    .await;

    let last_prompt = || {
        let r = requests.lock().unwrap();
        r.iter()
            .rev()
            .find(|b| b["stream"] == json!(true))
            .map(|b| b["messages"].to_string())
            .unwrap_or_default()
    };
    ask(&server.base, "student-ov", LESSON).await;
    assert!(
        last_prompt().contains(marker),
        "overlay taught (MCP path form)"
    );
    ask(&server.base, "student-ov", LESSON_DOC).await;
    assert!(
        last_prompt().contains(marker),
        "overlay taught (docs path form)"
    );
    ask(&server.base, "student-base", LESSON_DOC).await;
    let base_prompt = last_prompt();
    assert!(
        !base_prompt.contains(marker),
        "another student gets the base"
    );
    assert!(base_prompt.contains("instruction"), "{base_prompt}");
    server.stop().await;
}
