//! The content engine: the hash protocol, overlays, versions and audit over the journal (SQL) and
//! object storage (OpenDAL).
//!
//! # Write path (atomic, crash-safe)
//! 1. The bytes go to an immutable content-addressed blob (`_pfs/blobs/sha256/…`, see
//!    [`crate::storage::blob_key`]); leaving one behind after a later failure is harmless.
//! 2. One write transaction compares-and-swaps the journal row (`UPDATE … WHERE sha256 =
//!    expected`, or `INSERT … ON CONFLICT DO NOTHING` for creates), appends the `file_versions`
//!    row and the audit row (see [`crate::audit`]) and enqueues the canonical path in
//!    `pending_materializations`. Of N concurrent updates with the same expected hash exactly
//!    one matches; the rest get `CONFLICT` with the current hash.
//! 3. After commit the bytes are *materialized* at the canonical key `books/{book}/…`: copy the
//!    blob the journal names (or delete the object when the journal row is gone), re-read the
//!    journal, and repeat until what was applied is what the journal says, so the canonical path
//!    converges to the last committed version even under concurrent writers. The pending row is
//!    removed only if no newer commit happened; a write's own removal (its *confirmation*) is
//!    batched with other writes' by a background task (see [`crate::confirm`]), so it may follow
//!    the write's reply by a moment. A crash between commit and materialization
//!    leaves the pending row, which [`Engine::reconcile_pending`] (run by [`Engine::open`]) and
//!    [`Engine::fsck`] complete.
//!
//! Reads serve the bytes of the blob the journal names, so a read always agrees with the journal,
//! even before materialization.
//!
//! # Unsynced blobs (local storage)
//! Step 1 normally fsyncs the blob so it is durable before the row that names it. With local
//! storage (on Linux; a SQLite file or PostgreSQL) a write's blob of up to 1 MiB skips that fsync
//! (on this project's VM it was the largest single cost of a write) and its bytes are inserted
//! into `unsynced_blobs` in the same transaction as the journal row instead: the row can then
//! never outlive its bytes, whatever a power loss keeps. [`EngineConfig::blob_sync_interval`]
//! after such writes a task flushes the filesystem (`syncfs`) and deletes the rows whose ids are
//! at most the largest id committed before the flush began (a row's blob file is written before
//! its id is drawn, so every such file was in the flush). [`Engine::open`] checks every remaining
//! row's file first and rewrites it if it is missing or torn. Several instances may share one
//! local store only on one machine (one kernel), where any instance's `syncfs` covers every
//! instance's files; a store shared over a network filesystem needs `blob_sync_interval` zero.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use platform::db::{Db, Grouped, SyncRead, WriteTx};
use serde::Serialize;
use sqlx::Row;

use crate::audit::{
    self, AuditLog, NewAuditRow, OP_DELETE_ASSET, OP_DELETE_CONTENT, OP_UPLOAD_ASSET,
    OP_WRITE_CONTENT, STATUS_CONFLICT, STATUS_ERROR, STATUS_SUCCESS,
};
use crate::blob_cache::BlobCache;
use crate::confirm::{self, Applied, ConfirmQueue};
use crate::db::{
    self as pdb, db_err, from_micros, like_escape, now_micros, sync_db_err, sync_stmt,
};
use crate::error::{PfsError, Result};
use crate::ids::{BASE_USER, BookId, Namespace, UserId};
use crate::path::{Area, BookPath, DirPrefix, storage_key};
use crate::schema::Profile;
use crate::storage::{Storage, blob_key, is_sha256_hex, sha256_hex};

/// Size limits (bytes).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest `content/` file (default 2 MiB).
    pub max_content_bytes: u64,
    /// Largest `static/` asset (default 100 MiB).
    pub max_asset_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_content_bytes: 2 * 1024 * 1024,
            max_asset_bytes: 100 * 1024 * 1024,
        }
    }
}

/// Test hooks that make the database commit fail or the process "crash" right after a commit.
/// Shared (`Arc`); costs one `Option` check when absent.
#[derive(Debug, Default)]
pub struct Faults {
    fail_commits_next: AtomicU64,
    fail_commit_ppm: AtomicU64,
    crash_next: AtomicU64,
    crash_ppm: AtomicU64,
    injected_commit_failures: AtomicU64,
    injected_crashes: AtomicU64,
}

fn take_or_roll(next: &AtomicU64, ppm: &AtomicU64) -> bool {
    next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
        || {
            let p = ppm.load(Ordering::Relaxed);
            p > 0 && rand::random_range(0..1_000_000u64) < p
        }
}

impl Faults {
    /// No faults until configured.
    pub fn new() -> Arc<Faults> {
        Arc::new(Faults::default())
    }
    /// Fail the next `n` commits (the transaction is rolled back).
    pub fn fail_next_commits(&self, n: u64) {
        self.fail_commits_next.store(n, Ordering::SeqCst);
    }
    /// Fail a random fraction of commits.
    pub fn set_commit_failure_rate(&self, f: f64) {
        self.fail_commit_ppm
            .store((f.clamp(0.0, 1.0) * 1e6) as u64, Ordering::SeqCst);
    }
    /// Return right after the next `n` commits without materializing ("crash").
    pub fn crash_next_after_commit(&self, n: u64) {
        self.crash_next.store(n, Ordering::SeqCst);
    }
    /// "Crash" after a random fraction of commits.
    pub fn set_crash_after_commit_rate(&self, f: f64) {
        self.crash_ppm
            .store((f.clamp(0.0, 1.0) * 1e6) as u64, Ordering::SeqCst);
    }
    /// Stop injecting.
    pub fn disable(&self) {
        for a in [
            &self.fail_commits_next,
            &self.fail_commit_ppm,
            &self.crash_next,
            &self.crash_ppm,
        ] {
            a.store(0, Ordering::SeqCst);
        }
    }
    /// Injected (commit failures, crashes) so far.
    pub fn injected(&self) -> (u64, u64) {
        (
            self.injected_commit_failures.load(Ordering::SeqCst),
            self.injected_crashes.load(Ordering::SeqCst),
        )
    }
    fn before_commit(&self) -> Result<()> {
        if take_or_roll(&self.fail_commits_next, &self.fail_commit_ppm) {
            self.injected_commit_failures.fetch_add(1, Ordering::SeqCst);
            return Err(PfsError::Internal(
                "injected commit failure (test fault)".into(),
            ));
        }
        Ok(())
    }
    fn after_commit_crash(&self) -> bool {
        let crash = take_or_roll(&self.crash_next, &self.crash_ppm);
        if crash {
            self.injected_crashes.fetch_add(1, Ordering::SeqCst);
        }
        crash
    }
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub limits: Limits,
    /// Schema profile of books created implicitly (first base write) or without a profile.
    pub default_profile: Profile,
    /// Bytes of small blobs kept in memory ([`crate::blob_cache`]); 0 turns the cache off.
    pub blob_cache_bytes: u64,
    /// How long after a write that left its blob unsynced the store is flushed and the blob's
    /// database copy forgotten (see "Unsynced blobs" in the module docs). Zero: every blob is
    /// fsynced before its commit.
    pub blob_sync_interval: std::time::Duration,
    /// Test-only fault hooks.
    pub faults: Option<Arc<Faults>>,
}

/// Default [`EngineConfig::blob_sync_interval`]: 200 ms.
pub const DEFAULT_BLOB_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

/// Blobs up to this size are written without fsync and kept durable in `unsynced_blobs` instead.
const UNSYNCED_BLOB_MAX: usize = 1024 * 1024;

/// Default [`EngineConfig::blob_cache_bytes`]: 64 MiB.
pub const DEFAULT_BLOB_CACHE_BYTES: u64 = 64 * 1024 * 1024;

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            limits: Limits::default(),
            default_profile: Profile::default(),
            blob_cache_bytes: DEFAULT_BLOB_CACHE_BYTES,
            blob_sync_interval: DEFAULT_BLOB_SYNC_INTERVAL,
            faults: None,
        }
    }
}

/// Who performs a mutation: the `agent_id` of audit rows. Never empty, never `system`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Actor {
    agent_id: String,
}

impl Actor {
    /// Check and wrap a caller id (token subject, API key owner, configured dev id).
    pub fn new(agent_id: impl Into<String>) -> Result<Actor> {
        let agent_id = agent_id.into();
        if agent_id.trim().is_empty() {
            return Err(PfsError::InvalidInput(
                "agent id is empty; every change needs a caller identity".into(),
            ));
        }
        if agent_id.trim().eq_ignore_ascii_case("system") {
            return Err(PfsError::InvalidInput(
                "agent id 'system' is reserved; use the caller's real identity".into(),
            ));
        }
        if agent_id.len() > 255 || agent_id.chars().any(char::is_control) {
            return Err(PfsError::InvalidInput(
                "agent id must be at most 255 characters without control characters".into(),
            ));
        }
        Ok(Actor { agent_id })
    }

    /// The caller id recorded in audit rows.
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }
}

/// A book's registry entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BookInfo {
    pub book_id: String,
    pub profile: Profile,
    pub created_at: DateTime<Utc>,
}

/// A journal row: what exists, its hash and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JournalEntry {
    pub book_id: String,
    /// Book-relative path (`content/…`, `static/…`).
    pub path: String,
    /// `__base__` or the overlay's user id.
    pub user_id: String,
    pub sha256: String,
    pub size: u64,
    pub last_written_at: DateTime<Utc>,
    pub version: i64,
    pub storage_backend: String,
}

impl JournalEntry {
    /// Whether this row is a user overlay.
    pub fn is_overlay(&self) -> bool {
        self.user_id != BASE_USER
    }
}

/// Where a read was served from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Base,
    Overlay,
}

/// Result of [`Engine::read`].
#[derive(Debug, Clone, Serialize)]
pub struct ReadOutput {
    #[serde(skip)]
    pub bytes: Bytes,
    pub entry: JournalEntry,
    pub source: Source,
}

/// `created` | `updated`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteMode {
    Created,
    Updated,
}

/// Result of [`Engine::write`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WriteOutcome {
    pub mode: WriteMode,
    pub sha256: String,
    pub size: u64,
    pub prev_hash: Option<String>,
    pub version: i64,
}

impl WriteOutcome {
    /// The outcome of a committed write of `sha256` that expected `expected`.
    fn of(expected: Expect, sha256: String, size: u64, version: i64) -> WriteOutcome {
        let (mode, prev_hash) = match expected {
            Expect::Absent => (WriteMode::Created, None),
            Expect::Hash(h) => (WriteMode::Updated, Some(h)),
        };
        WriteOutcome {
            mode,
            sha256,
            size,
            prev_hash,
            version,
        }
    }
}

/// `created` | `updated` | `unchanged`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AssetStatus {
    Created,
    Updated,
    Unchanged,
}

/// Result of [`Engine::put_asset`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AssetOutcome {
    pub status: AssetStatus,
    pub sha256: String,
    pub size: u64,
    pub version: i64,
}

/// Result of [`Engine::delete`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeleteOutcome {
    pub existed: bool,
    pub prev_hash: Option<String>,
}

/// Which rows [`Engine::list`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListView {
    /// Shared content only.
    Base,
    /// Only this user's overlay rows.
    Overlay(UserId),
    /// Base with this user's overlay rows replacing the same paths (`entry.user_id` tells which).
    Merged(UserId),
}

/// One committed version of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionEntry {
    pub version: i64,
    pub sha256: String,
    pub size: u64,
    pub written_at: DateTime<Utc>,
    pub agent_id: String,
}

/// What a mutation expects of the current journal row.
enum Expect {
    /// Create: the row must not exist.
    Absent,
    /// Update: the row must exist with this hash.
    Hash(String),
}

struct Inner {
    db: Db,
    storage: Storage,
    cfg: EngineConfig,
    /// Base manifests by book id, each valid for the generation vector it was read at.
    manifests: std::sync::Mutex<HashMap<String, Arc<BaseManifest>>>,
    /// Small immutable blobs by sha256 (`None` when turned off).
    blobs: Option<BlobCache>,
    /// Applied materializations waiting for their (batched) confirmation (see [`crate::confirm`]).
    confirm: Arc<ConfirmQueue>,
    /// Whether writes may leave small blobs unsynced (SQLite file + local storage on Linux).
    defer_blob_sync: bool,
    /// Wakes the blob syncer after a write left a blob unsynced.
    unsynced: Arc<tokio::sync::Notify>,
    /// Book profiles last read by this engine (PostgreSQL writes: a hint, re-checked by the
    /// write statement itself, see [`Engine::write_pg_fast`]).
    profiles: std::sync::RwLock<HashMap<String, Profile>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.confirm.close();
        self.unsynced.notify_one();
    }
}

/// At most this many books keep a cached base manifest (the cache is cleared when full).
const MANIFEST_CACHE_BOOKS: usize = 64;
/// At most this many book profiles are remembered (the cache is cleared when full).
const PROFILE_CACHE_BOOKS: usize = 4096;

/// A book's base manifest (every base file's path and sha256, sorted by path) as of one committed
/// state, from [`Engine::base_manifest`]. Shared from a per-engine cache while the book is
/// unchanged.
#[derive(Debug)]
pub struct BaseManifest {
    /// `(audit shard, generation)` of the book, sorted: names the committed state read.
    generation: Vec<(i64, i64)>,
    /// [`crate::manifest::manifest_hash`] of `entries`.
    pub manifest_hash: String,
    /// `(path, sha256)` sorted by path (byte order).
    pub entries: Vec<(String, String)>,
    /// Whether this engine has stored the snapshot of this manifest already.
    snapshot_saved: AtomicBool,
}

/// The inputs of [`Engine::commit_write_sync`], owned (they move to a blocking task).
#[derive(Clone)]
struct SyncWrite {
    agent_id: String,
    op: &'static str,
    book: String,
    path: String,
    user: String,
    sha: String,
    size: i64,
    now: i64,
    backend: String,
    /// `None`: create; `Some(h)`: update from `h`.
    expected: Option<String>,
    started: Instant,
}

/// The book store engine. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("db", &self.inner.db.kind)
            .field("storage", &self.inner.storage)
            .finish()
    }
}

/// How long [`Engine::open`] waits for pending materializations before continuing them in the
/// background.
const RECONCILE_AT_OPEN_BUDGET: std::time::Duration = std::time::Duration::from_secs(2);

const JOURNAL_COLS: &str =
    "book_id, path, user_id, sha256, size, last_written_at, version, storage_backend";

fn decode_entry(r: &sqlx::any::AnyRow) -> Result<JournalEntry> {
    let g = db_err("decode journal row");
    let size: i64 = r.try_get("size").map_err(&g)?;
    Ok(JournalEntry {
        book_id: r.try_get("book_id").map_err(&g)?,
        path: r.try_get("path").map_err(&g)?,
        user_id: r.try_get("user_id").map_err(&g)?,
        sha256: r.try_get("sha256").map_err(&g)?,
        size: u64::try_from(size).unwrap_or(0),
        last_written_at: from_micros(r.try_get("last_written_at").map_err(&g)?),
        version: r.try_get("version").map_err(&g)?,
        storage_backend: r.try_get("storage_backend").map_err(&g)?,
    })
}

/// The canonical storage key of a journal key given as stored strings.
fn key_for(book: &str, path: &str, user: &str) -> String {
    if user == BASE_USER {
        format!("books/{book}/{path}")
    } else {
        format!("books/{book}/users/{user}/{path}")
    }
}

fn write_metrics(status: &'static str, mode: &'static str, op: &'static str, started: Instant) {
    metrics::counter!("panaversityfs_write_total", "status" => status, "mode" => mode).increment(1);
    metrics::histogram!("panaversityfs_write_duration_seconds", "operation" => op)
        .record(started.elapsed().as_secs_f64());
}

fn audit_status(e: &PfsError) -> &'static str {
    match e {
        PfsError::Conflict { .. } => STATUS_CONFLICT,
        _ => STATUS_ERROR,
    }
}

impl Engine {
    /// Open the engine: apply migrations, then finish any materialization a previous process
    /// committed but did not complete (up to 2 s inline, the rest in a background task).
    pub async fn open(db: Db, storage: Storage, cfg: EngineConfig) -> Result<Engine> {
        pdb::migrate_up(&db).await?;
        let blobs = BlobCache::new(cfg.blob_cache_bytes);
        let defer_blob_sync = (db.has_sync_writer() || db.kind == platform::db::DbKind::Postgres)
            && storage.can_defer_blob_sync()
            && !cfg.blob_sync_interval.is_zero();
        let engine = Engine {
            inner: Arc::new(Inner {
                db,
                storage,
                cfg,
                manifests: std::sync::Mutex::new(HashMap::new()),
                profiles: std::sync::RwLock::new(HashMap::new()),
                blobs,
                confirm: Arc::new(ConfirmQueue::default()),
                defer_blob_sync,
                unsynced: Arc::new(tokio::sync::Notify::new()),
            }),
        };
        engine.spawn_confirmer();
        // Blobs a crash (power loss) may have lost or torn are rewritten from their durable copy
        // before anything reads or materializes them.
        engine.restore_unsynced_blobs().await?;
        if defer_blob_sync {
            engine.spawn_blob_syncer();
        }
        // Finish what a previous process committed but did not materialize. Bounded, so a
        // storage outage cannot hold up startup: whatever is left continues in the background
        // (materialization is idempotent, so abandoning one midway is safe).
        match tokio::time::timeout(RECONCILE_AT_OPEN_BUDGET, engine.reconcile_pending()).await {
            Ok(Ok(n)) if n > 0 => tracing::info!(count = n, "completed pending materializations"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "reconciling pending materializations failed; the reconciler or fsck will finish them")
            }
            Err(_) => {
                tracing::warn!("pending materializations continue in the background");
                let bg = engine.clone();
                tokio::spawn(async move {
                    if let Err(e) = bg.reconcile_pending().await {
                        tracing::warn!(error = %e, "background reconciliation failed");
                    }
                });
            }
        }
        Ok(engine)
    }

    /// The object store.
    pub fn storage(&self) -> &Storage {
        &self.inner.storage
    }

    /// The database pool.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The settings this engine was opened with.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.cfg
    }

    /// The audit log of this engine's database.
    pub fn audit(&self) -> AuditLog {
        AuditLog::new(self.inner.db.clone())
    }

    // ---------------------------------------------------------------- books

    /// The book's registry entry, creating it (with `profile`, else the default profile) if
    /// missing. An existing book keeps its profile (use [`Engine::set_profile`] to change it).
    pub async fn ensure_book(&self, book: &BookId, profile: Option<Profile>) -> Result<BookInfo> {
        if let Some(info) = self.book(book).await? {
            return Ok(info);
        }
        let profile = profile.unwrap_or(self.inner.cfg.default_profile);
        let _w = self.inner.db.lock_writes().await;
        sqlx::query(
            "INSERT INTO books (book_id, profile, created_at) VALUES ($1, $2, $3) ON CONFLICT (book_id) DO NOTHING",
        )
        .bind(book.as_str())
        .bind(profile.as_str())
        .bind(now_micros())
        .execute(&self.inner.db.pool)
        .await
        .map_err(db_err("create book"))?;
        drop(_w);
        self.book(book)
            .await?
            .ok_or_else(|| PfsError::Internal("book row vanished right after insert".into()))
    }

    /// The book's registry entry, if any.
    pub async fn book(&self, book: &BookId) -> Result<Option<BookInfo>> {
        let row = sqlx::query("SELECT book_id, profile, created_at FROM books WHERE book_id = $1")
            .bind(book.as_str())
            .fetch_optional(&self.inner.db.pool)
            .await
            .map_err(db_err("read book"))?;
        row.map(|r| decode_book(&r)).transpose()
    }

    /// Every book, sorted by id.
    pub async fn list_books(&self) -> Result<Vec<BookInfo>> {
        let rows = sqlx::query("SELECT book_id, profile, created_at FROM books")
            .fetch_all(&self.inner.db.pool)
            .await
            .map_err(db_err("list books"))?;
        let mut v = rows.iter().map(decode_book).collect::<Result<Vec<_>>>()?;
        v.sort_by(|a, b| a.book_id.cmp(&b.book_id));
        Ok(v)
    }

    /// Set a book's schema profile (creating the book if missing). Existing files are not
    /// re-checked; `validate_book` reports them.
    pub async fn set_profile(&self, book: &BookId, profile: Profile) -> Result<()> {
        self.ensure_book(book, Some(profile)).await?;
        let _w = self.inner.db.lock_writes().await;
        sqlx::query("UPDATE books SET profile = $1 WHERE book_id = $2")
            .bind(profile.as_str())
            .bind(book.as_str())
            .execute(&self.inner.db.pool)
            .await
            .map_err(db_err("set profile"))?;
        self.remember_profile(book.as_str(), profile);
        Ok(())
    }

    /// Remember a book's profile as last read (see [`Inner::profiles`]).
    fn remember_profile(&self, book: &str, profile: Profile) {
        if self.inner.db.kind != platform::db::DbKind::Postgres {
            return;
        }
        let Ok(mut m) = self.inner.profiles.write() else {
            return;
        };
        if m.get(book) == Some(&profile) {
            return;
        }
        if m.len() >= PROFILE_CACHE_BOOKS {
            m.clear();
        }
        m.insert(book.to_string(), profile);
    }

    /// The profile this engine last read for `book`, if any.
    fn cached_profile(&self, book: &str) -> Option<Profile> {
        self.inner.profiles.read().ok()?.get(book).copied()
    }

    // ---------------------------------------------------------------- reads

    /// The journal row of `path` in `ns`, if any.
    pub async fn stat(
        &self,
        book: &BookId,
        path: &BookPath,
        ns: &Namespace,
    ) -> Result<Option<JournalEntry>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOURNAL_COLS} FROM file_journal WHERE book_id = $1 AND path = $2 AND user_id = $3"
        )))
        .bind(book.as_str())
        .bind(path.as_str())
        .bind(ns.journal_user())
        .fetch_optional(&self.inner.db.pool)
        .await
        .map_err(db_err("stat"))?;
        row.map(|r| decode_entry(&r)).transpose()
    }

    /// Read a file: `user`'s overlay if present, else the base; `NOT_FOUND` if neither exists.
    pub async fn read(
        &self,
        book: &BookId,
        path: &BookPath,
        user: Option<&UserId>,
    ) -> Result<ReadOutput> {
        let user = user.map(UserId::as_str).unwrap_or(BASE_USER);
        let mut base = None;
        let mut overlay = None;
        for e in self
            .journal_rows(book.as_str(), path.as_str(), user)
            .await?
        {
            if e.is_overlay() {
                overlay = Some(e);
            } else {
                base = Some(e);
            }
        }
        let (entry, source) = match (overlay, base) {
            (Some(o), _) => (o, Source::Overlay),
            (None, Some(b)) => (b, Source::Base),
            (None, None) => {
                return Err(PfsError::not_found(format!("{path} in book {book}")));
            }
        };
        let bytes = self.read_entry(&entry).await?;
        Ok(ReadOutput {
            bytes,
            entry,
            source,
        })
    }

    /// Run `f` inline on a query-only SQLite connection (see `platform::db::sqlite_read`):
    /// `None` when there is none (PostgreSQL, in-memory SQLite) or SQLite asked the reader to
    /// wait; the caller then uses the pool.
    fn try_sync_read<T>(
        &self,
        ctx: &'static str,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Option<Result<T>> {
        match self.inner.db.sync_reader()?.read(f) {
            Ok(SyncRead::Done(v)) => Some(Ok(v)),
            Ok(SyncRead::Busy) => {
                metrics::counter!("panaversityfs_sqlite_sync_read_fallback_total").increment(1);
                None
            }
            Err(e) => Some(Err(sync_db_err(ctx)(e))),
        }
    }

    /// The journal rows of `path` for the base and for `user` (at most two; `user` may be the
    /// base). One indexed lookup: inline on SQLite files (see `platform::db::sqlite_read`),
    /// through the pool otherwise or when SQLite asks the reader to wait.
    async fn journal_rows(&self, book: &str, path: &str, user: &str) -> Result<Vec<JournalEntry>> {
        const SQL_SYNC: &str = "SELECT book_id, path, user_id, sha256, size, last_written_at, version, \
             storage_backend FROM file_journal WHERE book_id = ?1 AND path = ?2 AND user_id IN (?3, ?4)";
        let sync = self.try_sync_read("read journal", |c| {
            let mut st = c.prepare_cached(SQL_SYNC)?;
            let rows = st.query_map([book, path, BASE_USER, user], |r| {
                let size: i64 = r.get(4)?;
                Ok(JournalEntry {
                    book_id: r.get(0)?,
                    path: r.get(1)?,
                    user_id: r.get(2)?,
                    sha256: r.get(3)?,
                    size: u64::try_from(size).unwrap_or(0),
                    last_written_at: from_micros(r.get(5)?),
                    version: r.get(6)?,
                    storage_backend: r.get(7)?,
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        });
        if let Some(rows) = sync {
            return rows;
        }
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOURNAL_COLS} FROM file_journal WHERE book_id = $1 AND path = $2 AND user_id IN ($3, $4)"
        )))
        .bind(book)
        .bind(path)
        .bind(BASE_USER)
        .bind(user)
        .fetch_all(&self.inner.db.pool)
        .await
        .map_err(db_err("read journal"))?;
        rows.iter().map(decode_entry).collect()
    }

    /// [`Engine::read`] as UTF-8 text (`INVALID_INPUT` if the file is not UTF-8).
    pub async fn read_text(
        &self,
        book: &BookId,
        path: &BookPath,
        user: Option<&UserId>,
    ) -> Result<(String, JournalEntry, Source)> {
        let out = self.read(book, path, user).await?;
        let text = String::from_utf8(out.bytes.to_vec()).map_err(|_| {
            PfsError::InvalidInput(format!(
                "{path} is not UTF-8 text; fetch it as an asset (bytes) instead"
            ))
        })?;
        Ok((text, out.entry, out.source))
    }

    /// Journal rows of a book, sorted by path (byte order), optionally under `prefix`.
    pub async fn list(
        &self,
        book: &BookId,
        view: ListView,
        prefix: Option<&DirPrefix>,
    ) -> Result<Vec<JournalEntry>> {
        let (u1, u2) = match &view {
            ListView::Base => (BASE_USER, BASE_USER),
            ListView::Overlay(u) => (u.as_str(), u.as_str()),
            ListView::Merged(u) => (BASE_USER, u.as_str()),
        };
        let mut sql = format!(
            "SELECT {JOURNAL_COLS} FROM file_journal WHERE book_id = $1 AND user_id IN ($2, $3)"
        );
        if prefix.is_some() {
            sql.push_str(" AND path LIKE $4 ESCAPE '\\'");
        }
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(book.as_str())
            .bind(u1)
            .bind(u2);
        if let Some(p) = prefix {
            q = q.bind(format!("{}/%", like_escape(p.as_str())));
        }
        let rows = q
            .fetch_all(&self.inner.db.pool)
            .await
            .map_err(db_err("list journal"))?;
        let mut by_path: BTreeMap<String, JournalEntry> = BTreeMap::new();
        for r in &rows {
            let e = decode_entry(r)?;
            match by_path.get(&e.path) {
                // Merged view: the overlay row wins over the base row.
                Some(existing) if existing.is_overlay() && !e.is_overlay() => {}
                _ => {
                    by_path.insert(e.path.clone(), e);
                }
            }
        }
        Ok(by_path.into_values().collect())
    }

    /// The bytes of a blob (`NOT_FOUND` if missing).
    pub async fn read_blob(&self, sha256: &str) -> Result<Bytes> {
        check_sha(sha256)?;
        match self.inner.storage.get(&blob_key(sha256)).await {
            Err(PfsError::NotFound { .. }) => Err(PfsError::Internal(format!(
                "blob {sha256} named by the journal is missing from storage; run fsck"
            ))),
            other => other,
        }
    }

    /// Read a blob whose size the journal records (the fast path for whole-file reads).
    /// Small blobs come from the in-memory cache when present (blobs never change).
    pub async fn read_blob_sized(&self, sha256: &str, size: u64) -> Result<Bytes> {
        check_sha(sha256)?;
        let cache = self
            .inner
            .blobs
            .as_ref()
            .filter(|c| size <= c.max_item_bytes());
        if let Some(hit) = cache.and_then(|c| c.get(sha256)) {
            return Ok(hit);
        }
        match self.inner.storage.get_sized(&blob_key(sha256), size).await {
            Err(PfsError::NotFound { .. }) => Err(PfsError::Internal(format!(
                "blob {sha256} named by the journal is missing from storage; run fsck"
            ))),
            Ok(bytes) => {
                // Only bytes of the size the journal records: a short or long read is not
                // remembered (fsck reports such a blob).
                if let Some(c) = cache
                    && bytes.len() as u64 == size
                {
                    c.insert(sha256, &bytes);
                }
                Ok(bytes)
            }
            other => other,
        }
    }

    /// Read the bytes a journal entry names.
    pub async fn read_entry(&self, entry: &JournalEntry) -> Result<Bytes> {
        self.read_blob_sized(&entry.sha256, entry.size).await
    }

    /// A streaming reader over a blob (bounded memory; for archives and downloads).
    pub async fn open_blob(&self, sha256: &str) -> Result<opendal::FuturesAsyncReader> {
        check_sha(sha256)?;
        self.inner.storage.reader(&blob_key(sha256)).await
    }

    /// Every committed version of a file, oldest first.
    pub async fn history(
        &self,
        book: &BookId,
        path: &BookPath,
        ns: &Namespace,
    ) -> Result<Vec<VersionEntry>> {
        let rows = sqlx::query(
            "SELECT version, sha256, size, written_at, agent_id FROM file_versions \
             WHERE book_id = $1 AND path = $2 AND user_id = $3 ORDER BY version",
        )
        .bind(book.as_str())
        .bind(path.as_str())
        .bind(ns.journal_user())
        .fetch_all(&self.inner.db.pool)
        .await
        .map_err(db_err("read history"))?;
        rows.iter()
            .map(|r| {
                let g = db_err("decode version row");
                let size: i64 = r.try_get("size").map_err(&g)?;
                Ok(VersionEntry {
                    version: r.try_get("version").map_err(&g)?,
                    sha256: r.try_get("sha256").map_err(&g)?,
                    size: u64::try_from(size).unwrap_or(0),
                    written_at: from_micros(r.try_get("written_at").map_err(&g)?),
                    agent_id: r.try_get("agent_id").map_err(&g)?,
                })
            })
            .collect()
    }

    /// The bytes of one earlier (or the current) version.
    pub async fn read_version(
        &self,
        book: &BookId,
        path: &BookPath,
        ns: &Namespace,
        version: i64,
    ) -> Result<Bytes> {
        let sha: Option<String> = sqlx::query_scalar(
            "SELECT sha256 FROM file_versions WHERE book_id = $1 AND path = $2 AND user_id = $3 AND version = $4",
        )
        .bind(book.as_str())
        .bind(path.as_str())
        .bind(ns.journal_user())
        .bind(version)
        .fetch_optional(&self.inner.db.pool)
        .await
        .map_err(db_err("read version"))?;
        match sha {
            Some(sha) => self.read_blob(&sha).await,
            None => Err(PfsError::not_found(format!("version {version} of {path}"))),
        }
    }

    // ---------------------------------------------------------------- mutations

    /// Write a file with the hash protocol: no `expected_hash` creates (`HASH_REQUIRED` if it
    /// exists), an `expected_hash` updates (`NOT_FOUND` if absent, `CONFLICT` with the current
    /// hash on mismatch). Checks the book's schema profile (a base write creates the book with
    /// the default profile), UTF-8 and size limits for `content/`, and that overlays hold only
    /// `content/` paths.
    pub async fn write(
        &self,
        actor: &Actor,
        book: &BookId,
        path: &BookPath,
        ns: &Namespace,
        bytes: Bytes,
        expected_hash: Option<&str>,
    ) -> Result<WriteOutcome> {
        let started = Instant::now();
        let op = if path.area() == Area::Content {
            OP_WRITE_CONTENT
        } else {
            OP_UPLOAD_ASSET
        };
        let res = self
            .write_inner(actor, book, path, ns, bytes, expected_hash, op, started)
            .await;
        match &res {
            Ok(o) => write_metrics(
                STATUS_SUCCESS,
                if o.mode == WriteMode::Created {
                    "created"
                } else {
                    "updated"
                },
                op,
                started,
            ),
            Err(e) => write_metrics(audit_status(e), "none", op, started),
        }
        res
    }

    #[allow(clippy::too_many_arguments)]
    async fn write_inner(
        &self,
        actor: &Actor,
        book: &BookId,
        path: &BookPath,
        ns: &Namespace,
        bytes: Bytes,
        expected_hash: Option<&str>,
        op: &'static str,
        started: Instant,
    ) -> Result<WriteOutcome> {
        let req = WriteReq {
            actor,
            op,
            book,
            path,
            ns,
            started,
        };
        if let Some(o) = self.write_pg_fast(req, &bytes, expected_hash).await? {
            return Ok(o);
        }
        let checks = self.check_write(book, path, ns, &bytes).await;
        let expected = match expected_hash {
            None => Ok(Expect::Absent),
            Some(h) => {
                let h = h.trim().to_ascii_lowercase();
                if is_sha256_hex(&h) {
                    Ok(Expect::Hash(h))
                } else {
                    Err(PfsError::InvalidInput(
                        "expected_hash must be the 64-hex-digit sha256 returned by read_content"
                            .into(),
                    ))
                }
            }
        };
        // Fail fast on a stale or missing hash before storing any bytes; the compare-and-swap in
        // the transaction stays the authority (the journal may change in between).
        let expected = checks.and_then(|current| {
            let exp = expected?;
            match (&exp, current) {
                (Expect::Absent, Some(cur)) => Err(PfsError::HashRequired {
                    path: path.to_string(),
                    current: cur,
                }),
                (Expect::Hash(_), None) => Err(not_found_for_update(path)),
                (Expect::Hash(h), Some(cur)) if *h != cur => Err(PfsError::Conflict {
                    path: path.to_string(),
                    expected: h.clone(),
                    current: cur,
                }),
                _ => Ok(exp),
            }
        });
        let expected = match expected {
            Ok(e) => e,
            Err(e) => {
                self.audit_failure(actor, op, book, path, ns, &e, started)
                    .await;
                return Err(e);
            }
        };
        let sha = sha256_hex(&bytes);
        let size = bytes.len() as u64;
        if self.inner.db.has_sync_writer() && self.inner.storage.is_local_fs() {
            return self.write_local(req, sha, bytes, expected).await;
        }
        let unsynced = self.store_write_blob(req, &sha, &bytes).await?;
        self.commit_write(req, &sha, size, expected, unsynced.as_deref())
            .await
    }

    /// Store a write's blob before the journal names it (a failure is audited and returned) and
    /// remember it in the blob cache (right whether or not the commit succeeds: blobs are
    /// content-addressed). A small blob on local storage skips its fsync and is returned: its
    /// bytes must commit with the journal row (see "Unsynced blobs" in the module docs).
    async fn store_write_blob(
        &self,
        req: WriteReq<'_>,
        sha: &str,
        bytes: &Bytes,
    ) -> Result<Option<Bytes>> {
        let unsynced = self.unsynced_copy(bytes);
        let durable = unsynced.is_none();
        if let Err(e) = self
            .inner
            .storage
            .put_blob_with(sha, bytes.clone(), durable)
            .await
        {
            self.audit_req_failure(req, &e).await;
            return Err(e);
        }
        if let Some(c) = &self.inner.blobs {
            c.insert(sha, bytes);
        }
        Ok(unsynced)
    }

    /// `bytes` when a write of them may leave its blob unsynced (see "Unsynced blobs").
    fn unsynced_copy(&self, bytes: &Bytes) -> Option<Bytes> {
        (self.inner.defer_blob_sync && bytes.len() <= UNSYNCED_BLOB_MAX).then(|| bytes.clone())
    }

    /// PostgreSQL's fast write: with the book's profile remembered from an earlier write, no
    /// pre-check round trip: checks in memory, the blob, then the one write statement, which also
    /// requires the book to still have that profile. `None` (nothing written, nothing audited)
    /// when anything else is off — no remembered profile, a check fails, a stale or missing
    /// hash, a changed profile: the general path then does the whole write again and reports and
    /// audits whatever failure there is. A storage failure is audited and returned here.
    async fn write_pg_fast(
        &self,
        req: WriteReq<'_>,
        bytes: &Bytes,
        expected_hash: Option<&str>,
    ) -> Result<Option<WriteOutcome>> {
        if self.inner.db.kind != platform::db::DbKind::Postgres {
            return Ok(None);
        }
        let Some(profile) = self.cached_profile(req.book.as_str()) else {
            return Ok(None);
        };
        if matches!(req.ns, Namespace::Overlay(_)) && req.path.area() != Area::Content
            || self.check_bytes(profile, req.path, bytes).is_err()
        {
            return Ok(None);
        }
        let expected = match expected_hash.map(|h| h.trim().to_ascii_lowercase()) {
            None => Expect::Absent,
            Some(h) if is_sha256_hex(&h) => Expect::Hash(h),
            Some(_) => return Ok(None),
        };
        let sha = sha256_hex(bytes);
        let size = bytes.len() as u64;
        let Ok(size_i) = i64::try_from(size) else {
            return Ok(None);
        };
        // As on the general path: a storage failure is audited and reported, nothing committed.
        let unsynced = self.store_write_blob(req, &sha, bytes).await?;
        let one = PgWriteOnce {
            actor: req.actor,
            op: req.op,
            book: req.book,
            path: req.path,
            user: req.ns.journal_user(),
            shard: audit::shard_of(req.book.as_str(), req.path.as_str(), req.ns.journal_user()),
            sha: &sha,
            size: size_i,
            now: now_micros(),
            backend: self.inner.storage.backend_name(),
            started: req.started,
        };
        let version = self
            .commit_write_pg_once(one, &expected, unsynced.as_deref(), Some(profile))
            .await?;
        Ok(version.map(|v| WriteOutcome::of(expected, sha, size, v)))
    }

    /// Schema, namespace, encoding and size checks of a write.
    async fn check_write(
        &self,
        book: &BookId,
        path: &BookPath,
        ns: &Namespace,
        bytes: &Bytes,
    ) -> Result<Option<String>> {
        if matches!(ns, Namespace::Overlay(_)) && path.area() != Area::Content {
            return Err(PfsError::InvalidInput(
                "overlays hold content/ files only; write assets without user_id".into(),
            ));
        }
        // One lookup for the book's profile and the file's current hash.
        let (profile, current) = match self
            .profile_and_hash(book.as_str(), path.as_str(), ns.journal_user())
            .await?
        {
            Some((profile, current)) => (Profile::parse(&profile)?, current),
            None => (self.ensure_book(book, None).await?.profile, None),
        };
        self.remember_profile(book.as_str(), profile);
        self.check_bytes(profile, path, bytes)?;
        Ok(current)
    }

    /// The checks of a write that need no database: the path under `profile`, the size limit,
    /// UTF-8 for text.
    fn check_bytes(&self, profile: Profile, path: &BookPath, bytes: &Bytes) -> Result<()> {
        profile.check(path)?;
        let size = bytes.len() as u64;
        if is_binary_file(path) {
            // Assets under static/ and binary files co-located in a docs tree (docusaurus
            // profile, e.g. content/…/img/x.png): bytes, with the asset limit.
            if size > self.inner.cfg.limits.max_asset_bytes {
                return Err(PfsError::PayloadTooLarge {
                    what: path.to_string(),
                    size,
                    limit: self.inner.cfg.limits.max_asset_bytes,
                });
            }
        } else {
            if size > self.inner.cfg.limits.max_content_bytes {
                return Err(PfsError::PayloadTooLarge {
                    what: path.to_string(),
                    size,
                    limit: self.inner.cfg.limits.max_content_bytes,
                });
            }
            if std::str::from_utf8(bytes).is_err() {
                return Err(PfsError::InvalidInput(format!(
                    "content of {path} is not valid UTF-8 text; upload binary files as assets under static/"
                )));
            }
        }
        Ok(())
    }

    /// The book's profile and the current sha256 of (path, user) in one lookup; `None` when the
    /// book does not exist.
    async fn profile_and_hash(
        &self,
        book: &str,
        path: &str,
        user: &str,
    ) -> Result<Option<(String, Option<String>)>> {
        self.key_pair(
            "read book and current hash",
            SQL_PROFILE_AND_HASH,
            book,
            path,
            user,
        )
        .await
    }

    /// The two columns of the (at most one) row `sql` returns for a key bound as `$1…$3`:
    /// inline on SQLite files (like [`Engine::journal_rows`]), through the pool otherwise.
    async fn key_pair<A, B>(
        &self,
        ctx: &'static str,
        sql: &'static str,
        book: &str,
        path: &str,
        user: &str,
    ) -> Result<Option<(A, B)>>
    where
        A: rusqlite::types::FromSql + for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
        B: rusqlite::types::FromSql + for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        let sync = self.try_sync_read(ctx, |c| {
            let mut st = sync_stmt(c, sql, &[&book, &path, &user])?;
            let mut rows = st.raw_query();
            match rows.next()? {
                Some(r) => Ok(Some((r.get(0)?, r.get(1)?))),
                None => Ok(None),
            }
        });
        if let Some(v) = sync {
            return v;
        }
        let row = sqlx::query(sql)
            .bind(book)
            .bind(path)
            .bind(user)
            .fetch_optional(&self.inner.db.pool)
            .await
            .map_err(db_err(ctx))?;
        match row {
            Some(r) => {
                let g = db_err(ctx);
                Ok(Some((r.try_get(0).map_err(&g)?, r.try_get(1).map_err(&g)?)))
            }
            None => Ok(None),
        }
    }

    /// The journal transaction of a write (blob already stored), then materialization.
    async fn commit_write(
        &self,
        req: WriteReq<'_>,
        sha: &str,
        size: u64,
        expected: Expect,
        unsynced_blob: Option<&[u8]>,
    ) -> Result<WriteOutcome> {
        if self.inner.db.has_sync_writer() && unsynced_blob.is_none() {
            let w = self.sync_write(req, sha, size, &expected)?;
            if let Some(outcome) = self.commit_write_sync(w, size).await? {
                return Ok(outcome);
            }
            // Lost the compare-and-swap: the pool path below finds the current state again
            // and records the failure with the audit head held.
        }
        self.commit_write_pool(req, sha, size, expected, unsynced_blob)
            .await
    }

    /// [`Engine::commit_write`] through the pool (PostgreSQL, in-memory SQLite, and the report
    /// of a compare-and-swap the synchronous path lost).
    /// `unsynced_blob`: the bytes of a blob written without fsync, kept in `unsynced_blobs` by
    /// the same transaction (see "Unsynced blobs" in the module docs).
    async fn commit_write_pool(
        &self,
        req: WriteReq<'_>,
        sha: &str,
        size: u64,
        expected: Expect,
        unsynced_blob: Option<&[u8]>,
    ) -> Result<WriteOutcome> {
        let WriteReq {
            actor,
            op,
            book,
            path,
            ns,
            started,
        } = req;
        let db = &self.inner.db;
        let user = ns.journal_user();
        let now = now_micros();
        let backend = self.inner.storage.backend_name();
        let size_i =
            i64::try_from(size).map_err(|_| PfsError::InvalidInput("file too large".into()))?;
        // PostgreSQL: the version row and the audit head lock ride on the compare-and-swap
        // statement, and the audit row with the commit's bookkeeping on one more (each statement
        // is a network round trip).
        let pg = db.kind == platform::db::DbKind::Postgres;
        let shard = audit::shard_of(book.as_str(), path.as_str(), user);
        if pg {
            let one = PgWriteOnce {
                actor,
                op,
                book,
                path,
                user,
                shard,
                sha,
                size: size_i,
                now,
                backend,
                started,
            };
            if let Some(version) = self
                .commit_write_pg_once(one, &expected, unsynced_blob, None)
                .await?
            {
                return Ok(WriteOutcome::of(expected, sha.to_string(), size, version));
            }
            // The compare-and-swap found another state: the transaction below looks again,
            // commits if the file is back in the expected state, and otherwise reports and
            // audits the failure with the audit head held.
        }
        let mut tx = db.begin_write().await.map_err(db_err("begin write"))?;
        let (cas, prev_hash, mode) = match &expected {
            Expect::Absent => {
                // A create loses to an existing row (HASH_REQUIRED below). If the row it lost to
                // was deleted by a transaction that committed meanwhile (PostgreSQL), the key is
                // free again: insert again instead of reporting a conflict with nothing.
                let mut v = None;
                for _ in 0..3 {
                    let q = sqlx::query(if pg {
                        SQL_CREATE_JOURNAL_PG
                    } else {
                        SQL_CREATE_JOURNAL
                    })
                    .bind(book.as_str())
                    .bind(path.as_str())
                    .bind(user)
                    .bind(sha)
                    .bind(size_i)
                    .bind(now)
                    .bind(backend);
                    let q = if pg {
                        q.bind(actor.agent_id()).bind(shard)
                    } else {
                        q
                    };
                    v = q
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err("insert journal row"))?;
                    if v.is_some() {
                        break;
                    }
                    let exists: Option<i64> = sqlx::query_scalar(
                        "SELECT version FROM file_journal WHERE book_id = $1 AND path = $2 AND user_id = $3",
                    )
                    .bind(book.as_str())
                    .bind(path.as_str())
                    .bind(user)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err("read journal row"))?;
                    if exists.is_some() {
                        break;
                    }
                }
                (v, None, WriteMode::Created)
            }
            Expect::Hash(h) => {
                let q = sqlx::query(if pg {
                    SQL_UPDATE_JOURNAL_CAS_PG
                } else {
                    SQL_UPDATE_JOURNAL_CAS
                })
                .bind(book.as_str())
                .bind(path.as_str())
                .bind(user)
                .bind(sha)
                .bind(size_i)
                .bind(now)
                .bind(backend)
                .bind(h.as_str());
                let q = if pg {
                    q.bind(actor.agent_id()).bind(shard)
                } else {
                    q
                };
                let v = q
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err("update journal row"))?;
                (v, Some(h.clone()), WriteMode::Updated)
            }
        };
        let Some(cas) = cas else {
            // Lost the compare-and-swap: audit the failure in this transaction with the hash that
            // is current once we hold the audit head (so the per-file chain stays ordered).
            let current: Option<String> = sqlx::query_scalar(
                "SELECT sha256 FROM file_journal WHERE book_id = $1 AND path = $2 AND user_id = $3",
            )
            .bind(book.as_str())
            .bind(path.as_str())
            .bind(user)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err("read current hash"))?;
            let err = match (&expected, current) {
                (Expect::Absent, Some(cur)) => PfsError::HashRequired {
                    path: path.to_string(),
                    current: cur,
                },
                (Expect::Hash(_), None) => not_found_for_update(path),
                (Expect::Hash(h), Some(cur)) => PfsError::Conflict {
                    path: path.to_string(),
                    expected: h.clone(),
                    current: cur,
                },
                // The insert lost to a row that was deleted again before we looked: retryable.
                (Expect::Absent, None) => PfsError::Conflict {
                    path: path.to_string(),
                    expected: "(absent)".into(),
                    current: "(absent)".into(),
                },
            };
            let msg = err.to_string();
            if let Err(e) = audit::relax_failure_durability(&mut tx, db.kind).await {
                tracing::warn!(error = %e, "relaxing failure-row durability failed");
                return Err(err);
            }
            let res = audit::append_failure_in_tx(
                &mut tx,
                NewAuditRow {
                    agent_id: actor.agent_id(),
                    operation: op,
                    book_id: book.as_str(),
                    path: path.as_str(),
                    user_id: user,
                    prev_hash: None,
                    new_hash: None,
                    status: audit_status(&err),
                    error_message: Some(&msg),
                    execution_time_ms: Some(started.elapsed().as_millis() as i64),
                },
            )
            .await;
            match res {
                Ok(_) => {
                    if let Err(e) = tx.commit().await {
                        tracing::warn!(error = %e, "committing a failure audit row failed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "writing a failure audit row failed"),
            }
            return Err(err);
        };
        let row = NewAuditRow {
            agent_id: actor.agent_id(),
            operation: op,
            book_id: book.as_str(),
            path: path.as_str(),
            user_id: user,
            prev_hash: prev_hash.as_deref(),
            new_hash: Some(sha),
            status: STATUS_SUCCESS,
            error_message: None,
            execution_time_ms: Some(started.elapsed().as_millis() as i64),
        };
        let g = db_err("decode journal write");
        let version: i64 = cas.try_get(0).map_err(&g)?;
        if pg {
            // The compare-and-swap statement locked and advanced the shard's audit head.
            let (prev_row_hash, seq): (Option<String>, Option<i64>) =
                (cas.try_get(1).map_err(&g)?, cas.try_get(2).map_err(&g)?);
            let (Some(prev_row_hash), Some(seq)) = (prev_row_hash, seq) else {
                return Err(PfsError::Internal(format!(
                    "audit head of shard {shard} is missing"
                )));
            };
            let seq = audit::append_and_enqueue_pg(
                &mut tx,
                &row,
                audit::LockedHead {
                    shard,
                    seq,
                    prev_row_hash: &prev_row_hash,
                },
                user == BASE_USER,
                unsynced_blob,
            )
            .await?;
            self.commit_enqueued(
                tx,
                book.as_str(),
                path.as_str(),
                user,
                seq,
                Some(sha),
                "commit write",
            )
            .await?;
        } else {
            sqlx::query(SQL_INSERT_VERSION)
                .bind(book.as_str())
                .bind(path.as_str())
                .bind(user)
                .bind(version)
                .bind(sha)
                .bind(size_i)
                .bind(now)
                .bind(actor.agent_id())
                .execute(&mut *tx)
                .await
                .map_err(db_err("insert version row"))?;
            let seq = audit::append_in_tx(&mut tx, &row).await?;
            if let Some(data) = unsynced_blob {
                sqlx::query(SQL_KEEP_UNSYNCED_BLOB)
                    .bind(sha)
                    .bind(data)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err("keep unsynced blob"))?;
            }
            self.commit_and_materialize(
                tx,
                book.as_str(),
                path.as_str(),
                user,
                seq,
                Some(sha),
                "commit write",
            )
            .await?;
        }
        if unsynced_blob.is_some() {
            self.inner.unsynced.notify_one();
        }
        Ok(WriteOutcome {
            mode,
            sha256: sha.to_string(),
            size,
            prev_hash,
            version,
        })
    }

    /// The owned inputs of a synchronous write transaction ([`sync_write_tx`]).
    fn sync_write(
        &self,
        req: WriteReq<'_>,
        sha: &str,
        size: u64,
        expected: &Expect,
    ) -> Result<SyncWrite> {
        Ok(SyncWrite {
            agent_id: req.actor.agent_id().to_string(),
            op: req.op,
            book: req.book.as_str().to_string(),
            path: req.path.as_str().to_string(),
            user: req.ns.journal_user().to_string(),
            sha: sha.to_string(),
            size: i64::try_from(size)
                .map_err(|_| PfsError::InvalidInput("file too large".into()))?,
            now: now_micros(),
            backend: self.inner.storage.backend_name().to_string(),
            expected: match expected {
                Expect::Absent => None,
                Expect::Hash(h) => Some(h.clone()),
            },
            started: req.started,
        })
    }

    /// [`Engine::commit_write`]'s transaction on the synchronous SQLite write connection: the
    /// same statements (the same SQL text), run in one blocking task instead of one thread
    /// hand-off per statement (see `platform::db::sqlite_read`). `None` when the compare-and-swap
    /// finds another state (nothing was written; the caller takes the general path, which
    /// reports and audits it).
    async fn commit_write_sync(&self, w: SyncWrite, size: u64) -> Result<Option<WriteOutcome>> {
        let faults = self.inner.cfg.faults.clone();
        let (book, path, user) = (w.book.clone(), w.path.clone(), w.user.clone());
        let (sha, prev_hash) = (w.sha.clone(), w.expected.clone());
        let res = self
            .inner
            .db
            .write_grouped(move |conn| sync_write_tx(conn, &w, &faults, None))
            .await;
        let Some((version, seq)) = self.sync_committed(res)? else {
            return Ok(None);
        };
        self.materialize_committed(&book, &path, &user, seq, Some(&sha))
            .await;
        Ok(Some(sync_outcome(sha, size, prev_hash, version)))
    }

    /// `(version, ticket)` of a committed [`sync_write_tx`], `None` when it lost the
    /// compare-and-swap (or no write connection exists); also the test fault "crash after commit".
    fn sync_committed(
        &self,
        res: Option<anyhow::Result<SyncTxResult>>,
    ) -> Result<Option<(i64, i64)>> {
        let committed = match res {
            None => return Ok(None),
            Some(Err(e)) => return Err(crate::db::sync_anyhow_err("commit write", e)),
            Some(Ok(r)) => r?,
        };
        if committed.is_some()
            && let Some(f) = &self.inner.cfg.faults
            && f.after_commit_crash()
        {
            return Err(PfsError::Internal(
                "simulated crash after commit (test fault)".into(),
            ));
        }
        Ok(committed)
    }

    /// A whole write on one blocking thread, for a SQLite file with local-file storage: store the
    /// blob, run the transaction (queued FIFO on the process's write lock), copy the blob to the
    /// canonical key and queue the confirmation. One thread hand-off per write instead of three
    /// (blob, transaction, copy), each of which also woke a parked thread.
    async fn write_local(
        &self,
        req: WriteReq<'_>,
        sha: String,
        bytes: Bytes,
        expected: Expect,
    ) -> Result<WriteOutcome> {
        let size = bytes.len() as u64;
        let w = self.sync_write(req, &sha, size, &expected)?;
        // If the write below leaves the blob unsynced and then loses its compare-and-swap, the
        // general path may still commit it (the file went back to the expected hash meanwhile):
        // it needs the bytes too.
        let unsynced = self.unsynced_copy(&bytes);
        let engine = self.clone();
        let res = tokio::task::spawn_blocking(move || engine.write_local_blocking(w, bytes)).await;
        match res {
            Ok(LocalWrite::Done(o)) => Ok(o),
            Ok(LocalWrite::Failed(e)) => Err(e),
            Ok(LocalWrite::BlobFailed(e)) => {
                self.audit_req_failure(req, &e).await;
                Err(e)
            }
            // The general path finds the current state again and reports and audits the failure
            // with the audit head held.
            Ok(LocalWrite::Lost) => {
                self.commit_write_pool(req, &sha, size, expected, unsynced.as_deref())
                    .await
            }
            Err(e) => Err(PfsError::Internal(format!("write task failed: {e}"))),
        }
    }

    fn write_local_blocking(&self, w: SyncWrite, bytes: Bytes) -> LocalWrite {
        let storage = &self.inner.storage;
        // A small blob skips its fsync: its bytes commit with the journal row instead (see
        // "Unsynced blobs" in the module docs).
        let unsynced = self.unsynced_copy(&bytes);
        let deferred = unsynced.is_some();
        match storage.put_blob_blocking(&w.sha, &bytes, !deferred) {
            Some(Ok(())) => {}
            Some(Err(e)) => return LocalWrite::BlobFailed(e),
            None => return LocalWrite::Lost,
        }
        if let Some(c) = &self.inner.blobs {
            c.insert(&w.sha, &bytes);
        }
        let faults = self.inner.cfg.faults.clone();
        let job_w = w.clone();
        let res = self.inner.db.write_grouped_blocking(move |conn| {
            sync_write_tx(conn, &job_w, &faults, unsynced.as_deref())
        });
        if deferred {
            self.inner.unsynced.notify_one();
        }
        let (version, ticket) = match self.sync_committed(res) {
            Ok(Some(v)) => v,
            Ok(None) => return LocalWrite::Lost,
            Err(e) => return LocalWrite::Failed(e),
        };
        let key = key_for(&w.book, &w.path, &w.user);
        match storage.copy_blocking(&blob_key(&w.sha), &key) {
            Some(Ok(())) => self.inner.confirm.push(Applied {
                book: w.book,
                path: w.path,
                user: w.user,
                ticket,
            }),
            Some(Err(e)) => {
                metrics::counter!("panaversityfs_materialize_failures_total").increment(1);
                tracing::warn!(error = %e, book = w.book, path = w.path, user = w.user, "materialization deferred; the reconciler or fsck will finish it");
                // As in `Engine::keep_pending`.
                let (b, p, u) = (&w.book, &w.path, &w.user);
                let kept = self.inner.db.write_sync_blocking(|c| {
                    sync_stmt(c, SQL_KEEP_PENDING, &[b, p, u, &0i64])?.raw_execute()
                });
                if let Some(Err(e)) = kept {
                    tracing::warn!(error = %e, book = w.book, path = w.path, user = w.user, "could not mark a failed materialization pending; fsck will find it");
                }
            }
            None => {}
        }
        LocalWrite::Done(sync_outcome(w.sha, bytes.len() as u64, w.expected, version))
    }

    /// Upload an asset (`static/…`): upsert with internal compare-and-swap retries. `Unchanged`
    /// (no write, no audit row) when the bytes equal the current version.
    pub async fn put_asset(
        &self,
        actor: &Actor,
        book: &BookId,
        path: &BookPath,
        bytes: Bytes,
    ) -> Result<AssetOutcome> {
        let started = Instant::now();
        if !is_binary_file(path) {
            return Err(PfsError::invalid_path(
                path.as_str(),
                "assets live under static/{images|slides|videos|audio}/ (or, in a docusaurus book, \
                 are binary files such as images next to the pages); write text with write_content",
            ));
        }
        if let Err(e) = self.check_write(book, path, &Namespace::Base, &bytes).await {
            self.audit_failure(
                actor,
                OP_UPLOAD_ASSET,
                book,
                path,
                &Namespace::Base,
                &e,
                started,
            )
            .await;
            write_metrics(STATUS_ERROR, "none", OP_UPLOAD_ASSET, started);
            return Err(e);
        }
        let sha = sha256_hex(&bytes);
        let size = bytes.len() as u64;
        let mut blob_stored = false;
        for _attempt in 0..32 {
            let current = self.stat(book, path, &Namespace::Base).await?;
            if let Some(cur) = &current
                && cur.sha256 == sha
            {
                return Ok(AssetOutcome {
                    status: AssetStatus::Unchanged,
                    sha256: sha,
                    size,
                    version: cur.version,
                });
            }
            if !blob_stored {
                if let Err(e) = self.inner.storage.put_blob(&sha, bytes.clone()).await {
                    self.audit_failure(
                        actor,
                        OP_UPLOAD_ASSET,
                        book,
                        path,
                        &Namespace::Base,
                        &e,
                        started,
                    )
                    .await;
                    write_metrics(STATUS_ERROR, "none", OP_UPLOAD_ASSET, started);
                    return Err(e);
                }
                blob_stored = true;
            }
            let expect = match &current {
                Some(cur) => Expect::Hash(cur.sha256.clone()),
                None => Expect::Absent,
            };
            match self
                .commit_write(
                    WriteReq {
                        actor,
                        op: OP_UPLOAD_ASSET,
                        book,
                        path,
                        ns: &Namespace::Base,
                        started,
                    },
                    &sha,
                    size,
                    expect,
                    None,
                )
                .await
            {
                Ok(o) => {
                    let (status, mode) = match o.mode {
                        WriteMode::Created => (AssetStatus::Created, "created"),
                        WriteMode::Updated => (AssetStatus::Updated, "updated"),
                    };
                    write_metrics(STATUS_SUCCESS, mode, OP_UPLOAD_ASSET, started);
                    return Ok(AssetOutcome {
                        status,
                        sha256: o.sha256,
                        size,
                        version: o.version,
                    });
                }
                Err(
                    PfsError::Conflict { .. }
                    | PfsError::HashRequired { .. }
                    | PfsError::NotFound { .. },
                ) => {
                    continue;
                }
                Err(e) => {
                    write_metrics(STATUS_ERROR, "none", OP_UPLOAD_ASSET, started);
                    return Err(e);
                }
            }
        }
        write_metrics(STATUS_CONFLICT, "none", OP_UPLOAD_ASSET, started);
        Err(PfsError::Conflict {
            path: path.to_string(),
            expected: "(any)".into(),
            current: "(changing too fast)".into(),
        })
    }

    /// Delete a file in `ns` (an overlay delete never touches the base). Idempotent: deleting a
    /// missing file succeeds with `existed: false` and is audited too.
    pub async fn delete(
        &self,
        actor: &Actor,
        book: &BookId,
        path: &BookPath,
        ns: &Namespace,
    ) -> Result<DeleteOutcome> {
        let started = Instant::now();
        let op = if path.area() == Area::Content {
            OP_DELETE_CONTENT
        } else {
            OP_DELETE_ASSET
        };
        let res = self.delete_inner(actor, book, path, ns, op, started).await;
        match &res {
            Ok(_) => write_metrics(STATUS_SUCCESS, "deleted", op, started),
            Err(e) => write_metrics(audit_status(e), "none", op, started),
        }
        res
    }

    async fn delete_inner(
        &self,
        actor: &Actor,
        book: &BookId,
        path: &BookPath,
        ns: &Namespace,
        op: &'static str,
        started: Instant,
    ) -> Result<DeleteOutcome> {
        if matches!(ns, Namespace::Overlay(_)) && path.area() != Area::Content {
            let e = PfsError::InvalidInput("overlays hold content/ files only".into());
            return Err(e);
        }
        let db = &self.inner.db;
        let user = ns.journal_user();
        let mut tx = db.begin_write().await.map_err(db_err("begin delete"))?;
        let prev: Option<String> = sqlx::query_scalar(
            "DELETE FROM file_journal WHERE book_id = $1 AND path = $2 AND user_id = $3 RETURNING sha256",
        )
        .bind(book.as_str())
        .bind(path.as_str())
        .bind(user)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err("delete journal row"))?;
        let seq = match &prev {
            Some(p) => {
                audit::append_in_tx(
                    &mut tx,
                    &NewAuditRow {
                        agent_id: actor.agent_id(),
                        operation: op,
                        book_id: book.as_str(),
                        path: path.as_str(),
                        user_id: user,
                        prev_hash: Some(p),
                        new_hash: None,
                        status: STATUS_SUCCESS,
                        error_message: None,
                        execution_time_ms: Some(started.elapsed().as_millis() as i64),
                    },
                )
                .await?
            }
            // Nothing to delete: the row records the unchanged state (absent → absent), taken
            // under the head lock like every other no-change row.
            None => {
                audit::append_failure_in_tx(
                    &mut tx,
                    NewAuditRow {
                        agent_id: actor.agent_id(),
                        operation: op,
                        book_id: book.as_str(),
                        path: path.as_str(),
                        user_id: user,
                        prev_hash: None,
                        new_hash: None,
                        status: STATUS_SUCCESS,
                        error_message: None,
                        execution_time_ms: Some(started.elapsed().as_millis() as i64),
                    },
                )
                .await?
            }
        };
        // Always enqueue: a stray canonical object (e.g. left by a crash) is removed too.
        self.commit_and_materialize(
            tx,
            book.as_str(),
            path.as_str(),
            user,
            seq,
            None,
            "commit delete",
        )
        .await?;
        Ok(DeleteOutcome {
            existed: prev.is_some(),
            prev_hash: prev,
        })
    }

    /// The common tail of every mutation: queue the canonical-key materialization in the same
    /// transaction, commit (through the test fault hooks), then materialize. An `Err` after the
    /// commit only comes from the simulated crash; the reconciler finishes that materialization.
    /// `state` is what the transaction leaves at the key (the blob's sha256, or `None` for a
    /// delete), applied without re-reading it (see [`Engine::materialize_committed`]).
    #[allow(clippy::too_many_arguments)]
    async fn commit_and_materialize(
        &self,
        mut tx: WriteTx,
        book: &str,
        path: &str,
        user: &str,
        ticket: i64,
        state: Option<&str>,
        what: &'static str,
    ) -> Result<()> {
        match (user == BASE_USER, self.inner.db.kind) {
            // One round trip on PostgreSQL (a data-modifying CTE always runs to completion).
            (true, platform::db::DbKind::Postgres) => {
                sqlx::query(
                    "WITH g AS (INSERT INTO book_generations (book_id, shard, generation) VALUES ($1, $5, 1) \
                     ON CONFLICT (book_id, shard) DO UPDATE SET generation = book_generations.generation + 1) \
                     INSERT INTO pending_materializations (book_id, path, user_id, ticket) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (book_id, path, user_id) DO UPDATE SET ticket = excluded.ticket",
                )
                .bind(book)
                .bind(path)
                .bind(user)
                .bind(ticket)
                .bind(audit::shard_of(book, path, user))
                .execute(&mut *tx)
                .await
                .map_err(db_err("bump book generation and enqueue materialization"))?;
            }
            (true, platform::db::DbKind::Sqlite) => {
                bump_generation(&mut tx, book, path, user).await?;
                enqueue_pending(&mut tx, book, path, user, ticket).await?;
            }
            (false, _) => enqueue_pending(&mut tx, book, path, user, ticket).await?,
        }
        self.commit_enqueued(tx, book, path, user, ticket, state, what)
            .await
    }

    /// Commit a transaction that has enqueued its materialization with `ticket`, then
    /// materialize `state` (see [`Engine::commit_and_materialize`]).
    #[allow(clippy::too_many_arguments)]
    async fn commit_enqueued(
        &self,
        tx: WriteTx,
        book: &str,
        path: &str,
        user: &str,
        ticket: i64,
        state: Option<&str>,
        what: &'static str,
    ) -> Result<()> {
        if let Some(f) = &self.inner.cfg.faults {
            f.before_commit()?;
        }
        tx.commit().await.map_err(db_err(what))?;
        if let Some(f) = &self.inner.cfg.faults
            && f.after_commit_crash()
        {
            return Err(PfsError::Internal(
                "simulated crash after commit (test fault)".into(),
            ));
        }
        self.materialize_committed(book, path, user, ticket, state)
            .await;
        Ok(())
    }

    /// [`Engine::audit_failure`] of a write.
    async fn audit_req_failure(&self, req: WriteReq<'_>, err: &PfsError) {
        self.audit_failure(
            req.actor,
            req.op,
            req.book,
            req.path,
            req.ns,
            err,
            req.started,
        )
        .await;
    }

    /// Write an audit row for a failed mutation (own transaction; failures are logged).
    #[allow(clippy::too_many_arguments)]
    async fn audit_failure(
        &self,
        actor: &Actor,
        op: &'static str,
        book: &BookId,
        path: &BookPath,
        ns: &Namespace,
        err: &PfsError,
        started: Instant,
    ) {
        let db = &self.inner.db;
        let msg = err.to_string();
        let res = async {
            let mut tx = db
                .begin_write()
                .await
                .map_err(db_err("begin failure audit"))?;
            audit::relax_failure_durability(&mut tx, self.inner.db.kind).await?;
            audit::append_failure_in_tx(
                &mut tx,
                NewAuditRow {
                    agent_id: actor.agent_id(),
                    operation: op,
                    book_id: book.as_str(),
                    path: path.as_str(),
                    user_id: ns.journal_user(),
                    prev_hash: None,
                    new_hash: None,
                    status: audit_status(err),
                    error_message: Some(&msg),
                    execution_time_ms: Some(started.elapsed().as_millis() as i64),
                },
            )
            .await?;
            tx.commit().await.map_err(db_err("commit failure audit"))
        }
        .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, "writing a failure audit row failed");
        }
    }

    // ---------------------------------------------------------------- materialization

    /// Materialize right after this process committed `state` at the key with pending `ticket`:
    /// apply that state without reading it back, then queue its confirmation with the ticket.
    /// The confirmation is the same as [`Engine::materialize`]'s (deleting the pending row `WHERE
    /// ticket = t` succeeds only if no commit touched the key since ours, so what we applied is
    /// current), batched by the confirmer task (see [`crate::confirm`]); when it fails, a later
    /// commit exists and the general loop takes over. Failures are logged and left to the
    /// reconciler, as in [`Engine::materialize_logged`].
    async fn materialize_committed(
        &self,
        book: &str,
        path: &str,
        user: &str,
        ticket: i64,
        state: Option<&str>,
    ) {
        let key = key_for(book, path, user);
        let applied = match state {
            Some(sha) => self.inner.storage.copy(&blob_key(sha), &key).await,
            None => self.inner.storage.delete(&key).await,
        };
        match applied {
            // Confirmed in a batch by the confirmer task (see `crate::confirm`).
            Ok(()) => self.inner.confirm.push(Applied {
                book: book.to_string(),
                path: path.to_string(),
                user: user.to_string(),
                ticket,
            }),
            Err(e) => {
                metrics::counter!("panaversityfs_materialize_failures_total").increment(1);
                tracing::warn!(error = %e, book, path, user, "materialization deferred; the reconciler or fsck will finish it");
                self.keep_pending(book, path, user).await;
            }
        }
    }

    /// PostgreSQL: a successful write in one autocommit statement ([`SQL_CREATE_ONCE_PG`] /
    /// [`SQL_UPDATE_ONCE_PG`]: compare-and-swap, version row, audit head lock, audit row with its
    /// row hash computed in SQL, bookkeeping), then materialization. One round trip instead of
    /// five (BEGIN, compare-and-swap, audit row, COMMIT). `None` when the compare-and-swap finds
    /// another state: nothing was written, and the caller's transaction takes over.
    /// With `profile`, the statement also requires the book to have that profile.
    async fn commit_write_pg_once(
        &self,
        w: PgWriteOnce<'_>,
        expected: &Expect,
        unsynced_blob: Option<&[u8]>,
        profile: Option<Profile>,
    ) -> Result<Option<i64>> {
        let prev_hash = match expected {
            Expect::Absent => None,
            Expect::Hash(h) => Some(h.as_str()),
        };
        let row = NewAuditRow {
            agent_id: w.actor.agent_id(),
            operation: w.op,
            book_id: w.book.as_str(),
            path: w.path.as_str(),
            user_id: w.user,
            prev_hash,
            new_hash: Some(w.sha),
            status: STATUS_SUCCESS,
            error_message: None,
            execution_time_ms: Some(w.started.elapsed().as_millis() as i64),
        };
        let ts = now_micros();
        let middle = audit::row_hash_middle(&row, w.shard, ts);
        // The statement commits by itself: a commit fault is injected before it (nothing written).
        if let Some(f) = &self.inner.cfg.faults {
            f.before_commit()?;
        }
        let res = sqlx::query(match expected {
            Expect::Absent => SQL_CREATE_ONCE_PG,
            Expect::Hash(_) => SQL_UPDATE_ONCE_PG,
        })
        .bind(w.book.as_str())
        .bind(w.path.as_str())
        .bind(w.user)
        .bind(w.sha)
        .bind(w.size)
        .bind(w.now)
        .bind(w.backend)
        .bind(prev_hash)
        .bind(w.actor.agent_id())
        .bind(w.shard)
        .bind(&middle)
        .bind(ts)
        .bind(w.op)
        .bind(row.execution_time_ms)
        .bind(w.user == BASE_USER)
        .bind(unsynced_blob)
        .bind(profile.map(|p| p.as_str()))
        .fetch_optional(&self.inner.db.pool)
        .await
        .map_err(db_err("write (one statement)"))?;
        let Some(res) = res else { return Ok(None) };
        let g = db_err("decode write (one statement)");
        let (version, seq): (i64, i64) = (res.try_get(0).map_err(&g)?, res.try_get(1).map_err(&g)?);
        if unsynced_blob.is_some() {
            self.inner.unsynced.notify_one();
        }
        if let Some(f) = &self.inner.cfg.faults
            && f.after_commit_crash()
        {
            return Err(PfsError::Internal(
                "simulated crash after commit (test fault)".into(),
            ));
        }
        self.materialize_committed(w.book.as_str(), w.path.as_str(), w.user, seq, Some(w.sha))
            .await;
        Ok(Some(version))
    }

    /// Rewrite every blob still listed in `unsynced_blobs` whose file a crash lost or tore, then
    /// flush the store and forget them (see "Unsynced blobs" in the module docs). Runs at open,
    /// before anything reads or materializes blobs.
    async fn restore_unsynced_blobs(&self) -> Result<()> {
        if !self.inner.storage.is_local_fs() {
            return Ok(());
        }
        let (mut after, mut restored) = (0i64, 0u64);
        loop {
            let rows: Vec<(i64, String, Vec<u8>)> = sqlx::query_as(
                "SELECT id, sha256, data FROM unsynced_blobs WHERE id > $1 ORDER BY id LIMIT 64",
            )
            .bind(after)
            .fetch_all(&self.inner.db.pool)
            .await
            .map_err(db_err("read unsynced blobs"))?;
            let Some(last) = rows.last() else { break };
            after = last.0;
            let storage = self.inner.storage.clone();
            restored += tokio::task::spawn_blocking(move || -> Result<u64> {
                let mut n = 0;
                for (_, sha, data) in &rows {
                    if sha256_hex(data) != *sha {
                        // Never write bytes under a name they do not hash to.
                        tracing::warn!(sha256 = %sha, "unsynced blob copy does not match its hash; skipped");
                        continue;
                    }
                    if let Some(r) = storage.restore_blob_blocking(sha, data) {
                        n += u64::from(r?);
                    }
                }
                Ok(n)
            })
            .await
            .map_err(|e| PfsError::Internal(format!("blob restore task failed: {e}")))??;
        }
        if restored > 0 {
            metrics::counter!("panaversityfs_unsynced_blobs_restored_total").increment(restored);
            tracing::warn!(
                count = restored,
                "rewrote blobs lost or torn by a crash from their durable copies"
            );
        }
        self.sync_unsynced_blobs().await
    }

    /// Flush the local store's filesystem, then forget the `unsynced_blobs` rows committed before
    /// the flush began (their files are durable now).
    async fn sync_unsynced_blobs(&self) -> Result<()> {
        let db = &self.inner.db;
        let mark: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM unsynced_blobs")
            .fetch_one(&db.pool)
            .await
            .map_err(db_err("read unsynced blobs"))?;
        let Some(mark) = mark else { return Ok(()) };
        let storage = self.inner.storage.clone();
        match tokio::task::spawn_blocking(move || storage.sync_all_blocking()).await {
            Ok(Some(r)) => r?,
            Ok(None) => return Ok(()),
            Err(e) => return Err(PfsError::Internal(format!("storage sync task failed: {e}"))),
        }
        const SQL: &str = "DELETE FROM unsynced_blobs WHERE id <= $1";
        if let Some(r) = db
            .write_sync(move |c| sync_stmt(c, SQL, &[&mark])?.raw_execute())
            .await
        {
            return r
                .map(|_| ())
                .map_err(|e| PfsError::Internal(format!("database (forget synced blobs): {e:#}")));
        }
        let _w = db.lock_writes().await;
        sqlx::query(SQL)
            .bind(mark)
            .execute(&db.pool)
            .await
            .map_err(db_err("forget synced blobs"))?;
        Ok(())
    }

    /// Start this engine's blob syncer: after a write leaves a blob unsynced, wait one
    /// [`EngineConfig::blob_sync_interval`] (gathering that period's writes), then flush and
    /// forget them. Ends when the engine is dropped.
    fn spawn_blob_syncer(&self) {
        let notify = self.inner.unsynced.clone();
        let weak = Arc::downgrade(&self.inner);
        let every = self.inner.cfg.blob_sync_interval;
        tokio::spawn(async move {
            loop {
                notify.notified().await;
                tokio::time::sleep(every).await;
                let Some(inner) = weak.upgrade() else { break };
                if let Err(e) = (Engine { inner }).sync_unsynced_blobs().await {
                    metrics::counter!("panaversityfs_blob_sync_failures_total").increment(1);
                    tracing::warn!(error = %e, "flushing unsynced blobs failed; their database copies stay until a flush succeeds");
                }
            }
        });
    }

    /// Start this engine's confirmer: a task that confirms queued materializations in batches
    /// and ends when the engine is dropped.
    fn spawn_confirmer(&self) {
        let queue = self.inner.confirm.clone();
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            while queue.wait().await {
                let Some(inner) = weak.upgrade() else { break };
                Engine { inner }.confirm_queued().await;
            }
        });
    }

    /// Confirm every materialization applied by this engine so far (and re-materialize the keys
    /// whose confirmation shows a later commit), waiting for a batch already in progress. Writes
    /// return before their confirmation (see [`crate::confirm`]); call this to observe the
    /// settled state, e.g. before comparing canonical objects with the journal.
    pub async fn settle(&self) {
        self.confirm_queued().await;
    }

    async fn confirm_queued(&self) {
        let _flushing = self.inner.confirm.flushing.lock().await;
        loop {
            let mut all = self.inner.confirm.take();
            if all.is_empty() {
                return;
            }
            while !all.is_empty() {
                let rest = all.split_off(all.len().min(confirm::BATCH));
                let batch = std::mem::replace(&mut all, rest);
                let confirmed = match self.clear_pending_batch(&batch).await {
                    Ok(c) => c,
                    Err(e) => {
                        // The pending rows stay: the reconciler (or fsck) completes them.
                        metrics::counter!("panaversityfs_materialize_failures_total")
                            .increment(batch.len() as u64);
                        tracing::warn!(error = %e, count = batch.len(), "confirming materializations failed; the reconciler or fsck will finish them");
                        continue;
                    }
                };
                // A failed confirmation means a later commit touched the key after the commit
                // that applied it: materialize it again until the applied state is current.
                let mut again: Vec<(&str, &str, &str)> = batch
                    .iter()
                    .zip(confirmed)
                    .filter(|(_, ok)| !ok)
                    .map(|(a, _)| (a.book.as_str(), a.path.as_str(), a.user.as_str()))
                    .collect();
                again.sort_unstable();
                again.dedup();
                for (book, path, user) in again {
                    self.materialize_logged(book, path, user).await;
                }
            }
        }
    }

    /// Delete each entry's pending row if it still holds the entry's ticket, in one transaction
    /// (one statement on PostgreSQL); per entry, whether it did.
    async fn clear_pending_batch(&self, batch: &[Applied]) -> Result<Vec<bool>> {
        self.flush_applied().await?;
        let db = &self.inner.db;
        if db.kind == platform::db::DbKind::Postgres {
            let rows: Vec<(String, String, String, i64)> =
                sqlx::query_as(confirm::SQL_CLEAR_PENDING_BATCH_PG)
                    .bind(confirm::batch_json(batch))
                    .fetch_all(&db.pool)
                    .await
                    .map_err(db_err("confirm materializations"))?;
            let done: std::collections::HashSet<(String, String, String, i64)> =
                rows.into_iter().collect();
            return Ok(batch
                .iter()
                .map(|a| done.contains(&(a.book.clone(), a.path.clone(), a.user.clone(), a.ticket)))
                .collect());
        }
        let owned = batch.to_vec();
        if let Some(r) = db
            .write_sync(move |c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let mut out = Vec::with_capacity(owned.len());
                for a in &owned {
                    let n = sync_stmt(
                        &tx,
                        confirm::SQL_CLEAR_PENDING,
                        &[&a.book, &a.path, &a.user, &a.ticket],
                    )?
                    .raw_execute()?;
                    out.push(n == 1);
                }
                tx.commit()?;
                Ok(out)
            })
            .await
        {
            return r.map_err(|e| {
                PfsError::Internal(format!("database (confirm materializations): {e:#}"))
            });
        }
        let mut tx = db.begin_write().await.map_err(db_err("begin confirm"))?;
        let mut out = Vec::with_capacity(batch.len());
        for a in batch {
            let n = sqlx::query(confirm::SQL_CLEAR_PENDING)
                .bind(a.book.as_str())
                .bind(a.path.as_str())
                .bind(a.user.as_str())
                .bind(a.ticket)
                .execute(&mut *tx)
                .await
                .map_err(db_err("confirm materialization"))?
                .rows_affected();
            out.push(n == 1);
        }
        tx.commit().await.map_err(db_err("commit confirm"))?;
        Ok(out)
    }

    async fn materialize_logged(&self, book: &str, path: &str, user: &str) {
        if let Err(e) = self.materialize(book, path, user).await {
            metrics::counter!("panaversityfs_materialize_failures_total").increment(1);
            tracing::warn!(error = %e, book, path, user, "materialization deferred; the reconciler or fsck will finish it");
            self.keep_pending(book, path, user).await;
        }
    }

    /// Make the canonical object of (book, path, user) hold what the journal says (copy of the
    /// blob, or nothing), looping until the state applied is confirmed current.
    ///
    /// Each round reads the pending ticket and the journal hash in one statement (one snapshot),
    /// applies that state, then confirms: with a ticket, deleting the pending row `WHERE ticket
    /// = t` succeeds only if no commit touched the key since the read (every commit bumps the
    /// ticket), so the applied state is current; without one, a re-read must show the same state.
    /// Anyone who applied a stale state fails its confirmation and applies again, so the last
    /// apply of all is of the last committed state.
    pub(crate) async fn materialize(&self, book: &str, path: &str, user: &str) -> Result<()> {
        let key = key_for(book, path, user);
        for attempt in 0..16 {
            if attempt > 0 {
                metrics::counter!("panaversityfs_materialize_retry_total").increment(1);
            }
            let (ticket, state) = self.pending_and_state(book, path, user).await?;
            match &state {
                Some(sha) => self.inner.storage.copy(&blob_key(sha), &key).await?,
                None => self.inner.storage.delete(&key).await?,
            }
            match ticket {
                Some(t) => {
                    if self.clear_pending_ticket(book, path, user, t).await? {
                        return Ok(());
                    }
                }
                None => {
                    let (t2, s2) = self.pending_and_state(book, path, user).await?;
                    if t2.is_none() && s2 == state {
                        return Ok(());
                    }
                }
            }
        }
        Err(PfsError::Storage(format!(
            "{key} kept changing while being materialized; it stays pending"
        )))
    }

    /// Make every canonical copy applied so far durable before a confirmation forgets its
    /// pending row, so that after a power loss a canonical object is either right or still
    /// pending (local files: one `syncfs` for the batch; an object store's completed put is
    /// already durable).
    async fn flush_applied(&self) -> Result<()> {
        if !self.inner.storage.is_local_fs() {
            return Ok(());
        }
        let storage = self.inner.storage.clone();
        match tokio::task::spawn_blocking(move || storage.sync_all_blocking()).await {
            Ok(Some(r)) => r,
            Ok(None) => Ok(()),
            Err(e) => Err(PfsError::Internal(format!("storage sync task failed: {e}"))),
        }
    }

    /// Delete the pending row of a key if it still holds `ticket`; whether it did.
    async fn clear_pending_ticket(
        &self,
        book: &str,
        path: &str,
        user: &str,
        ticket: i64,
    ) -> Result<bool> {
        self.flush_applied().await?;
        self.pending_row_stmt(
            confirm::SQL_CLEAR_PENDING,
            "clear pending ticket",
            book,
            path,
            user,
            ticket,
        )
        .await
        .map(|n| n == 1)
    }

    /// After a failed materialization, make sure the key is pending, so the reconciler (not
    /// only fsck) finishes it: a later commit may have confirmed the key's pending row already,
    /// and the failed apply (a stale state, or one a storage error left half done) may have
    /// changed the canonical object after that commit's own apply. Ticket 0 stands for "no
    /// commit of its own"; an existing row (a newer commit's) is kept.
    async fn keep_pending(&self, book: &str, path: &str, user: &str) {
        if let Err(e) = self
            .pending_row_stmt(SQL_KEEP_PENDING, "keep key pending", book, path, user, 0)
            .await
        {
            tracing::warn!(error = %e, book, path, user, "could not mark a failed materialization pending; fsck will find it");
        }
    }

    /// Run `sql` (parameters: book, path, user, ticket) on the write connection; rows affected.
    async fn pending_row_stmt(
        &self,
        sql: &'static str,
        ctx: &'static str,
        book: &str,
        path: &str,
        user: &str,
        ticket: i64,
    ) -> Result<u64> {
        let (b, p, u) = (book.to_string(), path.to_string(), user.to_string());
        if let Some(r) = self
            .inner
            .db
            .write_sync(move |c| sync_stmt(c, sql, &[&b, &p, &u, &ticket])?.raw_execute())
            .await
        {
            return r
                .map(|n| n as u64)
                .map_err(|e| PfsError::Internal(format!("database ({ctx}): {e:#}")));
        }
        let w = self.inner.db.lock_writes().await;
        let n = sqlx::query(sql)
            .bind(book)
            .bind(path)
            .bind(user)
            .bind(ticket)
            .execute(&self.inner.db.pool)
            .await
            .map_err(db_err(ctx))?
            .rows_affected();
        drop(w);
        Ok(n)
    }

    /// The pending ticket and journal hash of a key, read in one statement.
    async fn pending_and_state(
        &self,
        book: &str,
        path: &str,
        user: &str,
    ) -> Result<(Option<i64>, Option<String>)> {
        // The statement selects two scalar subqueries, so it always returns one row.
        Ok(self
            .key_pair(
                "read materialization state",
                SQL_PENDING_AND_STATE,
                book,
                path,
                user,
            )
            .await?
            .unwrap_or((None, None)))
    }

    /// Complete every pending materialization (after a crash or a storage outage). Returns how
    /// many entries were completed; entries that still fail stay pending.
    pub async fn reconcile_pending(&self) -> Result<usize> {
        let rows = sqlx::query(
            "SELECT book_id, path, user_id FROM pending_materializations ORDER BY ticket",
        )
        .fetch_all(&self.inner.db.pool)
        .await
        .map_err(db_err("list pending materializations"))?;
        let mut done = 0;
        let mut first_err = None;
        for r in &rows {
            let g = db_err("decode pending row");
            let book: String = r.try_get("book_id").map_err(&g)?;
            let path: String = r.try_get("path").map_err(&g)?;
            let user: String = r.try_get("user_id").map_err(&g)?;
            match self.materialize(&book, &path, &user).await {
                Ok(()) => done += 1,
                Err(e) => {
                    tracing::warn!(error = %e, book, path, user, "pending materialization failed again");
                    self.keep_pending(&book, &path, &user).await;
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) if done == 0 && !rows.is_empty() => Err(e),
            _ => Ok(done),
        }
    }

    /// Run [`Engine::reconcile_pending`] every `every` in a background task (for servers; a
    /// crash-free process needs it only after storage outages). Also publishes the
    /// `panaversityfs_pending_materializations` and `panaversityfs_journal_entries_total`
    /// gauges. Abort the handle to stop it.
    pub fn spawn_reconciler(&self, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM file_journal")
                    .fetch_one(&engine.inner.db.pool)
                    .await
                {
                    Ok(n) => metrics::gauge!("panaversityfs_journal_entries_total").set(n as f64),
                    Err(e) => {
                        tracing::warn!(error = %e, "reconciler: counting journal rows failed")
                    }
                }
                match engine.pending_count().await {
                    Ok(0) => {
                        metrics::gauge!("panaversityfs_pending_materializations").set(0.0);
                        continue;
                    }
                    Ok(n) => {
                        metrics::gauge!("panaversityfs_pending_materializations").set(n as f64)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reconciler: counting pending materializations failed");
                        continue;
                    }
                }
                if let Err(e) = engine.reconcile_pending().await {
                    tracing::warn!(error = %e, "reconciler: pending materializations still failing");
                }
            }
        })
    }

    /// Number of pending materializations (after confirming this engine's queued ones, see
    /// [`Engine::settle`]).
    pub async fn pending_count(&self) -> Result<i64> {
        self.settle().await;
        sqlx::query_scalar("SELECT COUNT(*) FROM pending_materializations")
            .fetch_one(&self.inner.db.pool)
            .await
            .map_err(db_err("count pending"))
    }

    // ---------------------------------------------------------------- manifests

    /// Store a manifest snapshot (`{path: sha256}` JSON with sorted keys). Idempotent and safe
    /// under concurrent calls (`ON CONFLICT DO NOTHING`).
    pub async fn save_manifest_snapshot(
        &self,
        book: &BookId,
        manifest_hash: &str,
        entries: &[(String, String)],
    ) -> Result<()> {
        let map: BTreeMap<&str, &str> = entries
            .iter()
            .map(|(p, s)| (p.as_str(), s.as_str()))
            .collect();
        let json = serde_json::to_string(&map).map_err(PfsError::internal)?;
        let _w = self.inner.db.lock_writes().await;
        sqlx::query(
            "INSERT INTO manifest_snapshots (book_id, manifest_hash, created_at, file_count, content_json) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (book_id, manifest_hash) DO NOTHING",
        )
        .bind(book.as_str())
        .bind(manifest_hash)
        .bind(now_micros())
        .bind(map.len() as i64)
        .bind(json)
        .execute(&self.inner.db.pool)
        .await
        .map_err(db_err("save manifest snapshot"))?;
        Ok(())
    }

    /// A stored manifest snapshot as sorted `(path, sha256)` entries.
    pub async fn load_manifest_snapshot(
        &self,
        book: &BookId,
        manifest_hash: &str,
    ) -> Result<Option<Vec<(String, String)>>> {
        let json: Option<String> = sqlx::query_scalar(
            "SELECT content_json FROM manifest_snapshots WHERE book_id = $1 AND manifest_hash = $2",
        )
        .bind(book.as_str())
        .bind(manifest_hash)
        .fetch_optional(&self.inner.db.pool)
        .await
        .map_err(db_err("load manifest snapshot"))?;
        json.map(|j| {
            serde_json::from_str::<BTreeMap<String, String>>(&j)
                .map(|m| m.into_iter().collect())
                .map_err(|e| PfsError::Internal(format!("corrupt manifest snapshot: {e}")))
        })
        .transpose()
    }

    /// `(path, sha256)` of every base file of a book, sorted by path (byte order): the narrow
    /// read behind [`Engine::base_manifest`].
    pub async fn base_hashes(&self, book: &BookId) -> Result<Vec<(String, String)>> {
        base_hash_rows(&self.inner.db.pool, book.as_str()).await
    }

    /// The book's current base manifest, cached per book.
    ///
    /// Every commit that changes a base row increments, in the same transaction, a counter of
    /// the book (`book_generations`, one row per audit shard). A cached manifest is served when
    /// the book's counters read now equal the ones read with the cached rows (in one snapshot),
    /// so an unchanged book costs one small query instead of reading every row, and a write
    /// through any engine or replica on the same database is seen by the next call.
    pub async fn base_manifest(&self, book: &BookId) -> Result<Arc<BaseManifest>> {
        let db = &self.inner.db;
        let now = read_generation(&db.pool, book.as_str()).await?;
        if let Some(hit) = self.cached_manifest(book.as_str(), &now) {
            metrics::counter!("panaversityfs_manifest_cache_total", "result" => "hit").increment(1);
            return Ok(hit);
        }
        metrics::counter!("panaversityfs_manifest_cache_total", "result" => "miss").increment(1);
        // Counters and rows from one snapshot (SQLite WAL read transaction; PostgreSQL
        // REPEATABLE READ), so the counters name exactly the rows read.
        let begin = match db.kind {
            platform::db::DbKind::Sqlite => "BEGIN",
            platform::db::DbKind::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        };
        let mut tx = db
            .pool
            .begin_with(begin)
            .await
            .map_err(db_err("begin manifest read"))?;
        let generation = read_generation(&mut *tx, book.as_str()).await?;
        let entries = base_hash_rows(&mut *tx, book.as_str()).await?;
        tx.commit().await.map_err(db_err("end manifest read"))?;
        let manifest = Arc::new(BaseManifest {
            generation,
            manifest_hash: crate::manifest::manifest_hash(&entries),
            entries,
            snapshot_saved: AtomicBool::new(false),
        });
        let mut cache = self
            .inner
            .manifests
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MANIFEST_CACHE_BOOKS && !cache.contains_key(book.as_str()) {
            cache.clear();
        }
        cache.insert(book.as_str().to_string(), manifest.clone());
        Ok(manifest)
    }

    fn cached_manifest(&self, book: &str, generation: &[(i64, i64)]) -> Option<Arc<BaseManifest>> {
        let cache = self
            .inner
            .manifests
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        cache
            .get(book)
            .filter(|m| m.generation == generation)
            .cloned()
    }

    /// [`Engine::save_manifest_snapshot`] of `manifest`, skipped when this engine stored it
    /// already (snapshots are immutable and keyed by their hash).
    pub async fn save_base_manifest_snapshot(
        &self,
        book: &BookId,
        manifest: &BaseManifest,
    ) -> Result<()> {
        if manifest.snapshot_saved.load(Ordering::Acquire) {
            return Ok(());
        }
        self.save_manifest_snapshot(book, &manifest.manifest_hash, &manifest.entries)
            .await?;
        manifest.snapshot_saved.store(true, Ordering::Release);
        Ok(())
    }

    /// Every journal row of every book and namespace (fsck).
    pub(crate) async fn all_journal_rows(&self) -> Result<Vec<JournalEntry>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOURNAL_COLS} FROM file_journal"
        )))
        .fetch_all(&self.inner.db.pool)
        .await
        .map_err(db_err("read journal"))?;
        rows.iter().map(decode_entry).collect()
    }

    /// The canonical storage key of a journal entry.
    pub fn canonical_key(entry: &JournalEntry) -> String {
        key_for(&entry.book_id, &entry.path, &entry.user_id)
    }

    /// The canonical key of `path` in `ns` (same as [`BookPath::storage_key`]).
    pub fn storage_key(book: &BookId, path: &BookPath, ns: &Namespace) -> String {
        storage_key(book, ns, path.as_str())
    }
}

/// Extensions of binary files admitted under `content/` (co-located images, media, downloads in
/// a docs tree): stored as bytes with the asset size limit instead of as UTF-8 text.
pub const BINARY_CONTENT_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "webp", "avif", "ico", "pdf", "mp4", "webm", "mov", "mp3", "wav",
    "ogg", "zip",
];

/// Whether `path` holds bytes rather than UTF-8 text: everything under `static/`, and files with a
/// [`BINARY_CONTENT_EXTENSIONS`] extension under `content/`.
pub fn is_binary_file(path: &BookPath) -> bool {
    match path.area() {
        Area::Static => true,
        Area::Content => path.file_name().rsplit_once('.').is_some_and(|(_, ext)| {
            BINARY_CONTENT_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str())
        }),
    }
}

fn not_found_for_update(path: &BookPath) -> PfsError {
    PfsError::not_found(format!(
        "{path} (expected_hash was given but the file does not exist; omit expected_hash to create it)"
    ))
}

fn check_sha(sha: &str) -> Result<()> {
    if is_sha256_hex(sha) {
        Ok(())
    } else {
        Err(PfsError::InvalidInput(
            "a blob hash is 64 lowercase hex digits".into(),
        ))
    }
}

fn decode_book(r: &sqlx::any::AnyRow) -> Result<BookInfo> {
    let g = db_err("decode book row");
    let profile: String = r.try_get("profile").map_err(&g)?;
    Ok(BookInfo {
        book_id: r.try_get("book_id").map_err(&g)?,
        profile: Profile::parse(&profile)?,
        created_at: from_micros(r.try_get("created_at").map_err(&g)?),
    })
}

/// `(path, sha256)` of a book's base rows, sorted by path.
async fn base_hash_rows<'c, E>(conn: E, book: &str) -> Result<Vec<(String, String)>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let mut rows: Vec<(String, String)> =
        sqlx::query_as("SELECT path, sha256 FROM file_journal WHERE book_id = $1 AND user_id = $2")
            .bind(book)
            .bind(BASE_USER)
            .fetch_all(conn)
            .await
            .map_err(db_err("read base manifest"))?;
    // Sorted here, not in SQL: PostgreSQL collations need not be byte order.
    rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(rows)
}

/// Increment the book's generation counter of the change's audit shard (whose head row the
/// transaction already holds), so cached base manifests of every engine on this database see the
/// change (see [`Engine::base_manifest`]).
/// A book's profile and the current hash of one key (no row: the book does not exist).
const SQL_PROFILE_AND_HASH: &str = "SELECT profile, (SELECT sha256 FROM file_journal \
     WHERE book_id = $1 AND path = $2 AND user_id = $3) AS sha FROM books WHERE book_id = $1";
/// The pending ticket and the journal hash of one key, in one snapshot.
const SQL_PENDING_AND_STATE: &str = "SELECT (SELECT ticket FROM pending_materializations \
     WHERE book_id = $1 AND path = $2 AND user_id = $3) AS ticket, \
     (SELECT sha256 FROM file_journal WHERE book_id = $1 AND path = $2 AND user_id = $3) AS sha";
/// Create a journal row (the version continues a deleted file's history); no row if the key exists.
const SQL_CREATE_JOURNAL: &str = "INSERT INTO file_journal (book_id, path, user_id, sha256, size, last_written_at, storage_backend, version) \
     SELECT $1, $2, $3, $4, $5, $6, $7, COALESCE(MAX(version), 0) + 1 FROM file_versions \
     WHERE book_id = $1 AND path = $2 AND user_id = $3 \
     ON CONFLICT (book_id, path, user_id) DO NOTHING RETURNING version";
/// [`SQL_CREATE_JOURNAL`] plus its version row (agent `$8`) and, when it inserted, the audit
/// head of shard `$9` locked and advanced (see [`audit::LockedHead`]): one PostgreSQL
/// statement returning `(version, prev_row_hash, seq)`.
/// The inputs of [`Engine::commit_write_pg_once`].
struct PgWriteOnce<'a> {
    actor: &'a Actor,
    op: &'static str,
    book: &'a BookId,
    path: &'a BookPath,
    user: &'a str,
    shard: i64,
    sha: &'a str,
    size: i64,
    now: i64,
    backend: &'a str,
    started: Instant,
}

/// The rest of a PostgreSQL one-statement write after its compare-and-swap CTE `j` (returning
/// the new version) and version row CTE `v`: lock the shard's audit head (`p`, after the journal
/// row, the lock order of every write), advance it with the new row hash computed in SQL from
/// the seq drawn under the lock and the previous row hash (`h`; `$11` is
/// `audit::row_hash_middle`), insert the audit row (`a`; a missing head makes its seq NULL and
/// fails the whole statement), bump the book generation when `$15` (`g`), keep the unsynced
/// blob `$16` (`b`) and enqueue the materialization with ticket = seq (`q`). Returns `(version,
/// seq)`, no row when the compare-and-swap did not match or the book's profile is not `$17`
/// (when given; see [`Engine::write_pg_fast`]): then nothing was written.
macro_rules! pg_write_once_tail {
    () => {
        "p AS (SELECT row_hash FROM audit_head WHERE shard = $10 AND EXISTS (SELECT 1 FROM v) FOR UPDATE), \
         h AS (UPDATE audit_head SET row_count = audit_head.row_count + 1, \
         row_hash = encode(sha256(convert_to('[' || nextval('audit_log_seq') || ',' || $11 || ',\"' || p.row_hash || '\"]', 'UTF8')), 'hex') \
         FROM p WHERE audit_head.shard = $10 \
         RETURNING currval('audit_log_seq') AS seq, audit_head.row_hash AS row_hash, p.row_hash AS prev_row_hash), \
         a AS (INSERT INTO audit_log (seq, shard, ts, agent_id, operation, book_id, path, user_id, prev_hash, new_hash, \
         status, error_message, execution_time_ms, row_hash, prev_row_hash) \
         SELECT h.seq, $10, $12, $9, $13, $1, $2, $3, $8, $4, 'success', NULL, $14, h.row_hash, h.prev_row_hash \
         FROM v LEFT JOIN h ON true), \
         g AS (INSERT INTO book_generations (book_id, shard, generation) SELECT $1, $10, 1 FROM h WHERE $15 \
         ON CONFLICT (book_id, shard) DO UPDATE SET generation = book_generations.generation + 1), \
         b AS (INSERT INTO unsynced_blobs (sha256, data) SELECT $4, $16 FROM h WHERE $16 IS NOT NULL \
         ON CONFLICT (sha256) DO NOTHING), \
         q AS (INSERT INTO pending_materializations (book_id, path, user_id, ticket) SELECT $1, $2, $3, h.seq FROM h \
         ON CONFLICT (book_id, path, user_id) DO UPDATE SET ticket = excluded.ticket) \
         SELECT v.version, h.seq FROM v JOIN h ON true"
    };
}
/// A create as one PostgreSQL statement (see [`pg_write_once_tail`]; `$8` is NULL).
const SQL_CREATE_ONCE_PG: &str = concat!(
    "WITH j AS (INSERT INTO file_journal (book_id, path, user_id, sha256, size, last_written_at, storage_backend, version) \
     SELECT $1, $2, $3, $4, $5, $6, $7, COALESCE(MAX(version), 0) + 1 FROM file_versions \
     WHERE book_id = $1 AND path = $2 AND user_id = $3 \
     HAVING $17::text IS NULL OR EXISTS (SELECT 1 FROM books WHERE book_id = $1 AND profile = $17) \
     ON CONFLICT (book_id, path, user_id) DO NOTHING RETURNING version), \
     v AS (INSERT INTO file_versions (book_id, path, user_id, version, sha256, size, written_at, agent_id) \
     SELECT $1, $2, $3, version, $4, $5, $6, $9 FROM j RETURNING version), ",
    pg_write_once_tail!()
);
/// An update (compare-and-swap on `$8`) as one PostgreSQL statement (see [`pg_write_once_tail`]).
const SQL_UPDATE_ONCE_PG: &str = concat!(
    "WITH j AS (UPDATE file_journal SET sha256 = $4, size = $5, last_written_at = $6, storage_backend = $7, \
     version = version + 1 WHERE book_id = $1 AND path = $2 AND user_id = $3 AND sha256 = $8 \
     AND ($17::text IS NULL OR EXISTS (SELECT 1 FROM books WHERE book_id = $1 AND profile = $17)) \
     RETURNING version), \
     v AS (INSERT INTO file_versions (book_id, path, user_id, version, sha256, size, written_at, agent_id) \
     SELECT $1, $2, $3, version, $4, $5, $6, $9 FROM j RETURNING version), ",
    pg_write_once_tail!()
);
const SQL_CREATE_JOURNAL_PG: &str = "WITH j AS (INSERT INTO file_journal (book_id, path, user_id, sha256, size, last_written_at, storage_backend, version) \
     SELECT $1, $2, $3, $4, $5, $6, $7, COALESCE(MAX(version), 0) + 1 FROM file_versions \
     WHERE book_id = $1 AND path = $2 AND user_id = $3 \
     ON CONFLICT (book_id, path, user_id) DO NOTHING RETURNING version), \
     v AS (INSERT INTO file_versions (book_id, path, user_id, version, sha256, size, written_at, agent_id) \
     SELECT $1, $2, $3, version, $4, $5, $6, $8 FROM j RETURNING version), \
     h AS (UPDATE audit_head SET row_count = row_count + 1 WHERE shard = $9 AND EXISTS (SELECT 1 FROM v) \
     RETURNING row_hash, nextval('audit_log_seq') AS seq) \
     SELECT v.version, h.row_hash, h.seq FROM v LEFT JOIN h ON true";
/// [`SQL_UPDATE_JOURNAL_CAS`] plus its version row (agent `$9`) and, when it matched, the audit
/// head of shard `$10` locked and advanced: one PostgreSQL statement returning `(version,
/// prev_row_hash, seq)`.
const SQL_UPDATE_JOURNAL_CAS_PG: &str = "WITH j AS (UPDATE file_journal SET sha256 = $4, size = $5, last_written_at = $6, storage_backend = $7, \
     version = version + 1 WHERE book_id = $1 AND path = $2 AND user_id = $3 AND sha256 = $8 \
     RETURNING version), \
     v AS (INSERT INTO file_versions (book_id, path, user_id, version, sha256, size, written_at, agent_id) \
     SELECT $1, $2, $3, version, $4, $5, $6, $9 FROM j RETURNING version), \
     h AS (UPDATE audit_head SET row_count = row_count + 1 WHERE shard = $10 AND EXISTS (SELECT 1 FROM v) \
     RETURNING row_hash, nextval('audit_log_seq') AS seq) \
     SELECT v.version, h.row_hash, h.seq FROM v LEFT JOIN h ON true";
/// The compare-and-swap of an update: changes the row only if it still holds the expected hash.
const SQL_UPDATE_JOURNAL_CAS: &str = "UPDATE file_journal SET sha256 = $4, size = $5, last_written_at = $6, storage_backend = $7, \
     version = version + 1 WHERE book_id = $1 AND path = $2 AND user_id = $3 AND sha256 = $8 \
     RETURNING version";
const SQL_INSERT_VERSION: &str = "INSERT INTO file_versions (book_id, path, user_id, version, sha256, size, written_at, agent_id) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
const SQL_BUMP_GENERATION: &str = "INSERT INTO book_generations (book_id, shard, generation) VALUES ($1, $2, 1) \
     ON CONFLICT (book_id, shard) DO UPDATE SET generation = book_generations.generation + 1";
/// Keep a blob written without fsync durable in the database until the next filesystem sync.
const SQL_KEEP_UNSYNCED_BLOB: &str =
    "INSERT INTO unsynced_blobs (sha256, data) VALUES ($1, $2) ON CONFLICT (sha256) DO NOTHING";
/// Mark a key pending without a commit of its own (ticket 0; see [`Engine::keep_pending`]).
const SQL_KEEP_PENDING: &str = "INSERT INTO pending_materializations (book_id, path, user_id, ticket) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (book_id, path, user_id) DO NOTHING";
const SQL_ENQUEUE_PENDING: &str = "INSERT INTO pending_materializations (book_id, path, user_id, ticket) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (book_id, path, user_id) DO UPDATE SET ticket = excluded.ticket";

/// What [`sync_write_tx`] committed: `(version, ticket)`, `None` when the compare-and-swap lost.
type SyncTxResult = Result<Option<(i64, i64)>>;

/// Who writes what, as the commit steps of a write pass it along.
#[derive(Clone, Copy)]
struct WriteReq<'a> {
    actor: &'a Actor,
    op: &'static str,
    book: &'a BookId,
    path: &'a BookPath,
    ns: &'a Namespace,
    started: Instant,
}

/// What [`Engine::write_local`]'s blocking part did.
enum LocalWrite {
    Done(WriteOutcome),
    /// Storing the blob failed (nothing committed; the failure is audited).
    BlobFailed(PfsError),
    /// The compare-and-swap found another state (nothing committed).
    Lost,
    Failed(PfsError),
}

/// The outcome of a committed synchronous write.
fn sync_outcome(sha: String, size: u64, prev_hash: Option<String>, version: i64) -> WriteOutcome {
    WriteOutcome {
        mode: if prev_hash.is_none() {
            WriteMode::Created
        } else {
            WriteMode::Updated
        },
        sha256: sha,
        size,
        prev_hash,
        version,
    }
}

/// [`Engine::commit_write`]'s statements as one job of a group commit on the synchronous SQLite
/// write connection ([`platform::db::Db::write_grouped_blocking`]): compare-and-swap, version row,
/// audit row, generation, pending row. `Discard(Ok(None))` when the compare-and-swap finds
/// another state, `Discard(Err(_))` for a simulated commit failure (nothing is written either way).
fn sync_write_tx(
    tx: &rusqlite::Connection,
    w: &SyncWrite,
    faults: &Option<Arc<Faults>>,
    unsynced_blob: Option<&[u8]>,
) -> rusqlite::Result<Grouped<SyncTxResult>> {
    let version: Option<i64> = {
        let mut st = match &w.expected {
            None => sync_stmt(
                tx,
                SQL_CREATE_JOURNAL,
                &[
                    &w.book, &w.path, &w.user, &w.sha, &w.size, &w.now, &w.backend,
                ],
            )?,
            Some(h) => sync_stmt(
                tx,
                SQL_UPDATE_JOURNAL_CAS,
                &[
                    &w.book, &w.path, &w.user, &w.sha, &w.size, &w.now, &w.backend, h,
                ],
            )?,
        };
        let mut rows = st.raw_query();
        match rows.next()? {
            Some(r) => Some(r.get(0)?),
            None => None,
        }
    };
    let Some(version) = version else {
        return Ok(Grouped::Discard(Ok(None)));
    };
    sync_stmt(
        tx,
        SQL_INSERT_VERSION,
        &[
            &w.book,
            &w.path,
            &w.user,
            &version,
            &w.sha,
            &w.size,
            &w.now,
            &w.agent_id,
        ],
    )?
    .raw_execute()?;
    let seq = audit::append_sync(
        tx,
        &NewAuditRow {
            agent_id: &w.agent_id,
            operation: w.op,
            book_id: &w.book,
            path: &w.path,
            user_id: &w.user,
            prev_hash: w.expected.as_deref(),
            new_hash: Some(&w.sha),
            status: STATUS_SUCCESS,
            error_message: None,
            execution_time_ms: Some(w.started.elapsed().as_millis() as i64),
        },
    )?;
    if w.user == BASE_USER {
        let shard = audit::shard_of(&w.book, &w.path, &w.user);
        sync_stmt(tx, SQL_BUMP_GENERATION, &[&w.book, &shard])?.raw_execute()?;
    }
    sync_stmt(tx, SQL_ENQUEUE_PENDING, &[&w.book, &w.path, &w.user, &seq])?.raw_execute()?;
    if let Some(data) = unsynced_blob {
        sync_stmt(tx, SQL_KEEP_UNSYNCED_BLOB, &[&w.sha, &data])?.raw_execute()?;
    }
    if let Some(f) = &faults
        && let Err(e) = f.before_commit()
    {
        return Ok(Grouped::Discard(Err(e)));
    }
    Ok(Grouped::Keep(Ok(Some((version, seq)))))
}

async fn bump_generation(
    conn: &mut sqlx::AnyConnection,
    book: &str,
    path: &str,
    user: &str,
) -> Result<()> {
    sqlx::query(SQL_BUMP_GENERATION)
        .bind(book)
        .bind(audit::shard_of(book, path, user))
        .execute(conn)
        .await
        .map_err(db_err("bump book generation"))?;
    Ok(())
}

/// The generation vector of a book (see [`Engine::base_manifest`]).
async fn read_generation<'c, E>(conn: E, book: &str) -> Result<Vec<(i64, i64)>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT shard, generation FROM book_generations WHERE book_id = $1 ORDER BY shard",
    )
    .bind(book)
    .fetch_all(conn)
    .await
    .map_err(db_err("read book generation"))?;
    Ok(rows)
}

async fn enqueue_pending(
    conn: &mut sqlx::AnyConnection,
    book: &str,
    path: &str,
    user: &str,
    ticket: i64,
) -> Result<()> {
    sqlx::query(SQL_ENQUEUE_PENDING)
        .bind(book)
        .bind(path)
        .bind(user)
        .bind(ticket)
        .execute(conn)
        .await
        .map_err(db_err("enqueue materialization"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A confirmation whose ticket moved on (a copy of an older state that landed after a later
    /// commit's) re-materializes the key, so the canonical object ends at the journal's state.
    #[tokio::test]
    async fn failed_confirmation_rematerializes_the_current_state() {
        for t in platform::db::TestDb::all().await {
            let dir = tempfile::tempdir().expect("temp dir");
            let storage = Storage::new(&crate::StorageConfig::Fs {
                root: dir.path().to_path_buf(),
            })
            .expect("storage");
            let e = Engine::open(t.connect().await, storage, EngineConfig::default())
                .await
                .expect("open");
            let a = Actor::new("confirm-test").expect("actor");
            let (bk, p) = (
                BookId::parse("confirm-book").expect("book"),
                BookPath::parse("content/01-a/01-b/01-one.md").expect("path"),
            );
            let v1 = e
                .write(&a, &bk, &p, &Namespace::Base, Bytes::from("v1"), None)
                .await
                .expect("v1");
            let v2 = e
                .write(
                    &a,
                    &bk,
                    &p,
                    &Namespace::Base,
                    Bytes::from("v2"),
                    Some(&v1.sha256),
                )
                .await
                .expect("v2");
            e.settle().await;
            let key = "books/confirm-book/content/01-a/01-b/01-one.md";
            // v1's copy lands late, over v2's, and its confirmation comes last.
            e.storage()
                .put(key, Bytes::from("v1"))
                .await
                .expect("stale copy");
            e.inner.confirm.push(Applied {
                book: bk.as_str().into(),
                path: p.as_str().into(),
                user: BASE_USER.into(),
                ticket: 1,
            });
            e.settle().await;
            assert_eq!(
                e.storage().get(key).await.expect("canonical"),
                Bytes::from("v2"),
                "{:?}",
                t.kind
            );
            assert_eq!(e.pending_count().await.expect("pending"), 0);
            assert_eq!(
                e.read(&bk, &p, None).await.expect("read").entry.sha256,
                v2.sha256
            );
        }
    }

    #[test]
    fn actors() {
        assert!(Actor::new("agent-1").is_ok());
        for bad in ["", "  ", "system", "SYSTEM", " system ", "a\nb"] {
            assert!(Actor::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn canonical_keys() {
        assert_eq!(
            key_for("b-1", "content/a.md", BASE_USER),
            "books/b-1/content/a.md"
        );
        assert_eq!(
            key_for("b-1", "content/a.md", "u1"),
            "books/b-1/users/u1/content/a.md"
        );
    }
}
