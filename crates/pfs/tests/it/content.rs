//! Content operations: the hash protocol, byte-exact storage, limits, overlays, deletes, schema
//! profiles, versions, listings and assets. The suite is a function so the S3 test reuses it.

use bytes::Bytes;
use pfs::engine::{AssetStatus, Engine, ListView, Source, WriteMode};
use pfs::{DirPrefix, ErrorCode, Namespace, Profile};

use crate::support::*;

const L1: &str = "content/01-intro/01-basics/01-hello.md";
const L2: &str = "content/01-intro/01-basics/02-world.md";
const L3: &str = "content/01-intro/02-more/01-deep.md";

/// Everything a content backend must do; `book_id` keeps runs on one engine apart.
pub async fn content_suite(engine: &Engine, book_id: &str) {
    let a = actor("agent-a");
    let bk = book(book_id);
    let p1 = path(L1);
    let base = Namespace::Base;

    // Create, then HASH_REQUIRED, CONFLICT (with current_hash), update, NOT_FOUND.
    let v1 = b("# Hello\n");
    let w = engine
        .write(&a, &bk, &p1, &base, v1.clone(), None)
        .await
        .unwrap();
    assert_eq!(w.mode, WriteMode::Created);
    assert_eq!(w.sha256, sha(&v1));
    assert_eq!(w.size, v1.len() as u64);
    assert_eq!(w.prev_hash, None);
    assert_eq!(w.version, 1);

    let e = engine
        .write(&a, &bk, &p1, &base, b("x"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::HashRequired);
    assert_eq!(e.to_json()["error"]["current_hash"], sha(&v1));

    let wrong = sha(b"something else");
    let e = engine
        .write(&a, &bk, &p1, &base, b("x"), Some(&wrong))
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Conflict);
    assert_eq!(e.to_json()["error"]["current_hash"], sha(&v1));

    let e = engine
        .write(&a, &bk, &p1, &base, b("x"), Some("nothex"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidInput);

    let v2 = b("# Hello again\n");
    let w2 = engine
        .write(&a, &bk, &p1, &base, v2.clone(), Some(&w.sha256))
        .await
        .unwrap();
    assert_eq!(w2.mode, WriteMode::Updated);
    assert_eq!(w2.prev_hash.as_deref(), Some(w.sha256.as_str()));
    assert_eq!(w2.version, 2);
    let r = engine.read(&bk, &p1, None).await.unwrap();
    assert_eq!(r.bytes, v2);
    assert_eq!(r.source, Source::Base);
    assert_eq!(r.entry.sha256, sha(&v2));
    assert_eq!(r.entry.version, 2);

    let p2 = path(L2);
    let e = engine
        .write(&a, &bk, &p2, &base, b("x"), Some(&w.sha256))
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    let e = engine.read(&bk, &p2, None).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);

    // Byte-exact round trip: leading/trailing whitespace and CRLF are kept.
    let exact = b("\n\n  ---\r\ntitle: x\r\n---\r\n\tbody  \r\n\n\n");
    engine
        .write(&a, &bk, &p2, &base, exact.clone(), None)
        .await
        .unwrap();
    let (text, entry, _) = engine.read_text(&bk, &p2, None).await.unwrap();
    assert_eq!(text.as_bytes(), &exact[..]);
    assert_eq!(entry.sha256, sha(&exact));
    assert_eq!(entry.size, exact.len() as u64);

    // Non-UTF-8 content and oversized content are rejected with clear codes.
    let p3 = path(L3);
    let e = engine
        .write(
            &a,
            &bk,
            &p3,
            &base,
            Bytes::from_static(&[0xff, 0xfe, 0x00]),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidInput);
    let limit = engine.config().limits.max_content_bytes as usize;
    let e = engine
        .write(
            &a,
            &bk,
            &p3,
            &base,
            Bytes::from(vec![b'a'; limit + 1]),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::PayloadTooLarge);
    assert!(engine.stat(&bk, &p3, &base).await.unwrap().is_none());

    // Overlays: read/write/delete never touch the base; other users never see them.
    let alice = overlay("alice");
    let mine = b("alice's notes\n");
    let ow = engine
        .write(&a, &bk, &p1, &alice, mine.clone(), None)
        .await
        .unwrap();
    assert_eq!(ow.mode, WriteMode::Created);
    let r = engine.read(&bk, &p1, Some(&user("alice"))).await.unwrap();
    assert_eq!((r.bytes.clone(), r.source), (mine.clone(), Source::Overlay));
    assert_eq!(r.entry.user_id, "alice");
    let r = engine.read(&bk, &p1, Some(&user("bob"))).await.unwrap();
    assert_eq!((r.bytes.clone(), r.source), (v2.clone(), Source::Base));
    let r = engine.read(&bk, &p1, None).await.unwrap();
    assert_eq!(r.bytes, v2);
    // Overlay of a file with no base copy.
    let ow3 = engine
        .write(&a, &bk, &p3, &alice, b("only alice"), None)
        .await
        .unwrap();
    assert_eq!(ow3.version, 1);
    assert_eq!(
        engine
            .read(&bk, &p3, Some(&user("bob")))
            .await
            .unwrap_err()
            .code(),
        ErrorCode::NotFound
    );
    assert_eq!(
        engine.read(&bk, &p3, None).await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    // Overlays hold content only.
    let e = engine
        .write(
            &a,
            &bk,
            &path("static/images/x.png"),
            &alice,
            b("png"),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidInput);

    // Listings.
    let base_list: Vec<String> = engine
        .list(&bk, ListView::Base, None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(base_list, vec![L1.to_string(), L2.to_string()]);
    let ov: Vec<(String, String)> = engine
        .list(&bk, ListView::Overlay(user("alice")), None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.path, e.user_id))
        .collect();
    assert_eq!(
        ov,
        vec![(L1.into(), "alice".into()), (L3.into(), "alice".into())]
    );
    assert!(
        engine
            .list(&bk, ListView::Overlay(user("bob")), None)
            .await
            .unwrap()
            .is_empty()
    );
    let merged: Vec<(String, String)> = engine
        .list(&bk, ListView::Merged(user("alice")), None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.path, e.user_id))
        .collect();
    assert_eq!(
        merged,
        vec![
            (L1.into(), "alice".into()),
            (L2.into(), "__base__".into()),
            (L3.into(), "alice".into())
        ]
    );
    let merged_bob: Vec<String> = engine
        .list(&bk, ListView::Merged(user("bob")), None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.user_id)
        .collect();
    assert_eq!(merged_bob, vec!["__base__", "__base__"]);
    let pre = DirPrefix::parse("content/01-intro/02-more").unwrap();
    let under: Vec<String> = engine
        .list(&bk, ListView::Merged(user("alice")), Some(&pre))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(under, vec![L3.to_string()]);
    let pre = DirPrefix::parse("content/01-intr").unwrap();
    assert!(
        engine
            .list(&bk, ListView::Base, Some(&pre))
            .await
            .unwrap()
            .is_empty()
    );

    // Overlay delete leaves the base alone; idempotent deletes.
    let d = engine.delete(&a, &bk, &p1, &alice).await.unwrap();
    assert!(d.existed);
    assert_eq!(d.prev_hash.as_deref(), Some(sha(&mine).as_str()));
    let r = engine.read(&bk, &p1, Some(&user("alice"))).await.unwrap();
    assert_eq!((r.bytes, r.source), (v2.clone(), Source::Base));
    let d = engine.delete(&a, &bk, &p1, &alice).await.unwrap();
    assert!(!d.existed);
    assert_eq!(d.prev_hash, None);

    let d = engine.delete(&a, &bk, &p2, &base).await.unwrap();
    assert!(d.existed);
    let d = engine.delete(&a, &bk, &p2, &base).await.unwrap();
    assert!(!d.existed);
    assert_eq!(
        engine.read(&bk, &p2, None).await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    // Re-create after delete continues the version history.
    let w = engine
        .write(&a, &bk, &p2, &base, b("again"), None)
        .await
        .unwrap();
    assert_eq!(w.mode, WriteMode::Created);
    assert_eq!(w.version, 2);

    // Earlier versions stay readable.
    let hist = engine.history(&bk, &p1, &base).await.unwrap();
    assert_eq!(
        hist.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(hist[0].sha256, sha(&v1));
    assert_eq!(hist[0].agent_id, "agent-a");
    assert_eq!(engine.read_version(&bk, &p1, &base, 1).await.unwrap(), v1);
    assert_eq!(engine.read_version(&bk, &p1, &base, 2).await.unwrap(), v2);
    assert_eq!(
        engine
            .read_version(&bk, &p1, &base, 9)
            .await
            .unwrap_err()
            .code(),
        ErrorCode::NotFound
    );

    // Assets: created, unchanged (no new version), updated.
    let img = path("static/images/diagram.png");
    let png = Bytes::from_static(&[0x89, b'P', b'N', b'G', 0, 1, 2, 0xff]);
    let o = engine.put_asset(&a, &bk, &img, png.clone()).await.unwrap();
    assert_eq!(o.status, AssetStatus::Created);
    let o = engine.put_asset(&a, &bk, &img, png.clone()).await.unwrap();
    assert_eq!(o.status, AssetStatus::Unchanged);
    assert_eq!(o.version, 1);
    let o = engine
        .put_asset(&a, &bk, &img, Bytes::from_static(b"v2"))
        .await
        .unwrap();
    assert_eq!((o.status, o.version), (AssetStatus::Updated, 2));
    assert_eq!(
        engine.read(&bk, &img, None).await.unwrap().bytes,
        Bytes::from_static(b"v2")
    );
    let d = engine.delete(&a, &bk, &img, &base).await.unwrap();
    assert!(d.existed);

    // Canonical objects are where the layout says, and match the journal.
    let canon = engine
        .storage()
        .get(&format!("books/{book_id}/{L1}"))
        .await
        .unwrap();
    assert_eq!(canon, v2);
    let canon = engine
        .storage()
        .get(&format!("books/{book_id}/users/alice/{L3}"))
        .await
        .unwrap();
    assert_eq!(canon, b("only alice"));
    assert!(
        engine
            .storage()
            .get_opt(&format!("books/{book_id}/users/alice/{L1}"))
            .await
            .unwrap()
            .is_none()
    );
    assert_journal_equals_storage(engine).await;

    // Every mutation was audited with the caller id, and the chains hold.
    let report = engine.audit().verify(None).await.unwrap();
    assert!(report.valid, "{report:#?}");
    let page = engine
        .audit()
        .query(&pfs::audit::AuditQuery {
            book_id: Some(book_id.into()),
            path_pattern: Some("content/01-intro/01-basics/01-*".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        page.rows
            .iter()
            .all(|r| r.agent_id == "agent-a" && r.path == L1)
    );
    let statuses: Vec<&str> = page.rows.iter().rev().map(|r| r.status.as_str()).collect();
    // create, HASH_REQUIRED, CONFLICT, invalid hash, update, overlay create, overlay delete x2.
    assert_eq!(
        statuses,
        vec![
            "success", "error", "conflict", "error", "success", "success", "success", "success"
        ]
    );
    let chain = engine
        .audit()
        .verify(Some((book_id, L1, "__base__")))
        .await
        .unwrap();
    assert!(chain.valid);
    assert_eq!(chain.rows_checked, 5);
}

#[tokio::test]
async fn content_operations_memory() {
    for t in engines_memory(cfg(Profile::Strict)).await {
        content_suite(&t.engine, "book-one").await;
    }
}

#[tokio::test]
async fn content_operations_fs() {
    for t in engines_fs(cfg(Profile::Strict)).await {
        content_suite(&t.engine, "book-fs").await;
    }
}

#[tokio::test]
async fn schema_profiles_per_book() {
    for t in engines_memory(cfg(Profile::Strict)).await {
        let e = &t.engine;
        let a = actor("agent-a");
        let readme = path("content/05-Part/17-Chapter/README.md");
        let quiz = path("content/05-Part/17-Chapter/06_chapter_06_quiz.md");
        let strict = book("strict-book");
        let err = e
            .write(&a, &strict, &readme, &Namespace::Base, b("# x"), None)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::SchemaViolation);
        assert_eq!(
            e.book(&strict).await.unwrap().unwrap().profile,
            Profile::Strict
        );
        // The violation was audited as an error.
        let page = e
            .audit()
            .query(&pfs::audit::AuditQuery {
                book_id: Some("strict-book".into()),
                status: Some("error".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.rows.len(), 1);

        let docs = book("docs-book");
        let info = e
            .ensure_book(&docs, Some(Profile::Docusaurus))
            .await
            .unwrap();
        assert_eq!(info.profile, Profile::Docusaurus);
        e.write(&a, &docs, &readme, &Namespace::Base, b("# x"), None)
            .await
            .unwrap();
        e.write(&a, &docs, &quiz, &Namespace::Base, b("# q"), None)
            .await
            .unwrap();
        let bad = path("content/05-Part/run.exe");
        assert_eq!(
            e.write(&a, &docs, &bad, &Namespace::Base, b("x"), None)
                .await
                .unwrap_err()
                .code(),
            ErrorCode::SchemaViolation
        );
        // Co-located binary files in a docs tree are stored as bytes.
        let img = path("content/05-Part/17-Chapter/img/diagram.png");
        let png = Bytes::from_static(&[0x89, b'P', b'N', b'G', 0xff, 0x00]);
        let o = e.put_asset(&a, &docs, &img, png.clone()).await.unwrap();
        assert_eq!(o.status, pfs::AssetStatus::Created);
        assert_eq!(e.read(&docs, &img, None).await.unwrap().bytes, png);
        assert_eq!(
            e.read_text(&docs, &img, None).await.unwrap_err().code(),
            ErrorCode::InvalidInput
        );
        // ... but not in a strict book, and text still goes through write.
        assert_eq!(
            e.put_asset(&a, &strict, &img, png.clone())
                .await
                .unwrap_err()
                .code(),
            ErrorCode::SchemaViolation
        );
        assert_eq!(
            e.put_asset(&a, &docs, &readme, b("# x"))
                .await
                .unwrap_err()
                .code(),
            ErrorCode::InvalidPath
        );
        // Switching the strict book to docusaurus admits the file.
        e.set_profile(&strict, Profile::Docusaurus).await.unwrap();
        e.write(&a, &strict, &readme, &Namespace::Base, b("# x"), None)
            .await
            .unwrap();
        let books: Vec<String> = e
            .list_books()
            .await
            .unwrap()
            .into_iter()
            .map(|b| b.book_id)
            .collect();
        assert_eq!(books, vec!["docs-book", "strict-book"]);
    }
}

#[tokio::test]
async fn size_limits_are_configurable() {
    let mut c = cfg(Profile::Strict);
    c.limits.max_content_bytes = 10;
    c.limits.max_asset_bytes = 20;
    for t in engines_memory(c).await {
        let e = &t.engine;
        let a = actor("agent-a");
        let bk = book("small-book");
        e.write(&a, &bk, &path(L1), &Namespace::Base, b("0123456789"), None)
            .await
            .unwrap();
        let err = e
            .write(&a, &bk, &path(L2), &Namespace::Base, b("0123456789A"), None)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::PayloadTooLarge);
        assert_eq!(err.to_json()["error"]["limit"], 10);
        let img = path("static/images/a.png");
        e.put_asset(&a, &bk, &img, Bytes::from(vec![1u8; 20]))
            .await
            .unwrap();
        let err = e
            .put_asset(&a, &bk, &img, Bytes::from(vec![1u8; 21]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::PayloadTooLarge);
    }
}

#[tokio::test]
async fn manifest_snapshots_round_trip() {
    for t in engines_memory(cfg(Profile::Strict)).await {
        let e = &t.engine;
        let bk = book("snap-book");
        let entries = vec![
            ("content/b.md".to_string(), sha(b"b")),
            ("content/a.md".to_string(), sha(b"a")),
        ];
        assert!(e.load_manifest_snapshot(&bk, "h1").await.unwrap().is_none());
        // Concurrent saves of the same snapshot all succeed.
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let e = e.clone();
            let bk = bk.clone();
            let entries = entries.clone();
            tasks.push(tokio::spawn(async move {
                e.save_manifest_snapshot(&bk, "h1", &entries).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let mut sorted = entries.clone();
        sorted.sort();
        assert_eq!(
            e.load_manifest_snapshot(&bk, "h1").await.unwrap(),
            Some(sorted)
        );
        // Snapshots are scoped to the book.
        assert!(
            e.load_manifest_snapshot(&book("other-book"), "h1")
                .await
                .unwrap()
                .is_none()
        );
    }
}

#[tokio::test]
async fn blobs_stream_with_bounded_reads() {
    use futures::AsyncReadExt;
    for t in engines_fs(cfg(Profile::Strict)).await {
        let e = &t.engine;
        let a = actor("agent-a");
        let bk = book("blob-book");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let o = e
            .put_asset(
                &a,
                &bk,
                &path("static/videos/clip.mp4"),
                Bytes::from(data.clone()),
            )
            .await
            .unwrap();
        let mut r = e.open_blob(&o.sha256).await.unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, data);
        assert_eq!(e.read_blob(&o.sha256).await.unwrap().len(), data.len());
        assert_eq!(
            e.open_blob("../../etc").await.err().map(|e| e.code()),
            Some(ErrorCode::InvalidInput)
        );
    }
}

/// Small blobs are kept in memory from the write on: with the cache, a read is served even when
/// the blob's object is gone from storage (content-addressed bytes cannot change); without it
/// (`blob_cache_bytes: 0`), the same read goes to storage and reports the missing blob. A new
/// version is a new sha256, so the cache never returns the old bytes.
#[tokio::test]
async fn small_blobs_are_served_from_memory_after_a_write() {
    for cache in [pfs::engine::DEFAULT_BLOB_CACHE_BYTES, 0] {
        let cfg = pfs::engine::EngineConfig {
            blob_cache_bytes: cache,
            ..Default::default()
        };
        for te in engines_memory(cfg).await {
            let e = &te.engine;
            let (a, bk, p) = (actor("cache-agent"), book("cache-book"), path(L1));
            let v1 = e
                .write(&a, &bk, &p, &Namespace::Base, b("version one"), None)
                .await
                .unwrap();
            e.storage()
                .delete(&pfs::storage::blob_key(&v1.sha256))
                .await
                .unwrap();
            let read = e.read(&bk, &p, None).await;
            if cache > 0 {
                assert_eq!(read.unwrap().bytes, b("version one"), "{:?}", te.kind);
            } else {
                assert_eq!(
                    read.unwrap_err().code(),
                    ErrorCode::Internal,
                    "{:?}",
                    te.kind
                );
            }
            let v2 = e
                .write(
                    &a,
                    &bk,
                    &p,
                    &Namespace::Base,
                    b("version two"),
                    Some(&v1.sha256),
                )
                .await
                .unwrap();
            assert_ne!(v2.sha256, v1.sha256);
            assert_eq!(e.read(&bk, &p, None).await.unwrap().bytes, b("version two"));
        }
    }
}

/// Bytes equal to the current version are a no-op however they arrive (expected hash current,
/// absent, or stale): mode `unchanged`, the same version, no version row, no audit row. On every
/// commit path (SQLite local and grouped, PostgreSQL's one-statement path once the profile is
/// remembered), for content and assets.
#[tokio::test]
async fn identical_bytes_are_no_ops() {
    for t in engines_fs(cfg(Profile::Strict)).await {
        let e = &t.engine;
        let a = actor("legacy-client");
        let bk = book("same-bytes");
        let base = Namespace::Base;
        let audit_rows = || async {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM audit_log")
                .fetch_one(e.db().pool())
                .await
                .unwrap()
        };
        for (p, bytes) in [
            (L1, b("# Same\n")),
            ("static/images/same.png", b("\u{89}PNG")),
        ] {
            let p = path(p);
            let first = e
                .write(&a, &bk, &p, &base, bytes.clone(), None)
                .await
                .unwrap();
            assert_eq!(first.mode, WriteMode::Created);
            let stale = sha(b"an older version");
            let rows = audit_rows().await;
            for expected in [Some(first.sha256.as_str()), None, Some(stale.as_str())] {
                let again = e
                    .write(&a, &bk, &p, &base, bytes.clone(), expected)
                    .await
                    .unwrap_or_else(|err| panic!("{:?} {expected:?}: {err}", t.kind));
                assert_eq!(
                    again.mode,
                    WriteMode::Unchanged,
                    "{:?} {expected:?}",
                    t.kind
                );
                assert_eq!(again.sha256, first.sha256);
                assert_eq!(again.version, first.version);
                assert_eq!(again.prev_hash.as_deref(), Some(first.sha256.as_str()));
            }
            assert_eq!(audit_rows().await, rows, "{:?}: no audit row", t.kind);
            assert_eq!(e.versions(&bk, &p, &base, 10, None).await.unwrap().len(), 1);
            // A different write still creates a version and still needs the current hash.
            let err = e.write(&a, &bk, &p, &base, b("# Other\n"), None).await;
            assert_eq!(err.unwrap_err().code(), ErrorCode::HashRequired);
            let next = e
                .write(&a, &bk, &p, &base, b("# Other\n"), Some(&first.sha256))
                .await
                .unwrap();
            assert_eq!(next.mode, WriteMode::Updated);
            assert_eq!(next.version, first.version + 1);
        }
    }
}
