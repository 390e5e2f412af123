//! Any provider: `panaversity study check-llm` says exactly what is wrong with the configured
//! provider (auth, model not found, unreachable), and a ChatKit turn against a failing provider
//! ends with a readable error that allows a retry only where one can help.

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::support::{Server, ServerOpts, TempData, cli, client, spawn_router, sse_events};

/// A provider: key `sk-bad` → 401; model `missing` → 404 model_not_found; model `busy` → 429;
/// else a one-word answer (JSON or SSE).
async fn start_provider() -> String {
    let app = Router::new().route(
        "/v1/chat/completions",
        post(|headers: HeaderMap, body: axum::Json<Value>| async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let err = |status: StatusCode, msg: &str, code: &str| -> Response {
                (
                    status,
                    axum::Json(json!({"error": {"message": msg, "code": code}})),
                )
                    .into_response()
            };
            if auth == "Bearer sk-bad" {
                return err(
                    StatusCode::UNAUTHORIZED,
                    "Incorrect API key provided",
                    "invalid_api_key",
                );
            }
            match body["model"].as_str().unwrap_or_default() {
                "missing" => {
                    return err(
                        StatusCode::NOT_FOUND,
                        "The model `missing` does not exist",
                        "model_not_found",
                    );
                }
                "busy" => return err(StatusCode::TOO_MANY_REQUESTS, "slow down", "rate_limited"),
                _ => {}
            }
            if body["stream"] == json!(true) {
                let chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 0,
                    "model": "m", "choices": [{"index": 0, "delta": {"content": "ok"},
                    "finish_reason": "stop"}]});
                return (
                    [("content-type", "text/event-stream")],
                    format!("data: {chunk}\n\ndata: [DONE]\n\n"),
                )
                    .into_response();
            }
            axum::Json(
                json!({"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": "ok"}}]}),
            )
            .into_response()
        }),
    );
    format!("http://{}/v1", spawn_router(app).await)
}

#[tokio::test]
async fn check_llm_names_the_problem_and_turns_fail_readably() {
    let url = start_provider().await;
    let tmp = TempData::new();
    let data = tmp.data();
    std::fs::create_dir_all(&data).unwrap();
    let run = |key: &'static str, teach: &'static str, ask: &'static str, base: String| {
        let data = data.clone();
        async move {
            cli(
                &data,
                &[
                    ("OPENAI_BASE_URL", base.as_str()),
                    ("OPENAI_API_KEY", key),
                    ("STUDY_TEACH_MODEL", teach),
                    ("STUDY_ASK_MODEL", ask),
                ],
                &["study", "check-llm"],
            )
            .await
        }
    };

    let ok = run("sk-good", "m1", "m2", url.clone()).await;
    assert_eq!(ok.code(), 0, "{ok:?}");
    assert_eq!(ok.stdout.matches(" ok").count(), 2, "{}", ok.stdout);

    let auth = run("sk-bad", "m1", "m1", url.clone()).await;
    assert_eq!(auth.code(), 1, "{auth:?}");
    assert!(
        auth.stdout.contains("FAIL auth") && auth.stdout.contains("OPENAI_API_KEY"),
        "{}",
        auth.stdout
    );

    let missing = run("sk-good", "m1", "missing", url.clone()).await;
    assert_eq!(missing.code(), 1);
    assert!(
        missing.stdout.contains("FAIL model_not_found"),
        "{}",
        missing.stdout
    );
    assert!(
        missing.stdout.contains("STUDY_ASK_MODEL"),
        "{}",
        missing.stdout
    );

    // A closed port: nothing listens there.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/v1", l.local_addr().unwrap())
    };
    let down = run("sk-good", "m1", "m1", closed).await;
    assert_eq!(down.code(), 1);
    assert!(
        down.stdout.contains("FAIL unreachable") && down.stdout.contains("OPENAI_BASE_URL"),
        "{}",
        down.stdout
    );

    let none = cli(&data, &[], &["study", "check-llm"]).await;
    assert_eq!(none.code(), 2, "{none:?}");
    assert!(none.stdout.contains("OPENAI_API_KEY"));

    // The student's side: readable errors, a retry offered only when it can help.
    for (key, model, code_word, retry, fix) in [
        ("sk-bad", "m1", "credentials", false, "check OPENAI_API_KEY"),
        (
            "sk-good",
            "missing",
            "not available",
            false,
            "STUDY_ASK_MODEL",
        ),
        ("sk-good", "busy", "busy", true, "HTTP 429"),
    ] {
        let tmp = TempData::new();
        let opts = ServerOpts::dev()
            .env("OPENAI_BASE_URL", &url)
            .env("OPENAI_API_KEY", key)
            .env("STUDY_ASK_MODEL", model)
            .env("LLM_MAX_RETRIES", "0");
        let server = Server::start(&tmp.data(), opts).await;
        let text = client()
            .post(format!("{}/chatkit", server.base))
            .header("x-user-id", "student-p")
            .json(&crate::support::threads_create("What is a loop?", "ask"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let events = sse_events(&text);
        let err = events
            .iter()
            .find(|e| e["type"] == "error")
            .unwrap_or_else(|| panic!("{key}/{model}: no error event: {text}"));
        assert_eq!(err["allow_retry"], json!(retry), "{key}/{model}: {err}");
        assert!(
            err["message"].as_str().unwrap().contains(code_word),
            "{key}/{model}: {err}"
        );
        assert!(
            server.log().contains(fix),
            "{key}/{model}: operator log line"
        );
        server.stop().await;
    }
}
