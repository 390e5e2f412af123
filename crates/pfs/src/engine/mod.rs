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
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use platform::db::{Db, Grouped, SyncRead, WriteTx};
use serde::Serialize;
use sqlx::Row;

use crate::audit::{
    self, AuditLog, NewAuditRow, OP_DELETE_ASSET, OP_DELETE_CONTENT, OP_IMPORT, OP_MOVE_CONTENT,
    OP_UPLOAD_ASSET, OP_WRITE_CONTENT, STATUS_CONFLICT, STATUS_ERROR, STATUS_SUCCESS,
};
use crate::blob_cache::BlobCache;
use crate::confirm::{self, Applied, ConfirmQueue};
use crate::db::{
    self as pdb, db_err, from_micros, like_escape, now_micros, sync_db_err, sync_stmt, to_micros,
};
use crate::error::{PfsError, Result};
use crate::ids::{BASE_USER, BookId, Namespace, RequestKey, Sha256, UserId};
use crate::path::{Area, BookPath, DirPrefix, storage_key};
use crate::schema::Profile;
use crate::storage::{Storage, blob_key, is_sha256_hex, sha256_hex};

mod archive_source;
mod edits;
mod faults;
mod import;
mod journal;
mod manifest_cache;
mod materialize;
mod moves;
mod mutate;
mod pg_write;
mod read;
mod sqlite_write;
mod unsynced;
mod write;

pub use crate::ids::Actor;
pub use archive_source::EngineArchiveSource;
pub use edits::EditOutcome;
pub use faults::Faults;
pub use import::ImportOptions;
use journal::*;
pub use moves::MoveOutcome;

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
    /// Overlay rows: the base file's sha256 when the overlay was last written (`None`: there was
    /// no base file then). Always `None` for base rows.
    pub base_sha256: Option<String>,
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
    /// The base file's current sha256 (`None`: no base file), from the same lookup; with
    /// `entry.base_sha256` it tells whether an overlay's base changed since it was written.
    pub base_sha256: Option<String>,
}

/// `created` | `updated` | `unchanged`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteMode {
    Created,
    Updated,
    /// The bytes were already the current version: nothing was written, no version or audit
    /// row was added (legacy clients that re-send unchanged files cost nothing).
    Unchanged,
}

impl WriteMode {
    /// The wire name (`created` | `updated` | `unchanged`).
    pub fn as_str(self) -> &'static str {
        match self {
            WriteMode::Created => "created",
            WriteMode::Updated => "updated",
            WriteMode::Unchanged => "unchanged",
        }
    }
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
    fn of(expected: Expect, sha256: Sha256, size: u64, version: i64) -> WriteOutcome {
        let (mode, prev_hash) = match expected {
            Expect::Absent => (WriteMode::Created, None),
            Expect::Hash(h) => (WriteMode::Updated, Some(h.into_string())),
        };
        WriteOutcome {
            mode,
            sha256: sha256.into_string(),
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
    /// The operation that produced this version (`write_content`, `move_content`).
    pub operation: String,
}

/// What a mutation expects of the current journal row.
enum Expect {
    /// Create: the row must not exist.
    Absent,
    /// Update: the row must exist with this hash.
    Hash(Sha256),
}

/// How a successful write commits, chosen once at [`Engine::open`] from the database and the
/// storage (the portable pool transaction also reports every lost compare-and-swap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CommitPath {
    /// SQLite file and local storage: blob, grouped commit and canonical copy on one blocking
    /// thread ([`Engine::write_local`]).
    SqliteLocal,
    /// SQLite file and object storage: the commit as a job of a group commit
    /// ([`Engine::commit_write_sync`]).
    SqliteGrouped,
    /// PostgreSQL: one autocommit statement ([`Engine::write_pg_fast`],
    /// [`Engine::commit_write_pg_once`]).
    Postgres,
    /// In-memory SQLite or direct connections turned off: the pool transaction.
    Pool,
}

impl CommitPath {
    fn choose(db: &Db, storage: &Storage) -> CommitPath {
        match (db.kind(), db.has_sync_writer(), storage.is_local_fs()) {
            (platform::db::DbKind::Postgres, _, _) => CommitPath::Postgres,
            (_, true, true) => CommitPath::SqliteLocal,
            (_, true, false) => CommitPath::SqliteGrouped,
            (_, false, _) => CommitPath::Pool,
        }
    }
}

struct Inner {
    db: Db,
    storage: Storage,
    cfg: EngineConfig,
    /// How writes commit (chosen at open).
    commit_path: CommitPath,
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

/// The book store engine. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("db", &self.inner.db.kind())
            .field("storage", &self.inner.storage)
            .finish()
    }
}

/// How long [`Engine::open`] waits for pending materializations before continuing them in the
/// background.
const RECONCILE_AT_OPEN_BUDGET: std::time::Duration = std::time::Duration::from_secs(2);

const JOURNAL_COLS: &str =
    "book_id, path, user_id, sha256, size, last_written_at, version, storage_backend, base_sha256";

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
        base_sha256: r.try_get("base_sha256").map_err(&g)?,
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
        let defer_blob_sync = (db.has_sync_writer() || db.kind() == platform::db::DbKind::Postgres)
            && storage.can_defer_blob_sync()
            && !cfg.blob_sync_interval.is_zero();
        let commit_path = CommitPath::choose(&db, &storage);
        tracing::debug!(?commit_path, "write commit strategy");
        let engine = Engine {
            inner: Arc::new(Inner {
                commit_path,
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
        .execute(self.inner.db.pool())
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
            .fetch_optional(self.inner.db.pool())
            .await
            .map_err(db_err("read book"))?;
        row.map(|r| decode_book(&r)).transpose()
    }

    /// Every book, sorted by id.
    pub async fn list_books(&self) -> Result<Vec<BookInfo>> {
        let rows = sqlx::query("SELECT book_id, profile, created_at FROM books")
            .fetch_all(self.inner.db.pool())
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
            .execute(self.inner.db.pool())
            .await
            .map_err(db_err("set profile"))?;
        self.remember_profile(book.as_str(), profile);
        Ok(())
    }

    /// Remember a book's profile as last read (see [`Inner::profiles`]).
    fn remember_profile(&self, book: &str, profile: Profile) {
        if self.inner.db.kind() != platform::db::DbKind::Postgres {
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

    // ---------------------------------------------------------------- mutations

    // ---------------------------------------------------------------- materialization

    // ---------------------------------------------------------------- manifests

    /// Every journal row of every book and namespace (fsck).
    pub(crate) async fn all_journal_rows(&self) -> Result<Vec<JournalEntry>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOURNAL_COLS} FROM file_journal"
        )))
        .fetch_all(self.inner.db.pool())
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
