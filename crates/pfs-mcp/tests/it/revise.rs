//! The revision tools over real JSON-RPC on SQLite and PostgreSQL: edit_content, move_content,
//! list_versions, read_content by version, the diff a CONFLICT carries, overlay drift.

use serde_json::{Value, json};

use crate::support::{BOOK, Rpc, databases, start};

const LESSON: &str = "content/01-Part/01-Chapter/01-lesson.md";
const RENAMED: &str = "content/01-Part/01-Chapter/02-renamed.md";

async fn create(rpc: &Rpc, path: &str, text: &str) -> String {
    let w = rpc
        .ok(
            "write_content",
            json!({"book_id": BOOK, "path": path, "content": text}),
        )
        .await;
    w["file_hash"].as_str().expect("hash").to_string()
}

async fn read(rpc: &Rpc, args: Value) -> Value {
    rpc.ok("read_content", args).await
}

async fn versions(rpc: &Rpc, path: &str) -> Vec<Value> {
    rpc.ok("list_versions", json!({"book_id": BOOK, "path": path}))
        .await["versions"]
        .as_array()
        .expect("versions")
        .clone()
}

#[tokio::test]
async fn edit_content_applies_exact_edits_atomically_with_the_hash_protocol() {
    for db in databases().await {
        let server = start(db).await;
        let rpc = Rpc::new(&server, Some("alice"), "read write");
        let h0 = create(
            &rpc,
            LESSON,
            "# Title\n\nThe cat sat.\nThe dog ran.\nThe cat sat.\n",
        )
        .await;

        // One edit: new hash, a unified diff.
        let e1 = rpc
            .ok(
                "edit_content",
                json!({"book_id": BOOK, "path": LESSON, "expected_hash": h0,
                       "edits": [{"old_text": "# Title", "new_text": "# Better title"}]}),
            )
            .await;
        assert_eq!(e1["mode"], "updated", "{e1}");
        assert_eq!(e1["prev_hash"], json!(h0));
        assert!(
            e1["diff"]
                .as_str()
                .unwrap()
                .contains("-# Title\n+# Better title\n"),
            "{e1}"
        );
        let h1 = e1["file_hash"].as_str().unwrap().to_string();
        let r = read(&rpc, json!({"book_id": BOOK, "path": LESSON})).await;
        assert_eq!(r["file_hash_sha256"], json!(h1));
        assert!(
            r["content"]
                .as_str()
                .unwrap()
                .starts_with("# Better title\n")
        );

        // Several edits, applied in order; replace_all for a repeated phrase.
        let e2 = rpc
            .ok(
                "edit_content",
                json!({"book_id": BOOK, "path": LESSON, "expected_hash": h1, "edits": [
                    {"old_text": "The cat sat.", "new_text": "The cat slept.", "replace_all": true},
                    {"old_text": "dog ran", "new_text": "dog barked"}]}),
            )
            .await;
        assert_eq!(e2["replacements"], json!(3), "{e2}");
        let h2 = e2["file_hash"].as_str().unwrap().to_string();
        let text = read(&rpc, json!({"book_id": BOOK, "path": LESSON})).await["content"].clone();
        assert_eq!(
            text,
            json!("# Better title\n\nThe cat slept.\nThe dog barked.\nThe cat slept.\n")
        );

        // No match, with where it looked; nothing written (all or nothing: edit 0 matched).
        let err = rpc
            .err(
                "edit_content",
                json!({"book_id": BOOK, "path": LESSON, "expected_hash": h2, "edits": [
                    {"old_text": "Better", "new_text": "Best"},
                    {"old_text": "The  dog\tbarked.", "new_text": "x"}]}),
                "EDIT_NO_MATCH",
            )
            .await;
        assert_eq!(err["edit"], json!(1), "{err}");
        assert!(err["message"].as_str().unwrap().contains("line 4"), "{err}");
        // Ambiguous without replace_all: the lines of the matches.
        let err = rpc
            .err(
                "edit_content",
                json!({"book_id": BOOK, "path": LESSON, "expected_hash": h2,
                       "edits": [{"old_text": "The cat slept.", "new_text": "x"}]}),
                "EDIT_AMBIGUOUS",
            )
            .await;
        assert_eq!(err["lines"], json!([3, 5]), "{err}");
        assert_eq!(
            read(&rpc, json!({"book_id": BOOK, "path": LESSON})).await["file_hash_sha256"],
            json!(h2),
            "failed edits change nothing"
        );

        // A stale hash: CONFLICT with the current hash and the diff from the expected version.
        let err = rpc
            .err(
                "edit_content",
                json!({"book_id": BOOK, "path": LESSON, "expected_hash": h1,
                       "edits": [{"old_text": "title", "new_text": "heading"}]}),
                "CONFLICT",
            )
            .await;
        assert_eq!(err["current_hash"], json!(h2));
        let diff = err["diff"].as_str().expect("conflict diff");
        for line in [
            "-The cat sat.\n",
            "+The cat slept.\n",
            "-The dog ran.\n",
            "+The dog barked.\n",
        ] {
            assert!(diff.contains(line), "{line:?} not in {diff}");
        }

        // Edits that change nothing write nothing.
        let before = versions(&rpc, LESSON).await.len();
        let same = rpc
            .ok(
                "edit_content",
                json!({"book_id": BOOK, "path": LESSON, "expected_hash": h2,
                       "edits": [{"old_text": "dog", "new_text": "dog"}]}),
            )
            .await;
        assert_eq!(same["mode"], "unchanged");
        assert_eq!(same["file_hash"], json!(h2));
        assert_eq!(versions(&rpc, LESSON).await.len(), before);

        // A missing file, a bad argument.
        rpc.err(
            "edit_content",
            json!({"book_id": BOOK, "path": "content/01-Part/01-Chapter/09-none.md",
                   "expected_hash": h2, "edits": [{"old_text": "a", "new_text": "b"}]}),
            "NOT_FOUND",
        )
        .await;
        rpc.err(
            "edit_content",
            json!({"book_id": BOOK, "path": LESSON, "expected_hash": h2, "edits": []}),
            "INVALID_INPUT",
        )
        .await;
    }
}

#[tokio::test]
async fn edit_content_on_an_overlay_makes_it_from_base_and_never_touches_base() {
    for db in databases().await {
        let server = start(db).await;
        let rpc = Rpc::new(&server, Some("alice"), "read write");
        let base = create(&rpc, LESSON, "Loops repeat work.\n").await;
        let e = rpc
            .ok(
                "edit_content",
                json!({"book_id": BOOK, "path": LESSON, "user_id": "alice", "expected_hash": base,
                       "edits": [{"old_text": "work", "new_text": "work (like laps on a track)"}]}),
            )
            .await;
        assert_eq!(e["mode"], "created", "{e}");
        assert_eq!(e["namespace"], "overlay");
        let mine = read(
            &rpc,
            json!({"book_id": BOOK, "path": LESSON, "user_id": "alice"}),
        )
        .await;
        assert_eq!(mine["source"], "overlay");
        assert_eq!(
            mine["content"],
            "Loops repeat work (like laps on a track).\n"
        );
        let shared = read(&rpc, json!({"book_id": BOOK, "path": LESSON})).await;
        assert_eq!(shared["file_hash_sha256"], json!(base), "base untouched");
        // The overlay now answers to its own hash.
        let overlay_hash = mine["file_hash_sha256"].as_str().unwrap();
        rpc.ok(
            "edit_content",
            json!({"book_id": BOOK, "path": LESSON, "user_id": "alice",
                   "expected_hash": overlay_hash,
                   "edits": [{"old_text": "laps", "new_text": "runs"}]}),
        )
        .await;
        rpc.err(
            "edit_content",
            json!({"book_id": BOOK, "path": LESSON, "user_id": "alice", "expected_hash": base,
                   "edits": [{"old_text": "Loops", "new_text": "For loops"}]}),
            "CONFLICT",
        )
        .await;
        // Another user's overlay is not alice's to edit.
        rpc.err(
            "edit_content",
            json!({"book_id": BOOK, "path": LESSON, "user_id": "bob", "expected_hash": base,
                   "edits": [{"old_text": "Loops", "new_text": "x"}]}),
            "FORBIDDEN",
        )
        .await;
    }
}

#[tokio::test]
async fn move_content_renames_atomically_and_history_follows() {
    for db in databases().await {
        let server = start(db).await;
        let rpc = Rpc::new(&server, Some("alice"), "read write admin");
        let h1 = create(&rpc, LESSON, "v1\n").await;
        let w = rpc
            .ok(
                "write_content",
                json!({"book_id": BOOK, "path": LESSON, "content": "v2\n", "expected_hash": h1}),
            )
            .await;
        let h2 = w["file_hash"].as_str().unwrap().to_string();

        // A stale hash and an existing target are refused; nothing moves.
        let other = create(&rpc, "content/01-Part/01-Chapter/03-other.md", "o\n").await;
        rpc.err(
            "move_content",
            json!({"book_id": BOOK, "from_path": LESSON, "to_path": RENAMED, "expected_hash": h1}),
            "CONFLICT",
        )
        .await;
        let err = rpc
            .err(
                "move_content",
                json!({"book_id": BOOK, "from_path": LESSON,
                       "to_path": "content/01-Part/01-Chapter/03-other.md", "expected_hash": h2}),
                "ALREADY_EXISTS",
            )
            .await;
        assert_eq!(err["current_hash"], json!(other));
        assert_eq!(
            read(&rpc, json!({"book_id": BOOK, "path": LESSON})).await["file_hash_sha256"],
            json!(h2)
        );
        // A target outside the book's schema is refused.
        rpc.err(
            "move_content",
            json!({"book_id": BOOK, "from_path": LESSON, "to_path": "content/not-a-lesson.md",
                   "expected_hash": h2}),
            "SCHEMA_VIOLATION",
        )
        .await;

        let m = rpc
            .ok(
                "move_content",
                json!({"book_id": BOOK, "from_path": LESSON, "to_path": RENAMED, "expected_hash": h2}),
            )
            .await;
        assert_eq!(m["file_hash"], json!(h2), "{m}");
        assert_eq!(m["version"], json!(3));
        rpc.err(
            "read_content",
            json!({"book_id": BOOK, "path": LESSON}),
            "NOT_FOUND",
        )
        .await;
        let r = read(&rpc, json!({"book_id": BOOK, "path": RENAMED})).await;
        assert_eq!(r["content"], "v2\n");
        // History is under the new path: the move, then both writes.
        let v = versions(&rpc, RENAMED).await;
        let ops: Vec<(&str, &str)> = v
            .iter()
            .map(|x| {
                (
                    x["operation"].as_str().unwrap(),
                    x["sha256"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            ops,
            vec![
                ("move_content", h2.as_str()),
                ("write_content", h2.as_str()),
                ("write_content", h1.as_str())
            ]
        );
        // …and the first version still reads there.
        let old = read(
            &rpc,
            json!({"book_id": BOOK, "path": RENAMED, "version": h1}),
        )
        .await;
        assert_eq!(old["content"], "v1\n");
        // The old path is free again; the tree lists the new path only.
        let tree = rpc
            .ok(
                "glob_search",
                json!({"book_id": BOOK, "pattern": "content/**/*.md"}),
            )
            .await
            .to_string();
        assert!(tree.contains(RENAMED) && !tree.contains(LESSON), "{tree}");
        // Both per-file audit chains hold.
        let chain = rpc.ok("verify_audit_chain", json!({})).await;
        assert_eq!(chain["valid"], json!(true), "{chain}");
        let audit = rpc
            .ok(
                "query_audit_log",
                json!({"book_id": BOOK, "operation": "move_content"}),
            )
            .await
            .to_string();
        assert!(audit.contains(RENAMED) && audit.contains(LESSON), "{audit}");
        // Moving a file that is not there.
        rpc.err(
            "move_content",
            json!({"book_id": BOOK, "from_path": LESSON, "to_path": RENAMED, "expected_hash": h2}),
            "NOT_FOUND",
        )
        .await;
    }
}

#[tokio::test]
async fn list_versions_pages_newest_first_and_read_content_reads_any_version() {
    for db in databases().await {
        let server = start(db).await;
        let rpc = Rpc::new(&server, Some("alice"), "read write");
        let mut hashes = vec![create(&rpc, LESSON, "text 0\n").await];
        for i in 1..5 {
            let w = rpc
                .ok(
                    "write_content",
                    json!({"book_id": BOOK, "path": LESSON, "content": format!("text {i}\n"),
                           "expected_hash": hashes.last().unwrap()}),
                )
                .await;
            hashes.push(w["file_hash"].as_str().unwrap().to_string());
        }
        let p1 = rpc
            .ok(
                "list_versions",
                json!({"book_id": BOOK, "path": LESSON, "limit": 2}),
            )
            .await;
        assert_eq!(p1["current_hash"], json!(hashes[4]));
        let shas = |p: &Value| -> Vec<String> {
            p["versions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["sha256"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(shas(&p1), vec![hashes[4].clone(), hashes[3].clone()]);
        assert_eq!(p1["versions"][0]["agent_id"], "alice");
        let p2 = rpc
            .ok(
                "list_versions",
                json!({"book_id": BOOK, "path": LESSON, "limit": 2, "cursor": p1["next_cursor"]}),
            )
            .await;
        assert_eq!(shas(&p2), vec![hashes[2].clone(), hashes[1].clone()]);
        let p3 = rpc
            .ok(
                "list_versions",
                json!({"book_id": BOOK, "path": LESSON, "limit": 2, "cursor": p2["next_cursor"]}),
            )
            .await;
        assert_eq!(shas(&p3), vec![hashes[0].clone()]);
        assert!(p3.get("next_cursor").is_none(), "{p3}");

        let v1 = read(
            &rpc,
            json!({"book_id": BOOK, "path": LESSON, "version": hashes[1]}),
        )
        .await;
        assert_eq!(v1["content"], "text 1\n");
        assert_eq!(v1["version"], json!(2));
        assert_eq!(v1["is_current"], json!(false));
        let now = read(
            &rpc,
            json!({"book_id": BOOK, "path": LESSON, "version": hashes[4]}),
        )
        .await;
        assert_eq!(now["is_current"], json!(true));

        // A hash that is not a version of this file reads nothing, even if it is another file's.
        let other = create(&rpc, "content/01-Part/01-Chapter/03-other.md", "secret\n").await;
        rpc.err(
            "read_content",
            json!({"book_id": BOOK, "path": LESSON, "version": other}),
            "NOT_FOUND",
        )
        .await;
        rpc.err(
            "list_versions",
            json!({"book_id": BOOK, "path": LESSON, "cursor": "not-a-cursor"}),
            "INVALID_INPUT",
        )
        .await;
        rpc.err(
            "list_versions",
            json!({"book_id": "no-such-book", "path": LESSON}),
            "NOT_FOUND",
        )
        .await;
        rpc.err(
            "list_versions",
            json!({"book_id": BOOK, "path": "content/01-Part/01-Chapter/09-none.md"}),
            "NOT_FOUND",
        )
        .await;
    }
}

#[tokio::test]
async fn a_conflict_on_write_carries_the_diff_from_the_expected_version() {
    for db in databases().await {
        let server = start(db).await;
        let rpc = Rpc::new(&server, Some("alice"), "read write");
        let h1 = create(&rpc, LESSON, "alpha\nbeta\ngamma\n").await;
        rpc.ok(
            "write_content",
            json!({"book_id": BOOK, "path": LESSON, "content": "alpha\nBETA\ngamma\n",
                   "expected_hash": h1}),
        )
        .await;
        let err = rpc
            .err(
                "write_content",
                json!({"book_id": BOOK, "path": LESSON, "content": "mine\n", "expected_hash": h1}),
                "CONFLICT",
            )
            .await;
        let diff = err["diff"].as_str().expect("diff");
        assert!(diff.contains("-beta\n+BETA\n"), "{diff}");
        // An expected hash that never was this file's: no diff, still the current hash.
        let stranger = "0".repeat(64);
        let err = rpc
            .err(
                "write_content",
                json!({"book_id": BOOK, "path": LESSON, "content": "x\n",
                       "expected_hash": stranger}),
                "CONFLICT",
            )
            .await;
        assert!(err.get("diff").is_none(), "{err}");
        assert!(err["current_hash"].is_string());
    }
}

#[tokio::test]
async fn an_overlay_read_says_when_its_base_changed_since_it_was_written() {
    for db in databases().await {
        let server = start(db).await;
        let rpc = Rpc::new(&server, Some("alice"), "read write");
        let b1 = create(&rpc, LESSON, "base v1\n").await;
        let o1 = rpc
            .ok(
                "write_content",
                json!({"book_id": BOOK, "path": LESSON, "user_id": "alice",
                       "content": "alice's v1\n"}),
            )
            .await["file_hash"]
            .as_str()
            .unwrap()
            .to_string();
        let r = read(
            &rpc,
            json!({"book_id": BOOK, "path": LESSON, "user_id": "alice"}),
        )
        .await;
        assert_eq!(r["base_changed"], json!(false), "{r}");
        assert_eq!(r["base_hash_then"], json!(b1));

        let b2 = rpc
            .ok(
                "write_content",
                json!({"book_id": BOOK, "path": LESSON, "content": "base v2\n",
                       "expected_hash": b1}),
            )
            .await["file_hash"]
            .as_str()
            .unwrap()
            .to_string();
        let r = read(
            &rpc,
            json!({"book_id": BOOK, "path": LESSON, "user_id": "alice"}),
        )
        .await;
        assert_eq!(r["source"], "overlay");
        assert_eq!(r["base_changed"], json!(true), "{r}");
        assert_eq!(r["base_hash_then"], json!(b1));
        assert_eq!(r["base_hash_now"], json!(b2));

        // Refreshing the overlay records the base it was made from.
        rpc.ok(
            "write_content",
            json!({"book_id": BOOK, "path": LESSON, "user_id": "alice",
                   "content": "alice's v2\n", "expected_hash": o1}),
        )
        .await;
        let r = read(
            &rpc,
            json!({"book_id": BOOK, "path": LESSON, "user_id": "alice"}),
        )
        .await;
        assert_eq!(r["base_changed"], json!(false), "{r}");
        assert_eq!(r["base_hash_then"], json!(b2));
        // Base reads carry no drift fields.
        let r = read(&rpc, json!({"book_id": BOOK, "path": LESSON})).await;
        assert!(r.get("base_changed").is_none(), "{r}");
    }
}
