//! Finding 9: the fs backend followed symlinks planted under `storage/books/` (writes landed
//! outside the store) and `fsck` called it consistent. Now every path through the store is
//! checked for links (and opened with `O_NOFOLLOW`): nothing outside the store is read or
//! written, and `fsck` reports each link as a `symlink` issue (`--repair` removes the link
//! itself, never its target).

use serde_json::{Value, json};

use crate::support::{BOOK, LESSON, Server, ServerOpts, TempData, cli};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_symlinks_are_refused_and_reported() {
    let tmp = TempData::new();
    let data = tmp.data();
    let server = Server::start(&data, ServerOpts::dev()).await;
    server.stop().await;

    let outside = tmp.dir.path().join("outside");
    std::fs::create_dir_all(outside.join("content")).unwrap();
    let victim = outside.join("victim.md");
    std::fs::write(&victim, "ORIGINAL").unwrap();
    std::fs::write(outside.join("content").join("x.md"), "elsewhere").unwrap();
    let storage = data.join("storage");
    // The canonical copy of a lesson replaced by a link to a file outside the store ...
    let canonical = storage.join("books").join(BOOK).join(LESSON);
    std::fs::remove_file(&canonical).unwrap();
    std::os::unix::fs::symlink(&victim, &canonical).unwrap();
    // ... and a whole "book" that is a link to a directory outside it.
    std::os::unix::fs::symlink(&outside, storage.join("books").join("linked-book")).unwrap();

    let out = cli(&data, &[], &["fs", "fsck", "--json"]).await;
    assert_ne!(
        out.code(),
        0,
        "fsck called the store consistent: {}",
        out.stdout
    );
    let report = out.json();
    assert_eq!(report["symlinks"], json!(2), "{report}");
    let links: Vec<&str> = report["issues"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "symlink")
        .filter_map(|i| i["key"].as_str())
        .collect();
    assert!(links.contains(&"books/linked-book"), "{links:?}");
    assert!(
        links.contains(&format!("books/{BOOK}/{LESSON}").as_str()),
        "{links:?}"
    );

    // A write through the server never touches the link's target.
    let server = Server::start(&data, ServerOpts::dev()).await;
    let mcp = server.mcp(&[("x-agent-id", "writer")]);
    let cur = mcp
        .ok("read_content", json!({"book_id": BOOK, "path": LESSON}))
        .await;
    let r = mcp
        .call(
            "write_content",
            json!({"book_id": BOOK, "path": LESSON, "content": "OVERWRITTEN",
                   "expected_hash": cur["file_hash_sha256"]}),
        )
        .await;
    println!("write through a planted link: {r}");
    let listed = mcp.ok("list_books", json!({})).await;
    let ids: Vec<&str> = listed["books"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["book_id"].as_str())
        .collect();
    assert!(!ids.contains(&"linked-book"), "{listed}");
    server.stop().await;
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "ORIGINAL");
    assert_eq!(
        std::fs::read_to_string(outside.join("content").join("x.md")).unwrap(),
        "elsewhere"
    );

    // Repair removes the links (targets untouched); a second repair re-materializes the lesson.
    let out = cli(&data, &[], &["fs", "fsck", "--repair", "--json"]).await;
    let report: Value = out.json();
    assert_eq!(report["symlinks"], json!(2), "{report}");
    assert!(victim.exists() && outside.join("content").join("x.md").exists());
    assert!(!storage.join("books").join("linked-book").exists());
    let _ = cli(&data, &[], &["fs", "fsck", "--repair", "--json"]).await;
    let out = cli(&data, &[], &["fs", "fsck", "--json"]).await;
    assert_eq!(out.code(), 0, "{}", out.stdout);
    assert_eq!(std::fs::read_to_string(&canonical).unwrap(), "OVERWRITTEN");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "ORIGINAL");
}
