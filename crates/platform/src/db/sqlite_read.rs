//! Synchronous read-only SQLite connections for hot point lookups.
//!
//! sqlx runs every SQLite statement on a per-connection worker thread, so even a 5 µs indexed
//! lookup costs two thread hand-offs (the request's task → the worker → back). Under load on a
//! small machine those hand-offs, not SQLite, dominate a read (measured: ~50 µs of server CPU per
//! `read_content`, more than half of it). The lookups that every request makes (a file's journal
//! row, a book's profile) therefore run here instead: a prepared statement on a read-only
//! connection of the same database file, executed inline.
//!
//! Why inline is safe: in WAL mode a reader never waits for the writer (it reads the last
//! committed snapshot), so a point lookup on an index takes microseconds, like taking a mutex.
//! The connections use `busy_timeout = 0`: in the rare cases where SQLite would make a reader
//! wait (WAL recovery after a crash, a `RESTART`/`TRUNCATE` checkpoint run by another process),
//! the call returns [`SyncRead::Busy`] at once and the caller falls back to the async pool.
//! Each statement is its own read transaction, so a read sees every write committed before it
//! started, by this process or any other: read-after-write holds exactly as with the pool.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags};

/// Idle connections kept for reuse (more may be open while many requests read at once).
const MAX_IDLE: usize = 8;

/// Outcome of [`SqliteReader::read`].
#[derive(Debug)]
pub enum SyncRead<T> {
    /// The closure ran; its result.
    Done(T),
    /// SQLite would have made the reader wait, or the file could not be opened: use the async
    /// pool for this call.
    Busy,
}

/// A small pool of query-only connections to one SQLite database file.
pub struct SqliteReader {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for SqliteReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteReader")
            .field("path", &self.path)
            .finish()
    }
}

/// The database file a sqlx SQLite URL names, or `None` when it is not a plain file (in-memory
/// databases, `vfs=`/`immutable=` options, percent-encoded names: those keep using the pool).
pub fn sqlite_file_of(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, q),
        None => (rest, ""),
    };
    if path.is_empty() || path == ":memory:" || path.contains('%') {
        return None;
    }
    let plain_options = query.split('&').filter(|kv| !kv.is_empty()).all(|kv| {
        matches!(
            kv,
            "mode=rwc" | "mode=rw" | "mode=ro" | "cache=private" | "cache=shared"
        )
    });
    if !plain_options {
        return None;
    }
    Some(PathBuf::from(path))
}

impl SqliteReader {
    /// A reader over the database file at `path` (opened lazily, read-only).
    pub fn new(path: &Path) -> SqliteReader {
        SqliteReader {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
        }
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        // Read-write flags (a WAL reader maps the shared-memory index read-write), then
        // `query_only`, so these connections cannot change anything.
        let conn = open_existing(&self.path)?;
        conn.pragma_update(None, "query_only", true)?;
        // Never sleep in the busy handler: the caller falls back to the async pool instead.
        conn.busy_timeout(std::time::Duration::ZERO)?;
        Ok(conn)
    }

    fn take(&self) -> rusqlite::Result<Connection> {
        let reused = self.idle.lock().ok().and_then(|mut v| v.pop());
        match reused {
            Some(c) => Ok(c),
            None => self.open(),
        }
    }

    fn give_back(&self, conn: Connection) {
        if let Ok(mut v) = self.idle.lock()
            && v.len() < MAX_IDLE
        {
            v.push(conn);
        }
    }

    /// Run `f` on a read-only connection, inline. Errors other than "busy"/"locked" are returned
    /// as they are (a closed or corrupt database is not hidden by a silent fallback).
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<SyncRead<T>> {
        let conn = match self.take() {
            Ok(c) => c,
            Err(e) if is_busy(&e) => return Ok(SyncRead::Busy),
            // The file may not be readable by this path (e.g. replaced); the pool still works.
            Err(rusqlite::Error::SqliteFailure(_, _)) => return Ok(SyncRead::Busy),
            Err(e) => return Err(e),
        };
        match f(&conn) {
            Ok(v) => {
                self.give_back(conn);
                Ok(SyncRead::Done(v))
            }
            Err(e) if is_busy(&e) => Ok(SyncRead::Busy),
            Err(e) => Err(e),
        }
    }
}

/// The process's one synchronous SQLite write connection (see [`crate::db::Db::write_sync`]).
///
/// A write transaction through sqlx costs one thread hand-off per statement (about ten for a
/// journal write with its audit row), all while holding the process's write lock, so on a busy
/// machine the lock is held mostly waiting for threads to be scheduled. Here the whole
/// transaction runs in one `spawn_blocking` call: one hand-off, microseconds of SQLite work.
pub struct SqliteWriter {
    path: PathBuf,
    busy_timeout: std::time::Duration,
    conn: Mutex<Option<Connection>>,
}

impl std::fmt::Debug for SqliteWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteWriter")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteWriter {
    /// A writer for the database file at `path` (opened on first use).
    pub fn new(path: &Path, busy_timeout: std::time::Duration) -> SqliteWriter {
        SqliteWriter {
            path: path.to_path_buf(),
            busy_timeout,
            conn: Mutex::new(None),
        }
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = open_existing(&self.path)?;
        // The same settings as the pool's connections (synchronous is per connection).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.busy_timeout(self.busy_timeout)?;
        Ok(conn)
    }

    /// Run `f` on the write connection, on the calling thread (call it from a blocking task,
    /// holding the process's write lock). A connection whose transaction `f` left open is rolled
    /// back; one that failed is dropped and reopened next time.
    pub fn run<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        // A panic in an earlier `f` poisons the mutex: its connection (maybe mid-transaction) is
        // dropped, which rolls it back, and a fresh one is opened.
        let (mut slot, poisoned) = match self.conn.lock() {
            Ok(g) => (g, false),
            Err(p) => (p.into_inner(), true),
        };
        if poisoned {
            slot.take();
        }
        let mut conn = match slot.take() {
            Some(c) => c,
            None => self.open()?,
        };
        let out = f(&mut conn);
        if !conn.is_autocommit() {
            // `f` returned without finishing its transaction (an error midway): undo it.
            if conn.execute_batch("ROLLBACK").is_err() {
                return out;
            }
        }
        if out.is_ok() || !matches!(out, Err(rusqlite::Error::SqliteFailure(_, _))) {
            *slot = Some(conn);
        }
        out
    }
}

/// Open an existing database file (never create one: the pool owns creation and migrations).
fn open_existing(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_file_urls_only() {
        assert_eq!(
            sqlite_file_of("sqlite:///tmp/x.db?mode=rwc"),
            Some(PathBuf::from("/tmp/x.db"))
        );
        assert_eq!(
            sqlite_file_of("sqlite://data/p.db"),
            Some(PathBuf::from("data/p.db"))
        );
        assert_eq!(
            sqlite_file_of("sqlite:data/p.db"),
            Some(PathBuf::from("data/p.db"))
        );
        assert_eq!(sqlite_file_of("sqlite::memory:"), None);
        assert_eq!(sqlite_file_of("sqlite://x.db?mode=memory"), None);
        assert_eq!(sqlite_file_of("sqlite://x.db?vfs=unix-none"), None);
        assert_eq!(sqlite_file_of("sqlite://a%20b.db"), None);
        assert_eq!(sqlite_file_of("postgres://x/y"), None);
    }

    #[test]
    fn writer_recovers_after_a_panic_mid_transaction() {
        let dir = std::env::temp_dir().join(format!("pv-sqlite-writer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("w.db");
        let _ = std::fs::remove_file(&path);
        Connection::open(&path)
            .and_then(|c| c.execute_batch("CREATE TABLE t (v INTEGER)"))
            .expect("schema");
        let w = std::sync::Arc::new(SqliteWriter::new(&path, std::time::Duration::from_secs(1)));
        let w2 = w.clone();
        let panicked = std::thread::spawn(move || {
            w2.run(|c| -> rusqlite::Result<()> {
                c.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (1);")?;
                panic!("simulated bug inside a write transaction");
            })
        })
        .join();
        assert!(panicked.is_err());
        // The half-done transaction is gone and the writer works again.
        let n: i64 = w
            .run(|c| {
                c.execute("INSERT INTO t VALUES (2)", [])?;
                c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            })
            .expect("writer usable after the panic");
        assert_eq!(n, 1);
        // A transaction left open by an error is rolled back, not leaked to the next caller.
        let err = w.run(|c| -> rusqlite::Result<()> {
            c.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (3);")?;
            Err(rusqlite::Error::InvalidQuery)
        });
        assert!(err.is_err());
        let n: i64 = w
            .run(|c| c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)))
            .expect("count");
        assert_eq!(n, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reads_committed_rows_and_reuses_connections() {
        let dir = std::env::temp_dir().join(format!("pv-sqlite-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("t.db");
        let _ = std::fs::remove_file(&path);
        let w = Connection::open(&path).expect("open writer");
        w.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER); \
             INSERT INTO t VALUES ('a', 1);",
        )
        .expect("schema");
        let r = SqliteReader::new(&path);
        let get = |k: &str| {
            r.read(|c| {
                let mut s = c.prepare_cached("SELECT v FROM t WHERE k = ?1")?;
                let mut rows = s.query([k])?;
                match rows.next()? {
                    Some(row) => row.get::<_, i64>(0).map(Some),
                    None => Ok(None),
                }
            })
        };
        assert!(matches!(get("a"), Ok(SyncRead::Done(Some(1)))));
        w.execute("UPDATE t SET v = 2 WHERE k = 'a'", [])
            .expect("update");
        // The next read sees the commit (a new snapshot per statement).
        assert!(matches!(get("a"), Ok(SyncRead::Done(Some(2)))));
        assert!(matches!(get("b"), Ok(SyncRead::Done(None))));
        assert_eq!(r.idle.lock().map(|v| v.len()).unwrap_or(0), 1);
        // Writes are refused on these connections.
        let denied = r.read(|c| c.execute("INSERT INTO t VALUES ('z', 9)", []));
        assert!(denied.is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
