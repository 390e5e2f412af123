//! `fs import` and `fs adopt-storage`: adopt a running Python PanaversityFS deployment (its
//! `file_journal` / `audit_log` tables and its bucket), or a bucket nobody journaled, into this
//! store. Every file becomes a version with one `import` audit row (the source's writer and write
//! time kept); the source's audit rows are copied as `legacy:<operation>` rows. Idempotent and
//! resumable: files already current are `unchanged`, audit rows resume after the last committed
//! batch (the `import_progress` table).

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use clap::Args;
use futures::StreamExt;
use pfs::audit::LegacyAuditRow;
use pfs::{Actor, BookId, BookPath, Engine, Namespace, Profile, Storage, UserId, WriteMode};
use platform::db::{PgSchema, PoolSettings};
use serde::Serialize;
use sqlx::Row;

use crate::config::{Common, StorageArgs};

/// Settings of `fs import`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// This store's storage (where the imported files go).
    #[command(flatten)]
    pub storage: StorageArgs,
    /// The predecessor's PostgreSQL database (`postgres://…`, its `file_journal` and `audit_log`
    /// tables; `postgresql+asyncpg://` is accepted). Without it, every object under `books/` in
    /// --from-storage is adopted.
    #[arg(long)]
    pub from_database: Option<String>,
    /// The schema of the predecessor's tables.
    #[arg(long, default_value = "public")]
    pub from_schema: PgSchema,
    /// Where the predecessor's bytes are: its storage root directory (the one holding `books/`),
    /// or `s3://bucket` (endpoint and keys from the PANAVERSITY_S3_* settings).
    #[arg(long)]
    pub from_storage: String,
    /// Report what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Import only these books (repeatable; default: all).
    #[arg(long = "book")]
    pub books: Vec<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Settings of `fs adopt-storage`.
#[derive(Debug, Clone, Args)]
pub struct AdoptArgs {
    /// This store's storage: its objects under `books/` without a journal row are adopted.
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Report what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Agent of imported files whose writer the source does not know.
const UNKNOWN_AGENT: &str = "legacy-import";
/// Files read and written at once.
const CONCURRENCY: usize = 8;
/// Source audit rows copied per transaction.
const AUDIT_BATCH: i64 = 500;

/// One file of the source.
#[derive(Debug, Clone)]
struct SourceFile {
    book: String,
    path: String,
    user: String,
    /// The source journal's hash (database mode).
    journal_sha: Option<String>,
    written_at: Option<i64>,
    agent: Option<String>,
}

/// What happened to one file, when it is worth reporting.
#[derive(Debug, Clone, Serialize)]
pub struct FileNote {
    pub book_id: String,
    pub path: String,
    pub user_id: String,
    /// `missing`, `mismatch`, `rejected`, `diverged`, `failed`.
    pub kind: &'static str,
    pub detail: String,
}

/// The report of an import.
#[derive(Debug, Default, Serialize)]
pub struct ImportReport {
    pub dry_run: bool,
    pub source: String,
    pub files_seen: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// Files the journal names but storage does not hold (skipped).
    pub missing: u64,
    /// Files whose stored bytes do not hash to the source journal's sha256 (imported as stored).
    pub mismatched: u64,
    /// Keys that are not valid book/path/user names here (skipped).
    pub rejected: u64,
    /// Files changed here since they were imported (or created here): left as they are.
    pub diverged: u64,
    pub failed: u64,
    pub audit_rows_copied: u64,
    pub notes: Vec<FileNote>,
}

impl ImportReport {
    fn note(&mut self, f: &SourceFile, kind: &'static str, detail: String) {
        self.notes.push(FileNote {
            book_id: f.book.clone(),
            path: f.path.clone(),
            user_id: f.user.clone(),
            kind,
            detail,
        });
    }
}

/// `fs import`.
pub async fn import(common: &Common, a: ImportArgs) -> anyhow::Result<ExitCode> {
    let (_db, engine) = open(common, &a.storage).await?;
    let from = source_storage(&a.from_storage, &a.storage)?;
    let mut report = ImportReport {
        dry_run: a.dry_run,
        source: a.from_storage.clone(),
        ..Default::default()
    };
    let legacy = match &a.from_database {
        Some(url) => Some(LegacyDb::connect(url, &a.from_schema).await?),
        None => None,
    };
    let mut files = match &legacy {
        Some(l) => l.files().await?,
        None => walk(&from).await?,
    };
    if !a.books.is_empty() {
        files.retain(|f| a.books.contains(&f.book));
    }
    let profile = a.storage.default_profile;
    import_files(&engine, &from, files, profile, a.dry_run, &mut report).await;
    if let Some(l) = &legacy {
        report.source = format!("{} + {}", l.source, a.from_storage);
        report.audit_rows_copied = l.copy_audit(&engine, a.dry_run).await?;
    }
    finish(&report, a.json)
}

/// `fs adopt-storage`: the objects of this store's own storage that the journal does not know.
pub async fn adopt(common: &Common, a: AdoptArgs) -> anyhow::Result<ExitCode> {
    let (_db, engine) = crate::cli_fs::existing_engine(common, &a.storage).await?;
    let storage = engine.storage().clone();
    let mut files = walk(&storage).await?;
    let mut known = Vec::with_capacity(files.len());
    for f in &files {
        known.push(journaled(&engine, f).await);
    }
    let mut k = known.into_iter();
    files.retain(|_| !k.next().unwrap_or(false));
    let mut report = ImportReport {
        dry_run: a.dry_run,
        source: "this store's storage".into(),
        ..Default::default()
    };
    let profile = a.storage.default_profile;
    import_files(&engine, &storage, files, profile, a.dry_run, &mut report).await;
    finish(&report, a.json)
}

async fn open(common: &Common, s: &StorageArgs) -> anyhow::Result<(platform::db::Db, Engine)> {
    crate::serve::open_engine(common, s, PoolSettings::default()).await
}

fn finish(report: &ImportReport, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        let verb = if report.dry_run {
            "would import"
        } else {
            "imported"
        };
        println!(
            "{verb} from {}: {} files seen, {} created, {} updated, {} unchanged, {} missing, {} mismatched, {} rejected, {} diverged, {} failed; {} audit rows {}",
            report.source,
            report.files_seen,
            report.created,
            report.updated,
            report.unchanged,
            report.missing,
            report.mismatched,
            report.rejected,
            report.diverged,
            report.failed,
            report.audit_rows_copied,
            if report.dry_run { "to copy" } else { "copied" },
        );
        for n in &report.notes {
            println!(
                "- {} {}/{} (user {}): {}",
                n.kind, n.book_id, n.path, n.user_id, n.detail
            );
        }
    }
    Ok(if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The source's bytes: a directory or `s3://bucket`.
fn source_storage(loc: &str, ours: &StorageArgs) -> anyhow::Result<Storage> {
    let cfg = match loc.strip_prefix("s3://") {
        Some(rest) => {
            let (bucket, prefix) = match rest.split_once('/') {
                Some((b, p)) if !p.trim_matches('/').is_empty() => {
                    (b.to_string(), Some(format!("/{}/", p.trim_matches('/'))))
                }
                Some((b, _)) => (b.to_string(), None),
                None => (rest.to_string(), None),
            };
            anyhow::ensure!(
                !bucket.is_empty(),
                "--from-storage s3:// needs a bucket name"
            );
            pfs::StorageConfig::S3 {
                bucket,
                region: Some(ours.s3_region.clone()),
                endpoint: ours.s3_endpoint.clone(),
                access_key_id: ours.s3_access_key_id.clone(),
                secret_access_key: ours.s3_secret_access_key.clone(),
                root: prefix,
            }
        }
        None => {
            let root = std::path::PathBuf::from(loc);
            anyhow::ensure!(
                root.is_dir(),
                "--from-storage {loc}: no such directory (give the predecessor's storage root, the directory that holds books/)"
            );
            pfs::StorageConfig::Fs { root }
        }
    };
    Storage::new(&cfg).with_context(|| format!("opening the source storage {loc}"))
}

/// Every object under `books/` as a file: `books/{book}/{path}` or
/// `books/{book}/users/{user}/{path}`.
async fn walk(storage: &Storage) -> anyhow::Result<Vec<SourceFile>> {
    let objects = storage
        .list_files("books/")
        .await
        .context("listing books/ in the source storage")?;
    let mut files = Vec::with_capacity(objects.len());
    for (key, _) in objects {
        let Some(rest) = key.strip_prefix("books/") else {
            continue;
        };
        let Some((book, rel)) = rest.split_once('/') else {
            continue;
        };
        let (user, path) = match rel.strip_prefix("users/").and_then(|r| r.split_once('/')) {
            Some((u, p)) => (u.to_string(), p.to_string()),
            None => (pfs::BASE_USER.to_string(), rel.to_string()),
        };
        files.push(SourceFile {
            book: book.to_string(),
            path,
            user,
            journal_sha: None,
            written_at: None,
            agent: None,
        });
    }
    files.sort_by(|a, b| (&a.book, &a.path, &a.user).cmp(&(&b.book, &b.path, &b.user)));
    Ok(files)
}

/// Whether this store's journal already has a row for `f`.
async fn journaled(engine: &Engine, f: &SourceFile) -> bool {
    let Ok((book, path, ns)) = names(f) else {
        return false;
    };
    matches!(engine.stat(&book, &path, &ns).await, Ok(Some(_)))
}

fn names(f: &SourceFile) -> Result<(BookId, BookPath, Namespace), pfs::PfsError> {
    let book = BookId::parse(&f.book)?;
    let path = BookPath::parse(&f.path)?;
    let ns = if f.user == pfs::BASE_USER {
        Namespace::Base
    } else {
        Namespace::Overlay(UserId::parse(&f.user)?)
    };
    Ok((book, path, ns))
}

/// The outcome of one file.
enum Outcome {
    Done(WriteMode),
    Note(&'static str, String),
}

async fn import_files(
    engine: &Engine,
    from: &Storage,
    files: Vec<SourceFile>,
    profile: Profile,
    dry_run: bool,
    report: &mut ImportReport,
) {
    let pb = progress(
        files.len() as u64,
        if dry_run { "checking" } else { "importing" },
    );
    let engine = Arc::new(engine.clone());
    let mut results = futures::stream::iter(files)
        .map(|f| {
            let engine = engine.clone();
            let from = from.clone();
            async move {
                let (outcome, mismatch) = import_one(&engine, &from, &f, profile, dry_run).await;
                (f, outcome, mismatch)
            }
        })
        .buffer_unordered(CONCURRENCY);
    while let Some((f, outcome, mismatch)) = results.next().await {
        pb.inc(1);
        report.files_seen += 1;
        if let Some(detail) = mismatch {
            report.mismatched += 1;
            report.note(&f, "mismatch", detail);
        }
        match outcome {
            Outcome::Done(WriteMode::Created) => report.created += 1,
            Outcome::Done(WriteMode::Updated) => report.updated += 1,
            Outcome::Done(WriteMode::Unchanged) => report.unchanged += 1,
            Outcome::Note(kind, detail) => {
                match kind {
                    "missing" => report.missing += 1,
                    "rejected" => report.rejected += 1,
                    "diverged" => report.diverged += 1,
                    _ => report.failed += 1,
                }
                report.note(&f, kind, detail);
            }
        }
    }
    pb.finish_and_clear();
    report
        .notes
        .sort_by(|a, b| (&a.book_id, &a.path, &a.user_id).cmp(&(&b.book_id, &b.path, &b.user_id)));
}

/// Import one file; the second value reports bytes that differ from the source journal's hash.
async fn import_one(
    engine: &Engine,
    from: &Storage,
    f: &SourceFile,
    profile: Profile,
    dry_run: bool,
) -> (Outcome, Option<String>) {
    let (book, path, ns) = match names(f) {
        Ok(n) => n,
        Err(e) => return (Outcome::Note("rejected", e.to_string()), None),
    };
    let key = Engine::storage_key(&book, &path, &ns);
    let bytes: Bytes = match from.get_opt(&key).await {
        Ok(Some(b)) => b,
        Ok(None) => {
            return (
                Outcome::Note("missing", format!("no object {key} in the source storage")),
                None,
            );
        }
        Err(e) => return (Outcome::Note("failed", format!("reading {key}: {e}")), None),
    };
    let sha = pfs::storage::sha256_hex(&bytes);
    let mismatch = f.journal_sha.as_ref().filter(|j| **j != sha).map(|j| {
        format!(
            "source journal says sha256 {j}, the stored bytes hash to {sha}; imported as stored"
        )
    });
    if dry_run {
        let outcome = match engine.stat(&book, &path, &ns).await {
            Ok(None) => Outcome::Done(WriteMode::Created),
            Ok(Some(e)) if e.sha256 == sha => Outcome::Done(WriteMode::Unchanged),
            Ok(Some(e)) => match engine.last_change(&book, &path, &ns).await {
                Ok(Some(op)) if op == pfs::audit::OP_IMPORT => Outcome::Done(WriteMode::Updated),
                Ok(_) => Outcome::Note(
                    "diverged",
                    format!(
                        "changed here since the last import (now {}); would be left as it is",
                        e.sha256
                    ),
                ),
                Err(e) => Outcome::Note("failed", e.to_string()),
            },
            Err(e) => Outcome::Note("failed", e.to_string()),
        };
        return (outcome, mismatch);
    }
    // The source's writer, unless it is not a valid agent id here.
    let actor = match f.agent.as_deref().map(Actor::new) {
        Some(Ok(a)) => a,
        _ => match Actor::new(UNKNOWN_AGENT) {
            Ok(a) => a,
            Err(e) => return (Outcome::Note("failed", e.to_string()), mismatch),
        },
    };
    let at = f
        .written_at
        .and_then(DateTime::<Utc>::from_timestamp_micros);
    let outcome = match engine
        .import_file(
            &actor,
            &book,
            &path,
            &ns,
            bytes,
            pfs::ImportOptions {
                written_at: at,
                profile,
            },
        )
        .await
    {
        Ok(o) => Outcome::Done(o.mode),
        Err(
            e @ (pfs::PfsError::InvalidPath { .. }
            | pfs::PfsError::SchemaViolation { .. }
            | pfs::PfsError::InvalidInput(_)
            | pfs::PfsError::PayloadTooLarge { .. }),
        ) => Outcome::Note("rejected", e.to_string()),
        Err(pfs::PfsError::Conflict { current, .. }) => Outcome::Note(
            "diverged",
            format!("changed here since the last import (now {current}); left as it is"),
        ),
        Err(e) => Outcome::Note("failed", e.to_string()),
    };
    (outcome, mismatch)
}

fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} {bar:40} {pos}/{len} files ({per_sec}, eta {eta})",
    ) {
        pb.set_style(style);
    }
    pb.set_message(what.to_string());
    pb
}

/// The predecessor's database.
struct LegacyDb {
    pool: sqlx::AnyPool,
    schema: PgSchema,
    /// Where the rows come from, without credentials (the progress key).
    source: String,
}

impl LegacyDb {
    async fn connect(url: &str, schema: &PgSchema) -> anyhow::Result<LegacyDb> {
        let pool = connect_legacy(url).await?;
        let source = format!(
            "{}#{schema}",
            strip_credentials(&normalize_legacy_url(url)?)
        );
        let l = LegacyDb {
            pool,
            schema: schema.clone(),
            source,
        };
        for t in ["file_journal", "audit_log"] {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2",
            )
            .bind(schema.as_str())
            .bind(t)
            .fetch_one(&l.pool)
            .await
            .context("inspecting the predecessor's tables")?;
            anyhow::ensure!(
                n > 0,
                "the predecessor's database has no table {schema}.{t} (is --from-schema right?)"
            );
        }
        Ok(l)
    }

    /// Its journal, with each file's last successful writer from its audit log.
    async fn files(&self) -> anyhow::Result<Vec<SourceFile>> {
        let s = &self.schema;
        let writers: HashMap<(String, String, String), String> =
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT DISTINCT ON (book_id, path, user_id) book_id, path, user_id, agent_id \
             FROM {s}.audit_log WHERE status = 'success' \
             AND operation IN ('write_content', 'upload_asset') \
             ORDER BY book_id, path, user_id, timestamp DESC, id DESC"
            )))
            .fetch_all(&self.pool)
            .await
            .context("reading the predecessor's audit log")?
            .into_iter()
            .filter_map(|r| {
                Some((
                    (r.try_get(0).ok()?, r.try_get(1).ok()?, r.try_get(2).ok()?),
                    r.try_get(3).ok()?,
                ))
            })
            .collect();
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT book_id, path, user_id, sha256, \
             (EXTRACT(EPOCH FROM last_written_at) * 1000000)::BIGINT \
             FROM {s}.file_journal ORDER BY book_id, path, user_id"
        )))
        .fetch_all(&self.pool)
        .await
        .context("reading the predecessor's file_journal")?;
        let mut files = Vec::with_capacity(rows.len());
        for r in rows {
            let (book, path, user): (String, String, String) =
                (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
            let agent = writers
                .get(&(book.clone(), path.clone(), user.clone()))
                .cloned();
            files.push(SourceFile {
                journal_sha: Some(r.try_get(3)?),
                written_at: r.try_get(4)?,
                agent,
                book,
                path,
                user,
            });
        }
        Ok(files)
    }

    /// Copy its audit rows after the progress mark, a batch per transaction. Dry run: count them.
    async fn copy_audit(&self, engine: &Engine, dry_run: bool) -> anyhow::Result<u64> {
        let s = &self.schema;
        let db = engine.db();
        let mut mark =
            pfs::audit::import_progress(db, &self.source, pfs::audit::AUDIT_ITEM).await?;
        if dry_run {
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM {s}.audit_log WHERE id > $1"
            )))
            .bind(mark)
            .fetch_one(&self.pool)
            .await?;
            return Ok(n as u64);
        }
        let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {s}.audit_log WHERE id > $1"
        )))
        .bind(mark)
        .fetch_one(&self.pool)
        .await?;
        let pb = progress(total as u64, "copying audit rows");
        let mut copied = 0u64;
        loop {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT id::BIGINT, (EXTRACT(EPOCH FROM timestamp) * 1000000)::BIGINT, agent_id, \
                 operation, book_id, path, user_id, prev_hash, new_hash, status, error_message, \
                 execution_time_ms::BIGINT FROM {s}.audit_log WHERE id > $1 ORDER BY id LIMIT {AUDIT_BATCH}"
            )))
            .bind(mark)
            .fetch_all(&self.pool)
            .await
            .context("reading the predecessor's audit log")?;
            if rows.is_empty() {
                break;
            }
            let mut batch = Vec::with_capacity(rows.len());
            for r in rows {
                batch.push(LegacyAuditRow {
                    id: r.try_get(0)?,
                    ts_micros: r.try_get(1)?,
                    agent_id: r.try_get(2)?,
                    operation: r.try_get(3)?,
                    book_id: r.try_get(4)?,
                    path: r.try_get(5)?,
                    user_id: r.try_get(6)?,
                    prev_hash: r.try_get(7)?,
                    new_hash: r.try_get(8)?,
                    status: r.try_get(9)?,
                    error_message: r.try_get(10)?,
                    execution_time_ms: r.try_get(11)?,
                });
            }
            mark = batch.last().map_or(mark, |r| r.id);
            let n = pfs::audit::append_legacy_rows(db, &self.source, &batch).await?;
            copied += n as u64;
            pb.inc(batch.len() as u64);
        }
        pb.finish_and_clear();
        Ok(copied)
    }
}

/// A small pool on the predecessor's PostgreSQL database (`--from-database`).
pub async fn connect_legacy(url: &str) -> anyhow::Result<sqlx::AnyPool> {
    let url = normalize_legacy_url(url)?;
    platform::db::install_drivers();
    sqlx::any::AnyPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .context("connecting to the predecessor's database (--from-database)")
}

/// The predecessor's URL forms (`postgresql+asyncpg://`, `ssl=`) as plain `postgres://`.
pub fn normalize_legacy_url(url: &str) -> anyhow::Result<String> {
    let url = url
        .replacen("postgresql+asyncpg://", "postgres://", 1)
        .replacen("postgresql://", "postgres://", 1)
        .replace("ssl=", "sslmode=");
    anyhow::ensure!(
        url.starts_with("postgres://"),
        "the predecessor's database must be PostgreSQL (postgres://…)"
    );
    Ok(url)
}

/// `postgres://user:pw@host/db?x` → `postgres://host/db`.
fn strip_credentials(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let rest = rest.split('?').next().unwrap_or(rest);
    format!("{scheme}://{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_credentials_and_driver_names() {
        let u = normalize_legacy_url("postgresql+asyncpg://u:p@h:5432/db?ssl=require").unwrap();
        assert_eq!(u, "postgres://u:p@h:5432/db?sslmode=require");
        assert_eq!(strip_credentials(&u), "postgres://h:5432/db");
        assert!(normalize_legacy_url("sqlite:///x.db").is_err());
    }
}
