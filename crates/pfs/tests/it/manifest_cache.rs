//! The cached base manifest (`Engine::base_manifest`): served from the cache while the book is
//! unchanged, and never stale, also when another engine (replica) on the same database writes.

use std::sync::Arc;

use pfs::Namespace;
use pfs::engine::ListView;
use pfs::storage::{Storage, StorageConfig};
use platform::db::TestDb;

use crate::support::*;

fn listed(entries: Vec<pfs::engine::JournalEntry>) -> Vec<(String, String)> {
    entries.into_iter().map(|e| (e.path, e.sha256)).collect()
}

#[tokio::test]
async fn base_manifest_is_cached_and_follows_writes_of_other_replicas() {
    init();
    for t in TestDb::all().await {
        let mem = || Storage::new(&StorageConfig::Memory).unwrap();
        let a = open(&t, mem(), cfg(pfs::Profile::Strict)).await;
        // A second engine with its own pool and cache: another replica on the same database.
        let b_eng = open(&t, mem(), cfg(pfs::Profile::Strict)).await;
        let who = actor("cache-agent");
        let bk = book("cache-book");
        let other = book("other-book");
        let p = |i: u32| path(&format!("content/01-a/01-b/0{i}-c.md"));

        let empty = a.base_manifest(&bk).await.unwrap();
        assert!(empty.entries.is_empty());
        assert_eq!(empty.manifest_hash, pfs::manifest::EMPTY_MANIFEST_HASH);

        let mut hashes = Vec::new();
        for i in 1..=3 {
            let w = a
                .write(
                    &who,
                    &bk,
                    &p(i),
                    &Namespace::Base,
                    b(&format!("v{i}")),
                    None,
                )
                .await
                .unwrap();
            hashes.push(w.sha256);
        }
        let m1 = a.base_manifest(&bk).await.unwrap();
        let expect = listed(a.list(&bk, ListView::Base, None).await.unwrap());
        assert_eq!(m1.entries, expect);
        assert_eq!(a.base_hashes(&bk).await.unwrap(), expect);
        assert_eq!(m1.manifest_hash, pfs::manifest::manifest_hash(&expect));
        // Unchanged: the same cached manifest.
        let again = a.base_manifest(&bk).await.unwrap();
        assert!(Arc::ptr_eq(&m1, &again), "{:?}", t.kind);

        // Changes that do not touch this book's base rows keep the cache.
        b_eng
            .write(&who, &bk, &p(1), &overlay("u1"), b("mine"), None)
            .await
            .unwrap();
        b_eng
            .write(&who, &other, &p(1), &Namespace::Base, b("x"), None)
            .await
            .unwrap();
        let err = b_eng
            .write(
                &who,
                &bk,
                &p(2),
                &Namespace::Base,
                b("lost"),
                Some(&sha(b"nope")),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), pfs::ErrorCode::Conflict);
        let same = a.base_manifest(&bk).await.unwrap();
        assert!(Arc::ptr_eq(&m1, &same), "{:?}", t.kind);

        // An update by the other replica is seen at once.
        b_eng
            .write(
                &who,
                &bk,
                &p(2),
                &Namespace::Base,
                b("v2b"),
                Some(&hashes[1]),
            )
            .await
            .unwrap();
        let m2 = a.base_manifest(&bk).await.unwrap();
        assert!(!Arc::ptr_eq(&m1, &m2));
        assert_eq!(m2.entries[1], (p(2).to_string(), sha(b"v2b")));
        assert_eq!(
            m2.entries,
            listed(a.list(&bk, ListView::Base, None).await.unwrap())
        );
        assert_ne!(m2.manifest_hash, m1.manifest_hash);

        // A delete and an asset upload by the other replica, too.
        b_eng
            .delete(&who, &bk, &p(3), &Namespace::Base)
            .await
            .unwrap();
        let m3 = a.base_manifest(&bk).await.unwrap();
        assert_eq!(m3.entries.len(), 2, "{:?}", t.kind);
        b_eng
            .put_asset(&who, &bk, &path("static/images/x.png"), b("png"))
            .await
            .unwrap();
        let m4 = a.base_manifest(&bk).await.unwrap();
        assert_eq!(
            m4.entries,
            listed(a.list(&bk, ListView::Base, None).await.unwrap())
        );
        assert_eq!(m4.entries.len(), 3);
        // Both replicas agree.
        let mb = b_eng.base_manifest(&bk).await.unwrap();
        assert_eq!(mb.entries, m4.entries);
        assert_eq!(mb.manifest_hash, m4.manifest_hash);

        // Snapshots are saved once per manifest and can be loaded back.
        a.save_base_manifest_snapshot(&bk, &m4).await.unwrap();
        a.save_base_manifest_snapshot(&bk, &m4).await.unwrap();
        let snap = a
            .load_manifest_snapshot(&bk, &m4.manifest_hash)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(snap, m4.entries);
    }
}

#[tokio::test]
async fn base_manifest_under_concurrent_writers_ends_current() {
    init();
    for t in TestDb::all().await {
        let mem = || Storage::new(&StorageConfig::Memory).unwrap();
        let a = open(&t, mem(), cfg(pfs::Profile::Strict)).await;
        let b_eng = open(&t, mem(), cfg(pfs::Profile::Strict)).await;
        let bk = book("busy-book");
        let mut tasks = Vec::new();
        for (n, eng) in [a.clone(), b_eng.clone()].into_iter().enumerate() {
            let bk = bk.clone();
            tasks.push(tokio::spawn(async move {
                let who = actor("w");
                for i in 0..20 {
                    let p = path(&format!("content/01-a/0{n}-b/{i:02}-c.md"));
                    eng.write(&who, &bk, &p, &Namespace::Base, b("x"), None)
                        .await
                        .unwrap();
                    // Interleave reads so the cache is filled while others commit.
                    let m = eng.base_manifest(&bk).await.unwrap();
                    assert!(m.entries.iter().any(|(q, _)| q == p.as_str()));
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        for eng in [&a, &b_eng] {
            let m = eng.base_manifest(&bk).await.unwrap();
            assert_eq!(m.entries.len(), 40, "{:?}", t.kind);
            assert_eq!(
                m.entries,
                listed(eng.list(&bk, ListView::Base, None).await.unwrap())
            );
        }
    }
}

/// Concurrent writers through one engine: on SQLite most materializations are confirmed while
/// another writer holds the write lock and their pending rows are deleted in deferred batches;
/// afterwards nothing is pending and storage matches the journal.
#[tokio::test]
async fn deferred_pending_cleanup_leaves_nothing_pending() {
    for t in engines_fs(cfg(pfs::Profile::Strict)).await {
        let e = &t.engine;
        let bk = book("queue-book");
        let mut tasks = Vec::new();
        for n in 0..16u32 {
            let e = e.clone();
            let bk = bk.clone();
            tasks.push(tokio::spawn(async move {
                let who = actor("q");
                let p = path(&format!("content/01-a/01-b/{n:02}-c.md"));
                let mut prev: Option<String> = None;
                for i in 0..15 {
                    let w = e
                        .write(
                            &who,
                            &bk,
                            &p,
                            &Namespace::Base,
                            b(&format!("{n}-{i}")),
                            prev.as_deref(),
                        )
                        .await
                        .unwrap();
                    prev = Some(w.sha256);
                }
            }));
        }
        for h in tasks {
            h.await.unwrap();
        }
        assert_eq!(e.pending_count().await.unwrap(), 0, "{:?}", t.kind);
        assert_journal_equals_storage(e).await;
        let m = e.base_manifest(&bk).await.unwrap();
        assert_eq!(m.entries.len(), 16);
    }
}
