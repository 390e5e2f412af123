//! Group commit on the direct SQLite writer: concurrent writers share transactions, each job's
//! own failure is isolated by its savepoint, and a failed COMMIT reports an error to every job
//! that wrote, persists nothing of them and leaves the connection usable.

use std::sync::Arc;

use platform::db::{Db, Grouped, PoolSettings, TestDb};

async fn db() -> (TestDb, Db) {
    let t = TestDb::sqlite();
    let db = Db::connect(&t.url, &PoolSettings::default())
        .await
        .expect("connect");
    sqlx::raw_sql(
        "CREATE TABLE parent (id INTEGER PRIMARY KEY); \
         CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL, \
            p INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED); \
         INSERT INTO parent (id) VALUES (1);",
    )
    .execute(db.pool())
    .await
    .expect("schema");
    (t, db)
}

async fn count(db: &Db) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM t")
        .fetch_one(db.pool())
        .await
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_jobs_commit_kept_work_and_isolate_failures() {
    let (_t, db) = db().await;
    let db = Arc::new(db);
    let mut tasks = Vec::new();
    for w in 0..16 {
        let db = db.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            let mut kept = 0;
            for i in 0..50 {
                let key = format!("{w}-{i}");
                let r = db
                    .write_grouped_blocking(move |c| {
                        c.execute(
                            "INSERT INTO t (k, v, p) VALUES (?1, ?2, 1)",
                            rusqlite::params![key, i],
                        )?;
                        Ok(match i % 5 {
                            // A job that decides to write nothing.
                            3 => Grouped::Discard(false),
                            _ => Grouped::Keep(true),
                        })
                    })
                    .expect("a direct writer")
                    .expect("grouped write");
                kept += usize::from(r);
                // A job whose own statement fails: only its savepoint is undone.
                let e = db
                    .write_grouped_blocking(move |c| {
                        c.execute("INSERT INTO missing_table VALUES (1)", [])?;
                        Ok(Grouped::Keep(()))
                    })
                    .expect("a direct writer");
                assert!(e.is_err());
            }
            kept
        }));
    }
    let mut kept = 0;
    for t in tasks {
        kept += t.await.expect("join");
    }
    assert_eq!(kept, 16 * 40);
    assert_eq!(count(&db).await, (16 * 40) as i64);
    eprintln!("{} jobs in {} group commits", 16 * 100, db.group_commits());
    assert!(
        db.group_commits() < 16 * 100 / 2,
        "{} commits for {} jobs: writers never shared a commit",
        db.group_commits(),
        16 * 100
    );
}

#[tokio::test]
async fn a_failed_commit_reports_every_writer_and_keeps_nothing() {
    let (_t, db) = db().await;
    // A deferred foreign key fails at COMMIT, like a full disk or an I/O error would.
    let r = db
        .write_grouped(|c| {
            c.execute("INSERT INTO t (k, v, p) VALUES ('bad', 1, 99)", [])?;
            Ok(Grouped::Keep(()))
        })
        .await
        .expect("a direct writer");
    let e = r.expect_err("the commit must fail");
    assert!(format!("{e:#}").contains("commit"), "{e:#}");
    assert_eq!(count(&db).await, 0);
    // The connection is clean: the next group commits.
    db.write_grouped(|c| {
        c.execute("INSERT INTO t (k, v, p) VALUES ('good', 1, 1)", [])?;
        Ok(Grouped::Keep(()))
    })
    .await
    .expect("a direct writer")
    .expect("the next group commits");
    assert_eq!(count(&db).await, 1);
}

#[tokio::test]
async fn a_pooled_connection_left_in_a_failed_commit_is_not_reused() {
    let (_t, db) = db().await;
    let mut tx = db.begin_write().await.expect("begin");
    sqlx::query("INSERT INTO t (k, v, p) VALUES ('bad', 1, 99)")
        .execute(&mut *tx)
        .await
        .expect("insert");
    assert!(tx.commit().await.is_err(), "deferred FK fails the commit");
    // Every later transaction on the pool works (none starts "at non-zero depth").
    for i in 0..20 {
        let mut tx = db.begin_write().await.expect("begin after a failed commit");
        sqlx::query("INSERT INTO t (k, v, p) VALUES ($1, 1, 1)")
            .bind(format!("k{i}"))
            .execute(&mut *tx)
            .await
            .expect("insert");
        tx.commit().await.expect("commit");
    }
    assert_eq!(count(&db).await, 20);
}
