//! Cut-over from the Python services: the predecessor's PostgreSQL tables (created from its DDL,
//! `shared/reference/panaversity-fs-python.md` §4.2 and `study-mode-python.md` §3.4) and a bucket
//! directory with its bytes, imported with `fs import` and `study import` into the same database,
//! then checked through the spawned server: files byte-identical, audit chains valid, threads per
//! user with their items, a second import a no-op, the predecessor's tables untouched.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::Executor;

use crate::support::{Server, ServerOpts, TempData, cli, cli_ok, client};

/// The predecessor's PanaversityFS tables (alembic head `853c7e2d6e2a`).
const FS_DDL: &str = r#"
CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY);
INSERT INTO alembic_version VALUES ('853c7e2d6e2a');
CREATE TABLE file_journal (
    book_id VARCHAR(255) NOT NULL, path VARCHAR(1024) NOT NULL, user_id VARCHAR(255) NOT NULL,
    sha256 VARCHAR(64) NOT NULL, last_written_at TIMESTAMP WITH TIME ZONE NOT NULL,
    storage_backend VARCHAR(50) NOT NULL, PRIMARY KEY (book_id, path, user_id));
CREATE INDEX ix_file_journal_book_path ON file_journal (book_id, path);
CREATE TABLE audit_log (
    id SERIAL PRIMARY KEY, timestamp TIMESTAMP WITH TIME ZONE NOT NULL,
    agent_id VARCHAR(255) NOT NULL, operation VARCHAR(50) NOT NULL, book_id VARCHAR(255) NOT NULL,
    path VARCHAR(1024) NOT NULL, user_id VARCHAR(255) NOT NULL, prev_hash VARCHAR(64),
    new_hash VARCHAR(64), status VARCHAR(50) NOT NULL, error_message TEXT, execution_time_ms INTEGER,
    CONSTRAINT ck_agent_not_system CHECK (agent_id != 'system'),
    CONSTRAINT ck_agent_not_empty CHECK (agent_id != ''));
CREATE INDEX ix_audit_log_timestamp ON audit_log (timestamp);
CREATE INDEX ix_audit_log_agent_id ON audit_log (agent_id);
CREATE INDEX ix_audit_log_book_id ON audit_log (book_id);
CREATE INDEX ix_audit_book_path_user ON audit_log (book_id, path, user_id);
CREATE TABLE manifest_snapshot (
    manifest_hash VARCHAR(64) PRIMARY KEY, book_id VARCHAR(255) NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL, file_count INTEGER NOT NULL DEFAULT 0,
    content_json TEXT NOT NULL);
CREATE INDEX ix_manifest_snapshot_book_id ON manifest_snapshot (book_id);
"#;

/// The predecessor's Study Mode store (`initialize_schema`).
const STUDY_DDL: &str = r#"
CREATE SCHEMA IF NOT EXISTS study_mode_chat;
CREATE TABLE IF NOT EXISTS study_mode_chat.threads (
  id TEXT PRIMARY KEY, user_id TEXT NOT NULL, organization_id TEXT,
  lesson_path TEXT DEFAULT '', title TEXT DEFAULT 'Study Session',
  created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  data JSONB NOT NULL, CONSTRAINT threads_id_user_unique UNIQUE (id, user_id));
CREATE TABLE IF NOT EXISTS study_mode_chat.items (
  id TEXT PRIMARY KEY, thread_id TEXT NOT NULL, user_id TEXT NOT NULL, organization_id TEXT,
  created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  data JSONB NOT NULL, CONSTRAINT items_id_user_unique UNIQUE (id, user_id));
CREATE TABLE IF NOT EXISTS study_mode_chat.attachments (
  id TEXT PRIMARY KEY, user_id TEXT NOT NULL, organization_id TEXT,
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(), data JSONB NOT NULL,
  CONSTRAINT attachments_id_user_unique UNIQUE (id, user_id));
CREATE INDEX IF NOT EXISTS idx_threads_user_created ON study_mode_chat.threads (user_id, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_items_thread_created ON study_mode_chat.items (thread_id, created_at);
"#;

const BOOKS: [&str; 3] = ["ai-native-book", "python-book", "agents-book"];
const STUDENTS: [&str; 4] = ["student-a", "student-b", "student-c", "student-d"];

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// One file of the predecessor: (book, path, user) → bytes.
type Files = BTreeMap<(String, String, String), Vec<u8>>;

/// Three generated books (realistic prose, real lesson sizes, PNG assets) and a few overlays.
fn predecessor_files() -> Files {
    let mut files = Files::new();
    for (i, book) in BOOKS.iter().enumerate() {
        let spec = bookgen::BookSpec {
            lessons: 96,
            lesson_bytes: 6 * 1024,
            assets: 4,
            asset_bytes: 24 * 1024,
            lessons_per_chapter: 8,
            seed: 0xc0ffee ^ i as u64,
        };
        for f in spec.files() {
            files.insert((book.to_string(), f.path, "__base__".into()), f.bytes);
        }
    }
    let lessons: Vec<(String, String)> = files
        .keys()
        .filter(|(b, p, _)| b == BOOKS[0] && p.starts_with("content/"))
        .take(3)
        .map(|(b, p, _)| (b.clone(), p.clone()))
        .collect();
    for s in &STUDENTS[..2] {
        for (b, p) in &lessons {
            let text =
                format!("# My notes on {p}\n\nPersonalized for {s}: slower pace, more examples.\n");
            files.insert((b.clone(), p.clone(), s.to_string()), text.into_bytes());
        }
    }
    files
}

fn storage_key(book: &str, path: &str, user: &str) -> String {
    if user == "__base__" {
        format!("books/{book}/{path}")
    } else {
        format!("books/{book}/users/{user}/{path}")
    }
}

/// Fill the predecessor's tables and bucket. Returns the number of its audit rows.
async fn fill_predecessor(pool: &sqlx::AnyPool, bucket: &Path, files: &Files) -> i64 {
    let mut audit = 0;
    for (n, ((book, path, user), bytes)) in files.iter().enumerate() {
        let key = bucket.join(storage_key(book, path, user));
        std::fs::create_dir_all(key.parent().unwrap()).unwrap();
        std::fs::write(&key, bytes).unwrap();
        let h = sha(bytes);
        let ts = format!("2026-0{}-1{} 10:{:02}:00+00", 1 + n % 9, n % 10, n % 60);
        sqlx::query(
            "INSERT INTO file_journal (book_id, path, user_id, sha256, last_written_at, storage_backend) \
             VALUES ($1, $2, $3, $4, $5::TIMESTAMPTZ, 'fs')",
        )
        .bind(book)
        .bind(path)
        .bind(user)
        .bind(&h)
        .bind(&ts)
        .execute(pool)
        .await
        .unwrap();
        let op = if path.starts_with("static/") {
            "upload_asset"
        } else {
            "write_content"
        };
        // A write by one of a few agents, then a read (the predecessor logged reads too).
        for (agent, op, status, new) in [
            (format!("agent-{}", n % 5), op, "success", Some(h.clone())),
            (
                "reader".to_string(),
                "read_content",
                "success",
                Some(h.clone()),
            ),
        ] {
            sqlx::query(
                "INSERT INTO audit_log (timestamp, agent_id, operation, book_id, path, user_id, \
                 prev_hash, new_hash, status, error_message, execution_time_ms) \
                 VALUES ($1::TIMESTAMPTZ, $2, $3, $4, $5, $6, NULL, $7, $8, NULL, 12)",
            )
            .bind(&ts)
            .bind(agent)
            .bind(op)
            .bind(book)
            .bind(path)
            .bind(user)
            .bind(new)
            .bind(status)
            .execute(pool)
            .await
            .unwrap();
            audit += 1;
        }
    }
    sqlx::query(
        "INSERT INTO audit_log (timestamp, agent_id, operation, book_id, path, user_id, \
         prev_hash, new_hash, status, error_message, execution_time_ms) \
         VALUES (NOW(), 'agent-0', 'write_content', $1, 'content/05-Part/17-Chapter/README.md', \
         '__base__', NULL, NULL, 'error', 'SCHEMA_VIOLATION: Path must match …', 3)",
    )
    .bind(BOOKS[0])
    .execute(pool)
    .await
    .unwrap();
    audit + 1
}

/// Threads as the Python store wrote them: `{"thread": …}` / `{"item": …}` with nulls.
async fn fill_study(pool: &sqlx::AnyPool) -> BTreeMap<String, Vec<(String, usize)>> {
    let mut per_user: BTreeMap<String, Vec<(String, usize)>> = BTreeMap::new();
    for (u, user) in STUDENTS.iter().enumerate() {
        for t in 0..3 {
            let id = format!("thr_{u}{t}a1b2c3");
            let created = format!("2026-03-0{} 09:{t}0:00.123456", u + 1);
            let data = json!({"thread": {"title": format!("📚 Lesson {t}"), "id": id,
                "created_at": created.replace(' ', "T"), "status": {"type": "active"}, "metadata": {}}});
            sqlx::query(
                "INSERT INTO study_mode_chat.threads (id, user_id, organization_id, lesson_path, \
                 title, created_at, data) VALUES ($1, $2, NULL, $3, $4, $5::TIMESTAMPTZ, $6::JSONB)",
            )
            .bind(&id)
            .bind(*user)
            .bind(format!("01-Part/02-Chapter/0{t}-lesson"))
            .bind(format!("📚 Lesson {t}"))
            .bind(format!("{created}+00"))
            .bind(data.to_string())
            .execute(pool)
            .await
            .unwrap();
            let items = 2 + t * 2;
            for i in 0..items {
                let item_id = format!("msg_{u}{t}{i:02}ffee");
                let at = format!("2026-03-0{}T09:{t}0:{i:02}.5", u + 1);
                let item = if i % 2 == 0 {
                    json!({"id": item_id, "thread_id": id, "created_at": at, "type": "user_message",
                        "content": [{"type": "input_text", "text": format!("Question {i} about recursion")}],
                        "attachments": [], "quoted_text": null,
                        "inference_options": {"model": "teach", "tool_choice": null}})
                } else {
                    json!({"id": item_id, "thread_id": id, "created_at": at, "type": "assistant_message",
                        "content": [{"annotations": [], "text": format!("Answer {i}: what do you think happens first?"), "type": "output_text"}]})
                };
                sqlx::query(
                    "INSERT INTO study_mode_chat.items (id, thread_id, user_id, organization_id, \
                     created_at, data) VALUES ($1, $2, $3, NULL, $4::TIMESTAMPTZ, $5::JSONB)",
                )
                .bind(&item_id)
                .bind(&id)
                .bind(*user)
                .bind(format!("{}+00", at.replace('T', " ")))
                .bind(json!({ "item": item }).to_string())
                .execute(pool)
                .await
                .unwrap();
            }
            per_user
                .entry(user.to_string())
                .or_default()
                .push((id, items));
        }
    }
    per_user
}

async fn chatkit(server: &Server, user: &str, body: Value) -> Value {
    let r = client()
        .post(format!("{}/chatkit", server.base))
        .header("X-User-ID", user)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{body}");
    r.json().await.unwrap()
}

async fn count(pool: &sqlx::AnyPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn cut_over_from_the_python_services_on_one_database() {
    let Some(pg) = platform::db::TestDb::postgres().await else {
        eprintln!("skipped: no PostgreSQL (DATABASE_URL)");
        return;
    };
    platform::db::install_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(2)
        .connect(&pg.url)
        .await
        .unwrap();
    pool.execute(FS_DDL).await.unwrap();
    pool.execute(STUDY_DDL).await.unwrap();
    let tmp = TempData::new();
    let data = tmp.data();
    let bucket = tmp.dir.path().join("bucket");
    let mut files = predecessor_files();
    assert!(files.len() >= 300, "{} files", files.len());
    let legacy_audit = fill_predecessor(&pool, &bucket, &files).await;
    // One object the journal names but the bucket lost, one whose bytes changed behind the journal.
    let lost = files.keys().nth(5).cloned().unwrap();
    std::fs::remove_file(bucket.join(storage_key(&lost.0, &lost.1, &lost.2))).unwrap();
    let drifted = files.keys().nth(7).cloned().unwrap();
    let drifted_bytes = b"# Edited on the server by hand\n".to_vec();
    std::fs::write(
        bucket.join(storage_key(&drifted.0, &drifted.1, &drifted.2)),
        &drifted_bytes,
    )
    .unwrap();
    files.remove(&lost);
    files.insert(drifted.clone(), drifted_bytes);
    let study = fill_study(&pool).await;

    let env = [("DATABASE_URL", pg.url.as_str())];
    let bucket_s = bucket.to_string_lossy().to_string();
    let import_args = [
        "fs",
        "import",
        "--from-database",
        pg.url.as_str(),
        "--from-storage",
        bucket_s.as_str(),
        "--json",
    ];
    // A dry run reports and writes nothing.
    let mut dry_args = import_args.to_vec();
    dry_args.push("--dry-run");
    let dry = cli_ok(&data, &env, &dry_args).await.json();
    assert_eq!(dry["created"], files.len(), "{dry}");
    assert_eq!(dry["audit_rows_copied"], legacy_audit, "{dry}");
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM panaversity.file_journal").await,
        0
    );

    let first = cli_ok(&data, &env, &import_args).await.json();
    assert_eq!(first["created"], files.len(), "{first}");
    assert_eq!(first["missing"], 1, "{first}");
    assert_eq!(first["mismatched"], 1, "{first}");
    assert_eq!(first["failed"], 0, "{first}");
    assert_eq!(first["audit_rows_copied"], legacy_audit, "{first}");
    let kinds: Vec<&str> = first["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 2, "{first}");
    assert!(kinds.contains(&"missing") && kinds.contains(&"mismatch"));
    let st = cli_ok(
        &data,
        &env,
        &[
            "study",
            "import",
            "--from-database",
            pg.url.as_str(),
            "--json",
        ],
    )
    .await
    .json();
    let threads: usize = study.values().map(Vec::len).sum();
    let items: usize = study.values().flatten().map(|(_, n)| n).sum();
    assert_eq!(st["threads_created"], threads, "{st}");
    assert_eq!(st["items_created"], items, "{st}");
    assert_eq!(st["items_skipped"], 0, "{st}");

    // A second import changes nothing.
    let audit_rows = count(&pool, "SELECT COUNT(*) FROM panaversity.audit_log").await;
    let versions = count(&pool, "SELECT COUNT(*) FROM panaversity.file_versions").await;
    let again = cli_ok(&data, &env, &import_args).await.json();
    assert_eq!(again["created"], 0, "{again}");
    assert_eq!(again["updated"], 0, "{again}");
    assert_eq!(again["unchanged"], files.len(), "{again}");
    assert_eq!(again["audit_rows_copied"], 0, "{again}");
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM panaversity.audit_log").await,
        audit_rows
    );
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM panaversity.file_versions").await,
        versions
    );
    let st2 = cli_ok(
        &data,
        &env,
        &[
            "study",
            "import",
            "--from-database",
            pg.url.as_str(),
            "--json",
        ],
    )
    .await
    .json();
    assert_eq!(st2["threads_created"], 0, "{st2}");
    assert_eq!(st2["items_created"], 0, "{st2}");

    // Audit: every row chain and per-file chain verifies; one import row per file, the
    // predecessor's writer kept on it and on the version.
    let verify = cli(&data, &env, &["fs", "audit", "verify"]).await;
    assert_eq!(verify.code(), 0, "{verify:?}");
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM panaversity.audit_log WHERE operation = 'import'"
        )
        .await,
        files.len() as i64
    );
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM panaversity.audit_log WHERE operation LIKE 'legacy:%'"
        )
        .await,
        legacy_audit
    );
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM panaversity.file_versions WHERE agent_id NOT LIKE 'agent-%'"
        )
        .await,
        0
    );

    // The predecessor's tables are untouched and it can keep writing while we run.
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM public.file_journal").await,
        files.len() as i64 + 1
    );
    let server = Server::start(
        &data,
        ServerOpts::dev()
            .env("DATABASE_URL", &pg.url)
            .env("PANAVERSITY_NO_SAMPLE", "true"),
    )
    .await;
    sqlx::query(
        "INSERT INTO file_journal (book_id, path, user_id, sha256, last_written_at, storage_backend) \
         VALUES ('python-book', 'content/09-x/09-y/09-z.md', '__base__', $1, NOW(), 'fs')",
    )
    .bind(sha(b"x"))
    .execute(&pool)
    .await
    .unwrap();

    // Every file reads back byte-identical, with its hash, through the running server.
    let mcp = server.mcp(&[("X-Agent-ID", "checker")]);
    for ((book, path, user), bytes) in &files {
        if let Some(rest) = path.strip_prefix("static/") {
            let (asset_type, filename) = rest.split_once('/').unwrap();
            let r = mcp
                .ok(
                    "get_asset",
                    json!({"book_id": book, "asset_type": asset_type, "filename": filename,
                        "include_binary": true}),
                )
                .await;
            let b64 = r["binary_data"].as_str().unwrap_or_else(|| panic!("{r}"));
            use base64::Engine as _;
            let got = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            assert_eq!(&got, bytes, "{book}/{path}");
            continue;
        }
        let mut args = json!({"book_id": book, "path": path});
        if user != "__base__" {
            args["user_id"] = json!(user);
        }
        let r = mcp.ok("read_content", args).await;
        assert_eq!(
            r["content"].as_str().unwrap().as_bytes(),
            bytes.as_slice(),
            "{book}/{path} ({user})"
        );
        assert_eq!(r["file_hash_sha256"], sha(bytes), "{book}/{path}");
    }

    // During the switch window: the old side changes two lessons, one of which was also edited
    // here since the import. A re-import brings the other over and never overwrites ours.
    let lessons: Vec<(String, String, String)> = files
        .keys()
        .filter(|(b, p, u)| b == BOOKS[1] && p.starts_with("content/") && u == "__base__")
        .take(2)
        .cloned()
        .collect();
    let (ours, theirs) = (&lessons[0], &lessons[1]);
    let edited_here = mcp
        .ok(
            "write_content",
            json!({"book_id": ours.0, "path": ours.1, "content": "# Revised on the new server
",
                "expected_hash": sha(&files[ours])}),
        )
        .await;
    assert_eq!(edited_here["mode"], "updated", "{edited_here}");
    for k in [ours, theirs] {
        let new = format!(
            "# Changed on the old server: {}
",
            k.1
        )
        .into_bytes();
        std::fs::write(bucket.join(storage_key(&k.0, &k.1, &k.2)), &new).unwrap();
        sqlx::query("UPDATE file_journal SET sha256 = $1 WHERE book_id = $2 AND path = $3")
            .bind(sha(&new))
            .bind(&k.0)
            .bind(&k.1)
            .execute(&pool)
            .await
            .unwrap();
        files.insert(k.clone(), new);
    }
    let third = cli_ok(&data, &env, &import_args).await.json();
    assert_eq!(third["updated"], 1, "{third}");
    assert_eq!(third["diverged"], 1, "{third}");
    let r = mcp
        .ok("read_content", json!({"book_id": ours.0, "path": ours.1}))
        .await;
    assert_eq!(
        r["content"],
        "# Revised on the new server
"
    );
    let r = mcp
        .ok(
            "read_content",
            json!({"book_id": theirs.0, "path": theirs.1}),
        )
        .await;
    assert_eq!(
        r["content"].as_str().unwrap().as_bytes(),
        files[theirs].as_slice()
    );

    // Threads list per user with their items; the old ids resolve.
    for (user, threads) in &study {
        let page = chatkit(
            &server,
            user,
            json!({"type": "threads.list", "params": {"limit": 50}}),
        )
        .await;
        let ids: Vec<&str> = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), threads.len(), "{user}: {page}");
        for (id, n) in threads {
            assert!(ids.contains(&id.as_str()), "{user} misses {id}");
            let page = chatkit(
                &server,
                user,
                json!({"type": "items.list", "params": {"thread_id": id, "limit": 50, "order": "asc"}}),
            )
            .await;
            assert_eq!(page["data"].as_array().unwrap().len(), *n, "{id}: {page}");
        }
        // Another student's thread stays invisible.
        let other = STUDENTS.iter().find(|s| *s != user).unwrap();
        let r = client()
            .post(format!("{}/chatkit", server.base))
            .header("X-User-ID", *other)
            .json(&json!({"type": "threads.get_by_id", "params": {"thread_id": threads[0].0}}))
            .send()
            .await
            .unwrap();
        assert_ne!(r.status(), 200, "{other} read {user}'s thread");
    }
    server.stop().await;
}

/// A bucket nobody journaled: fsck --repair refuses to quarantine it wholesale and names
/// adopt-storage, which adopts every object; fsck is then clean.
#[tokio::test]
async fn a_bucket_without_journal_is_adopted_not_quarantined() {
    let tmp = TempData::new();
    let data = tmp.data();
    cli_ok(&data, &[], &["migrate", "up"]).await;
    let spec = bookgen::BookSpec::small(14);
    let mut n = 0;
    for f in spec.files() {
        let p = data.join("storage/books/old-book").join(&f.path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &f.bytes).unwrap();
        n += 1;
    }
    let fsck = cli(&data, &[], &["fs", "fsck", "--repair", "--json"]).await;
    assert_eq!(fsck.code(), 1, "{fsck:?}");
    let rep = fsck.json();
    assert_eq!(rep["orphans"], n, "{rep}");
    assert_eq!(rep["repaired"], 0, "{rep}");
    assert!(
        rep["quarantine_refused"]
            .as_str()
            .unwrap()
            .contains("adopt-storage"),
        "{rep}"
    );
    assert!(
        data.join("storage/books/old-book")
            .join(&spec.lesson(0).path)
            .is_file()
    );

    let dry = cli_ok(&data, &[], &["fs", "adopt-storage", "--dry-run", "--json"])
        .await
        .json();
    assert_eq!(dry["created"], n, "{dry}");
    let adopted = cli_ok(&data, &[], &["fs", "adopt-storage", "--json"])
        .await
        .json();
    assert_eq!(adopted["created"], n, "{adopted}");
    let again = cli_ok(&data, &[], &["fs", "adopt-storage", "--json"])
        .await
        .json();
    assert_eq!(again["files_seen"], 0, "{again}");
    let fsck = cli(&data, &[], &["fs", "fsck"]).await;
    assert_eq!(fsck.code(), 0, "{fsck:?}");

    // --force quarantines however many there are.
    for i in 0..12 {
        let p = data.join(format!("storage/books/stray/static/images/x{i}.png"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"\x89PNG").unwrap();
    }
    let forced = cli(&data, &[], &["fs", "fsck", "--repair", "--force", "--json"]).await;
    assert_eq!(forced.code(), 0, "{forced:?}");
    assert_eq!(forced.json()["repaired"], 12);
    assert!(
        !data
            .join("storage/books/stray/static/images/x0.png")
            .exists()
    );
}
