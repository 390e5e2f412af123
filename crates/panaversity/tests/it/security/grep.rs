//! Finding 1: `grep_search` froze every route (the regex ran on the async workers, past the
//! request timeout, and SIGTERM was ignored). Now: a pathological pattern is refused with
//! `PATTERN_TOO_COMPLEX`; an accepted but costly scan stops at its deadline with
//! `SEARCH_TIMEOUT` and the matches found so far; `/health` answers within 100 ms throughout,
//! and SIGTERM right after the attack stops the server promptly.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{HealthProbe, rss_mib, tool_error};
use crate::support::{BOOK, Server, ServerOpts, TempData};

/// RSS growth allowed over the whole attack.
const MEMORY_BOUND_MIB: f64 = 64.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grep_cannot_freeze_the_server() {
    let tmp = TempData::new();
    let opts = ServerOpts::dev()
        .env("PANAVERSITY_GREP_TIMEOUT_MS", "700")
        .env("PANAVERSITY_MAX_CONTENT_BYTES", "4194304");
    let server = Server::start(&tmp.data(), opts).await;
    let mcp = server.mcp(&[("x-agent-id", "attacker")]);
    // A small file that matches first, then long lines of `a` that cost the regex engine dearly.
    let first = "content/00-Attack/01-Grep/01-first.md";
    mcp.ok(
        "write_content",
        json!({"book_id": BOOK, "path": first, "content": "aaab\n"}),
    )
    .await;
    let long_line = format!("{}\n", "a".repeat(60_000));
    mcp.ok(
        "write_content",
        json!({"book_id": BOOK, "path": "content/00-Attack/01-Grep/02-line.md", "content": long_line}),
    )
    .await;
    let big = format!("{}\n", "a".repeat(8_000)).repeat(256); // 2 MiB
    mcp.ok(
        "write_content",
        json!({"book_id": BOOK, "path": "content/00-Attack/01-Grep/03-big.md", "content": big}),
    )
    .await;
    let rss_before = rss_mib(server.pid());

    let probe = HealthProbe::start(&server.base);
    // The pattern of the report: refused before any scan.
    let t = Instant::now();
    let r = mcp
        .call(
            "grep_search",
            json!({"book_id": BOOK, "pattern": "(a{1,100}){1,100}b"}),
        )
        .await;
    let e = tool_error(&r);
    assert_eq!(e["code"], "PATTERN_TOO_COMPLEX", "{e}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    // An accepted pattern that is still costly: four at once, each stopped at its deadline.
    let calls = (0..4).map(|_| {
        let mcp = server.mcp(&[("x-agent-id", "attacker")]);
        async move {
            let t = Instant::now();
            let r = mcp
                .call(
                    "grep_search",
                    json!({"book_id": BOOK, "pattern": "(a{1,30}){1,30}b"}),
                )
                .await;
            (r, t.elapsed())
        }
    });
    for (r, took) in futures::future::join_all(calls).await {
        println!("costly grep answered in {took:?}");
        // Each call waits at most its own deadline (0.7 s) for a scan slot plus its scan.
        assert!(took < Duration::from_secs(5), "{took:?}");
        if r["isError"] == json!(true) {
            let e = tool_error(&r);
            assert_eq!(e["code"], "SEARCH_TIMEOUT", "{e}");
            let partial = &e["partial"];
            assert!(partial["matches"].is_array(), "{e}");
            if partial["files_scanned"].as_u64().unwrap_or(0) > 0 {
                assert_eq!(partial["matches"][0]["path"], json!(first), "{e}");
            }
        } else {
            // Fast enough machines finish the scan within the budget.
            assert_eq!(
                r["structuredContent"]["matches"][0]["path"],
                json!(first),
                "{r}"
            );
        }
    }
    probe.finish("grep attack").await;
    let grown = rss_mib(server.pid()) - rss_before;
    println!("grep attack: RSS grew {grown:.1} MiB");
    assert!(grown < MEMORY_BOUND_MIB, "RSS grew {grown:.1} MiB");

    // Ordinary searches still work, and the server stops at once on SIGTERM.
    let ok = mcp
        .ok("grep_search", json!({"book_id": BOOK, "pattern": "aaab"}))
        .await;
    assert_eq!(ok["count"], json!(1), "{ok}");
    let t = Instant::now();
    server.stop().await;
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "SIGTERM took {:?}",
        t.elapsed()
    );
}

/// A client that goes away stops its scan: with one scan thread, a search abandoned by its client
/// frees the thread at its next chunk check, so the next search does not wait for the first one's
/// (long) deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_stops_its_scan() {
    let tmp = TempData::new();
    let opts = ServerOpts::dev()
        .env("PANAVERSITY_GREP_TIMEOUT_MS", "30000")
        .env("PANAVERSITY_GREP_THREADS", "1")
        .env("PANAVERSITY_MAX_CONTENT_BYTES", "4194304");
    let server = Server::start(&tmp.data(), opts).await;
    let mcp = server.mcp(&[("x-agent-id", "attacker")]);
    // One file of random a/b text (a single scan job) and a pattern that defeats the lazy DFA:
    // each 64 KiB chunk is costly, the whole file many seconds in a debug build.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut big = String::with_capacity(2 << 20);
    for i in 0..(2usize << 20) - 64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        big.push(if x & 1 == 0 { 'a' } else { 'b' });
        if i % 60_000 == 59_999 {
            big.push('\n');
        }
    }
    mcp.ok(
        "write_content",
        json!({"book_id": BOOK, "path": "content/00-Attack/02-Cancel/01-big.md", "content": big}),
    )
    .await;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "grep_search", "arguments": {"book_id": BOOK, "pattern": "(a|b)*a(a|b){30}c"}}});
    // The client gives up after 1.5 s, well into the scan.
    let abandoned = reqwest::Client::builder()
        .timeout(Duration::from_millis(1500))
        .build()
        .unwrap()
        .post(format!("{}/mcp", server.base))
        .header("accept", "application/json, text/event-stream")
        .header("x-agent-id", "attacker")
        .json(&body)
        .send()
        .await;
    assert!(abandoned.is_err(), "the costly scan answered within 1.5 s");
    let t = Instant::now();
    let ok = mcp
        .ok("grep_search", json!({"book_id": BOOK, "pattern": "^zqx"}))
        .await;
    let took = t.elapsed();
    println!("search after an abandoned one answered in {took:?}");
    assert_eq!(ok["count"], json!(0), "{ok}");
    assert!(
        took < Duration::from_secs(5),
        "the abandoned scan kept the thread: {took:?}"
    );
    server.stop().await;
}
