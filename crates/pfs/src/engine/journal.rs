//! The journal's SQL: every statement of the write path and the transaction helpers shared by
//! the commit strategies.

use super::*;

/// `(path, sha256)` of a book's base rows, sorted by path.
pub(super) async fn base_hash_rows<'c, E>(conn: E, book: &str) -> Result<Vec<(String, String)>>
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

/// A book's profile and the current hash of one key (no row: the book does not exist).
pub(super) const SQL_PROFILE_AND_HASH: &str = "SELECT profile, (SELECT sha256 FROM file_journal \
     WHERE book_id = $1 AND path = $2 AND user_id = $3) AS sha FROM books WHERE book_id = $1";

/// The current hash and version of one key.
pub(super) const SQL_HASH_AND_VERSION: &str = "SELECT sha256, version FROM file_journal \
     WHERE book_id = $1 AND path = $2 AND user_id = $3";

/// The pending ticket and the journal hash of one key, in one snapshot.
pub(super) const SQL_PENDING_AND_STATE: &str = "SELECT (SELECT ticket FROM pending_materializations \
     WHERE book_id = $1 AND path = $2 AND user_id = $3) AS ticket, \
     (SELECT sha256 FROM file_journal WHERE book_id = $1 AND path = $2 AND user_id = $3) AS sha";

/// Create a journal row (the version continues a deleted file's history); no row if the key exists.
pub(super) const SQL_CREATE_JOURNAL: &str = concat!(
    journal_create_select!(),
    "ON CONFLICT (book_id, path, user_id) DO NOTHING RETURNING version"
);

/// One write as every commit strategy takes it: who, what, the new content's hash and size, the
/// state it expects. Owned, so it can move to a blocking task or into a group commit.
#[derive(Clone)]
pub(super) struct WriteIntent {
    pub(super) agent_id: String,
    pub(super) op: &'static str,
    pub(super) book: String,
    pub(super) path: String,
    /// The journal's user column (`__base__` or the overlay owner).
    pub(super) user: String,
    /// The audit shard of (book, path, user).
    pub(super) shard: i64,
    pub(super) sha: Sha256,
    pub(super) size: i64,
    pub(super) now: i64,
    pub(super) backend: String,
    /// `None`: create; `Some(h)`: update from `h`.
    pub(super) expected: Option<Sha256>,
    pub(super) started: Instant,
    /// The client request the write is made for (recorded on its audit row).
    pub(super) request: Option<RequestKey>,
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
        concat!(
            "p AS (SELECT row_hash FROM audit_head WHERE shard = $10 AND EXISTS (SELECT 1 FROM v) FOR UPDATE), \
             h AS (UPDATE audit_head SET row_count = audit_head.row_count + 1, \
             row_hash = encode(sha256(convert_to('[' || nextval('audit_log_seq') || ',' || $11 || ',\"' || p.row_hash || '\"]', 'UTF8')), 'hex') \
             FROM p WHERE audit_head.shard = $10 \
             RETURNING currval('audit_log_seq') AS seq, audit_head.row_hash AS row_hash, p.row_hash AS prev_row_hash), \
             a AS (",
            audit_log_insert!(),
            "SELECT h.seq, $10, $12, $9, $13, $1, $2, $3, $8, $4, 'success', NULL, $14, h.row_hash, h.prev_row_hash, \
             $18, $19 FROM v LEFT JOIN h ON true), \
             g AS (",
            generation_insert!(),
            "SELECT $1, $10, 1 FROM h WHERE $15 ",
            generation_bump_on_conflict!(),
            "), b AS (INSERT INTO unsynced_blobs (sha256, data) SELECT $4, $16 FROM h WHERE $16 IS NOT NULL \
             ON CONFLICT (sha256) DO NOTHING), \
             q AS (",
            pending_insert!(),
            "SELECT $1, $2, $3, h.seq FROM h ",
            pending_take_ticket_on_conflict!(),
            ") SELECT v.version, h.seq FROM v JOIN h ON true"
        )
    };
}

/// A create as one PostgreSQL statement (see [`pg_write_once_tail`]; `$8` is NULL).
pub(super) const SQL_CREATE_ONCE_PG: &str = concat!(
    "WITH j AS (",
    journal_create_select!(),
    "HAVING $17::text IS NULL OR EXISTS (SELECT 1 FROM books WHERE book_id = $1 AND profile = $17) \
     ON CONFLICT (book_id, path, user_id) DO NOTHING RETURNING version), v AS (",
    file_versions_insert!(),
    "SELECT $1, $2, $3, version, $4, $5, $6, $9 FROM j RETURNING version), ",
    pg_write_once_tail!()
);

/// An update (compare-and-swap on `$8`) as one PostgreSQL statement (see [`pg_write_once_tail`]).
pub(super) const SQL_UPDATE_ONCE_PG: &str = concat!(
    "WITH j AS (",
    journal_cas_update!(),
    "AND ($17::text IS NULL OR EXISTS (SELECT 1 FROM books WHERE book_id = $1 AND profile = $17)) \
     RETURNING version), v AS (",
    file_versions_insert!(),
    "SELECT $1, $2, $3, version, $4, $5, $6, $9 FROM j RETURNING version), ",
    pg_write_once_tail!()
);

pub(super) const SQL_CREATE_JOURNAL_PG: &str = concat!(
    "WITH j AS (",
    journal_create_select!(),
    "ON CONFLICT (book_id, path, user_id) DO NOTHING RETURNING version), v AS (",
    file_versions_insert!(),
    "SELECT $1, $2, $3, version, $4, $5, $6, $8 FROM j RETURNING version), \
     h AS (UPDATE audit_head SET row_count = row_count + 1 WHERE shard = $9 AND EXISTS (SELECT 1 FROM v) \
     RETURNING row_hash, nextval('audit_log_seq') AS seq) \
     SELECT v.version, h.row_hash, h.seq FROM v LEFT JOIN h ON true"
);

/// [`SQL_UPDATE_JOURNAL_CAS`] plus its version row (agent `$9`) and, when it matched, the audit
/// head of shard `$10` locked and advanced: one PostgreSQL statement returning `(version,
/// prev_row_hash, seq)`.
pub(super) const SQL_UPDATE_JOURNAL_CAS_PG: &str = concat!(
    "WITH j AS (",
    journal_cas_update!(),
    "RETURNING version), v AS (",
    file_versions_insert!(),
    "SELECT $1, $2, $3, version, $4, $5, $6, $9 FROM j RETURNING version), \
     h AS (UPDATE audit_head SET row_count = row_count + 1 WHERE shard = $10 AND EXISTS (SELECT 1 FROM v) \
     RETURNING row_hash, nextval('audit_log_seq') AS seq) \
     SELECT v.version, h.row_hash, h.seq FROM v LEFT JOIN h ON true"
);

/// The compare-and-swap of an update: changes the row only if it still holds the expected hash.
pub(super) const SQL_UPDATE_JOURNAL_CAS: &str = concat!(journal_cas_update!(), "RETURNING version");

pub(super) const SQL_INSERT_VERSION: &str = concat!(
    file_versions_insert!(),
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
);

pub(super) const SQL_BUMP_GENERATION: &str = concat!(
    generation_insert!(),
    "VALUES ($1, $2, 1) ",
    generation_bump_on_conflict!()
);

/// Keep a blob written without fsync durable in the database until the next filesystem sync.
pub(super) const SQL_KEEP_UNSYNCED_BLOB: &str =
    "INSERT INTO unsynced_blobs (sha256, data) VALUES ($1, $2) ON CONFLICT (sha256) DO NOTHING";

/// Mark a key pending without a commit of its own (ticket 0; see [`Engine::keep_pending`]).
pub(super) const SQL_KEEP_PENDING: &str = concat!(
    pending_insert!(),
    "VALUES ($1, $2, $3, $4) ON CONFLICT (book_id, path, user_id) DO NOTHING"
);

pub(super) const SQL_ENQUEUE_PENDING: &str = concat!(
    pending_insert!(),
    "VALUES ($1, $2, $3, $4) ",
    pending_take_ticket_on_conflict!()
);

/// Bind `$1…$7` of a journal create or compare-and-swap (`journal_create_select!` /
/// `journal_cas_update!`): `[book, path, user, sha256, backend]` as `$1–$4, $7`, size `$5`, time `$6`.
pub(super) fn bind_journal_values<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    [book, path, user, sha, backend]: [&'q str; 5],
    size: i64,
    now: i64,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    q.bind(book)
        .bind(path)
        .bind(user)
        .bind(sha)
        .bind(size)
        .bind(now)
        .bind(backend)
}

/// What [`sync_write_tx`] committed: `(version, ticket)`, `None` when the compare-and-swap lost.
pub(super) type SyncTxResult = Result<Option<(i64, i64)>>;

/// Who writes what, as the commit steps of a write pass it along.
#[derive(Clone, Copy)]
pub(super) struct WriteReq<'a> {
    pub(super) actor: &'a Actor,
    pub(super) op: &'static str,
    pub(super) book: &'a BookId,
    pub(super) path: &'a BookPath,
    pub(super) ns: &'a Namespace,
    pub(super) started: Instant,
}

/// What [`Engine::write_local`]'s blocking part did.
pub(super) enum LocalWrite {
    Done(WriteOutcome),
    /// Storing the blob failed (nothing committed; the failure is audited).
    BlobFailed(PfsError),
    /// The compare-and-swap found another state (nothing committed).
    Lost,
    Failed(PfsError),
}

/// The outcome of a committed synchronous write.
pub(super) fn sync_outcome(
    sha: Sha256,
    size: u64,
    prev_hash: Option<Sha256>,
    version: i64,
) -> WriteOutcome {
    WriteOutcome {
        mode: if prev_hash.is_none() {
            WriteMode::Created
        } else {
            WriteMode::Updated
        },
        sha256: sha.into_string(),
        size,
        prev_hash: prev_hash.map(Sha256::into_string),
        version,
    }
}

/// [`Engine::commit_write`]'s statements as one job of a group commit on the synchronous SQLite
/// write connection ([`platform::db::Db::write_grouped_blocking`]): compare-and-swap, version row,
/// audit row, generation, pending row. `Discard(Ok(None))` when the compare-and-swap finds
/// another state, `Discard(Err(_))` for a simulated commit failure (nothing is written either way).
pub(super) fn sync_write_tx(
    tx: &rusqlite::Connection,
    w: &WriteIntent,
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
            request: w.request.as_ref(),
        },
    )?;
    if w.user == BASE_USER {
        sync_stmt(tx, SQL_BUMP_GENERATION, &[&w.book, &w.shard])?.raw_execute()?;
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

pub(super) async fn bump_generation(
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
pub(super) async fn read_generation<'c, E>(conn: E, book: &str) -> Result<Vec<(i64, i64)>>
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

pub(super) async fn enqueue_pending(
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
