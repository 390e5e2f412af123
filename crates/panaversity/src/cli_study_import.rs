//! `study import`: the Python Study Mode's threads and items (its `study_mode_chat` schema in
//! PostgreSQL) into this store, per user, ids kept (old links resolve), idempotent.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use platform::db::{Db, PgSchema, PoolSettings};
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use study::chatkit::{ThreadItem, ThreadMetadata, Timestamp};
use study::store::{Owner, ThreadStore};

use crate::config::{self, Common};

/// Settings of `study import`.
#[derive(Debug, Clone, Args)]
pub struct StudyImportArgs {
    /// The predecessor's PostgreSQL database (its `STUDY_MODE_CHATKIT_DATABASE_URL`;
    /// `postgresql+asyncpg://` is accepted).
    #[arg(long)]
    pub from_database: String,
    /// The schema of its tables (its `STUDY_MODE_CHATKIT_SCHEMA_NAME`).
    #[arg(long, default_value = "study_mode_chat")]
    pub from_schema: PgSchema,
    /// Report what would be imported; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The report of a study import.
#[derive(Debug, Default, Serialize)]
pub struct StudyImportReport {
    pub dry_run: bool,
    pub users: u64,
    pub threads_seen: u64,
    pub threads_created: u64,
    pub items_seen: u64,
    pub items_created: u64,
    /// Items this server cannot read (e.g. hidden context items of the predecessor's SDK).
    pub items_skipped: u64,
    pub notes: Vec<String>,
}

/// `study import`.
pub async fn run(common: &Common, a: StudyImportArgs) -> anyhow::Result<ExitCode> {
    let src = crate::cli_import::connect_legacy(&a.from_database).await?;
    let s = &a.from_schema;
    let db_url = config::database_url(common)?;
    let db = Db::connect(
        &db_url,
        &PoolSettings {
            pg_schema: Some(common.db_schema.clone()),
            ..PoolSettings::default()
        },
    )
    .await?;
    let store = ThreadStore::new(db);
    store.migrate_up().await.context("study migrations")?;
    let threads = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT id, user_id, COALESCE(organization_id, ''), COALESCE(lesson_path, ''), title, \
         (EXTRACT(EPOCH FROM created_at) * 1000000)::BIGINT, data::TEXT \
         FROM {s}.threads ORDER BY user_id, created_at, id"
    )))
    .fetch_all(&src)
    .await
    .with_context(|| format!("reading {s}.threads (is --from-schema right?)"))?;
    let mut report = StudyImportReport {
        dry_run: a.dry_run,
        ..Default::default()
    };
    let pb = indicatif::ProgressBar::new(threads.len() as u64);
    let mut last_user = None;
    for r in threads {
        pb.inc(1);
        let (id, user, org): (String, String, String) =
            (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        if last_user.as_ref() != Some(&user) {
            report.users += 1;
            last_user = Some(user.clone());
        }
        report.threads_seen += 1;
        let meta = thread_meta(
            &id,
            r.try_get(3)?,
            r.try_get(4)?,
            r.try_get(5)?,
            r.try_get(6)?,
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, data::TEXT FROM {s}.items WHERE thread_id = $1 AND user_id = $2 \
             ORDER BY created_at, id"
        )))
        .bind(&id)
        .bind(&user)
        .fetch_all(&src)
        .await
        .with_context(|| format!("reading the items of thread {id}"))?;
        let mut items = Vec::with_capacity(rows.len());
        for row in rows {
            report.items_seen += 1;
            let item_id: String = row.try_get(0)?;
            let data: String = row.try_get(1)?;
            match item_of(&data) {
                Ok(item) => items.push(item),
                Err(e) => {
                    report.items_skipped += 1;
                    report.notes.push(format!(
                        "item {item_id} of thread {id} (user {user}) skipped: {e}"
                    ));
                }
            }
        }
        if a.dry_run {
            continue;
        }
        let owner = Owner::new(user.clone(), Some(org.as_str()).filter(|o| !o.is_empty()));
        let done = store
            .import_thread(&owner, &meta, &items)
            .await
            .with_context(|| format!("importing thread {id} of user {user}"))?;
        report.threads_created += u64::from(done.thread);
        report.items_created += done.items;
    }
    pb.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} {} threads of {} users ({} new), {} items ({} new, {} skipped)",
            if a.dry_run {
                "would import"
            } else {
                "imported"
            },
            report.threads_seen,
            report.users,
            report.threads_created,
            report.items_seen,
            report.items_created,
            report.items_skipped
        );
        for n in &report.notes {
            println!("- {n}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The thread from its `data` (`{"thread": {…}}`), with the columns filling what it lacks.
fn thread_meta(
    id: &str,
    lesson_path: String,
    title: Option<String>,
    created_micros: i64,
    data: String,
) -> ThreadMetadata {
    let parsed = serde_json::from_str::<Value>(&data)
        .ok()
        .and_then(|mut v| v.get_mut("thread").map(Value::take))
        .and_then(|t| serde_json::from_value::<ThreadMetadata>(t).ok());
    let mut meta = parsed.unwrap_or_else(|| ThreadMetadata {
        title: None,
        id: id.to_string(),
        created_at: Timestamp::from_micros(created_micros),
        status: Default::default(),
        metadata: Default::default(),
    });
    meta.id = id.to_string();
    if meta.title.is_none() {
        meta.title = title;
    }
    if !lesson_path.is_empty() {
        meta.metadata
            .entry("lesson_path")
            .or_insert(Value::String(lesson_path));
    }
    meta
}

/// An item from its `data` (`{"item": {…}}`; null fields allowed).
fn item_of(data: &str) -> anyhow::Result<ThreadItem> {
    let mut v: Value = serde_json::from_str(data).context("data is not JSON")?;
    let mut item = v
        .get_mut("item")
        .map(Value::take)
        .context("no \"item\" in data")?;
    strip_nulls(&mut item);
    serde_json::from_value(item).context("not a ChatKit item this server reads")
}

/// The predecessor dumped items with `null` for every unset field; ours omit them.
fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}
