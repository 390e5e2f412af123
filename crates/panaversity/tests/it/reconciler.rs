//! `serve` runs the reconciler: a canonical file the server could not update (here made
//! immutable with `chattr +i` on an ext4 image, so even root cannot write it) stays pending, and
//! once it is writable again the running server brings it up to date by itself, without a restart
//! or `fsck`. Needs root; skipped without it unless `REQUIRE_SERVICES=1` (CI).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::power_loss::{Mounted, can_mount_or_skip, new_image, sh};
use crate::support::{Server, ServerOpts, cli};

const BOOK: &str = "reconcile-book";
const LESSON: &str = "content/01-Part/01-Chapter/01-lesson.md";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reconciles_a_failed_materialization_without_a_restart() {
    let scratch = tempfile::tempdir().expect("tempdir");
    if !can_mount_or_skip(scratch.path()) {
        return;
    }
    let img = scratch.path().join("disk.img");
    new_image(&img).expect("image");
    let disk = Mounted::mount(&img, &scratch.path().join("disk")).expect("mount");
    let data = disk.dir.join("data");
    let server = Server::start(
        &data,
        ServerOpts::dev()
            .env("PANAVERSITY_NO_SAMPLE", "true")
            .env("PANAVERSITY_RECONCILE_INTERVAL_SECS", "1"),
    )
    .await;
    let mcp = server.mcp(&[("x-agent-id", "agent-r")]);
    let first = mcp
        .ok(
            "write_content",
            json!({"book_id": BOOK, "path": LESSON, "content": "# One\n"}),
        )
        .await;
    let canonical = data.join("storage/books").join(BOOK).join(LESSON);
    let canonical = if canonical.exists() {
        canonical
    } else {
        // Wherever the fs backend keeps books under the data directory.
        walk_find(&data, LESSON).expect("the canonical file of the lesson")
    };
    assert_eq!(
        std::fs::read_to_string(&canonical).expect("read"),
        "# One\n"
    );

    let c = canonical.to_string_lossy().to_string();
    sh(&["chattr", "+i", &c]).expect("make the canonical file immutable");
    let second = mcp
        .ok(
            "write_content",
            json!({"book_id": BOOK, "path": LESSON, "content": "# Two\n",
                   "expected_hash": first["file_hash"]}),
        )
        .await;
    // The journal (and every read) has the new version; the canonical file could not follow.
    let read = mcp
        .ok("read_content", json!({"book_id": BOOK, "path": LESSON}))
        .await;
    assert_eq!(read["file_hash_sha256"], second["file_hash"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        std::fs::read_to_string(&canonical).expect("read"),
        "# One\n"
    );

    sh(&["chattr", "-i", &c]).expect("writable again");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if std::fs::read_to_string(&canonical).ok().as_deref() == Some("# Two\n") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the running server never re-materialized the file:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.stop().await;
    let fsck = cli(&data, &[], &["fs", "fsck", "--json"]).await;
    assert_eq!(fsck.code(), 0, "fsck: {fsck:?}");
    drop(disk);
}

fn walk_find(dir: &std::path::Path, suffix: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let p = entry.path();
        if p.is_dir() {
            if let Some(f) = walk_find(&p, suffix) {
                return Some(f);
            }
        } else if p.to_string_lossy().ends_with(suffix) && !p.to_string_lossy().contains("_pfs") {
            return Some(p);
        }
    }
    None
}
