//! Idempotent retries (`request_id`) over real JSON-RPC on SQLite and PostgreSQL: a retry after a
//! lost reply, across two server instances, in another argument form, racing itself; a reused id.

use std::sync::Arc;

use pfs::engine::Faults;
use pfs::{EngineConfig, Storage, StorageConfig};
use serde_json::{Value, json};

use crate::support::{BOOK, Rpc, databases, start, start_on, start_replica};

const LESSON: &str = "content/01-Part/01-Chapter/01-lesson.md";

async fn version_count(rpc: &Rpc, path: &str) -> usize {
    rpc.ok(
        "list_versions",
        json!({"book_id": BOOK, "path": path, "limit": 100}),
    )
    .await["versions"]
        .as_array()
        .map_or(0, Vec::len)
}

async fn audit_rows(admin: &Rpc) -> usize {
    admin
        .ok("query_audit_log", json!({"book_id": BOOK, "limit": 1000}))
        .await["rows"]
        .as_array()
        .map_or(0, Vec::len)
}

#[tokio::test]
async fn a_retry_after_a_lost_reply_returns_the_first_outcome_without_writing_again() {
    for db in databases().await {
        // The engine commits the write and then "crashes" before replying: the client sees an
        // error although the change is durable, exactly a lost reply.
        let faults = Faults::new();
        let cfg = EngineConfig {
            faults: Some(faults.clone()),
            ..EngineConfig::default()
        };
        let storage = Storage::new(&StorageConfig::Memory).expect("storage");
        let server = start_on(Arc::new(db), storage, None, cfg).await;
        let rpc = Rpc::new(&server, Some("alice"), "read write admin");
        let v1 = rpc
            .ok(
                "write_content",
                json!({"book_id": BOOK, "path": LESSON, "content": "v1\n"}),
            )
            .await;
        let h1 = v1["file_hash"].as_str().unwrap().to_string();

        let update = json!({"book_id": BOOK, "path": LESSON, "content": "v2\n",
                            "expected_hash": h1, "request_id": "retry-1"});
        faults.crash_next_after_commit(1);
        rpc.err("write_content", update.clone(), "INTERNAL").await;
        let versions = version_count(&rpc, LESSON).await;
        assert_eq!(versions, 2, "the lost write did commit");
        let rows = audit_rows(&rpc).await;

        // Without request_id the retry would be a CONFLICT (its expected hash is stale now).
        let again = rpc.ok("write_content", update.clone()).await;
        assert_eq!(again["replayed"], json!(true), "{again}");
        assert_eq!(again["mode"], "updated");
        assert_eq!(again["prev_hash"], json!(h1));
        assert_eq!(again["file_size"], json!(3));
        let h2 = again["file_hash"].as_str().unwrap().to_string();
        let read = rpc
            .ok("read_content", json!({"book_id": BOOK, "path": LESSON}))
            .await;
        assert_eq!(read["file_hash_sha256"], json!(h2));
        assert_eq!(
            version_count(&rpc, LESSON).await,
            versions,
            "no second write"
        );
        assert_eq!(audit_rows(&rpc).await, rows, "no new audit row");

        // The same request_id for another call is refused and changes nothing.
        let err = rpc
            .err(
                "write_content",
                json!({"book_id": BOOK, "path": LESSON, "content": "v3\n",
                       "expected_hash": h2, "request_id": "retry-1"}),
                "REQUEST_ID_REUSED",
            )
            .await;
        assert_eq!(err["request_id"], "retry-1");
        rpc.err(
            "delete_content",
            json!({"book_id": BOOK, "path": LESSON, "request_id": "retry-1"}),
            "REQUEST_ID_REUSED",
        )
        .await;
        assert_eq!(version_count(&rpc, LESSON).await, versions);

        // The wrapped form and another key order are the same call.
        let wrapped = rpc
            .ok(
                "write_content",
                json!({"params": {"request_id": "retry-1", "expected_hash": h1,
                                  "content": "v2\n", "path": LESSON, "book_id": BOOK}}),
            )
            .await;
        assert_eq!(wrapped["replayed"], json!(true), "{wrapped}");

        // Request ids are per caller: bob's "retry-1" is his own.
        let bob = Rpc::new(&server, Some("bob"), "read write");
        let b = bob
            .ok(
                "write_content",
                json!({"book_id": BOOK, "path": "content/01-Part/01-Chapter/02-bob.md",
                       "content": "bob\n", "request_id": "retry-1"}),
            )
            .await;
        assert!(b.get("replayed").is_none(), "{b}");

        // A request id must be short.
        rpc.err(
            "write_content",
            json!({"book_id": BOOK, "path": LESSON, "content": "x", "expected_hash": h2,
                   "request_id": "x".repeat(65)}),
            "INVALID_INPUT",
        )
        .await;
        // Every row, tagged or not, still verifies.
        let chain = rpc.ok("verify_audit_chain", json!({})).await;
        assert_eq!(chain["valid"], json!(true), "{chain}");
    }
}

#[tokio::test]
async fn every_mutating_tool_replays_its_first_outcome() {
    for db in databases().await {
        let server = start(db).await;
        let rpc = Rpc::new(&server, Some("alice"), "read write admin");
        let twice = |tool: &'static str, args: Value| {
            let rpc = &rpc;
            async move {
                let first = rpc.ok(tool, args.clone()).await;
                let second = rpc.ok(tool, args).await;
                assert!(first.get("replayed").is_none(), "{tool}: {first}");
                assert_eq!(second["replayed"], json!(true), "{tool}: {second}");
                let strip = |mut v: Value| {
                    v.as_object_mut().map(|o| o.remove("replayed"));
                    v
                };
                assert_eq!(strip(first.clone()), strip(second), "{tool}");
                first
            }
        };
        let w = twice(
            "write_content",
            json!({"book_id": BOOK, "path": LESSON, "content": "a\nb\n", "request_id": "w"}),
        )
        .await;
        let h = w["file_hash"].as_str().unwrap().to_string();
        let e = twice(
            "edit_content",
            json!({"book_id": BOOK, "path": LESSON, "expected_hash": h, "request_id": "e",
                   "edits": [{"old_text": "b", "new_text": "B"}]}),
        )
        .await;
        let h = e["file_hash"].as_str().unwrap().to_string();
        // An edit that made alice's overlay from base.
        twice(
            "edit_content",
            json!({"book_id": BOOK, "path": LESSON, "expected_hash": h, "user_id": "alice",
                   "request_id": "eo", "edits": [{"old_text": "a", "new_text": "A"}]}),
        )
        .await;
        let to = "content/01-Part/01-Chapter/02-moved.md";
        twice(
            "move_content",
            json!({"book_id": BOOK, "from_path": LESSON, "to_path": to, "expected_hash": h,
                   "request_id": "m"}),
        )
        .await;
        twice(
            "delete_content",
            json!({"book_id": BOOK, "path": to, "request_id": "d"}),
        )
        .await;
        let png = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            b"\x89PNG\r\n\x1a\nfake",
        );
        twice(
            "upload_asset",
            json!({"book_id": BOOK, "asset_type": "images", "filename": "a.png",
                   "binary_data": png, "request_id": "u"}),
        )
        .await;
        twice(
            "delete_asset",
            json!({"book_id": BOOK, "asset_type": "images", "filename": "a.png",
                   "request_id": "da"}),
        )
        .await;
        let audit = rpc
            .ok("query_audit_log", json!({"book_id": BOOK, "limit": 1000}))
            .await;
        let tagged = audit["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r.get("request_id").is_some())
            .count();
        // One row per change (two for the move), none for the replays.
        assert_eq!(tagged, 8, "{audit}");
    }
}

#[tokio::test]
async fn a_retry_on_another_server_instance_and_a_racing_copy_write_once() {
    for db in databases().await {
        let a = start(db).await;
        let b = start_replica(&a).await;
        let on_a = Rpc::new(&a, Some("alice"), "read write");
        let on_b = Rpc::new(&b, Some("alice"), "read write");
        let h1 = on_a
            .ok(
                "write_content",
                json!({"book_id": BOOK, "path": LESSON, "content": "v1\n"}),
            )
            .await["file_hash"]
            .as_str()
            .unwrap()
            .to_string();
        let call = json!({"book_id": BOOK, "path": LESSON, "content": "v2\n",
                          "expected_hash": h1, "request_id": "across"});
        let first = on_a.ok("write_content", call.clone()).await;
        let retry = on_b.ok("write_content", call).await;
        assert_eq!(retry["replayed"], json!(true), "{retry}");
        assert_eq!(retry["file_hash"], first["file_hash"]);
        assert_eq!(version_count(&on_b, LESSON).await, 2);

        // Eight copies of one call at once, split over both instances: one change, and every
        // copy answers with it (the losers find the winner's rows).
        let h2 = first["file_hash"].as_str().unwrap().to_string();
        let race = json!({"book_id": BOOK, "path": LESSON, "content": "v3\n",
                          "expected_hash": h2, "request_id": "race"});
        let mut tasks = Vec::new();
        for i in 0..8 {
            let rpc = if i % 2 == 0 { &on_a } else { &on_b };
            tasks.push(rpc.call("write_content", race.clone()));
        }
        let results = futures::future::join_all(tasks).await;
        let mut hashes = std::collections::HashSet::new();
        for r in &results {
            assert_eq!(r["isError"], json!(false), "{r}");
            hashes.insert(r["structuredContent"]["file_hash"].to_string());
        }
        assert_eq!(hashes.len(), 1, "{results:?}");
        assert_eq!(
            version_count(&on_a, LESSON).await,
            3,
            "exactly one more version"
        );
    }
}
