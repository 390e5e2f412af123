//! The Chat Completions client against the fake LLM server.

use std::time::{Duration, Instant};

use futures::StreamExt;
use study::llm::{ChatMessage, LlmClient, LlmConfig, LlmError, TimeoutKind};

use crate::fake_llm::{self, Step};

fn client(base_url: &str) -> LlmClient {
    LlmClient::new(LlmConfig {
        base_url: base_url.to_string(),
        api_key: Some("sk-test".into()),
        first_token_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        max_retries: 2,
        initial_backoff: Duration::from_millis(20),
        ..LlmConfig::default()
    })
    .unwrap()
}

async fn collect(client: &LlmClient) -> Result<(Vec<String>, Option<LlmError>), LlmError> {
    let mut s = client.stream_chat("m", &[ChatMessage::user("hi")]).await?;
    let mut out = Vec::new();
    while let Some(item) = s.next().await {
        match item {
            Ok(d) => out.push(d),
            Err(e) => return Ok((out, Some(e))),
        }
    }
    Ok((out, None))
}

#[tokio::test]
async fn deltas_are_preserved_byte_for_byte() {
    let deltas = [
        "Hello",
        " world",
        "! ",
        "  ",
        "\n\n",
        "Ünïcødé 🚀",
        " trailing ",
        "\"quoted\" \\ back",
    ];
    let llm = fake_llm::start(vec![Step::reply(&deltas)]).await;
    let c = client(&llm.base_url);
    let (got, err) = collect(&c).await.unwrap();
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, deltas);
    let reqs = llm.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0]["stream"], true);
    assert_eq!(reqs[0]["model"], "m");
    assert_eq!(reqs[0]["messages"][0]["content"], "hi");
    assert_eq!(llm.authorizations()[0].as_deref(), Some("Bearer sk-test"));
}

#[tokio::test]
async fn retries_429_then_succeeds_and_honours_retry_after() {
    let llm = fake_llm::start(vec![Step::too_many(1), Step::reply(&["ok", " then"])]).await;
    let c = client(&llm.base_url);
    let t0 = Instant::now();
    let (got, err) = collect(&c).await.unwrap();
    assert!(err.is_none());
    assert_eq!(got.concat(), "ok then");
    assert_eq!(llm.request_count(), 2);
    // Retry-After: 1 was honoured (the default backoff is 20 ms).
    assert!(
        t0.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn retries_5xx_and_gives_up_after_max_retries() {
    let llm = fake_llm::start(vec![
        Step::status(500),
        Step::status(502),
        Step::status(503),
    ])
    .await;
    let c = client(&llm.base_url);
    let err = match c.stream_chat("m", &[ChatMessage::user("x")]).await {
        Err(e) => e,
        Ok(_) => panic!("expected an error"),
    };
    assert!(
        matches!(err, LlmError::Status { status: 503, .. }),
        "{err:?}"
    );
    assert_eq!(llm.request_count(), 3);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let llm = fake_llm::start(vec![Step::status(400), Step::reply(&["never"])]).await;
    let c = client(&llm.base_url);
    let err = c.stream_chat("m", &[]).await.err().unwrap();
    assert!(matches!(err, LlmError::Status { status: 400, .. }));
    assert_eq!(llm.request_count(), 1);
}

#[tokio::test]
async fn failure_before_first_token_is_retried_but_not_after() {
    // Disconnect before any token: retried.
    let llm = fake_llm::start(vec![
        Step::DisconnectMidStream { deltas: vec![] },
        Step::reply(&["fine"]),
    ])
    .await;
    let c = client(&llm.base_url);
    let (got, err) = collect(&c).await.unwrap();
    assert!(err.is_none());
    assert_eq!(got.concat(), "fine");
    assert_eq!(llm.request_count(), 2);

    // Disconnect after a token: an error item, no retry.
    let llm = fake_llm::start(vec![
        Step::DisconnectMidStream {
            deltas: vec!["part".into(), "ial ".into()],
        },
        Step::reply(&["never"]),
    ])
    .await;
    let c = client(&llm.base_url);
    let (got, err) = collect(&c).await.unwrap();
    assert_eq!(got.concat(), "partial ");
    assert!(matches!(err, Some(LlmError::Transport(_))), "{err:?}");
    assert_eq!(llm.request_count(), 1);
}

#[tokio::test]
async fn error_frame_mid_stream_is_an_error() {
    let llm = fake_llm::start(vec![Step::ErrorMidStream {
        deltas: vec!["a".into()],
        message: "overloaded".into(),
    }])
    .await;
    let c = client(&llm.base_url);
    let (got, err) = collect(&c).await.unwrap();
    assert_eq!(got, vec!["a"]);
    match err {
        Some(LlmError::Api(m)) => assert!(m.contains("overloaded")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn stall_hits_the_idle_timeout() {
    let llm = fake_llm::start(vec![Step::Stall {
        deltas: vec!["a".into()],
        stall: Duration::from_secs(30),
    }])
    .await;
    let c = LlmClient::new(LlmConfig {
        base_url: llm.base_url.clone(),
        idle_timeout: Duration::from_millis(300),
        max_retries: 0,
        ..LlmConfig::default()
    })
    .unwrap();
    let t0 = Instant::now();
    let (got, err) = collect(&c).await.unwrap();
    assert_eq!(got, vec!["a"]);
    assert!(
        matches!(err, Some(LlmError::Timeout(TimeoutKind::Idle))),
        "{err:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
    // No key configured: no Authorization header.
    assert_eq!(llm.authorizations()[0], None);
}

#[tokio::test]
async fn stall_before_first_token_times_out() {
    let llm = fake_llm::start(vec![Step::Stall {
        deltas: vec![],
        stall: Duration::from_secs(30),
    }])
    .await;
    let c = LlmClient::new(LlmConfig {
        base_url: llm.base_url.clone(),
        first_token_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(60),
        max_retries: 0,
        ..LlmConfig::default()
    })
    .unwrap();
    let t0 = Instant::now();
    let err = c.stream_chat("m", &[]).await.err().unwrap();
    assert!(
        matches!(err, LlmError::Timeout(TimeoutKind::FirstToken)),
        "{err:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn connect_error_is_reported() {
    // A port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let c = LlmClient::new(LlmConfig {
        base_url: format!("http://127.0.0.1:{port}/v1"),
        max_retries: 1,
        initial_backoff: Duration::from_millis(10),
        ..LlmConfig::default()
    })
    .unwrap();
    let err = c.stream_chat("m", &[]).await.err().unwrap();
    assert!(matches!(err, LlmError::Connect(_)), "{err:?}");
}

#[tokio::test]
async fn complete_returns_the_whole_answer() {
    let llm = fake_llm::start(vec![]).await;
    llm.push(Step::status(503));
    llm.push_unstreamed(Step::reply(&["{\"a\":", " 1}"]));
    let c = client(&llm.base_url);
    let text = c
        .complete("m", &[ChatMessage::system("s"), ChatMessage::user("u")])
        .await
        .unwrap();
    assert_eq!(text, "{\"a\": 1}");
    assert_eq!(llm.requests()[1]["stream"], false);
}

#[tokio::test]
async fn a_json_answer_to_a_stream_request_is_one_delta() {
    let llm = fake_llm::start(vec![Step::JsonReply(" whole answer ".into())]).await;
    let c = client(&llm.base_url);
    let (got, err) = collect(&c).await.unwrap();
    assert!(err.is_none());
    assert_eq!(got, vec![" whole answer "]);
}
