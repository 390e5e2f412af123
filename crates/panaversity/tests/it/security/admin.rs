//! Finding 2: `/admin/invalidate-cache` read the whole body (up to 160 MiB) before checking the
//! secret: four 150 MB posts took the server from 24 to 1,054 MiB. Now the secret is checked
//! first (the body is never read without it) and the body is capped at a few KB.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;

use super::{HealthProbe, rss_mib};
use crate::support::{Server, ServerOpts, TempData, client};

/// RSS growth allowed while four 150 MB bodies are posted.
const MEMORY_BOUND_MIB: f64 = 32.0;
const SECRET: &str = "s3cret-admin";

/// A 150 MB body streamed in 1 MiB chunks (never held in the test's memory at once).
fn huge_body() -> reqwest::Body {
    let chunk = Bytes::from(vec![b'['; 1 << 20]);
    let stream = futures::stream::iter(0..150).map(move |_| Ok::<_, std::io::Error>(chunk.clone()));
    reqwest::Body::wrap_stream(stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_body_is_read_only_after_the_secret_and_capped() {
    let tmp = TempData::new();
    let opts = ServerOpts::default()
        .env("ADMIN_SECRET", SECRET)
        .env("PANAVERSITY_NO_SAMPLE", "1");
    let server = Server::start(&tmp.data(), opts).await;
    let url = format!("{}/admin/invalidate-cache", server.base);
    let rss_before = rss_mib(server.pid());
    let probe = HealthProbe::start(&server.base);
    let posts = (0..4).map(|i| {
        let url = url.clone();
        async move {
            let mut req = client().post(&url).body(huge_body());
            if i % 2 == 0 {
                req = req.header("x-admin-secret", "wrong");
            }
            let t = Instant::now();
            let res = req.send().await;
            (res.map(|r| r.status().as_u16()), t.elapsed())
        }
    });
    for (res, took) in futures::future::join_all(posts).await {
        // The server answers 401 without reading; the client may notice the closed connection
        // while still sending, which is fine: what matters is that nothing was buffered.
        match res {
            Ok(status) => assert_eq!(status, 401, "{took:?}"),
            Err(e) => println!("post ended by the server after {took:?}: {e}"),
        }
        assert!(took < Duration::from_secs(20), "{took:?}");
    }
    probe.finish("admin body attack").await;
    let grown = rss_mib(server.pid()) - rss_before;
    println!("admin body attack: RSS grew {grown:.1} MiB");
    assert!(grown < MEMORY_BOUND_MIB, "RSS grew {grown:.1} MiB");

    // With the secret: a body over the cap is refused with 413, a small one works.
    let r = client()
        .post(&url)
        .header("x-admin-secret", SECRET)
        .body(vec![b' '; 64 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "PAYLOAD_TOO_LARGE", "{v}");
    let r = client()
        .post(&url)
        .header("x-admin-secret", SECRET)
        .body(r#"["01-Foundations/01-What-Is-A-Program/01-instructions"]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.stop().await;

    // No secret configured: 404 at once, body unread.
    let tmp = TempData::new();
    let server = Server::start(
        &tmp.data(),
        ServerOpts::default().env("PANAVERSITY_NO_SAMPLE", "on"),
    )
    .await;
    let rss_before = rss_mib(server.pid());
    let res = client()
        .post(format!("{}/admin/invalidate-cache", server.base))
        .body(huge_body())
        .send()
        .await;
    if let Ok(r) = res {
        assert_eq!(r.status(), 404);
    }
    let grown = rss_mib(server.pid()) - rss_before;
    assert!(grown < MEMORY_BOUND_MIB, "RSS grew {grown:.1} MiB");
    server.stop().await;
}
