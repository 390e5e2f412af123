//! Database pools for SQLite (the embedded default) and PostgreSQL, behind one `sqlx::AnyPool`.
//!
//! Every library (pfs, study) owns its own tables and its own migration directory with its own
//! tracking table, and runs the same SQL on both backends: only portable types are used
//! (TEXT, BIGINT, INTEGER, BLOB/BYTEA via `Vec<u8>`, booleans as INTEGER 0/1). Timestamps are
//! stored as BIGINT microseconds since the Unix epoch (UTC) so ordering and range queries are
//! identical on both backends.

use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::sync::{Arc, Once};
use std::time::Duration;

use anyhow::Context;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyConnection, AnyPool, Executor};
use tokio::sync::{Mutex, OwnedMutexGuard};

pub mod group;
pub mod sqlite_read;

pub use group::{GroupError, Grouped};
pub use sqlite_read::{SqliteReader, SqliteWriter, SyncRead};

/// Which SQL backend a pool talks to. Some statements differ (transaction start, upserts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

impl DbKind {
    pub fn from_url(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(DbKind::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DbKind::Postgres)
        } else {
            anyhow::bail!("unsupported database URL scheme (expected sqlite: or postgres://)")
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DbKind::Sqlite => "sqlite",
            DbKind::Postgres => "postgres",
        }
    }

    /// The statement that starts a write transaction. On SQLite `BEGIN IMMEDIATE` takes the write
    /// lock up front, so a transaction that reads and then writes never fails with SQLITE_BUSY on
    /// lock upgrade.
    pub fn begin_write(self) -> &'static str {
        match self {
            DbKind::Sqlite => "BEGIN IMMEDIATE",
            DbKind::Postgres => "BEGIN",
        }
    }
}

/// A PostgreSQL schema name our tables live in (so they can share a database with other
/// applications, e.g. the predecessor's `file_journal` in `public`): 1–63 lowercase ASCII letters,
/// digits and underscores, not starting with a digit, not `pg_…`. Valid by construction, so it can
/// be spliced into `SET search_path` / `CREATE SCHEMA` unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgSchema(String);

impl PgSchema {
    pub fn parse(name: &str) -> anyhow::Result<PgSchema> {
        let ok = !name.is_empty()
            && name.len() <= 63
            && !name.starts_with("pg_")
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !ok {
            anyhow::bail!(
                "invalid PostgreSQL schema name {name:?}: use 1-63 lowercase letters, digits and \
                 underscores, not starting with a digit or pg_"
            );
        }
        Ok(PgSchema(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for PgSchema {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<PgSchema> {
        PgSchema::parse(s)
    }
}

impl std::fmt::Display for PgSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Pool settings. Defaults are sane for one server process on a small machine.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub min_connections: u32,
    pub acquire_timeout: Duration,
    /// PostgreSQL `statement_timeout`; ignored on SQLite.
    pub statement_timeout: Duration,
    /// SQLite `busy_timeout`; ignored on PostgreSQL.
    pub busy_timeout: Duration,
    /// Ping a pooled connection before handing it out (PostgreSQL only; ignored on SQLite).
    pub test_before_acquire: bool,
    /// SQLite files: hot point lookups run inline on query-only connections and
    /// [`Db::write_sync`] is available (one direct write connection), instead of everything going
    /// through the pool's worker threads ([`sqlite_read`]). Ignored on PostgreSQL.
    pub sqlite_direct: bool,
    /// PostgreSQL: the schema every connection works in (`search_path`), created if missing.
    /// `None`: the server's default search path (`public`). Ignored on SQLite.
    pub pg_schema: Option<PgSchema>,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 16,
            min_connections: 1,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(15),
            busy_timeout: Duration::from_secs(10),
            test_before_acquire: true,
            sqlite_direct: true,
            pg_schema: None,
        }
    }
}

/// A connected pool plus its backend kind.
///
/// Write transactions should start with [`Db::begin_write`]: on SQLite it queues writers of this
/// process on an async mutex (FIFO) instead of letting them sleep in SQLite's busy handler, whose
/// 1, 2, 5 … 100 ms back-off turns lock waits into long tails. Clones share the lock.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    kind: DbKind,
    write_lock: Arc<Mutex<()>>,
    /// Inline query-only connections for hot point lookups (SQLite files only; see
    /// [`sqlite_read`]).
    sync_reader: Option<Arc<SqliteReader>>,
    /// The synchronous write connection for hot write transactions (SQLite files only).
    sync_writer: Option<Arc<SqliteWriter>>,
    /// Jobs waiting for the next group commit on `sync_writer` ([`Db::write_grouped_blocking`]).
    group: Arc<group::GroupQueue>,
}

/// A write transaction from [`Db::begin_write`]. Derefs to the connection (`&mut *tx` is an
/// executor). On SQLite it holds the process's write lock until [`WriteTx::commit`] /
/// [`WriteTx::rollback`] or drop (which rolls back).
pub struct WriteTx {
    // Field order matters: the transaction is dropped (rollback queued) before the guard.
    tx: sqlx::Transaction<'static, sqlx::Any>,
    _guard: Option<OwnedMutexGuard<()>>,
}

impl WriteTx {
    /// Commit, then release the write lock.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        let WriteTx { tx, _guard } = self;
        tx.commit().await
    }

    /// Roll back, then release the write lock.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        let WriteTx { tx, _guard } = self;
        tx.rollback().await
    }
}

impl std::fmt::Debug for WriteTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTx")
            .field("serialized", &self._guard.is_some())
            .finish()
    }
}

impl Deref for WriteTx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

static DRIVERS: Once = Once::new();

/// Install sqlx's Any drivers once per process.
pub fn install_drivers() {
    DRIVERS.call_once(install_default_drivers);
}

/// The SQLite URL for a file, creating it if missing.
pub fn sqlite_url_for(path: &std::path::Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

impl Db {
    /// Connect to `url` (`sqlite://…` or `postgres://…`) with `settings`.
    pub async fn connect(url: &str, settings: &PoolSettings) -> anyhow::Result<Db> {
        install_drivers();
        let kind = DbKind::from_url(url)?;
        let mut opts = AnyPoolOptions::new()
            .max_connections(settings.max_connections)
            .min_connections(settings.min_connections)
            .acquire_timeout(settings.acquire_timeout)
            // A SQLite connection is a local file handle that cannot go stale: pinging it on
            // every acquire only adds a worker-thread round trip (also inside the write lock).
            .test_before_acquire(settings.test_before_acquire && kind == DbKind::Postgres)
            // A connection whose COMMIT failed (disk full, I/O error) can come back still inside
            // its transaction (SQLite had already rolled it back, so sqlx's queued ROLLBACK fails
            // and its depth stays up): never hand it out again; the pool opens a fresh one.
            .before_acquire(|conn, _meta| {
                Box::pin(async move {
                    let clean = !sqlx::Connection::is_in_transaction(&*conn);
                    if !clean {
                        metrics::counter!("platform_db_connections_discarded_total").increment(1);
                        tracing::warn!("discarding a pooled connection left inside a transaction");
                    }
                    Ok(clean)
                })
            });
        match kind {
            DbKind::Sqlite => {
                let busy_ms = settings.busy_timeout.as_millis();
                opts = opts.after_connect(move |conn, _meta| {
                    Box::pin(async move {
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        // FULL: a commit is on disk when it returns (NORMAL in WAL mode may lose
                        // the last commits on power loss). Group commit pays for it.
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute(sqlx::AssertSqlSafe(format!(
                            "PRAGMA busy_timeout = {busy_ms}"
                        )))
                        .await?;
                        Ok(())
                    })
                });
            }
            DbKind::Postgres => {
                if let Some(schema) = &settings.pg_schema {
                    create_schema(url, schema).await?;
                }
                let st_ms = settings.statement_timeout.as_millis();
                let search_path = settings
                    .pg_schema
                    .as_ref()
                    .map(|s| format!("SET search_path TO {s}"));
                opts = opts.after_connect(move |conn, _meta| {
                    let search_path = search_path.clone();
                    Box::pin(async move {
                        conn.execute(sqlx::AssertSqlSafe(format!(
                            "SET statement_timeout = {st_ms}"
                        )))
                        .await?;
                        if let Some(sql) = search_path {
                            conn.execute(sqlx::AssertSqlSafe(sql)).await?;
                        }
                        Ok(())
                    })
                });
            }
        }
        let pool = opts
            .connect(url)
            .await
            .with_context(|| format!("connecting to the {} database", kind.as_str()))?;
        let mut db = Db::from_pool(pool, kind);
        if kind == DbKind::Sqlite && settings.sqlite_direct {
            // The pool has opened (and, with mode=rwc, created) the file by now.
            let file = sqlite_read::sqlite_file_of(url).filter(|p| p.is_file());
            db.sync_reader = file.as_deref().map(|p| Arc::new(SqliteReader::new(p)));
            db.sync_writer = file
                .as_deref()
                .map(|p| Arc::new(SqliteWriter::new(p, settings.busy_timeout)));
        }
        Ok(db)
    }

    /// Wrap an existing pool (with a fresh write lock, without inline SQLite reads).
    pub fn from_pool(pool: AnyPool, kind: DbKind) -> Db {
        Db {
            pool,
            kind,
            write_lock: Arc::new(Mutex::new(())),
            sync_reader: None,
            sync_writer: None,
            group: Arc::default(),
        }
    }

    /// The pool, for reads, migrations and [`Db::begin_write`]-started transactions. A write
    /// outside a transaction goes through [`Db::execute_write`], so that on SQLite it queues
    /// behind the process's other writers instead of waiting in SQLite's busy handler.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Which backend this is.
    pub fn kind(&self) -> DbKind {
        self.kind
    }

    /// Run one autocommit write statement, queued on this process's write lock (SQLite) like
    /// every other write.
    pub async fn execute_write<'q>(
        &self,
        q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> Result<sqlx::any::AnyQueryResult, sqlx::Error> {
        let _w = self.lock_writes().await;
        q.execute(&self.pool).await
    }

    /// The inline SQLite reader, when this is a SQLite file database (see [`sqlite_read`]).
    pub fn sync_reader(&self) -> Option<&SqliteReader> {
        self.sync_reader.as_deref()
    }

    /// On SQLite, wait for this process's write lock (FIFO); `None` on PostgreSQL, which has
    /// row-level locking. Hold the guard around an autocommit write statement so it queues
    /// behind write transactions instead of sleeping in SQLite's busy handler.
    pub async fn lock_writes(&self) -> Option<OwnedMutexGuard<()>> {
        match self.kind {
            DbKind::Sqlite => Some(self.write_lock.clone().lock_owned().await),
            DbKind::Postgres => None,
        }
    }

    /// Whether [`Db::write_sync`] is available (a SQLite file database).
    pub fn has_sync_writer(&self) -> bool {
        self.sync_writer.is_some()
    }

    /// Run `f` on the synchronous SQLite write connection in one blocking task, holding this
    /// process's write lock (so it queues FIFO with [`Db::begin_write`] transactions). `f` runs
    /// its own `BEGIN IMMEDIATE … COMMIT`. `None` when unavailable (PostgreSQL, in-memory
    /// SQLite): use [`Db::begin_write`] instead.
    pub async fn write_sync<T, F>(&self, f: F) -> Option<anyhow::Result<T>>
    where
        T: Send + 'static,
        F: FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let writer = self.sync_writer.clone()?;
        let guard = self.lock_writes().await;
        let res = tokio::task::spawn_blocking(move || {
            let out = writer.run(f);
            drop(guard);
            out
        })
        .await;
        Some(match res {
            Ok(r) => r.context("sqlite write transaction"),
            Err(e) => Err(anyhow::anyhow!("sqlite write task failed: {e}")),
        })
    }

    /// [`Db::write_sync`] for a caller that is already on a blocking thread (a `spawn_blocking`
    /// task; never call it from async code, it blocks): waits for this process's write lock in
    /// the same FIFO queue, then runs `f` on the synchronous write connection. Lets one blocking
    /// task do file work and the transaction without another thread hand-off. `None` when
    /// unavailable (see [`Db::write_sync`]).
    pub fn write_sync_blocking<T, F>(&self, f: F) -> Option<anyhow::Result<T>>
    where
        F: FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T>,
    {
        let writer = self.sync_writer.as_ref()?;
        let _guard = self.write_lock.blocking_lock();
        Some(writer.run(f).context("sqlite write transaction"))
    }

    /// Run `f` inside the next *group commit* on the synchronous SQLite write connection, on the
    /// calling blocking thread (never call it from async code). Writers that arrive while a
    /// commit is being flushed share the next transaction and its one fsync; each runs in its own
    /// savepoint, and its result is returned only after the group's `COMMIT` returned (see
    /// [`group`]). `f` must not begin or end transactions. `None` when unavailable (PostgreSQL,
    /// in-memory SQLite).
    pub fn write_grouped_blocking<T, F>(&self, f: F) -> Option<anyhow::Result<T>>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> rusqlite::Result<Grouped<T>> + Send + 'static,
    {
        use std::sync::mpsc::RecvTimeoutError;
        let writer = self.sync_writer.as_ref()?;
        let rx = self.group.push(f);
        loop {
            // One writer at a time leads: it takes the write lock and commits group after group
            // while jobs keep arriving; the others only wait for their outcome, so a job queued
            // behind a commit in flight joins the next group instead of taking a turn of its own.
            // A job queued just as the leader stepped down is picked up by that leader's second
            // look (or, failing that, by its owner's next attempt after `RETRY_LEAD`).
            for _ in 0..2 {
                if !self.group.try_lead() {
                    break;
                }
                {
                    let _guard = self.write_lock.blocking_lock();
                    for _ in 0..group::MAX_ROUNDS {
                        if self.group.run_queued(writer) == 0 {
                            break;
                        }
                    }
                }
                self.group.end_lead();
                if !self.group.has_queued() {
                    break;
                }
            }
            match rx.recv_timeout(group::RETRY_LEAD) {
                Ok(r) => return Some(r),
                Err(RecvTimeoutError::Disconnected) => {
                    return Some(Err(anyhow::anyhow!(
                        "a grouped write was dropped before it ran"
                    )));
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// How many group transactions [`Db::write_grouped_blocking`] has run in this process.
    pub fn group_commits(&self) -> u64 {
        self.group.groups()
    }

    /// [`Db::write_grouped_blocking`] from async code (one blocking task).
    pub async fn write_grouped<T, F>(&self, f: F) -> Option<anyhow::Result<T>>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> rusqlite::Result<Grouped<T>> + Send + 'static,
    {
        self.sync_writer.as_ref()?;
        let db = self.clone();
        match tokio::task::spawn_blocking(move || db.write_grouped_blocking(f)).await {
            Ok(r) => r,
            Err(e) => Some(Err(anyhow::anyhow!("sqlite write task failed: {e}"))),
        }
    }

    /// Start a write transaction (`BEGIN IMMEDIATE` on SQLite, `BEGIN` on PostgreSQL). On SQLite
    /// the process's write lock is taken first and held until commit, rollback or drop.
    pub async fn begin_write(&self) -> Result<WriteTx, sqlx::Error> {
        let guard = self.lock_writes().await;
        let tx = self.pool.begin_with(self.kind.begin_write()).await?;
        Ok(WriteTx { tx, _guard: guard })
    }

    /// `SELECT 1` round trip, for readiness probes.
    pub async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .context("database ping")?;
        Ok(())
    }
}

/// `query.execute_write(&db)`: [`Db::execute_write`] in method position, for a statement built
/// with `sqlx::query(…).bind(…)`.
pub trait ExecuteWrite {
    /// Run this write statement queued on `db`'s write lock.
    fn execute_write(
        self,
        db: &Db,
    ) -> impl std::future::Future<Output = Result<sqlx::any::AnyQueryResult, sqlx::Error>> + Send;
}

impl<'q> ExecuteWrite for sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    fn execute_write(
        self,
        db: &Db,
    ) -> impl std::future::Future<Output = Result<sqlx::any::AnyQueryResult, sqlx::Error>> + Send
    {
        db.execute_write(self)
    }
}

/// Whether a database error means "unavailable right now, retry later" rather than a bug or a
/// bad request: SQLite busy or locked by another process, a full disk, an I/O error; a
/// PostgreSQL connection that failed, timed out or was shut down, or a server out of resources.
pub fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => {
            let code = d.code();
            let code = code.as_deref().unwrap_or_default();
            match code.parse::<i32>() {
                // SQLite (extended) result codes: the primary code is the low byte.
                Ok(n) => is_transient_sqlite_code(n & 0xff),
                // PostgreSQL SQLSTATE: connection exceptions, insufficient resources,
                // operator intervention (shutdown, cannot connect now).
                Err(_) => ["08", "53", "57P"].iter().any(|p| code.starts_with(p)),
            }
        }
        _ => false,
    }
}

/// [`is_transient`] for an error of the direct SQLite connections (also inside an
/// `anyhow::Error` chain, e.g. a [`GroupError`]).
pub fn is_transient_sqlite(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        if let Some(r) = c.downcast_ref::<rusqlite::Error>() {
            return r.sqlite_error_code().is_some_and(is_transient_sqlite_error);
        }
        if let Some(g) = c.downcast_ref::<GroupError>() {
            return g.code().is_some_and(is_transient_sqlite_error);
        }
        false
    })
}

fn is_transient_sqlite_error(code: rusqlite::ErrorCode) -> bool {
    use rusqlite::ErrorCode as C;
    matches!(
        code,
        C::DatabaseBusy
            | C::DatabaseLocked
            | C::SystemIoFailure
            | C::DiskFull
            | C::CannotOpen
            | C::FileLockingProtocolFailed
    )
}

/// SQLITE_BUSY, SQLITE_LOCKED, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_PROTOCOL.
fn is_transient_sqlite_code(primary: i32) -> bool {
    matches!(primary, 5 | 6 | 10 | 13 | 14 | 15)
}

/// Create the schema if it is missing, on one short-lived connection (looked up first, so a
/// normal start logs no "already exists" notice; two processes racing to create it both succeed).
async fn create_schema(url: &str, schema: &PgSchema) -> anyhow::Result<()> {
    let mut conn = <AnyConnection as sqlx::Connection>::connect(url)
        .await
        .context("connecting to the postgres database")?;
    if !schema_exists(&mut conn, schema).await? {
        let created = conn
            .execute(sqlx::AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS {schema}"
            )))
            .await;
        if let Err(e) = created
            && !schema_exists(&mut conn, schema).await.unwrap_or(false)
        {
            return Err(e).with_context(|| format!("creating the PostgreSQL schema {schema}"));
        }
    }
    let _ = sqlx::Connection::close(conn).await;
    Ok(())
}

async fn schema_exists(conn: &mut AnyConnection, schema: &PgSchema) -> Result<bool, sqlx::Error> {
    let row: Option<i64> = sqlx::query_scalar(
        "SELECT 1::BIGINT FROM information_schema.schemata WHERE schema_name = $1",
    )
    .bind(schema.as_str().to_string())
    .fetch_optional(conn)
    .await?;
    Ok(row.is_some())
}

/// Build a migrator from an embedded migration set with its own tracking table, so several
/// libraries can keep independent, versioned, reversible migrations in one database.
pub fn migrator_with_table(
    mut migrator: sqlx::migrate::Migrator,
    table: &'static str,
) -> sqlx::migrate::Migrator {
    migrator.dangerous_set_table_name(table);
    migrator.set_ignore_missing(true);
    migrator
}

/// A throwaway database for tests.
///
/// With `TEST_DATABASE_URL`/`DATABASE_URL` unset, or `backend == DbKind::Sqlite`, it is a SQLite file
/// in a temp dir. For PostgreSQL it creates a fresh database named `t_<uuid>` on the server given by
/// `DATABASE_URL` and drops it when dropped (best effort).
pub struct TestDb {
    pub url: String,
    pub kind: DbKind,
    _dir: Option<tempfile_dir::TempDir>,
    admin_url: Option<String>,
    name: Option<String>,
}

mod tempfile_dir {
    /// Minimal temp dir (avoids a dependency on `tempfile` in the library).
    pub struct TempDir(pub std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The PostgreSQL URL tests must use, if any. CI sets `DATABASE_URL`; `PFS_REQUIRE_PG=1` (also set by
/// CI) turns a missing URL into a failure instead of a skip.
pub fn test_postgres_url() -> Option<String> {
    let url = std::env::var("TEST_DATABASE_URL")
        .ok()
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .filter(|u| u.starts_with("postgres"));
    if url.is_none() && std::env::var("REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
        panic!("REQUIRE_SERVICES=1 but DATABASE_URL is not a postgres:// URL");
    }
    url
}

/// The Redis URL tests must use, if any (`REDIS_URL`); panics when `REQUIRE_SERVICES=1` and unset.
pub fn test_redis_url() -> Option<String> {
    let url = std::env::var("TEST_REDIS_URL")
        .ok()
        .or_else(|| std::env::var("REDIS_URL").ok());
    if url.is_none() && std::env::var("REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
        panic!("REQUIRE_SERVICES=1 but REDIS_URL is not set");
    }
    url
}

impl TestDb {
    /// A fresh SQLite database file.
    pub fn sqlite() -> TestDb {
        let dir = std::env::temp_dir().join(format!("pv-test-{}", uuid::Uuid::new_v4().simple()));
        let _ = std::fs::create_dir_all(&dir);
        let url = sqlite_url_for(&dir.join("test.db"));
        TestDb {
            url,
            kind: DbKind::Sqlite,
            _dir: Some(tempfile_dir::TempDir(dir)),
            admin_url: None,
            name: None,
        }
    }

    /// A fresh PostgreSQL database, or `None` when no PostgreSQL URL is configured (and services are
    /// not required).
    pub async fn postgres() -> Option<TestDb> {
        let admin_url = test_postgres_url()?;
        install_drivers();
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let admin = AnyPoolOptions::new()
            .max_connections(1)
            .connect(&admin_url)
            .await
            .expect("connect to the PostgreSQL server given by DATABASE_URL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("create test database");
        admin.close().await;
        let url = replace_db_name(&admin_url, &name);
        Some(TestDb {
            url,
            kind: DbKind::Postgres,
            _dir: None,
            admin_url: Some(admin_url),
            name: Some(name),
        })
    }

    /// Both backends available here: SQLite always, PostgreSQL when configured.
    pub async fn all() -> Vec<TestDb> {
        let mut v = vec![TestDb::sqlite()];
        if let Some(pg) = TestDb::postgres().await {
            v.push(pg);
        }
        v
    }

    pub async fn connect(&self) -> Db {
        Db::connect(&self.url, &PoolSettings::default())
            .await
            .expect("connect to test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let (Some(admin), Some(name)) = (self.admin_url.take(), self.name.take()) {
            // Best effort, in a separate thread so Drop works inside and outside a runtime.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(rt) = rt {
                    rt.block_on(async move {
                        if let Ok(pool) = AnyPoolOptions::new()
                            .max_connections(1)
                            .connect(&admin)
                            .await
                        {
                            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            )))
                            .execute(&pool)
                            .await;
                        }
                    });
                }
            })
            .join();
        }
    }
}

/// Replace the database name (path) of a postgres URL, keeping credentials and query.
pub fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    // scheme://authority/db
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let rest = &base[scheme_end..];
    let authority = rest.split('/').next().unwrap_or(rest);
    let mut out = format!("{}{}/{}", &base[..scheme_end], authority, name);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

impl FromStr for DbKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sqlite" => Ok(DbKind::Sqlite),
            "postgres" | "postgresql" => Ok(DbKind::Postgres),
            other => anyhow::bail!("unknown database kind {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        for ok in ["panaversity", "_pv", "pv_2026"] {
            assert_eq!(PgSchema::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "Panaversity",
            "2pv",
            "pg_catalog",
            "pv; DROP TABLE x",
            "pv\"x",
            "pv-x",
            &"a".repeat(64),
        ] {
            assert!(PgSchema::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn replaces_database_name() {
        assert_eq!(
            replace_db_name("postgres://postgres@127.0.0.1:5432/test", "t_1"),
            "postgres://postgres@127.0.0.1:5432/t_1"
        );
        assert_eq!(
            replace_db_name("postgres://u:p@h/db?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(
            replace_db_name("postgres://h:5432", "x"),
            "postgres://h:5432/x"
        );
    }

    #[tokio::test]
    async fn sqlite_pool_connects_and_pings() {
        let t = TestDb::sqlite();
        let db = t.connect().await;
        db.ping().await.unwrap();
        assert_eq!(db.kind, DbKind::Sqlite);
    }

    #[tokio::test]
    async fn sqlite_write_transactions_queue_in_process() {
        let t = TestDb::sqlite();
        let db = t.connect().await;
        sqlx::query("CREATE TABLE c (n BIGINT NOT NULL)")
            .execute(&db.pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO c (n) VALUES (0)")
            .execute(&db.pool)
            .await
            .unwrap();
        let first = db.begin_write().await.unwrap();
        // While `first` is open a second writer (on a clone) waits for the in-process lock.
        let db2 = db.clone();
        let waiter = tokio::spawn(async move {
            let mut tx = db2.begin_write().await.unwrap();
            sqlx::query("UPDATE c SET n = n + 1")
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "second writer must wait for the first"
        );
        first.rollback().await.unwrap();
        waiter.await.unwrap();
        // A dropped transaction releases the lock too.
        {
            let mut tx = db.begin_write().await.unwrap();
            sqlx::query("UPDATE c SET n = 100")
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..10 {
                    let mut tx = db.begin_write().await.unwrap();
                    let n: i64 = sqlx::query_scalar("SELECT n FROM c")
                        .fetch_one(&mut *tx)
                        .await
                        .unwrap();
                    sqlx::query("UPDATE c SET n = $1")
                        .bind(n + 1)
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let n: i64 = sqlx::query_scalar("SELECT n FROM c")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(n, 161);
        assert!(db.lock_writes().await.is_some());
    }
}
