//! Finding 6: `get_asset include_binary` buffered 2.67× the asset (base64 twice): four reads of a
//! 60 MB asset took the server from 428 to 1,549 MiB. Now inline bytes are capped
//! (`PANAVERSITY_MAX_INLINE_ASSET_BYTES`, 4 MiB by default): a bigger asset is
//! `PAYLOAD_TOO_LARGE` naming its URL, without its bytes ever being read.

use base64::Engine as _;
use serde_json::json;

use super::{HealthProbe, rss_mib, tool_error};
use crate::support::{BOOK, Server, ServerOpts, TempData};

/// RSS growth allowed for four concurrent `include_binary` reads of a 24 MB asset.
const MEMORY_BOUND_MIB: f64 = 48.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_asset_bytes_are_capped() {
    let tmp = TempData::new();
    let server = Server::start(&tmp.data(), ServerOpts::dev()).await;
    let mcp = server.mcp(&[("x-agent-id", "uploader")]);
    let big: Vec<u8> = (0..24 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&big);
    drop(big);
    mcp.ok(
        "upload_asset",
        json!({"book_id": BOOK, "asset_type": "images", "filename": "huge.png", "binary_data": b64}),
    )
    .await;
    drop(b64);
    let small = vec![7u8; 1000];
    mcp.ok(
        "upload_asset",
        json!({"book_id": BOOK, "asset_type": "images", "filename": "small.png",
               "binary_data": base64::engine::general_purpose::STANDARD.encode(&small)}),
    )
    .await;
    // Let the upload's buffers go back before measuring.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let rss_before = rss_mib(server.pid());
    let probe = HealthProbe::start(&server.base);
    let reads = (0..4).map(|_| {
        let mcp = server.mcp(&[("x-agent-id", "reader")]);
        async move {
            mcp.call(
                "get_asset",
                json!({"book_id": BOOK, "asset_type": "images", "filename": "huge.png", "include_binary": true}),
            )
            .await
        }
    });
    for r in futures::future::join_all(reads).await {
        let e = tool_error(&r);
        assert_eq!(e["code"], "PAYLOAD_TOO_LARGE", "{e}");
        let msg = e["message"].as_str().unwrap();
        assert!(
            msg.contains("/books/sample-book/static/images/huge.png"),
            "{msg}"
        );
        assert!(msg.contains("get_book_archive"), "{msg}");
        assert_eq!(e["limit"], json!(4 * 1024 * 1024), "{e}");
    }
    probe.finish("inline asset reads").await;
    let grown = rss_mib(server.pid()) - rss_before;
    println!("4 × include_binary of a 24 MB asset: RSS grew {grown:.1} MiB");
    assert!(grown < MEMORY_BOUND_MIB, "RSS grew {grown:.1} MiB");

    // Metadata without bytes, and small assets inline, still work.
    let meta = mcp
        .ok(
            "get_asset",
            json!({"book_id": BOOK, "asset_type": "images", "filename": "huge.png"}),
        )
        .await;
    assert_eq!(meta["file_size"], json!(24 * 1024 * 1024), "{meta}");
    let inline = mcp
        .ok(
            "get_asset",
            json!({"book_id": BOOK, "asset_type": "images", "filename": "small.png", "include_binary": true}),
        )
        .await;
    let got = base64::engine::general_purpose::STANDARD
        .decode(inline["binary_data"].as_str().unwrap())
        .unwrap();
    assert_eq!(got, small);
    server.stop().await;
}
