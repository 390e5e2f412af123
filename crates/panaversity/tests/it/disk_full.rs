//! A full disk, for real: the data directory on a small tmpfs that a filler file fills to ENOSPC.
//! Writes and deletes fail with a retryable error while the disk is full; once space is freed,
//! deletes, writes and failure audit rows work again in the same process (no restart), and the
//! audit chain verifies.
//!
//! Needs root (mount). Skipped without it unless `REQUIRE_SERVICES=1` (CI), where it fails.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;

use serde_json::{Value, json};

use crate::support::{Server, ServerOpts, cli};

const BOOK: &str = "full-book";

fn lesson_path(i: usize) -> String {
    format!("content/01-Disk/01-Full/{i:02}-lesson.md")
}

/// A tmpfs of `size`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = StdCommand::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = StdCommand::new("umount").arg("-l").arg(&self.0).output();
    }
}

/// Fill the filesystem holding `file` until ENOSPC.
fn fill(file: &Path) {
    let mut f = std::fs::File::create(file).expect("filler");
    let chunk = vec![0x5au8; 64 * 1024];
    loop {
        if f.write_all(&chunk).is_err() {
            break;
        }
    }
    let _ = f.sync_all();
}

fn text(i: usize, rev: usize) -> String {
    let mut s = format!("# Lesson {i}\n\nRevision {rev}.\n\n");
    for k in 0..(400 + 37 * rev) {
        s.push_str(["alpha ", "beta ", "gamma ", "delta ", "epsilon\n"][(k + i) % 5]);
    }
    s
}

async fn error_code(mcp: &crate::support::Mcp, tool: &str, args: Value) -> Option<String> {
    let r = mcp.call(tool, args).await;
    if r["isError"] != json!(true) {
        return None;
    }
    let body: Value = r["content"][0]["text"]
        .as_str()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default();
    Some(body["error"]["code"].as_str().unwrap_or("?").to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_full_disk_deletes_writes_and_audit_rows_work_again_without_a_restart() {
    let scratch = tempfile::tempdir().expect("tempdir");
    // The tmpfs is the data directory itself, so the server's log (in its parent) stays readable.
    let fs = match Tmpfs::mount(&scratch.path().join("data"), "24m") {
        Ok(m) => m,
        Err(e) => {
            if std::env::var("REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
                panic!("REQUIRE_SERVICES=1 but mounting a tmpfs failed: {e}");
            }
            eprintln!("skipped: cannot mount a tmpfs here ({e})");
            return;
        }
    };
    let data = fs.0.clone();
    let server = Server::start(
        &data,
        ServerOpts::dev().env("PANAVERSITY_NO_SAMPLE", "true"),
    )
    .await;
    let mcp = server.mcp(&[("x-agent-id", "agent-disk")]);
    let mut hashes = Vec::new();
    for i in 0..6 {
        let w = mcp
            .ok(
                "write_content",
                json!({"book_id": BOOK, "path": lesson_path(i), "content": text(i, 0)}),
            )
            .await;
        hashes.push(w["file_hash"].as_str().unwrap_or_default().to_string());
    }

    let filler = fs.0.join("filler");
    fill(&filler);
    let mut refused = 0;
    for round in 0..12 {
        let i = round % 6;
        // New lessons, updates, deletes: each fails cleanly (or, while a little space is left,
        // succeeds); none may take the server down or leave it stuck.
        let create = error_code(
            &mcp,
            "write_content",
            json!({"book_id": BOOK, "path": lesson_path(10 + round), "content": text(10 + round, 3)}),
        )
        .await;
        let delete = error_code(
            &mcp,
            "delete_content",
            json!({"book_id": BOOK, "path": lesson_path(i)}),
        )
        .await;
        for code in [&create, &delete].into_iter().flatten() {
            assert!(
                code == "STORAGE_UNAVAILABLE" || code == "NOT_FOUND",
                "round {round}: a full disk must be a retryable error, got {code}"
            );
            refused += 1;
        }
    }
    assert!(refused > 0, "the full disk refused nothing");

    std::fs::remove_file(&filler).expect("free the space");
    // Without a restart: a delete, a write, and a failure audit row (a stale hash) all work.
    let alive: Vec<usize> = {
        let mut v = Vec::new();
        for i in 0..6 {
            let r = mcp
                .call(
                    "read_content",
                    json!({"book_id": BOOK, "path": lesson_path(i)}),
                )
                .await;
            if r["isError"] == json!(false) {
                v.push(i);
            }
        }
        v
    };
    for _ in 0..5 {
        mcp.ok(
            "write_content",
            json!({"book_id": BOOK, "path": lesson_path(40), "content": text(40, 1)}),
        )
        .await;
        mcp.ok(
            "delete_content",
            json!({"book_id": BOOK, "path": lesson_path(40)}),
        )
        .await;
    }
    if let Some(&i) = alive.first() {
        mcp.ok(
            "delete_content",
            json!({"book_id": BOOK, "path": lesson_path(i)}),
        )
        .await;
    }
    let stale = "0".repeat(64);
    let target = alive.get(1).copied().unwrap_or(41);
    let code = error_code(
        &mcp,
        "write_content",
        json!({"book_id": BOOK, "path": lesson_path(target), "content": "x", "expected_hash": stale}),
    )
    .await;
    assert!(code.is_some(), "a stale hash is refused");
    let page = mcp
        .ok(
            "query_audit_log",
            json!({"book_id": BOOK, "path_pattern": lesson_path(target), "limit": 5}),
        )
        .await;
    let newest = &page["rows"][0];
    assert_ne!(
        newest["status"],
        json!("success"),
        "the refused write is audited after the disk was freed: {page}"
    );
    server.stop().await;
    let verify = cli(&data, &[], &["fs", "audit", "verify", "--json"]).await;
    assert_eq!(verify.code(), 0, "audit chain: {verify:?}");
    let fsck = cli(&data, &[], &["fs", "fsck", "--json"]).await;
    assert_eq!(fsck.code(), 0, "fsck after the full disk: {fsck:?}");
    drop(fs);
}
