//! The append-only audit log and its two chains.
//!
//! Every row is INSERT-only (a trigger rejects UPDATE/DELETE on both backends) and carries:
//!
//! * **the per-file chain** (`prev_hash` → `new_hash`, spec R6): for each (book, path, user),
//!   consecutive rows of the file-mutation operations ([`CHAIN_OPERATIONS`]) satisfy
//!   `row[n].new_hash == row[n+1].prev_hash`. `prev_hash` is the journal's sha256 before the
//!   operation (NULL when the file did not exist) and `new_hash` the sha256 after it (NULL when the
//!   file does not exist afterwards). **Failed operations** (`status` `conflict` or `error`) changed
//!   nothing, so they record `prev_hash == new_hash ==` the current sha256 (NULL when absent); the
//!   same equation therefore holds for every row, successful or not, and verification needs no
//!   special case. Rows are written inside the transaction of the journal change, after taking the
//!   file's `audit_head` shard lock, so `seq` order equals commit order for every file and the
//!   chain holds under concurrency.
//! * **the row chains** (tamper evidence): the log is split into [`AUDIT_SHARDS`] chains by a
//!   hash of (book, path, user) ([`shard_of`]), so all rows of one file are in one chain. Each row
//!   has `row_hash = sha256(json([seq, shard, ts, agent_id, operation, book_id, path, user_id,
//!   prev_hash, new_hash, status, error_message, execution_time_ms, prev_row_hash]))` and
//!   `prev_row_hash` = the previous row's `row_hash` in its shard ([`GENESIS_HASH`] for the
//!   first). `audit_head` holds each shard's row count and last row hash, so editing, deleting or
//!   truncating rows is detected. Appending takes the shard's head row lock (PostgreSQL
//!   `UPDATE … RETURNING`; SQLite's write transaction is exclusive anyway) until commit, which
//!   serialises each chain in commit order while writers of different shards commit in parallel
//!   (one global chain would cap PostgreSQL at one commit fsync at a time). `seq` is global and
//!   unique (a PostgreSQL sequence drawn after the shard lock, so it increases along each chain;
//!   `MAX(seq) + 1` on SQLite), for ordering and pagination.
//!
//! Other events (e.g. reads, archives) can be recorded with [`AuditLog::record`]; they carry no
//! hashes and are not part of any per-file chain.

use std::collections::HashMap;

mod legacy;
mod log;

pub use legacy::{AUDIT_ITEM, LegacyAuditRow, append_legacy_rows, import_progress};
pub use log::{AuditLog, AuditPage, AuditQuery, ChainBreak, ChainReport, glob_to_like};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};

use crate::db::{db_err, from_micros, like_escape, now_micros, to_micros};
use crate::error::{PfsError, Result};
use crate::ids::{Actor, RequestKey};
use platform::db::Db;

/// Number of independent row chains (see the module docs). Changing it needs a migration.
pub const AUDIT_SHARDS: i64 = 64;

/// The row chain of a (book, path, user) key.
pub fn shard_of(book_id: &str, path: &str, user_id: &str) -> i64 {
    let mut h = Sha256::new();
    for part in [book_id, path, user_id] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    (u64::from_be_bytes(first) % AUDIT_SHARDS as u64) as i64
}

/// `prev_row_hash` of the first row of each chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Operation names of file mutations (the rows that form per-file chains).
pub const OP_WRITE_CONTENT: &str = "write_content";
pub const OP_DELETE_CONTENT: &str = "delete_content";
pub const OP_UPLOAD_ASSET: &str = "upload_asset";
pub const OP_DELETE_ASSET: &str = "delete_asset";
/// A rename: one row at the old path (`prev_hash` → NULL) and one at the new (NULL → `new_hash`).
pub const OP_MOVE_CONTENT: &str = "move_content";
/// A file adopted from elsewhere (`panaversity fs import` / `fs adopt-storage`): `prev_hash` is the
/// version it replaced here (NULL for a new file), `new_hash` the imported bytes.
pub const OP_IMPORT: &str = "import";
/// Prefix of the operation of rows copied from the predecessor's audit log (`legacy:write_content`
/// …): kept with their agents and timestamps in the row chains, outside the per-file chains
/// (the predecessor's own hash links were not reliable, see the import docs).
pub const LEGACY_OP_PREFIX: &str = "legacy:";
/// All per-file chain operations.
pub const CHAIN_OPERATIONS: [&str; 6] = [
    OP_WRITE_CONTENT,
    OP_DELETE_CONTENT,
    OP_UPLOAD_ASSET,
    OP_DELETE_ASSET,
    OP_MOVE_CONTENT,
    OP_IMPORT,
];

/// Audit statuses.
pub const STATUS_SUCCESS: &str = "success";
pub const STATUS_CONFLICT: &str = "conflict";
pub const STATUS_ERROR: &str = "error";

/// One audit row to append (the seq, timestamp and row hashes are assigned on insert).
#[derive(Debug, Clone)]
pub(crate) struct NewAuditRow<'a> {
    pub agent_id: &'a str,
    pub operation: &'a str,
    pub book_id: &'a str,
    pub path: &'a str,
    pub user_id: &'a str,
    pub prev_hash: Option<&'a str>,
    pub new_hash: Option<&'a str>,
    pub status: &'a str,
    pub error_message: Option<&'a str>,
    pub execution_time_ms: Option<i64>,
    /// The client request the change was made for (idempotent retries), if any.
    pub request: Option<&'a RequestKey>,
}

impl NewAuditRow<'_> {
    /// The row hash of this row stored as (`seq`, `shard`, `ts`) after `prev_row_hash`.
    fn hash_at(&self, seq: i64, shard: i64, ts_micros: i64, prev_row_hash: &str) -> String {
        compute_row_hash(
            seq,
            shard,
            ts_micros,
            self.agent_id,
            self.operation,
            self.book_id,
            self.path,
            self.user_id,
            self.prev_hash,
            self.new_hash,
            self.status,
            self.error_message,
            self.execution_time_ms,
            self.request.map(|r| (r.id(), r.call_hash())),
            prev_row_hash,
        )
    }
}

/// The row-hash JSON of a row with everything but its first element (`seq`) and last
/// (`prev_row_hash`), as `"shard,ts,…,execution_time_ms"`: PostgreSQL completes it as
/// `'[' || seq || ',' || middle || ',"' || prev_row_hash || '"]'` and hashes it inside the
/// write statement, where the seq and the previous row hash are drawn under the head lock. The
/// result is byte-identical to [`compute_row_hash`]'s input (compact JSON; a bigint prints the
/// same in both; a row hash is lowercase hex, which needs no escaping).
pub(crate) fn row_hash_middle(row: &NewAuditRow<'_>, shard: i64, ts_micros: i64) -> String {
    let mut fields = vec![
        serde_json::json!(shard),
        serde_json::json!(ts_micros),
        serde_json::json!(row.agent_id),
        serde_json::json!(row.operation),
        serde_json::json!(row.book_id),
        serde_json::json!(row.path),
        serde_json::json!(row.user_id),
        serde_json::json!(row.prev_hash),
        serde_json::json!(row.new_hash),
        serde_json::json!(row.status),
        serde_json::json!(row.error_message),
        serde_json::json!(row.execution_time_ms),
    ];
    if let Some(r) = row.request {
        fields.push(serde_json::json!(r.id()));
        fields.push(serde_json::json!(r.call_hash()));
    }
    let v = serde_json::Value::Array(fields).to_string();
    // Compact JSON of an array: "[" + elements + "]".
    v[1..v.len() - 1].to_string()
}

/// Bind `$1…$17` of [`SQL_INSERT_ROW`] (the same order starts [`SQL_APPEND_AND_ENQUEUE_PG`]).
fn bind_row<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    row: &NewAuditRow<'q>,
    seq: i64,
    shard: i64,
    ts: i64,
    row_hash: &'q str,
    prev_row_hash: &'q str,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    q.bind(seq)
        .bind(shard)
        .bind(ts)
        .bind(row.agent_id)
        .bind(row.operation)
        .bind(row.book_id)
        .bind(row.path)
        .bind(row.user_id)
        .bind(row.prev_hash)
        .bind(row.new_hash)
        .bind(row.status)
        .bind(row.error_message)
        .bind(row.execution_time_ms)
        .bind(row_hash)
        .bind(prev_row_hash)
        .bind(row.request.map(RequestKey::id))
        .bind(row.request.map(RequestKey::call_hash))
}

/// A stored audit row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRow {
    pub seq: i64,
    /// The row chain this row belongs to.
    pub shard: i64,
    pub ts: DateTime<Utc>,
    pub agent_id: String,
    pub operation: String,
    pub book_id: String,
    pub path: String,
    pub user_id: String,
    pub prev_hash: Option<String>,
    pub new_hash: Option<String>,
    pub status: String,
    pub error_message: Option<String>,
    pub execution_time_ms: Option<i64>,
    pub row_hash: String,
    pub prev_row_hash: String,
    /// The client request id of the call that made this change, when it named one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Hash of that call's tool and arguments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_hash: Option<String>,
}

/// The row hash over a row's fields and its predecessor's hash.
#[allow(clippy::too_many_arguments)]
fn compute_row_hash(
    seq: i64,
    shard: i64,
    ts_micros: i64,
    agent_id: &str,
    operation: &str,
    book_id: &str,
    path: &str,
    user_id: &str,
    prev_hash: Option<&str>,
    new_hash: Option<&str>,
    status: &str,
    error_message: Option<&str>,
    execution_time_ms: Option<i64>,
    request: Option<(&str, &str)>,
    prev_row_hash: &str,
) -> String {
    let mut fields = vec![
        serde_json::json!(seq),
        serde_json::json!(shard),
        serde_json::json!(ts_micros),
        serde_json::json!(agent_id),
        serde_json::json!(operation),
        serde_json::json!(book_id),
        serde_json::json!(path),
        serde_json::json!(user_id),
        serde_json::json!(prev_hash),
        serde_json::json!(new_hash),
        serde_json::json!(status),
        serde_json::json!(error_message),
        serde_json::json!(execution_time_ms),
    ];
    // Rows made for a named client request also cover it (older rows hash as before).
    if let Some((id, call_hash)) = request {
        fields.push(serde_json::json!(id));
        fields.push(serde_json::json!(call_hash));
    }
    fields.push(serde_json::json!(prev_row_hash));
    hex::encode(Sha256::digest(
        serde_json::Value::Array(fields).to_string().as_bytes(),
    ))
}

impl AuditRow {
    fn expected_row_hash(&self) -> String {
        compute_row_hash(
            self.seq,
            self.shard,
            to_micros(self.ts),
            &self.agent_id,
            &self.operation,
            &self.book_id,
            &self.path,
            &self.user_id,
            self.prev_hash.as_deref(),
            self.new_hash.as_deref(),
            &self.status,
            self.error_message.as_deref(),
            self.execution_time_ms,
            self.request_id.as_deref().zip(self.request_hash.as_deref()),
            &self.prev_row_hash,
        )
    }
}

/// Take a shard's lock (its head row) and read the hash of its last row.
pub(crate) const SQL_LOCK_SHARD: &str =
    "UPDATE audit_head SET row_count = row_count + 1 WHERE shard = $1 RETURNING row_hash";
/// The next seq on SQLite (serialized by the write lock; PostgreSQL uses a sequence).
pub(crate) const SQL_NEXT_SEQ_SQLITE: &str = "SELECT COALESCE(MAX(seq), 0) + 1 FROM audit_log";
pub(crate) const SQL_INSERT_ROW: &str = concat!(
    audit_log_insert!(),
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
);
pub(crate) const SQL_SET_HEAD: &str = "UPDATE audit_head SET row_hash = $1 WHERE shard = $2";

/// PostgreSQL: the audit row, the head update, the book generation bump (when `$18`), the copy
/// of a blob written without fsync (when `$19` is not NULL; its sha256 is the row's new hash)
/// and the pending materialization (ticket = seq) in one statement (data-modifying CTEs always
/// run to completion, in this transaction).
const SQL_APPEND_AND_ENQUEUE_PG: &str = concat!(
    "WITH a AS (",
    audit_log_insert!(),
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)), \
     h AS (UPDATE audit_head SET row_hash = $14 WHERE shard = $2), \
     g AS (",
    generation_insert!(),
    "SELECT $6, $2, 1 WHERE $18 ",
    generation_bump_on_conflict!(),
    "), b AS (INSERT INTO unsynced_blobs (sha256, data) SELECT $10, $19 WHERE $19 IS NOT NULL \
     ON CONFLICT (sha256) DO NOTHING) ",
    pending_insert!(),
    "VALUES ($6, $7, $8, $1) ",
    pending_take_ticket_on_conflict!()
);

/// The audit head a PostgreSQL write statement locked and advanced in its transaction: the
/// journal compare-and-swap carries `UPDATE audit_head SET row_count = row_count + 1 WHERE shard
/// = … RETURNING row_hash, nextval('audit_log_seq')`, so the head is locked in the same round
/// trip as the journal change.
pub(crate) struct LockedHead<'a> {
    pub shard: i64,
    pub seq: i64,
    pub prev_row_hash: &'a str,
}

/// PostgreSQL: [`append_in_tx`] (with the head already locked, see [`LockedHead`]) plus the
/// commit's bookkeeping (book generation bump when `bump_generation`, pending materialization
/// with ticket = seq, the `unsynced_blob` copy of a blob written without fsync) in one round
/// trip. Returns the seq (the ticket).
pub(crate) async fn append_and_enqueue_pg(
    conn: &mut AnyConnection,
    row: &NewAuditRow<'_>,
    head: LockedHead<'_>,
    bump_generation: bool,
    unsynced_blob: Option<&[u8]>,
) -> Result<i64> {
    let ts = now_micros();
    let row_hash = row.hash_at(head.seq, head.shard, ts, head.prev_row_hash);
    bind_row(
        sqlx::query(SQL_APPEND_AND_ENQUEUE_PG),
        row,
        head.seq,
        head.shard,
        ts,
        &row_hash,
        head.prev_row_hash,
    )
    .bind(bump_generation)
    .bind(unsynced_blob)
    .execute(&mut *conn)
    .await
    .map_err(db_err("insert audit row and enqueue materialization"))?;
    Ok(head.seq)
}

/// [`append_in_tx`] on the synchronous SQLite write connection (inside its transaction).
pub(crate) fn append_sync(
    conn: &rusqlite::Connection,
    row: &NewAuditRow<'_>,
) -> rusqlite::Result<i64> {
    use crate::db::sync_stmt;
    let shard = shard_of(row.book_id, row.path, row.user_id);
    let prev_row_hash: String = {
        let mut st = sync_stmt(conn, SQL_LOCK_SHARD, &[&shard])?;
        let mut rows = st.raw_query();
        match rows.next()? {
            Some(r) => r.get(0)?,
            None => return Err(rusqlite::Error::QueryReturnedNoRows),
        }
    };
    let seq: i64 = conn
        .prepare_cached(SQL_NEXT_SEQ_SQLITE)?
        .query_row([], |r| r.get(0))?;
    let ts = now_micros();
    let row_hash = row.hash_at(seq, shard, ts, &prev_row_hash);
    sync_stmt(
        conn,
        SQL_INSERT_ROW,
        &[
            &seq,
            &shard,
            &ts,
            &row.agent_id,
            &row.operation,
            &row.book_id,
            &row.path,
            &row.user_id,
            &row.prev_hash,
            &row.new_hash,
            &row.status,
            &row.error_message,
            &row.execution_time_ms,
            &row_hash,
            &prev_row_hash,
            &row.request.map(RequestKey::id),
            &row.request.map(RequestKey::call_hash),
        ],
    )?
    .raw_execute()?;
    sync_stmt(conn, SQL_SET_HEAD, &[&row_hash, &shard])?.raw_execute()?;
    Ok(seq)
}

/// Take the shard lock of `row`'s key: `(shard, prev_row_hash)`.
async fn lock_shard(conn: &mut AnyConnection, row: &NewAuditRow<'_>) -> Result<(i64, String)> {
    let shard = shard_of(row.book_id, row.path, row.user_id);
    let head = sqlx::query(SQL_LOCK_SHARD)
        .bind(shard)
        .fetch_one(&mut *conn)
        .await
        .map_err(db_err("advance audit head"))?;
    let prev_row_hash: String = head
        .try_get("row_hash")
        .map_err(db_err("audit head hash"))?;
    Ok((shard, prev_row_hash))
}

/// Append one row inside the caller's transaction (after the journal change). Takes the row's
/// shard lock first, so rows of one file are appended in commit order. Returns the seq.
pub(crate) async fn append_in_tx(conn: &mut AnyConnection, row: &NewAuditRow<'_>) -> Result<i64> {
    let (shard, prev_row_hash) = lock_shard(conn, row).await?;
    append_at(conn, row, shard, &prev_row_hash, now_micros()).await
}

/// For transactions that only record a failed (no-change) operation: on PostgreSQL commit
/// without waiting for the WAL flush (`synchronous_commit = off` for this transaction only), so
/// the audit head lock is released at once instead of after an fsync. WAL order is preserved, so
/// a crash can lose only a tail of such failure rows (with their head update), never break a
/// chain; every journal change still commits synchronously.
pub(crate) async fn relax_failure_durability(
    conn: &mut AnyConnection,
    kind: platform::db::DbKind,
) -> Result<()> {
    if kind == platform::db::DbKind::Postgres {
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *conn)
            .await
            .map_err(db_err("relax failure-row durability"))?;
    }
    Ok(())
}

/// Read the current journal sha of a key *after* taking the head lock, then append a row for a
/// failed operation with `prev_hash == new_hash ==` that sha (see the module docs).
pub(crate) async fn append_failure_in_tx(
    conn: &mut AnyConnection,
    mut row: NewAuditRow<'_>,
) -> Result<i64> {
    let (shard, prev_row_hash) = lock_shard(conn, &row).await?;
    let current: Option<String> = sqlx::query_scalar(
        "SELECT sha256 FROM file_journal WHERE book_id = $1 AND path = $2 AND user_id = $3",
    )
    .bind(row.book_id)
    .bind(row.path)
    .bind(row.user_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err("read current hash for audit"))?;
    row.prev_hash = current.as_deref();
    row.new_hash = current.as_deref();
    append_at(conn, &row, shard, &prev_row_hash, now_micros()).await
}

/// Append `row` at time `ts` (microseconds) after the shard's last row `prev_row_hash`.
async fn append_at(
    conn: &mut AnyConnection,
    row: &NewAuditRow<'_>,
    shard: i64,
    prev_row_hash: &str,
    ts: i64,
) -> Result<i64> {
    // Drawn after the shard lock, so seq increases along every chain.
    let seq: i64 = if conn.backend_name() == "PostgreSQL" {
        sqlx::query_scalar("SELECT nextval('audit_log_seq')")
    } else {
        sqlx::query_scalar(SQL_NEXT_SEQ_SQLITE)
    }
    .fetch_one(&mut *conn)
    .await
    .map_err(db_err("allocate audit seq"))?;
    let row_hash = row.hash_at(seq, shard, ts, prev_row_hash);
    bind_row(
        sqlx::query(SQL_INSERT_ROW),
        row,
        seq,
        shard,
        ts,
        &row_hash,
        prev_row_hash,
    )
    .execute(&mut *conn)
    .await
    .map_err(db_err("insert audit row"))?;
    sqlx::query(SQL_SET_HEAD)
        .bind(&row_hash)
        .bind(shard)
        .execute(&mut *conn)
        .await
        .map_err(db_err("update audit head"))?;
    Ok(seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(shard_of("b", "p", "u"), shard_of("b", "p", "u"));
        let distinct: std::collections::HashSet<i64> = (0..200)
            .map(|i| shard_of("book", &format!("content/{i}.md"), "__base__"))
            .collect();
        assert!(distinct.len() > 40);
        assert!(distinct.iter().all(|s| (0..AUDIT_SHARDS).contains(s)));
    }

    #[test]
    fn globs_become_escaped_like_patterns() {
        assert_eq!(glob_to_like("content/*_quiz?.md"), "content/%\\_quiz_.md");
        assert_eq!(glob_to_like("100%"), "100\\%");
    }

    #[test]
    fn row_hash_middle_completes_to_the_row_hash_input() {
        let row = NewAuditRow {
            agent_id: "agent \"quoted\" ü",
            operation: OP_WRITE_CONTENT,
            book_id: "book",
            path: "content/01-a/01-b/01-x.md",
            user_id: "__base__",
            prev_hash: None,
            new_hash: Some("ab"),
            status: STATUS_SUCCESS,
            error_message: None,
            execution_time_ms: Some(3),
            request: None,
        };
        let (seq, shard, ts, prev) = (9_007_199_254_740_993_i64, 17, -5, GENESIS_HASH);
        let json = format!("[{seq},{},\"{prev}\"]", row_hash_middle(&row, shard, ts));
        assert_eq!(
            hex::encode(Sha256::digest(json.as_bytes())),
            row.hash_at(seq, shard, ts, prev)
        );
        // A row made for a client request covers it, in both forms.
        let key = RequestKey::new("req-\"1\"", "c".repeat(64)).unwrap();
        let tagged = NewAuditRow {
            request: Some(&key),
            ..row.clone()
        };
        let json = format!("[{seq},{},\"{prev}\"]", row_hash_middle(&tagged, shard, ts));
        assert_eq!(
            hex::encode(Sha256::digest(json.as_bytes())),
            tagged.hash_at(seq, shard, ts, prev)
        );
        assert_ne!(
            tagged.hash_at(seq, shard, ts, prev),
            row.hash_at(seq, shard, ts, prev)
        );
    }

    #[test]
    fn row_hash_covers_every_field() {
        let a = compute_row_hash(
            1,
            0,
            2,
            "a",
            "op",
            "b",
            "p",
            "u",
            None,
            Some("h"),
            "success",
            None,
            Some(3),
            None,
            GENESIS_HASH,
        );
        let b = compute_row_hash(
            1,
            0,
            2,
            "a",
            "op",
            "b",
            "p",
            "u",
            None,
            Some("h"),
            "success",
            None,
            Some(4),
            None,
            GENESIS_HASH,
        );
        let c = compute_row_hash(
            1,
            0,
            2,
            "a",
            "op",
            "b",
            "p",
            "u",
            Some("h"),
            None,
            "success",
            None,
            Some(3),
            None,
            GENESIS_HASH,
        );
        assert_ne!(a, b);
        assert_ne!(a, c);
    }
}
