//! Group commit for the synchronous SQLite write connection.
//!
//! A durable SQLite commit (`synchronous = FULL` in WAL mode) ends with an fsync of the WAL: one
//! device flush per commit, which caps a serialized writer at the disk's flush rate. So writers
//! do not each take a turn: every job is queued, one writer at a time *leads* (takes the
//! process's write lock and runs all queued jobs in one `BEGIN IMMEDIATE … COMMIT`, each inside
//! its own savepoint, again and again while jobs keep arriving), and the others wait only for
//! their outcome, which is sent after the commit returned. So an acknowledgement still means "on
//! disk", and the writers that arrive while one commit is being flushed share the next.
//!
//! A job's own failure (an error, or a job that decides to write nothing) rolls back its
//! savepoint only; the others commit. A failed `COMMIT` (disk full, I/O error) rolls the whole
//! group back and every job that wrote is told the error: nothing is acknowledged that was not
//! committed, and the connection is never left inside a transaction.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::time::Duration;

use rusqlite::Connection;

use super::sqlite_read::SqliteWriter;

/// What a job did inside its savepoint.
#[derive(Debug)]
pub enum Grouped<T> {
    /// Keep the job's writes; `T` is delivered once the group commit is on disk.
    Keep(T),
    /// Undo the job's writes (it found nothing to do, e.g. a lost compare-and-swap); `T` is
    /// delivered whatever happens to the group.
    Discard(T),
}

/// Delivers a job's outcome once the group's commit has finished (`Ok` on success, the commit's
/// error otherwise).
type Finish = Box<dyn FnOnce(Result<(), &rusqlite::Error>) + Send>;

/// A queued job: runs its statements on the group's open transaction and returns how to report.
/// `Err` means the savepoint machinery itself failed: the group is rolled back.
type Run = Box<dyn FnOnce(&Connection) -> Result<Finish, (rusqlite::Error, Finish)> + Send>;

/// Reports a job that never ran (the group's transaction could not start, or broke before it).
type Fail = Box<dyn FnOnce(&rusqlite::Error) + Send>;

struct Job {
    run: Run,
    fail: Fail,
}

/// The queue of jobs waiting for the next group.
#[derive(Default)]
pub(crate) struct GroupQueue {
    jobs: Mutex<Vec<Job>>,
    /// Group transactions run so far (committed or not).
    groups: AtomicU64,
    /// Whether a writer is leading (running groups); see [`crate::db::Db::write_grouped_blocking`].
    leading: AtomicBool,
}

impl std::fmt::Debug for GroupQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupQueue").finish_non_exhaustive()
    }
}

/// Most jobs in one group (bounds the time the write lock is held).
const MAX_GROUP: usize = 256;

/// Most groups one leader commits before it steps down (its own reply waits meanwhile).
pub(crate) const MAX_ROUNDS: usize = 8;

/// How often a waiting writer checks whether it must lead: a safety net only, since a leader
/// that steps down looks at the queue once more.
pub(crate) const RETRY_LEAD: Duration = Duration::from_millis(20);

impl GroupQueue {
    /// Queue `f` for the next group; returns the receiver of its outcome.
    pub(crate) fn push<T, F>(&self, f: F) -> std::sync::mpsc::Receiver<anyhow::Result<T>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<Grouped<T>> + Send + 'static,
    {
        let (tx, rx) = sync_channel(1);
        let tx_fail = tx.clone();
        let job = Job {
            run: Box::new(move |conn: &Connection| run_job(conn, f, tx)),
            fail: Box::new(move |e: &rusqlite::Error| {
                let _ = tx_fail.send(Err(anyhow::Error::new(GroupError::of("group commit", e))));
            }),
        };
        match self.jobs.lock() {
            Ok(mut q) => q.push(job),
            Err(p) => p.into_inner().push(job),
        }
        rx
    }

    /// Become the leader unless another writer is.
    pub(crate) fn try_lead(&self) -> bool {
        self.leading
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Stop leading.
    pub(crate) fn end_lead(&self) {
        self.leading.store(false, Ordering::Release);
    }

    /// Whether any job is waiting.
    pub(crate) fn has_queued(&self) -> bool {
        match self.jobs.lock() {
            Ok(q) => !q.is_empty(),
            Err(p) => !p.into_inner().is_empty(),
        }
    }

    /// Group transactions run so far.
    pub(crate) fn groups(&self) -> u64 {
        self.groups.load(Ordering::Relaxed)
    }

    fn take(&self) -> Vec<Job> {
        let mut q = match self.jobs.lock() {
            Ok(q) => q,
            Err(p) => p.into_inner(),
        };
        let cut = q.len().min(MAX_GROUP);
        let rest = q.split_off(cut);
        std::mem::replace(&mut *q, rest)
    }

    /// Run every queued job (up to [`MAX_GROUP`]) as one transaction on `writer`. The caller holds
    /// the process's write lock. Returns how many jobs ran.
    pub(crate) fn run_queued(&self, writer: &SqliteWriter) -> usize {
        let jobs = self.take();
        let n = jobs.len();
        if n == 0 {
            return 0;
        }
        metrics::histogram!("platform_sqlite_group_commit_size").record(n as f64);
        self.groups.fetch_add(1, Ordering::Relaxed);
        let mut finishers: Vec<Finish> = Vec::with_capacity(n);
        let mut not_run: Vec<Fail> = Vec::new();
        let res = writer.run(|conn| {
            if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
                not_run.extend(jobs.into_iter().map(|j| j.fail));
                return Err(e);
            }
            let mut broken = None;
            for job in jobs {
                if broken.is_some() {
                    // The transaction is unusable: the remaining jobs are told without running.
                    not_run.push(job.fail);
                    continue;
                }
                match (job.run)(conn) {
                    Ok(fin) => finishers.push(fin),
                    Err((e, fin)) => {
                        finishers.push(fin);
                        broken = Some(e);
                    }
                }
            }
            if let Some(e) = broken {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
            match conn.execute_batch("COMMIT") {
                Ok(()) => Ok(()),
                Err(e) => {
                    // SQLite may keep the transaction open after a failed COMMIT (SQLITE_FULL,
                    // SQLITE_IOERR): end it here so the connection is clean for the next group.
                    if !conn.is_autocommit() {
                        let _ = conn.execute_batch("ROLLBACK");
                    }
                    Err(e)
                }
            }
        });
        for fin in finishers {
            fin(res.as_ref().map(|_| ()));
        }
        if let Err(e) = &res {
            for fail in not_run {
                fail(e);
            }
        }
        n
    }
}

/// Run one job in its own savepoint and build its reporter.
fn run_job<T, F>(
    conn: &Connection,
    f: F,
    tx: SyncSender<anyhow::Result<T>>,
) -> Result<Finish, (rusqlite::Error, Finish)>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> rusqlite::Result<Grouped<T>>,
{
    let fail = |ctx: &str, e: &rusqlite::Error, tx: SyncSender<anyhow::Result<T>>| -> Finish {
        let err = GroupError::of(ctx, e);
        Box::new(move |_| {
            let _ = tx.send(Err(anyhow::Error::new(err)));
        })
    };
    if let Err(e) = conn.execute_batch("SAVEPOINT grouped_write") {
        let report = fail("savepoint", &e, tx);
        return Err((e, report));
    }
    let out = f(conn);
    let undo = !matches!(out, Ok(Grouped::Keep(_)));
    let end = if undo {
        conn.execute_batch("ROLLBACK TO grouped_write; RELEASE grouped_write")
    } else {
        conn.execute_batch("RELEASE grouped_write")
    };
    match (out, end) {
        (Ok(Grouped::Keep(t)), Ok(())) => Ok(Box::new(move |commit| {
            let r = match commit {
                Ok(()) => Ok(t),
                Err(e) => Err(anyhow::Error::new(GroupError::of("commit", e))),
            };
            let _ = tx.send(r);
        })),
        (Ok(Grouped::Discard(t)), Ok(())) => Ok(Box::new(move |_| {
            let _ = tx.send(Ok(t));
        })),
        (Err(e), Ok(())) => Ok(fail("write", &e, tx)),
        (_, Err(e)) => {
            let report = fail("ending a savepoint", &e, tx);
            Err((e, report))
        }
    }
}

/// A grouped write's failure, keeping SQLite's error code for the caller's classification.
#[derive(Debug)]
pub struct GroupError {
    msg: String,
    code: Option<rusqlite::ErrorCode>,
}

impl GroupError {
    fn of(ctx: &str, e: &rusqlite::Error) -> GroupError {
        GroupError {
            msg: format!("{ctx}: {e}"),
            code: e.sqlite_error_code(),
        }
    }

    /// SQLite's primary error code, when there was one.
    pub fn code(&self) -> Option<rusqlite::ErrorCode> {
        self.code
    }
}

impl std::fmt::Display for GroupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for GroupError {}
