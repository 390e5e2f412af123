//! Fault injection: storage failing on demand (including "succeeded but reported failure"),
//! commits failing, and crashes right after commit. Afterwards fsck must find only repairable
//! drift, repair it, and leave journal = storage with no orphaned bytes at canonical paths.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use pfs::engine::{EngineConfig, Faults};
use pfs::storage::{FaultPlan, Storage, StorageConfig};
use pfs::{Namespace, Profile};
use platform::db::TestDb;
use sqlx::Row;

use crate::support::*;

const PATHS: [&str; 6] = [
    "content/01-a/01-b/01-one.md",
    "content/01-a/01-b/02-two.md",
    "content/01-a/02-c/01-three.md",
    "content/02-x/01-y/01-four.md",
    "static/images/logo.png",
    "static/slides/deck.pdf",
];

async fn random_ops(e: pfs::Engine, task: usize, n: usize) -> (usize, usize) {
    let a = actor(&format!("fault-agent-{task}"));
    let bk = book("fault-book");
    let (mut ok, mut failed) = (0, 0);
    for i in 0..n {
        let p = path(PATHS[rand::random_range(0..PATHS.len())]);
        let ns = if p.area() == pfs::Area::Content && rand::random_bool(0.3) {
            overlay(["u1", "u2"][rand::random_range(0..2)])
        } else {
            Namespace::Base
        };
        let body = Bytes::from(format!("task {task} op {i} {}", rand::random::<u32>()));
        let res = match rand::random_range(0..10) {
            0..=1 => e.delete(&a, &bk, &p, &ns).await.map(|_| ()),
            _ if p.area() == pfs::Area::Static => e.put_asset(&a, &bk, &p, body).await.map(|_| ()),
            _ => {
                // The hash protocol with whatever the journal says now (may race: then CONFLICT).
                let cur = e.stat(&bk, &p, &ns).await;
                match cur {
                    Ok(cur) => e
                        .write(
                            &a,
                            &bk,
                            &p,
                            &ns,
                            body,
                            cur.as_ref().map(|c| c.sha256.as_str()),
                        )
                        .await
                        .map(|_| ()),
                    Err(err) => Err(err),
                }
            }
        };
        match res {
            Ok(()) => ok += 1,
            Err(_) => failed += 1,
        }
    }
    (ok, failed)
}

async fn fault_run(t: &TestDb, storage_cfg: StorageConfig) {
    let plan = FaultPlan::new();
    let faults = Faults::new();
    let storage = Storage::new(&storage_cfg)
        .unwrap()
        .with_faults(plan.clone());
    let engine = open(
        t,
        storage,
        EngineConfig {
            default_profile: Profile::Strict,
            faults: Some(faults.clone()),
            ..Default::default()
        },
    )
    .await;
    // A legacy object an older tool wrote without a journal row (must be quarantined).
    engine
        .storage()
        .put(
            "books/fault-book/content/README.md",
            Bytes::from_static(b"legacy"),
        )
        .await
        .unwrap();

    plan.set_failure_rate(0.10);
    plan.set_ambiguous(true);
    faults.set_commit_failure_rate(0.05);
    faults.set_crash_after_commit_rate(0.05);
    let mut handles = Vec::new();
    for task in 0..4 {
        handles.push(tokio::spawn(random_ops(engine.clone(), task, 260)));
    }
    let (mut ok, mut failed) = (0, 0);
    for h in handles {
        let (o, f) = h.await.unwrap();
        ok += o;
        failed += f;
    }
    plan.disable();
    faults.disable();
    assert!(ok + failed >= 1000);
    assert!(ok > 200, "too few successes: {ok}");
    assert!(
        plan.injected() > 50,
        "storage faults injected: {}",
        plan.injected()
    );
    let (commit_failures, crashes) = faults.injected();
    assert!(
        commit_failures > 5 && crashes > 5,
        "{commit_failures} {crashes}"
    );

    // Before repair: every canonical object either matches its journal row or is pending (so
    // fsck/reconcile fixes it); blobs named by the journal are always intact.
    let pending: HashSet<String> =
        sqlx::query("SELECT book_id, path, user_id FROM pending_materializations")
            .fetch_all(engine.db().pool())
            .await
            .unwrap()
            .iter()
            .map(|r| {
                let (b, p, u): (String, String, String) = (r.get(0), r.get(1), r.get(2));
                if u == "__base__" {
                    format!("books/{b}/{p}")
                } else {
                    format!("books/{b}/users/{u}/{p}")
                }
            })
            .collect();
    let before = engine.fsck(false).await.unwrap();
    assert_eq!(
        before.blobs_missing + before.blobs_corrupt + before.unrepairable,
        0,
        "{before:#?}"
    );
    for issue in &before.issues {
        let legacy = issue.key == "books/fault-book/content/README.md";
        assert!(
            pending.contains(&issue.key) || legacy,
            "drift at {} ({}) that is not pending materialization",
            issue.key,
            issue.kind
        );
    }
    // Reads agree with the journal even before repair.
    for e in engine
        .list(&book("fault-book"), pfs::ListView::Base, None)
        .await
        .unwrap()
    {
        let out = engine
            .read(&book("fault-book"), &path(&e.path), None)
            .await
            .unwrap();
        assert_eq!(sha(&out.bytes), e.sha256);
    }

    let repaired = engine.fsck(true).await.unwrap();
    assert!(repaired.clean(), "{repaired:#?}");
    assert_eq!(repaired.orphans, 1);
    assert!(repaired.quarantine_prefix.is_some());
    let after = engine.fsck(false).await.unwrap();
    assert!(after.issues.is_empty(), "{after:#?}");
    assert_eq!(engine.pending_count().await.unwrap(), 0);
    // The legacy bytes are kept in quarantine, out of books/.
    let q = format!(
        "{}/books/fault-book/content/README.md",
        repaired.quarantine_prefix.unwrap()
    );
    assert_eq!(
        engine.storage().get(&q).await.unwrap(),
        Bytes::from_static(b"legacy")
    );

    let chain = engine.audit().verify(None).await.unwrap();
    assert!(chain.valid, "{chain:#?}");
    // No committed version lost its bytes.
    let versions = sqlx::query("SELECT DISTINCT sha256 FROM file_versions")
        .fetch_all(engine.db().pool())
        .await
        .unwrap();
    for r in versions {
        let s: String = r.get(0);
        assert_eq!(sha(&engine.read_blob(&s).await.unwrap()), s);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_ops_with_storage_and_commit_faults_then_fsck() {
    init();
    for t in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        fault_run(
            &t,
            StorageConfig::Fs {
                root: dir.path().to_path_buf(),
            },
        )
        .await;
    }
}

#[tokio::test]
async fn crash_after_commit_is_completed_on_reopen() {
    init();
    for t in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let scfg = StorageConfig::Fs {
            root: dir.path().to_path_buf(),
        };
        let faults = Faults::new();
        let e1 = open(
            &t,
            Storage::new(&scfg).unwrap(),
            EngineConfig {
                faults: Some(faults.clone()),
                ..Default::default()
            },
        )
        .await;
        let a = actor("crash-agent");
        let bk = book("crash-book");
        let p = path("content/01-a/01-b/01-one.md");
        let w = e1
            .write(&a, &bk, &p, &Namespace::Base, b("v1"), None)
            .await
            .unwrap();
        // Let the confirmer finish with v1 first: confirming it after v2's commit would find the
        // newer ticket and (rightly) materialize v2, which this test wants to see left pending.
        e1.settle().await;
        faults.crash_next_after_commit(2);
        assert!(
            e1.write(&a, &bk, &p, &Namespace::Base, b("v2"), Some(&w.sha256))
                .await
                .is_err()
        );
        // Committed: the journal and reads say v2, the canonical object still holds v1.
        assert_eq!(e1.read(&bk, &p, None).await.unwrap().bytes, b("v2"));
        let key = "books/crash-book/content/01-a/01-b/01-one.md";
        assert_eq!(e1.storage().get(key).await.unwrap(), b("v1"));
        let p2 = path("content/01-a/01-b/02-two.md");
        e1.write(&a, &bk, &p2, &Namespace::Base, b("two"), None)
            .await
            .unwrap_err();
        assert!(
            e1.storage()
                .get_opt("books/crash-book/content/01-a/01-b/02-two.md")
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(e1.pending_count().await.unwrap(), 2);
        drop(e1);
        // A new process completes the pending materializations at open.
        let e2 = open(&t, Storage::new(&scfg).unwrap(), EngineConfig::default()).await;
        assert_eq!(e2.pending_count().await.unwrap(), 0);
        assert_eq!(e2.storage().get(key).await.unwrap(), b("v2"));
        assert_eq!(
            e2.storage()
                .get("books/crash-book/content/01-a/01-b/02-two.md")
                .await
                .unwrap(),
            b("two")
        );
        assert_journal_equals_storage(&e2).await;

        // A failed commit changes nothing: no journal row, no canonical object, no audit row.
        let before = e2.audit().verify(None).await.unwrap().rows_checked;
        let faults = Faults::new();
        let e3 = open(
            &t,
            Storage::new(&scfg).unwrap(),
            EngineConfig {
                faults: Some(faults.clone()),
                ..Default::default()
            },
        )
        .await;
        faults.fail_next_commits(1);
        let p3 = path("content/01-a/01-b/03-three.md");
        assert!(
            e3.write(&a, &bk, &p3, &Namespace::Base, b("three"), None)
                .await
                .is_err()
        );
        assert!(e3.stat(&bk, &p3, &Namespace::Base).await.unwrap().is_none());
        assert_eq!(e3.audit().verify(None).await.unwrap().rows_checked, before);
        assert_journal_equals_storage(&e3).await;
    }
}

#[tokio::test]
async fn storage_outage_fails_cleanly() {
    init();
    for t in TestDb::all().await {
        let plan = FaultPlan::new();
        let e = open(
            &t,
            Storage::new(&StorageConfig::Memory)
                .unwrap()
                .with_faults(plan.clone()),
            EngineConfig::default(),
        )
        .await;
        let a = actor("outage-agent");
        let bk = book("outage-book");
        let p = path("content/01-a/01-b/01-one.md");
        plan.fail_next(1);
        let err = e
            .write(&a, &bk, &p, &Namespace::Base, b("x"), None)
            .await
            .unwrap_err();
        assert_eq!(err.code(), pfs::ErrorCode::StorageUnavailable);
        assert!(e.stat(&bk, &p, &Namespace::Base).await.unwrap().is_none());
        // The failure is audited with the caller id and status error.
        let page = e
            .audit()
            .query(&pfs::audit::AuditQuery {
                status: Some("error".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.rows.len(), 1);
        assert_eq!(page.rows[0].agent_id, "outage-agent");
        assert!(
            page.rows[0]
                .error_message
                .as_deref()
                .unwrap_or("")
                .contains("storage unavailable")
        );
        e.write(&a, &bk, &p, &Namespace::Base, b("x"), None)
            .await
            .unwrap();
        let _ = Arc::clone(&plan);
    }
}

#[tokio::test]
async fn background_reconciler_finishes_after_a_storage_outage() {
    init();
    for t in TestDb::all().await {
        let plan = FaultPlan::new();
        let e = open(
            &t,
            Storage::new(&StorageConfig::Memory)
                .unwrap()
                .with_faults(plan.clone()),
            EngineConfig::default(),
        )
        .await;
        let a = actor("outage-agent");
        let bk = book("recon-book");
        let p = path("content/01-a/01-b/01-one.md");
        let w = e
            .write(&a, &bk, &p, &Namespace::Base, b("v1"), None)
            .await
            .unwrap();
        // v1 confirmed before the faults start (see `crash_after_commit_is_completed_on_reopen`).
        e.settle().await;
        // A failed blob put: nothing is committed.
        plan.fail_next(1);
        e.write(&a, &bk, &p, &Namespace::Base, b("v2"), Some(&w.sha256))
            .await
            .unwrap_err();
        assert_eq!(e.read(&bk, &p, None).await.unwrap().bytes, b("v1"));
        // Now make the materialization (a get+put on memory) fail after a good blob put.
        let v2 = b("v2");
        e.storage().put_blob(&sha(&v2), v2.clone()).await.unwrap();
        plan.set_failure_rate(1.0);
        let res = e
            .write(&a, &bk, &p, &Namespace::Base, v2.clone(), Some(&w.sha256))
            .await;
        plan.disable();
        // put_blob found the blob already stored (a stat, never faulted), the commit went
        // through, only the canonical copy failed.
        let o = res.unwrap();
        assert_eq!(o.version, 2);
        assert_eq!(e.pending_count().await.unwrap(), 1);
        assert_eq!(
            e.storage()
                .get("books/recon-book/content/01-a/01-b/01-one.md")
                .await
                .unwrap(),
            b("v1")
        );
        let h = e.spawn_reconciler(std::time::Duration::from_millis(20));
        for _ in 0..100 {
            if e.pending_count().await.unwrap() == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        h.abort();
        assert_eq!(e.pending_count().await.unwrap(), 0);
        assert_eq!(
            e.storage()
                .get("books/recon-book/content/01-a/01-b/01-one.md")
                .await
                .unwrap(),
            v2
        );
        assert_journal_equals_storage(&e).await;
    }
}

#[tokio::test]
async fn fsck_detects_and_repairs_each_kind_of_drift() {
    for t in engines_fs(EngineConfig::default()).await {
        let e = &t.engine;
        let a = actor("fsck-agent");
        let bk = book("fsck-book");
        let (p1, p2, p3) = (
            path("content/01-a/01-b/01-one.md"),
            path("content/01-a/01-b/02-two.md"),
            path("content/01-a/01-b/03-three.md"),
        );
        let s = e.storage();
        e.write(&a, &bk, &p1, &Namespace::Base, b("one"), None)
            .await
            .unwrap();
        e.write(&a, &bk, &p2, &Namespace::Base, b("two"), None)
            .await
            .unwrap();
        e.write(&a, &bk, &p3, &Namespace::Base, b("three"), None)
            .await
            .unwrap();
        let k = |p: &pfs::BookPath| format!("books/fsck-book/{p}");
        // Canonical object overwritten behind our back; blob of p2 lost; both copies of p3 lost.
        s.put(&k(&p1), b("tampered")).await.unwrap();
        s.delete(&pfs::storage::blob_key(&sha(b"two")))
            .await
            .unwrap();
        s.delete(&pfs::storage::blob_key(&sha(b"three")))
            .await
            .unwrap();
        s.delete(&k(&p3)).await.unwrap();
        s.put("books/fsck-book/users/eve/content/x.md", b("stray"))
            .await
            .unwrap();

        let rep = e.fsck(false).await.unwrap();
        assert_eq!(rep.journal_rows, 3);
        assert_eq!(rep.canonical_mismatch, 1);
        assert_eq!(rep.blobs_missing, 2);
        assert_eq!(rep.unrepairable, 1);
        assert_eq!(rep.orphans, 1);
        assert!(rep.issues.iter().all(|i| !i.repaired));
        // Nothing changed without repair.
        assert_eq!(s.get(&k(&p1)).await.unwrap(), b("tampered"));

        let rep = e.fsck(true).await.unwrap();
        assert_eq!(rep.repaired, 3, "{rep:#?}");
        assert!(!rep.clean());
        assert_eq!(s.get(&k(&p1)).await.unwrap(), b("one"));
        assert_eq!(e.read(&bk, &p2, None).await.unwrap().bytes, b("two"));
        assert!(
            s.get_opt("books/fsck-book/users/eve/content/x.md")
                .await
                .unwrap()
                .is_none()
        );
        // Only the unrepairable row remains; the report says which file to restore.
        let rep = e.fsck(false).await.unwrap();
        assert_eq!(
            (rep.blobs_missing, rep.unrepairable, rep.orphans),
            (1, 1, 0),
            "{rep:#?}"
        );
        assert!(
            rep.issues
                .iter()
                .all(|i| i.path.as_deref() == Some(p3.as_str()))
        );
        assert!(rep.issues.iter().any(|i| i.kind == "unrepairable"));
        serde_json::to_string(&rep).unwrap();
    }
}

async fn unsynced_blob_rows(e: &pfs::Engine) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM unsynced_blobs")
        .fetch_one(e.db().pool())
        .await
        .unwrap()
}

/// A power loss can lose or tear a blob written without fsync while the journal row naming it
/// survives: the blob's copy in `unsynced_blobs` (same transaction as the row) restores it when
/// the store is opened again, before anything reads it. SQLite file and PostgreSQL.
#[tokio::test]
async fn blobs_lost_before_their_sync_are_restored_at_open() {
    init();
    for t in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let scfg = StorageConfig::Fs {
            root: dir.path().to_path_buf(),
        };
        let never = EngineConfig {
            blob_sync_interval: std::time::Duration::from_secs(3600),
            ..Default::default()
        };
        let e1 = open(&t, Storage::new(&scfg).unwrap(), never.clone()).await;
        let (a, bk) = (actor("power-agent"), book("power-book"));
        let (p1, p2) = (
            path("content/01-a/01-b/01-one.md"),
            path("content/01-a/01-b/02-two.md"),
        );
        let w1 = e1
            .write(&a, &bk, &p1, &Namespace::Base, b("first lesson"), None)
            .await
            .unwrap();
        let w2 = e1
            .write(&a, &bk, &p2, &Namespace::Base, b("second lesson"), None)
            .await
            .unwrap();
        assert_eq!(
            unsynced_blob_rows(&e1).await,
            2,
            "{:?}: small blobs skip fsync",
            t.kind
        );
        drop(e1);
        // "Power loss": one blob never reached the disk, the other is torn (same size, zeros).
        let blob = |sha: &str| {
            dir.path()
                .join(format!("_pfs/blobs/sha256/{}/{}", &sha[..2], sha))
        };
        std::fs::remove_file(blob(&w1.sha256)).unwrap();
        std::fs::write(blob(&w2.sha256), vec![0u8; "second lesson".len()]).unwrap();

        let e2 = open(&t, Storage::new(&scfg).unwrap(), never).await;
        assert_eq!(
            e2.read(&bk, &p1, None).await.unwrap().bytes,
            b("first lesson"),
            "{:?}",
            t.kind
        );
        assert_eq!(
            e2.read(&bk, &p2, None).await.unwrap().bytes,
            b("second lesson"),
            "{:?}",
            t.kind
        );
        assert_eq!(std::fs::read(blob(&w2.sha256)).unwrap(), b"second lesson");
        assert_eq!(
            unsynced_blob_rows(&e2).await,
            0,
            "{:?}: flushed and forgotten at open",
            t.kind
        );
        assert_journal_equals_storage(&e2).await;
    }
}

/// The syncer flushes and forgets unsynced blobs one interval after the writes; with the
/// interval zero every blob is fsynced and none is kept. SQLite file and PostgreSQL.
#[tokio::test]
async fn unsynced_blobs_are_flushed_and_forgotten() {
    init();
    for t in TestDb::all().await {
        // One store for both engines: the second one's check covers the first one's book too.
        let dir = tempfile::tempdir().unwrap();
        for (interval_ms, bk) in [(20, "sync-book"), (0, "fsync-book")] {
            let e = open(
                &t,
                Storage::new(&StorageConfig::Fs {
                    root: dir.path().to_path_buf(),
                })
                .unwrap(),
                EngineConfig {
                    blob_sync_interval: std::time::Duration::from_millis(interval_ms),
                    ..Default::default()
                },
            )
            .await;
            let (a, bk) = (actor("sync-agent"), book(bk));
            for (i, p) in PATHS.iter().take(4).enumerate() {
                e.write(
                    &a,
                    &bk,
                    &path(p),
                    &Namespace::Base,
                    b(&format!("v{i}")),
                    None,
                )
                .await
                .unwrap();
            }
            if interval_ms == 0 {
                assert_eq!(unsynced_blob_rows(&e).await, 0, "{:?}", t.kind);
            }
            let mut left = unsynced_blob_rows(&e).await;
            for _ in 0..250 {
                if left == 0 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                left = unsynced_blob_rows(&e).await;
            }
            assert_eq!(left, 0, "{:?}", t.kind);
            assert_journal_equals_storage(&e).await;
        }
    }
}

/// Another process holding SQLite's write lock makes writes fail fast with the retryable
/// `STORAGE_UNAVAILABLE` (not `INTERNAL` after a long wait), and they work again once it lets go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_locked_by_another_process_is_storage_unavailable_then_recovers() {
    init();
    let t = TestDb::sqlite();
    let settings = platform::db::PoolSettings {
        busy_timeout: std::time::Duration::from_millis(300),
        ..Default::default()
    };
    let db = platform::db::Db::connect(&t.url, &settings)
        .await
        .expect("connect");
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage::new(&StorageConfig::Fs {
        root: dir.path().to_path_buf(),
    })
    .expect("fs storage");
    let e = pfs::Engine::open(db, storage, cfg(Profile::Strict))
        .await
        .expect("open");
    let (a, bk, p) = (
        actor("agent-lock"),
        book("locked-book"),
        path("content/01-Part/01-Chapter/01-lesson.md"),
    );
    let w = e
        .write(&a, &bk, &p, &Namespace::Base, b("# one\n"), None)
        .await
        .expect("first write");

    let file = platform::db::sqlite_read::sqlite_file_of(&t.url).expect("a SQLite file");
    let other = rusqlite::Connection::open(&file).expect("second connection");
    other
        .execute_batch("BEGIN EXCLUSIVE")
        .expect("the other process takes the write lock");
    let started = std::time::Instant::now();
    let err = e
        .write(&a, &bk, &p, &Namespace::Base, b("# two\n"), Some(&w.sha256))
        .await
        .expect_err("the database is locked");
    assert_eq!(err.code(), pfs::ErrorCode::StorageUnavailable, "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "waited {:?}",
        started.elapsed()
    );
    let err = e
        .delete(&a, &bk, &p, &Namespace::Base)
        .await
        .expect_err("the database is locked");
    assert_eq!(err.code(), pfs::ErrorCode::StorageUnavailable, "{err}");

    other.execute_batch("ROLLBACK").expect("release the lock");
    let w2 = e
        .write(&a, &bk, &p, &Namespace::Base, b("# two\n"), Some(&w.sha256))
        .await
        .expect("writes work again without a restart");
    assert_eq!(w2.sha256, sha(b"# two\n"));
    e.delete(&a, &bk, &p, &Namespace::Base)
        .await
        .expect("deletes work again");
    assert_journal_equals_storage(&e).await;
}
