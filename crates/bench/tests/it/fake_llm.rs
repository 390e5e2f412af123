use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use study::llm::{ChatMessage, LlmClient, LlmConfig};
use tokio::io::AsyncBufReadExt;

struct Fake {
    _child: tokio::process::Child,
    base: String,
}

async fn spawn_fake(deltas: usize, interval_ms: u64) -> Fake {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pv-bench"))
        .args([
            "fake-llm",
            "--deltas",
            &deltas.to_string(),
            "--interval-ms",
            &interval_ms.to_string(),
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let line = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::BufReader::new(out).lines().next_line(),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    let port: u16 = line.strip_prefix("LISTENING ").unwrap().parse().unwrap();
    Fake {
        _child: child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

fn client(base: &str) -> LlmClient {
    platform::install_crypto_provider();
    LlmClient::new(LlmConfig {
        base_url: format!("{base}/v1"),
        api_key: Some("test".into()),
        ..LlmConfig::default()
    })
    .unwrap()
}

#[tokio::test]
async fn real_llm_client_streams_and_completes_against_the_fake() {
    let fake = spawn_fake(4, 5).await;
    let llm = client(&fake.base);
    let msgs = [ChatMessage::user("What is a program?")];
    let mut s = llm.stream_chat("bench", &msgs).await.unwrap();
    let mut deltas = Vec::new();
    while let Some(d) = s.next().await {
        deltas.push(d.unwrap());
    }
    let text: String = deltas.concat();
    assert_eq!(text, "A program is a list of instructions that a computer ");
    assert!(deltas.len() >= 4, "{deltas:?}");
    let whole = llm.complete("bench", &msgs).await.unwrap();
    assert!(
        whole.starts_with("A program is a list of instructions"),
        "{whole}"
    );
}

#[tokio::test]
async fn hold_keeps_streams_open_until_release() {
    platform::install_crypto_provider();
    let fake = spawn_fake(3, 1).await;
    let http = reqwest::Client::new();
    let post = |what: &'static str| {
        let (http, url) = (http.clone(), format!("{}/control/{what}", fake.base));
        async move { assert!(http.post(url).send().await.unwrap().status().is_success()) }
    };
    post("hold").await;
    let llm = client(&fake.base);
    let mut s = llm
        .stream_chat("bench", &[ChatMessage::user("hi")])
        .await
        .unwrap();
    // The first delta arrives, the rest is held.
    assert_eq!(s.next().await.unwrap().unwrap(), "A program ");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), s.next())
            .await
            .is_err(),
        "a held stream must not progress"
    );
    let stats: serde_json::Value = http
        .get(format!("{}/control/stats", fake.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["active"], 1);
    post("release").await;
    let rest: Vec<String> = s.map(Result::unwrap).collect().await;
    assert_eq!(rest.concat(), "is a list of instructions ");
}
