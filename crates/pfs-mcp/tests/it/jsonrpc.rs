//! Raw JSON-RPC over HTTP against the real router (SQLite and PostgreSQL).

use std::collections::HashSet;

use futures::AsyncReadExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::{BOOK, Rpc, databases, start};

const LESSON: &str = "content/01-Part/01-Chapter/01-lesson.md";

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

#[tokio::test]
async fn tools_list_advertises_every_tool_with_schemas_and_annotations() {
    let server = start(platform::db::TestDb::sqlite()).await;
    let rpc = Rpc::new(&server, Some("alice"), "read");
    let (status, v) = rpc
        .raw(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}))
        .await;
    assert_eq!(status, 200, "{v}");
    let tools = v["result"]["tools"].as_array().expect("tools");
    // Half of the 49.8 KB the list measured with the legacy form advertised.
    let size = serde_json::to_vec(&v["result"]).expect("json").len();
    assert!(size <= 24_900, "tools/list is {size} bytes");
    let names: HashSet<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    let expected: HashSet<&str> = [
        "read_content",
        "write_content",
        "edit_content",
        "move_content",
        "list_versions",
        "delete_content",
        "upload_asset",
        "get_asset",
        "list_assets",
        "delete_asset",
        "list_books",
        "glob_search",
        "grep_search",
        "get_book_archive",
        "validate_book",
        "delta_build",
        "plan_build",
        "query_audit_log",
        "verify_audit_chain",
    ]
    .into_iter()
    .collect();
    assert_eq!(names, expected);
    for t in tools {
        let name = t["name"].as_str().unwrap();
        assert_eq!(t["inputSchema"]["type"], json!("object"), "{name}");
        assert!(
            t["inputSchema"]["properties"].get("params").is_none(),
            "{name}: the legacy wrapped form is accepted but not advertised"
        );
        let tool: rmcp::model::Tool = serde_json::from_value(t.clone()).expect("a tool");
        let broken = pfs_mcp::schema::violations(&tool);
        assert!(broken.is_empty(), "{name}: {broken:#?}");
        assert_eq!(
            t["outputSchema"]["type"],
            json!("object"),
            "{name}: output schema"
        );
        let a = &t["annotations"];
        assert!(a["title"].is_string(), "{name}: title");
        for hint in ["readOnlyHint", "openWorldHint"] {
            assert!(a[hint].is_boolean(), "{name}: {hint}");
        }
        // The other two hints mean something only for tools that change things (MCP spec), so
        // read-only tools leave them out.
        for hint in ["destructiveHint", "idempotentHint"] {
            assert_eq!(
                a[hint].is_boolean(),
                a["readOnlyHint"] == json!(false),
                "{name}: {hint}"
            );
        }
    }
    let by = |n: &str| {
        tools
            .iter()
            .find(|t| t["name"] == json!(n))
            .unwrap()
            .clone()
    };
    assert_eq!(
        by("read_content")["annotations"]["readOnlyHint"],
        json!(true)
    );
    assert_eq!(
        by("delete_content")["annotations"]["destructiveHint"],
        json!(true)
    );
    assert_eq!(
        by("upload_asset")["annotations"]["idempotentHint"],
        json!(false)
    );
    assert_eq!(
        by("write_content")["annotations"]["title"],
        json!("Write Content (Upsert)")
    );
    assert_eq!(
        by("plan_build")["annotations"]["title"],
        json!("Plan Build (Manifest Delta)")
    );
}

#[tokio::test]
async fn hash_protocol_overlays_and_errors_over_http() {
    for db in databases().await {
        let server = start(db).await;
        let kind = server.kind;
        let alice = Rpc::new(&server, Some("alice"), "read write");
        let bob = Rpc::new(&server, Some("bob"), "read");
        let anon = Rpc::new(&server, None, "");

        let text = "# One\n\n  trailing spaces stay  \n";
        let w = alice
            .ok(
                "write_content",
                json!({"book_id": BOOK, "path": LESSON, "content": text}),
            )
            .await;
        assert_eq!(w["mode"], json!("created"), "{kind:?}");
        assert_eq!(w["file_hash"], json!(sha(text.as_bytes())));
        let r = bob
            .ok(
                "read_content",
                json!({"params": {"book_id": BOOK, "path": LESSON}}),
            )
            .await;
        assert_eq!(r["content"], json!(text));
        let r = bob
            .ok(
                "read_content",
                json!({"params": json!({"book_id": BOOK, "path": LESSON}).to_string()}),
            )
            .await;
        assert_eq!(r["file_hash_sha256"], w["file_hash"]);
        // The same bytes again (as legacy clients re-send unchanged files): no new version.
        let same = alice
            .ok(
                "write_content",
                json!({"book_id": BOOK, "path": LESSON, "content": text, "expected_hash": w["file_hash"]}),
            )
            .await;
        assert_eq!(same["mode"], json!("unchanged"), "{kind:?} {same}");
        assert_eq!(same["file_hash"], w["file_hash"]);

        let e = alice
            .err(
                "write_content",
                json!({"book_id": BOOK, "path": LESSON, "content": "x"}),
                "HASH_REQUIRED",
            )
            .await;
        assert_eq!(e["current_hash"], w["file_hash"]);
        let e = alice
            .err(
                "write_content",
                json!({"book_id": BOOK, "path": LESSON, "content": "x", "expected_hash": "f".repeat(64)}),
                "CONFLICT",
            )
            .await;
        assert_eq!(e["current_hash"], w["file_hash"]);
        alice
            .err(
                "write_content",
                json!({"book_id": BOOK, "path": "content/01-Part/01-Chapter/02-new.md", "content": "x",
                       "expected_hash": "a".repeat(64)}),
                "NOT_FOUND",
            )
            .await;
        alice
            .err(
                "read_content",
                json!({"book_id": BOOK, "path": "content/../secrets.md"}),
                "INVALID_PATH",
            )
            .await;
        alice
            .err(
                "write_content",
                json!({"book_id": BOOK, "path": "content/01-Part/01-Chapter/README.md", "content": "x"}),
                "SCHEMA_VIOLATION",
            )
            .await;
        alice
            .err(
                "read_content",
                json!({"book_id": BOOK, "nope": true}),
                "INVALID_INPUT",
            )
            .await;
        bob.err(
            "write_content",
            json!({"book_id": BOOK, "path": LESSON, "content": "x"}),
            "FORBIDDEN",
        )
        .await;
        bob.err("verify_audit_chain", json!({}), "FORBIDDEN").await;
        anon.err(
            "read_content",
            json!({"book_id": BOOK, "path": LESSON}),
            "UNAUTHORIZED",
        )
        .await;

        // Overlays: own only; search never shows another user's overlay.
        alice
            .ok(
                "write_content",
                json!({"book_id": BOOK, "path": LESSON, "content": "overlay-marker\n", "user_id": "alice"}),
            )
            .await;
        bob.err(
            "read_content",
            json!({"book_id": BOOK, "path": LESSON, "user_id": "alice"}),
            "FORBIDDEN",
        )
        .await;
        let g = bob
            .ok(
                "grep_search",
                json!({"book_id": BOOK, "pattern": "overlay-marker"}),
            )
            .await;
        assert_eq!(g["count"], json!(0), "{g}");
        let g = alice
            .ok(
                "grep_search",
                json!({"book_id": BOOK, "pattern": "overlay-marker"}),
            )
            .await;
        assert_eq!(g["count"], json!(1), "{g}");
        let gl = bob
            .ok(
                "glob_search",
                json!({"book_id": BOOK, "pattern": "**/*.md"}),
            )
            .await;
        assert_eq!(gl["matches"], json!([LESSON]));
        assert_eq!(gl["files"][0]["namespace"], json!("base"));
        let bulk = bob
            .ok("read_content", json!({"book_id": BOOK, "scope": "book"}))
            .await;
        assert_eq!(bulk["files"][0]["content"], json!(text));

        // Oversized content (engine limit, default 2 MiB) and asset (inline limit of the test server).
        let huge = "a".repeat(2 * 1024 * 1024 + 1);
        alice
            .err(
                "write_content",
                json!({"book_id": BOOK, "path": "content/01-Part/01-Chapter/03-big.md", "content": huge}),
                "PAYLOAD_TOO_LARGE",
            )
            .await;
        let big = "A".repeat((crate::support::MAX_ASSET as usize) * 2);
        alice
            .err(
                "upload_asset",
                json!({"book_id": BOOK, "asset_type": "images", "filename": "big.png", "binary_data": big}),
                "PAYLOAD_TOO_LARGE",
            )
            .await;
    }
}

#[tokio::test]
async fn concurrent_updates_with_one_expected_hash_have_one_winner() {
    for db in databases().await {
        let server = start(db).await;
        let alice = Rpc::new(&server, Some("alice"), "read write");
        let w = alice
            .ok(
                "write_content",
                json!({"book_id": BOOK, "path": LESSON, "content": "v0"}),
            )
            .await;
        let h = w["file_hash"].as_str().unwrap().to_string();
        let calls = (0..8).map(|i| {
            let rpc = Rpc::new(&server, Some("alice"), "read write");
            let h = h.clone();
            async move {
                rpc.call(
                    "write_content",
                    json!({"book_id": BOOK, "path": LESSON, "content": format!("v{}", i + 1), "expected_hash": h}),
                )
                .await
            }
        });
        let results = futures::future::join_all(calls).await;
        let winners = results
            .iter()
            .filter(|r| r["isError"] == json!(false))
            .count();
        assert_eq!(winners, 1, "{:?}: {results:?}", server.kind);
        for r in results.iter().filter(|r| r["isError"] == json!(true)) {
            let body: Value =
                serde_json::from_str(r["content"][0]["text"].as_str().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], json!("CONFLICT"), "{body}");
        }
        let plans = (0..8).map(|_| alice.ok("plan_build", json!({"book_id": BOOK})));
        let plans = futures::future::join_all(plans).await;
        assert!(
            plans
                .windows(2)
                .all(|w| w[0]["manifest_hash"] == w[1]["manifest_hash"])
        );
    }
}

#[tokio::test]
async fn archive_route_streams_a_deterministic_signed_zip() {
    for db in databases().await {
        let server = start(db).await;
        let alice = Rpc::new(&server, Some("alice"), "read write");
        alice
            .ok(
                "write_content",
                json!({"book_id": BOOK, "path": LESSON, "content": "# Lesson\n"}),
            )
            .await;
        let png: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        use base64::Engine as _;
        alice
            .ok(
                "upload_asset",
                json!({"book_id": BOOK, "asset_type": "images", "filename": "a/b.png",
                       "binary_data": base64::engine::general_purpose::STANDARD.encode(&png)}),
            )
            .await;
        let a = alice
            .ok("get_book_archive", json!({"book_id": BOOK, "scope": "all"}))
            .await;
        assert_eq!(a["file_count"], json!(2), "{a}");
        let url = a["archive_url"].as_str().unwrap().to_string();
        let http = reqwest::Client::new();
        let resp = http.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let etag = resp.headers()["etag"].to_str().unwrap().to_string();
        assert!(
            resp.headers()["content-disposition"]
                .to_str()
                .unwrap()
                .contains("attachment")
        );
        let bytes = resp.bytes().await.unwrap();
        let again = http.get(&url).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(bytes, again, "same manifest, same bytes");
        let not_modified = http
            .get(&url)
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(not_modified.status(), 304);

        #[allow(deprecated)] // read1 is the successor; mem is simpler for an in-memory check
        let zip = async_zip::base::read::mem::ZipFileReader::new(bytes.to_vec())
            .await
            .unwrap();
        let names: Vec<String> = zip
            .file()
            .entries()
            .iter()
            .map(|e| e.filename().as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            names,
            vec![LESSON.to_string(), "static/images/a/b.png".to_string()]
        );
        let mut r = zip.reader_with_entry(1).await.unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, png);

        // Resumption: only the entries after start_after.
        let rest = alice
            .ok(
                "get_book_archive",
                json!({"book_id": BOOK, "scope": "all", "start_after": LESSON}),
            )
            .await;
        let rest_url = rest["archive_url"].as_str().unwrap();
        assert!(rest_url.contains("start_after="), "{rest_url}");
        let rest_bytes = http
            .get(rest_url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        #[allow(deprecated)]
        let rest_zip = async_zip::base::read::mem::ZipFileReader::new(rest_bytes.to_vec())
            .await
            .unwrap();
        let rest_names: Vec<String> = rest_zip
            .file()
            .entries()
            .iter()
            .map(|e| e.filename().as_str().unwrap().to_string())
            .collect();
        assert_eq!(rest_names, vec!["static/images/a/b.png".to_string()]);

        // Tampered, expired and unsigned-anonymous requests are refused.
        let tampered = url.replace("scope=all", "scope=assets");
        assert_eq!(http.get(&tampered).send().await.unwrap().status(), 403);
        let unsigned = format!("{}/books/{BOOK}/archive?scope=content", server.base);
        assert_eq!(http.get(&unsigned).send().await.unwrap().status(), 401);
        let authed = http
            .get(&unsigned)
            .header("x-test-subject", "bob")
            .header("x-test-scopes", "read")
            .send()
            .await
            .unwrap();
        assert_eq!(authed.status(), 200);
        let other_overlay = http
            .get(format!("{unsigned}&user_id=alice"))
            .header("x-test-subject", "bob")
            .header("x-test-scopes", "read")
            .send()
            .await
            .unwrap();
        assert_eq!(other_overlay.status(), 403);
        let expired = crate::support::expired_url(&server, "all");
        assert_eq!(http.get(&expired).send().await.unwrap().status(), 403);
    }
}

/// A misspelled book id is `NOT_FOUND` naming the book on every read-side tool, and nothing is
/// written (no snapshot row, no book), on SQLite and PostgreSQL.
#[tokio::test]
async fn unknown_book_is_not_found_on_every_read_side_tool() {
    for db in databases().await {
        let server = start(db).await;
        let rpc = Rpc::new(&server, Some("alice"), "read write");
        rpc.ok(
            "write_content",
            json!({"book_id": BOOK, "path": LESSON, "content": "# Real\n"}),
        )
        .await;
        let missing = "no-such-bok";
        let calls = [
            ("read_content", json!({"book_id": missing, "path": LESSON})),
            (
                "read_content",
                json!({"book_id": missing, "path": "content", "scope": "book"}),
            ),
            (
                "read_content",
                json!({"book_id": missing, "path": "static/images/a.png"}),
            ),
            (
                "get_asset",
                json!({"book_id": missing, "asset_type": "images", "filename": "a.png"}),
            ),
            ("list_assets", json!({"book_id": missing})),
            ("list_books", json!({"book_id": missing})),
            (
                "glob_search",
                json!({"book_id": missing, "pattern": "content/**/*.md"}),
            ),
            (
                "grep_search",
                json!({"book_id": missing, "pattern": "Real"}),
            ),
            ("get_book_archive", json!({"book_id": missing})),
            (
                "delta_build",
                json!({"book_id": missing, "since": "2020-01-01T00:00:00Z"}),
            ),
            ("plan_build", json!({"book_id": missing})),
        ];
        for (tool, args) in calls {
            let e = rpc.err(tool, args.clone(), "NOT_FOUND").await;
            let msg = e["message"].as_str().unwrap_or_default();
            assert!(msg.contains(missing), "{tool} {args}: {e}");
        }
        let snapshots: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM manifest_snapshots")
            .fetch_one(server.engine.db().pool())
            .await
            .expect("count");
        assert_eq!(
            snapshots, 0,
            "plan_build on a missing book stored a snapshot"
        );
        let books = rpc.ok("list_books", json!({})).await;
        assert_eq!(books["count"], json!(1), "{books}");
        // The real book still answers as before.
        rpc.ok("plan_build", json!({"book_id": BOOK})).await;
    }
}

/// A bare `tools/list` with `Accept: application/json` (a container health check), or with no
/// `Accept`, is answered with JSON; a body that is not JSON is HTTP 400 with a JSON-RPC parse
/// error, a JSON scalar a JSON-RPC invalid request.
#[tokio::test]
async fn json_only_clients_and_malformed_bodies_get_json_rpc_answers() {
    let server = start(platform::db::TestDb::sqlite()).await;
    let url = format!("{}/mcp", server.base);
    let http = reqwest::Client::new();
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#;
    for accept in [Some("application/json"), Some("*/*"), None] {
        let mut req = http
            .post(&url)
            .header("content-type", "application/json")
            .header("x-test-subject", "alice")
            .header("x-test-scopes", "read")
            .body(list);
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        let resp = req.send().await.expect("POST");
        assert_eq!(resp.status(), 200, "accept {accept:?}");
        let v: Value = resp.json().await.expect("a JSON body");
        assert!(v["result"]["tools"].is_array(), "accept {accept:?}: {v}");
    }
    for (body, code) in [
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/li"#, -32700),
        ("not json at all", -32700),
        ("42", -32600),
    ] {
        let resp = http
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("x-test-subject", "alice")
            .header("x-test-scopes", "read")
            .body(body)
            .send()
            .await
            .expect("POST");
        assert_eq!(resp.status(), 400, "{body}");
        let v: Value = resp.json().await.expect("a JSON-RPC error body");
        assert_eq!(v["jsonrpc"], json!("2.0"));
        assert_eq!(v["error"]["code"], json!(code), "{body}: {v}");
    }
}
