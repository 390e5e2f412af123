//! Operator commands: `migrate down|up` on SQLite and PostgreSQL, `fs fsck` (clean, detects a
//! canonical object deleted by hand, `--repair` restores the right bytes), `fs audit verify`.

use platform::db::{Db, DbKind, PoolSettings};
use serde_json::json;

use crate::support::{BOOK, LESSON, TempData, backends, cli, cli_ok, sample_bytes};

/// Tables each component's migrations create.
const TABLES: &[&str] = &[
    "books",
    "file_journal",
    "file_versions",
    "audit_log",
    "pending_materializations",
    "api_keys",
    "study_threads",
    "study_items",
    "study_feedback",
];

async fn table_exists(db: &Db, name: &str) -> bool {
    let sql = match db.kind() {
        DbKind::Sqlite => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1",
        DbKind::Postgres => {
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = $1"
        }
    };
    let n: i64 = sqlx::query_scalar(sql)
        .bind(name.to_string())
        .fetch_one(db.pool())
        .await
        .unwrap_or_else(|e| panic!("checking table {name}: {e}"));
    n > 0
}

async fn existing(url: &str) -> Vec<&'static str> {
    // The binary keeps its PostgreSQL tables in the `panaversity` schema (ignored on SQLite).
    let settings = PoolSettings {
        pg_schema: Some(platform::db::PgSchema::parse("panaversity").unwrap()),
        ..PoolSettings::default()
    };
    let db = Db::connect(url, &settings).await.expect("connect");
    let mut v = Vec::new();
    for t in TABLES {
        if table_exists(&db, t).await {
            v.push(*t);
        }
    }
    db.pool().close().await;
    v
}

#[tokio::test]
async fn migrate_down_then_up_on_every_database() {
    for (label, url, _guard) in backends().await {
        let tmp = TempData::new();
        let data = tmp.data();
        let url = url.unwrap_or_else(|| platform::db::sqlite_url_for(&data.join("panaversity.db")));
        let env = [("DATABASE_URL", url.as_str())];
        std::fs::create_dir_all(&data).unwrap();

        let out = cli_ok(&data, &env, &["migrate", "up"]).await;
        assert!(out.stdout.contains("migrations applied"), "{out:?}");
        assert_eq!(existing(&url).await, TABLES, "{label}: after up");
        // With data in it: seed the sample book, then revert everything.
        cli_ok(&data, &env, &["fs", "seed"]).await;
        let out = cli_ok(&data, &env, &["migrate", "down", "--yes"]).await;
        assert!(out.stdout.contains("migrations reverted"), "{out:?}");
        assert!(
            existing(&url).await.is_empty(),
            "{label}: tables left after down: {:?}",
            existing(&url).await
        );
        // Down twice is harmless.
        cli_ok(&data, &env, &["migrate", "down", "--yes"]).await;
        cli_ok(&data, &env, &["migrate", "up"]).await;
        assert_eq!(existing(&url).await, TABLES, "{label}: after up again");
        // Up twice is harmless, and the store works: the sample loads into the empty schema.
        cli_ok(&data, &env, &["migrate", "up"]).await;
        let out = cli_ok(&data, &env, &["fs", "seed"]).await;
        assert!(out.stdout.contains("loaded the sample book"), "{out:?}");
    }
}

#[tokio::test]
async fn fsck_detects_and_repairs_a_deleted_canonical_object() {
    let tmp = TempData::new();
    let data = tmp.data();
    let out = cli_ok(&data, &[], &["fs", "seed"]).await;
    assert!(out.stdout.contains("loaded the sample book"), "{out:?}");
    let out = cli_ok(&data, &[], &["fs", "seed"]).await;
    assert!(out.stdout.contains("nothing loaded"), "{out:?}");

    // Healthy: clean, exit 0.
    let out = cli(&data, &[], &["fs", "fsck", "--json"]).await;
    assert_eq!(out.code(), 0, "{out:?}");
    let report = out.json();
    assert_eq!(report["issues"], json!([]), "{report}");
    assert!(report["journal_rows"].as_u64().unwrap() >= 24, "{report}");

    // Delete a lesson's canonical object by hand.
    let object = data.join("storage/books").join(BOOK).join(LESSON);
    assert_eq!(std::fs::read(&object).unwrap(), sample_bytes(LESSON));
    std::fs::remove_file(&object).unwrap();

    let out = cli(&data, &[], &["fs", "fsck", "--json"]).await;
    assert_eq!(out.code(), 1, "{out:?}");
    let report = out.json();
    assert_eq!(report["canonical_missing"], json!(1), "{report}");
    let issues = report["issues"].as_array().unwrap();
    assert_eq!(issues.len(), 1, "{report}");
    assert_eq!(issues[0]["path"], json!(LESSON), "{report}");
    assert_eq!(issues[0]["repaired"], json!(false), "{report}");
    assert!(!object.exists(), "fsck without --repair changes nothing");
    // The text report says so too.
    let out = cli(&data, &[], &["fs", "fsck"]).await;
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(out.stdout.contains("NOT consistent"), "{out:?}");

    // --repair re-materializes it with the right bytes.
    let out = cli(&data, &[], &["fs", "fsck", "--repair", "--json"]).await;
    assert_eq!(out.code(), 0, "{out:?}");
    let report = out.json();
    assert_eq!(report["repaired"], json!(1), "{report}");
    assert_eq!(std::fs::read(&object).unwrap(), sample_bytes(LESSON));
    let out = cli(&data, &[], &["fs", "fsck", "--json"]).await;
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.json()["issues"], json!([]));

    // A stray object at a canonical path (no journal row) is an orphan; --repair quarantines it.
    let stray = data
        .join("storage/books")
        .join(BOOK)
        .join("content/01-Foundations/01-What-Is-A-Program/09-stray.md");
    std::fs::write(&stray, b"not in the journal\n").unwrap();
    let out = cli(&data, &[], &["fs", "fsck", "--json"]).await;
    assert_eq!(out.code(), 1, "{out:?}");
    assert_eq!(out.json()["orphans"], json!(1), "{}", out.stdout);
    let out = cli(&data, &[], &["fs", "fsck", "--repair", "--json"]).await;
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(!stray.exists(), "orphan moved out of the canonical path");

    // The audit chains are valid (exit 0), per file too.
    let out = cli(&data, &[], &["fs", "audit", "verify", "--json"]).await;
    assert_eq!(out.code(), 0, "{out:?}");
    let v = out.json();
    assert_eq!(v["valid"], json!(true), "{v}");
    assert!(v["rows_checked"].as_u64().unwrap() >= 24, "{v}");
    let out = cli(
        &data,
        &[],
        &[
            "fs",
            "audit",
            "verify",
            "--book-id",
            BOOK,
            "--path",
            LESSON,
            "--json",
        ],
    )
    .await;
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.json()["valid"], json!(true), "{}", out.stdout);
    let out = cli(&data, &[], &["fs", "audit", "verify"]).await;
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(out.stdout.starts_with("valid"), "{out:?}");
}

#[tokio::test]
async fn audit_verify_detects_tampering_with_exit_1() {
    let tmp = TempData::new();
    let data = tmp.data();
    cli_ok(&data, &[], &["fs", "seed"]).await;
    // Tamper with one audit row's agent behind the engine's back.
    let url = platform::db::sqlite_url_for(&data.join("panaversity.db"));
    let db = Db::connect(&url, &PoolSettings::default()).await.unwrap();
    // An attacker with database access can drop the append-only trigger; the hash chain still
    // tells.
    sqlx::query("DROP TRIGGER audit_log_no_update")
        .execute(db.pool())
        .await
        .unwrap();
    let changed = sqlx::query("UPDATE audit_log SET agent_id = 'mallory' WHERE seq = 3")
        .execute(db.pool())
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(changed, 1);
    db.pool().close().await;
    let out = cli(&data, &[], &["fs", "audit", "verify", "--json"]).await;
    assert_eq!(out.code(), 1, "{out:?}");
    let v = out.json();
    assert_eq!(v["valid"], json!(false), "{v}");
    assert!(!v["breaks"].as_array().unwrap().is_empty(), "{v}");
}
