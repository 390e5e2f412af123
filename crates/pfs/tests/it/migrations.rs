//! Migrations: up → down → up on every configured database; the audit log is append-only and
//! tampering is detected.

use pfs::Namespace;
use pfs::db::{migrate_down, migrate_up};
use pfs::storage::{Storage, StorageConfig};
use platform::db::{DbKind, TestDb};

use crate::support::*;

#[tokio::test]
async fn up_down_up() {
    init();
    for t in TestDb::all().await {
        let db = t.connect().await;
        migrate_up(&db).await.unwrap();
        migrate_up(&db).await.unwrap(); // idempotent
        sqlx::query("SELECT COUNT(*) FROM file_journal")
            .fetch_one(db.pool())
            .await
            .unwrap();
        migrate_down(&db).await.unwrap();
        for table in [
            "file_journal",
            "audit_log",
            "audit_head",
            "books",
            "file_versions",
            "manifest_snapshots",
        ] {
            let res = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(db.pool())
                .await;
            assert!(
                res.is_err(),
                "{table} survived the down migration on {:?}",
                t.kind
            );
        }
        migrate_up(&db).await.unwrap();
        let e = pfs::Engine::open(
            db,
            Storage::new(&StorageConfig::Memory).unwrap(),
            Default::default(),
        )
        .await
        .unwrap();
        e.write(
            &actor("m"),
            &book("mig-book"),
            &path("content/01-a/01-b/01-c.md"),
            &Namespace::Base,
            b("x"),
            None,
        )
        .await
        .unwrap();
        assert!(e.audit().verify(None).await.unwrap().valid);
    }
}

#[tokio::test]
async fn audit_log_is_append_only_and_tampering_is_detected() {
    for t in engines_memory(cfg(pfs::Profile::Strict)).await {
        let e = &t.engine;
        let a = actor("auditor");
        let bk = book("tamper-book");
        let p = path("content/01-a/01-b/01-c.md");
        let w = e
            .write(&a, &bk, &p, &Namespace::Base, b("one"), None)
            .await
            .unwrap();
        e.write(&a, &bk, &p, &Namespace::Base, b("two"), Some(&w.sha256))
            .await
            .unwrap();
        e.write(&a, &bk, &p, &Namespace::Base, b("three"), None)
            .await
            .unwrap_err();
        let pool = e.db().pool();
        assert!(e.audit().verify(None).await.unwrap().valid);
        // UPDATE and DELETE are rejected by the database.
        assert!(
            sqlx::query("UPDATE audit_log SET agent_id = 'mallory' WHERE seq = 1")
                .execute(pool)
                .await
                .is_err()
        );
        assert!(
            sqlx::query("DELETE FROM audit_log WHERE seq = 3")
                .execute(pool)
                .await
                .is_err()
        );
        // Someone with DDL rights disables the protection and edits a row: verify notices.
        match t.kind {
            DbKind::Sqlite => {
                sqlx::query("DROP TRIGGER audit_log_no_update")
                    .execute(pool)
                    .await
                    .unwrap();
                sqlx::query("DROP TRIGGER audit_log_no_delete")
                    .execute(pool)
                    .await
                    .unwrap();
            }
            DbKind::Postgres => {
                sqlx::query("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
                    .execute(pool)
                    .await
                    .unwrap();
            }
        }
        sqlx::query("UPDATE audit_log SET agent_id = 'mallory' WHERE seq = 1")
            .execute(pool)
            .await
            .unwrap();
        let r = e.audit().verify(None).await.unwrap();
        assert!(!r.valid);
        assert!(
            r.breaks.iter().any(|b| b.seq == 1 && b.kind == "row_hash"),
            "{r:#?}"
        );
        // Deleting a middle row breaks the links.
        sqlx::query("DELETE FROM audit_log WHERE seq = 2")
            .execute(pool)
            .await
            .unwrap();
        let r = e.audit().verify(None).await.unwrap();
        assert!(
            r.breaks.iter().any(|b| b.seq == 3 && b.kind == "row_link"),
            "{r:#?}"
        );
        // Deleting the newest row is caught by the head.
        sqlx::query("DELETE FROM audit_log WHERE seq = 3")
            .execute(pool)
            .await
            .unwrap();
        let r = e.audit().verify(None).await.unwrap();
        assert!(r.breaks.iter().any(|b| b.kind == "head"), "{r:#?}");
    }
}

#[tokio::test]
async fn audit_queries_filter_and_paginate() {
    use pfs::audit::AuditQuery;
    for t in engines_memory(cfg(pfs::Profile::Docusaurus)).await {
        let e = &t.engine;
        let bk = book("query-book");
        let t0 = chrono::Utc::now();
        for i in 0..7 {
            let who = actor(if i % 2 == 0 {
                "alice-agent"
            } else {
                "bob-agent"
            });
            let p = path(&format!("content/0{i}_quiz.md"));
            e.write(&who, &bk, &p, &Namespace::Base, b("q"), None)
                .await
                .unwrap();
        }
        e.write(
            &actor("alice-agent"),
            &bk,
            &path("content/0X-quiz.md"),
            &Namespace::Base,
            b("q"),
            None,
        )
        .await
        .unwrap();
        e.delete(
            &actor("bob-agent"),
            &bk,
            &path("content/00_quiz.md"),
            &Namespace::Base,
        )
        .await
        .unwrap();
        let seq = e
            .audit()
            .record(
                &actor("reader"),
                "read_content",
                "query-book",
                "content/01_quiz.md",
                "__base__",
                "success",
                None,
                Some(1),
            )
            .await
            .unwrap();
        assert!(seq > 0);
        assert!(
            e.audit()
                .record(
                    &actor("reader"),
                    "write_content",
                    "query-book",
                    "x",
                    "__base__",
                    "success",
                    None,
                    None
                )
                .await
                .is_err(),
            "chain operations can only be written by the engine"
        );
        let q = |q: AuditQuery| async move { e.audit().query(&q).await.unwrap() };
        // `_` is literal, `?` is one character: 0X-quiz.md does not match *_quiz.md.
        let page = q(AuditQuery {
            path_pattern: Some("content/*_quiz.md".into()),
            ..Default::default()
        })
        .await;
        assert_eq!(page.rows.len(), 9);
        let page = q(AuditQuery {
            path_pattern: Some("content/0?-quiz.md".into()),
            ..Default::default()
        })
        .await;
        assert_eq!(page.rows.len(), 1);
        let page = q(AuditQuery {
            agent_id: Some("bob-agent".into()),
            ..Default::default()
        })
        .await;
        assert_eq!(page.rows.len(), 4);
        let page = q(AuditQuery {
            operation: Some("delete_content".into()),
            ..Default::default()
        })
        .await;
        assert_eq!(page.rows.len(), 1);
        assert_eq!(page.rows[0].prev_hash.as_deref(), Some(sha(b"q").as_str()));
        assert_eq!(page.rows[0].new_hash, None);
        let page = q(AuditQuery {
            since: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
            ..Default::default()
        })
        .await;
        assert!(page.rows.is_empty());
        let page = q(AuditQuery {
            since: Some(t0),
            until: Some(chrono::Utc::now() + chrono::Duration::seconds(5)),
            ..Default::default()
        })
        .await;
        assert_eq!(page.rows.len(), 10);
        // Pagination: newest first, pages of 3, no duplicates, no gaps.
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = q(AuditQuery {
                limit: Some(3),
                cursor: cursor.clone(),
                ..Default::default()
            })
            .await;
            assert!(page.rows.len() <= 3);
            seen.extend(page.rows.iter().map(|r| r.seq));
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!(seen.len(), 10);
        assert!(seen.windows(2).all(|w| w[0] > w[1]));
        let bad = e
            .audit()
            .query(&AuditQuery {
                cursor: Some("nope".into()),
                ..Default::default()
            })
            .await;
        assert_eq!(bad.unwrap_err().code(), pfs::ErrorCode::InvalidInput);
        assert!(e.audit().verify(None).await.unwrap().valid);
    }
}
