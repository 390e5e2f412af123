//! Concurrency: many writers, one file, several engine instances (separate pools, as separate
//! server replicas would have) on one database and one storage root.

use bytes::Bytes;
use pfs::engine::{Engine, EngineConfig, WriteMode};
use pfs::storage::{Storage, StorageConfig};
use pfs::{ErrorCode, Namespace};
use platform::db::TestDb;

use crate::support::*;

/// Once every replica's queued confirmations are done (a replica whose copy landed after a later
/// commit's materialization repairs it when it confirms, see `pfs::confirm`), journal and storage
/// agree.
async fn assert_replicas_settle(engines: &[Engine]) {
    for e in engines {
        e.settle().await;
    }
    assert_journal_equals_storage(&engines[engines.len() - 1]).await;
}

/// The file's audit chain verifies and [`assert_replicas_settle`].
async fn assert_chain_and_storage(engines: &[Engine], book: &str, path: &str) {
    let chain = engines[0]
        .audit()
        .verify(Some((book, path, "__base__")))
        .await
        .unwrap();
    assert!(chain.valid, "{:#?}", chain.breaks);
    assert_replicas_settle(engines).await;
}

/// `n` engines opened at the same time (as replicas starting together would: concurrent
/// migrations), each with its own pool and storage handle on one database and one storage root.
async fn replicas(t: &TestDb, root: &std::path::Path, n: usize) -> Vec<Engine> {
    let opens = (0..n).map(|_| async {
        let storage = Storage::new(&StorageConfig::Fs {
            root: root.to_path_buf(),
        })
        .unwrap();
        open(t, storage, EngineConfig::default()).await
    });
    futures::future::join_all(opens).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_writers_three_replicas_no_lost_updates() {
    init();
    const TASKS: usize = 16;
    const UPDATES: usize = 50;
    for t in TestDb::all().await {
        let started = std::time::Instant::now();
        let dir = tempfile::tempdir().unwrap();
        let engines = replicas(&t, dir.path(), 3).await;
        let bk = book("race-book");
        let p = path("content/01-a/01-b/01-hot.md");
        let first = engines[0]
            .write(&actor("seed"), &bk, &p, &Namespace::Base, b("seed"), None)
            .await
            .unwrap();
        assert_eq!(first.mode, WriteMode::Created);
        let mut handles = Vec::new();
        for task in 0..TASKS {
            let e = engines[task % engines.len()].clone();
            let (bk, p) = (bk.clone(), p.clone());
            handles.push(tokio::spawn(async move {
                let a = actor(&format!("writer-{task}"));
                let mut successes = Vec::new();
                let mut conflicts = 0usize;
                for j in 0..UPDATES {
                    let body = format!("writer {task} update {j}");
                    let mut attempt = 0u32;
                    loop {
                        let cur = e.read(&bk, &p, None).await.unwrap();
                        match e
                            .write(
                                &a,
                                &bk,
                                &p,
                                &Namespace::Base,
                                Bytes::from(body.clone()),
                                Some(&cur.entry.sha256),
                            )
                            .await
                        {
                            Ok(o) => {
                                assert_eq!(o.prev_hash.as_deref(), Some(cur.entry.sha256.as_str()));
                                successes.push((o.version, body.clone()));
                                break;
                            }
                            Err(err) if err.code() == ErrorCode::Conflict => {
                                // A polite client backs off with jitter before re-reading.
                                conflicts += 1;
                                attempt += 1;
                                let ms = rand::random_range(0..=(1u64 << attempt.min(4)));
                                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                            }
                            Err(err) => panic!("unexpected error: {err}"),
                        }
                    }
                }
                (successes, conflicts)
            }));
        }
        let mut all = Vec::new();
        let mut conflicts = 0;
        for h in handles {
            let (s, c) = h.await.unwrap();
            all.extend(s);
            conflicts += c;
        }
        let e = &engines[1];
        assert_eq!(all.len(), TASKS * UPDATES);
        // Versions are unique and contiguous: 2..=801 (1 is the seed) — zero lost updates.
        all.sort();
        let versions: Vec<i64> = all.iter().map(|(v, _)| *v).collect();
        let want: Vec<i64> = (2..=(TASKS * UPDATES) as i64 + 1).collect();
        assert_eq!(versions, want);
        // Final content equals the last successful write.
        let last = all.last().unwrap().1.clone();
        let cur = e.read(&bk, &p, None).await.unwrap();
        assert_eq!(cur.bytes, b(&last));
        assert_eq!(cur.entry.version, (TASKS * UPDATES) as i64 + 1);
        // Every success is in the history with its bytes.
        let hist = e.history(&bk, &p, &Namespace::Base).await.unwrap();
        assert_eq!(hist.len(), TASKS * UPDATES + 1);
        for (v, body) in all.iter().step_by(97) {
            assert_eq!(
                e.read_version(&bk, &p, &Namespace::Base, *v).await.unwrap(),
                b(body)
            );
        }
        // The audit chain of the file: one success row per success (+ the seed), failures for
        // every conflict, and it verifies.
        let chain = e
            .audit()
            .verify(Some(("race-book", p.as_str(), "__base__")))
            .await
            .unwrap();
        assert!(chain.valid, "{:#?}", chain.breaks);
        assert_eq!(chain.rows_checked as usize, TASKS * UPDATES + 1 + conflicts);
        let mut successes = 0;
        let mut cursor = None;
        loop {
            let page = e
                .audit()
                .query(&pfs::audit::AuditQuery {
                    book_id: Some("race-book".into()),
                    status: Some("success".into()),
                    limit: Some(1000),
                    cursor: cursor.clone(),
                    ..Default::default()
                })
                .await
                .unwrap();
            successes += page.rows.len();
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!(successes, TASKS * UPDATES + 1);
        assert!(e.audit().verify(None).await.unwrap().valid);
        // Storage converged to the last committed version.
        assert_eq!(
            e.storage()
                .get("books/race-book/content/01-a/01-b/01-hot.md")
                .await
                .unwrap(),
            b(&last)
        );
        assert_journal_equals_storage(e).await;
        eprintln!(
            "{:?}: {conflicts} conflicts, {:?}",
            t.kind,
            started.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_expected_hash_exactly_one_wins() {
    init();
    for t in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let engines = replicas(&t, dir.path(), 3).await;
        let bk = book("cas-book");
        for round in 0..5 {
            let p = path(&format!("content/01-a/01-b/0{round}-file.md"));
            let base = engines[0]
                .write(&actor("seed"), &bk, &p, &Namespace::Base, b("base"), None)
                .await
                .unwrap();
            let mut handles = Vec::new();
            for i in 0..12 {
                let e = engines[i % 3].clone();
                let (bk, p, h) = (bk.clone(), p.clone(), base.sha256.clone());
                handles.push(tokio::spawn(async move {
                    e.write(
                        &actor(&format!("w{i}")),
                        &bk,
                        &p,
                        &Namespace::Base,
                        b(&format!("v{i}")),
                        Some(&h),
                    )
                    .await
                }));
            }
            let mut winners = Vec::new();
            let mut losers = Vec::new();
            for h in handles {
                match h.await.unwrap() {
                    Ok(o) => winners.push(o),
                    Err(e) => losers.push(e),
                }
            }
            assert_eq!(winners.len(), 1, "round {round}");
            assert!(losers.iter().all(|e| e.code() == ErrorCode::Conflict));
            for l in &losers {
                assert_eq!(l.to_json()["error"]["current_hash"], winners[0].sha256);
            }
            // Concurrent creates: exactly one creates, the rest get HASH_REQUIRED.
            let p2 = path(&format!("content/01-a/02-c/0{round}-new.md"));
            let mut handles = Vec::new();
            for i in 0..12 {
                let e = engines[i % 3].clone();
                let (bk, p2) = (bk.clone(), p2.clone());
                handles.push(tokio::spawn(async move {
                    e.write(
                        &actor(&format!("c{i}")),
                        &bk,
                        &p2,
                        &Namespace::Base,
                        b(&format!("c{i}")),
                        None,
                    )
                    .await
                }));
            }
            let mut created = 0;
            for h in handles {
                match h.await.unwrap() {
                    Ok(o) => {
                        assert_eq!(o.mode, WriteMode::Created);
                        created += 1;
                    }
                    Err(e) => assert_eq!(e.code(), ErrorCode::HashRequired),
                }
            }
            assert_eq!(created, 1);
        }
        assert!(engines[2].audit().verify(None).await.unwrap().valid);
        assert_replicas_settle(&engines).await;
    }
}

/// Rough latency/throughput numbers (run with `--ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn write_throughput_probe() {
    init();
    for t in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        if std::env::var("PROBE_QUERIES").is_ok() {
            let db = t.connect().await;
            let n = 300;
            let started = std::time::Instant::now();
            for _ in 0..n {
                sqlx::query("SELECT 1").execute(db.pool()).await.unwrap();
            }
            let q = started.elapsed() / n;
            let started = std::time::Instant::now();
            for _ in 0..n {
                let mut tx = db.pool().begin_with(db.kind().begin_write()).await.unwrap();
                sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap();
                tx.commit().await.unwrap();
            }
            eprintln!(
                "{:?}: pool query {:?}, empty write tx {:?}",
                t.kind,
                q,
                started.elapsed() / n
            );
        }
        let e = if std::env::var("PROBE_MEMORY").is_ok() {
            open(
                &t,
                Storage::new(&StorageConfig::Memory).unwrap(),
                EngineConfig::default(),
            )
            .await
        } else {
            replicas(&t, dir.path(), 1).await.remove(0)
        };
        let bk = book("probe-book");
        let a = actor("probe");
        let p = path("content/01-a/01-b/01-x.md");
        let mut h = e
            .write(&a, &bk, &p, &Namespace::Base, b("0"), None)
            .await
            .unwrap()
            .sha256;
        let n = 300;
        let started = std::time::Instant::now();
        for i in 0..n {
            h = e
                .write(&a, &bk, &p, &Namespace::Base, b(&format!("{i}")), Some(&h))
                .await
                .unwrap()
                .sha256;
        }
        let seq = started.elapsed();
        let started = std::time::Instant::now();
        let mut handles = Vec::new();
        for task in 0..16 {
            let e = e.clone();
            let (bk, a) = (bk.clone(), a.clone());
            handles.push(tokio::spawn(async move {
                for i in 0..50 {
                    let p = path(&format!("content/01-a/02-b/{task:02}-f{i}.md"));
                    e.write(&a, &bk, &p, &Namespace::Base, b("x"), None)
                        .await
                        .unwrap();
                }
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        let par = started.elapsed();
        eprintln!(
            "{:?}: sequential update {:?}/op; 16 writers, distinct files: {:.0} ops/s",
            t.kind,
            seq / n,
            800.0 / par.as_secs_f64()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_racing_a_delete_never_report_an_empty_conflict() {
    init();
    for t in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let engines = replicas(&t, dir.path(), 2).await;
        let bk = book("churn-book");
        let p = path("content/01-a/01-b/01-churn.md");
        engines[0]
            .write(&actor("seed"), &bk, &p, &Namespace::Base, b("seed"), None)
            .await
            .unwrap();
        for round in 0..6 {
            let mut handles = Vec::new();
            let e = engines[round % 2].clone();
            let (bk2, p2) = (bk.clone(), p.clone());
            handles.push(tokio::spawn(async move {
                e.delete(&actor("deleter"), &bk2, &p2, &Namespace::Base)
                    .await
                    .map(|_| ())
            }));
            for i in 0..8 {
                let e = engines[i % 2].clone();
                let (bk2, p2) = (bk.clone(), p.clone());
                handles.push(tokio::spawn(async move {
                    e.write(
                        &actor(&format!("creator-{i}")),
                        &bk2,
                        &p2,
                        &Namespace::Base,
                        b(&format!("r{round} c{i}")),
                        None,
                    )
                    .await
                    .map(|_| ())
                }));
            }
            for h in handles {
                if let Err(e) = h.await.unwrap() {
                    assert_eq!(e.code(), ErrorCode::HashRequired, "{e}");
                }
            }
        }
        assert_chain_and_storage(&engines, "churn-book", p.as_str()).await;
    }
}

/// SQLite: replicas that write through the direct connections (`sqlite_direct`, the default)
/// and one that sends everything through the sqlx pool share one database file. Concurrent
/// updates of one file across them lose nothing, the audit chain verifies, storage converges,
/// and each engine reads the others' commits at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_direct_and_pool_writers_share_one_database() {
    init();
    const TASKS: usize = 12;
    const UPDATES: usize = 25;
    let t = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let mut engines = Vec::new();
    for direct in [true, false, true] {
        let db = platform::db::Db::connect(
            &t.url,
            &platform::db::PoolSettings {
                sqlite_direct: direct,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(db.sync_reader().is_some(), direct);
        assert_eq!(db.has_sync_writer(), direct);
        let storage = Storage::new(&StorageConfig::Fs {
            root: dir.path().to_path_buf(),
        })
        .unwrap();
        engines.push(
            Engine::open(db, storage, EngineConfig::default())
                .await
                .unwrap(),
        );
    }
    let bk = book("mixed-book");
    let p = path("content/01-a/01-b/01-shared.md");
    engines[1]
        .write(&actor("seed"), &bk, &p, &Namespace::Base, b("seed"), None)
        .await
        .unwrap();
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let e = engines[task % engines.len()].clone();
        let (bk, p) = (bk.clone(), p.clone());
        handles.push(tokio::spawn(async move {
            let a = actor(&format!("mixed-{task}"));
            let mut wins = 0usize;
            let mut conflicts = 0usize;
            for j in 0..UPDATES {
                loop {
                    let cur = e.read(&bk, &p, None).await.unwrap();
                    let body = Bytes::from(format!("task {task} update {j}"));
                    match e
                        .write(&a, &bk, &p, &Namespace::Base, body, Some(&cur.entry.sha256))
                        .await
                    {
                        Ok(_) => {
                            wins += 1;
                            break;
                        }
                        Err(pfs::PfsError::Conflict { .. }) => conflicts += 1,
                        Err(other) => panic!("unexpected error: {other}"),
                    }
                }
            }
            (wins, conflicts)
        }));
    }
    let mut conflicts = 0;
    for h in handles {
        let (w, c) = h.await.unwrap();
        assert_eq!(w, UPDATES);
        conflicts += c;
    }
    for e in &engines {
        let cur = e.read(&bk, &p, None).await.unwrap();
        assert_eq!(cur.entry.version, (TASKS * UPDATES) as i64 + 1);
    }
    let chain = engines[0]
        .audit()
        .verify(Some(("mixed-book", p.as_str(), "__base__")))
        .await
        .unwrap();
    assert!(chain.valid, "{:#?}", chain.breaks);
    assert_eq!(chain.rows_checked as usize, TASKS * UPDATES + 1 + conflicts);
    assert!(engines[1].audit().verify(None).await.unwrap().valid);
    assert_replicas_settle(&engines).await;
}

/// A replica remembers each book's profile to skip a round trip on PostgreSQL writes; another
/// replica changing the profile must still be obeyed (the write statement re-checks it): a path
/// the old profile admits is refused, one the new profile admits goes through, and a stale hash
/// is reported as a conflict and audited, on every backend.
#[tokio::test]
async fn a_profile_changed_by_another_replica_is_obeyed() {
    init();
    for t in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let engines = replicas(&t, dir.path(), 2).await;
        let (a, bk) = (actor("profile-agent"), book("profile-book"));
        engines[1]
            .ensure_book(&bk, Some(pfs::schema::Profile::Docusaurus))
            .await
            .unwrap();
        let lesson = path("content/01-Part/01-Chapter/01-lesson.md");
        let readme = path("content/01-Part/01-Chapter/README.md");
        // Replica 0 writes (and remembers "docusaurus"), replica 1 makes the book strict.
        let w = engines[0]
            .write(&a, &bk, &lesson, &Namespace::Base, b("one"), None)
            .await
            .unwrap();
        engines[1]
            .set_profile(&bk, pfs::schema::Profile::Strict)
            .await
            .unwrap();
        let err = engines[0]
            .write(&a, &bk, &readme, &Namespace::Base, b("# readme"), None)
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            ErrorCode::SchemaViolation,
            "{:?}: {err}",
            t.kind
        );
        assert!(
            engines[1]
                .stat(&bk, &readme, &Namespace::Base)
                .await
                .unwrap()
                .is_none()
        );
        // Back to docusaurus on replica 1: replica 0 (now remembering "strict") admits it.
        engines[1]
            .set_profile(&bk, pfs::schema::Profile::Docusaurus)
            .await
            .unwrap();
        engines[0]
            .write(&a, &bk, &readme, &Namespace::Base, b("# readme"), None)
            .await
            .unwrap();
        // A stale hash on the remembered-profile path: a conflict, audited, nothing changed.
        engines[0]
            .write(
                &a,
                &bk,
                &lesson,
                &Namespace::Base,
                b("two"),
                Some(&w.sha256),
            )
            .await
            .unwrap();
        let err = engines[0]
            .write(
                &a,
                &bk,
                &lesson,
                &Namespace::Base,
                b("three"),
                Some(&w.sha256),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Conflict, "{:?}", t.kind);
        assert_eq!(
            engines[1].read(&bk, &lesson, None).await.unwrap().bytes,
            b("two")
        );
        assert_chain_and_storage(&engines, "profile-book", lesson.as_str()).await;
    }
}
