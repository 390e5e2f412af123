//! Rows copied from another audit log (the predecessor's `audit_log`) by `panaversity fs import`.
//!
//! Each copied row keeps its agent, timestamp, book, path, user, hashes, status, error and
//! duration; its operation becomes `legacy:<operation>` ([`LEGACY_OP_PREFIX`]), so it joins the
//! tamper-evident row chains but not the per-file chains (the predecessor computed its hash links
//! outside its write transactions, so they cannot be trusted to link). A batch of rows and the
//! source's progress mark commit in one transaction: an interrupted import resumes after the last
//! committed batch, and a second import of the same source appends nothing.

use platform::db::Db;

use super::{LEGACY_OP_PREFIX, NewAuditRow, append_at, lock_shard};
use crate::db::db_err;
use crate::error::{PfsError, Result};

/// One row of the source's audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyAuditRow {
    /// The row's id in the source (increasing; the progress mark).
    pub id: i64,
    /// Microseconds since the Unix epoch (UTC).
    pub ts_micros: i64,
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
}

/// The progress item of copied audit rows in [`import_progress`].
pub const AUDIT_ITEM: &str = "audit_log";

/// The last id of `item` imported from `source` (0 when nothing was).
pub async fn import_progress(db: &Db, source: &str, item: &str) -> Result<i64> {
    let v: Option<i64> =
        sqlx::query_scalar("SELECT last_id FROM import_progress WHERE source = $1 AND item = $2")
            .bind(source)
            .bind(item)
            .fetch_optional(db.pool())
            .await
            .map_err(db_err("read import progress"))?;
    Ok(v.unwrap_or(0))
}

/// Append `rows` (ascending ids, all above the source's mark) and advance the mark to the last
/// id, in one transaction. Returns how many rows were appended.
pub async fn append_legacy_rows(db: &Db, source: &str, rows: &[LegacyAuditRow]) -> Result<usize> {
    let Some(last) = rows.last() else {
        return Ok(0);
    };
    let mut tx = db
        .begin_write()
        .await
        .map_err(db_err("begin legacy audit import"))?;
    // Checked inside the transaction, so two concurrent imports cannot both append a batch.
    let mark: Option<i64> =
        sqlx::query_scalar("SELECT last_id FROM import_progress WHERE source = $1 AND item = $2")
            .bind(source)
            .bind(AUDIT_ITEM)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err("read import progress"))?;
    let mark = mark.unwrap_or(0);
    let mut appended = 0;
    for r in rows.iter().filter(|r| r.id > mark) {
        if r.agent_id.is_empty() || r.agent_id == "system" {
            return Err(PfsError::InvalidInput(format!(
                "source audit row {} has the agent id {:?}, which an audit row cannot have",
                r.id, r.agent_id
            )));
        }
        let operation = format!("{LEGACY_OP_PREFIX}{}", r.operation);
        let row = NewAuditRow {
            agent_id: &r.agent_id,
            operation: &operation,
            book_id: &r.book_id,
            path: &r.path,
            user_id: &r.user_id,
            prev_hash: r.prev_hash.as_deref(),
            new_hash: r.new_hash.as_deref(),
            status: &r.status,
            error_message: r.error_message.as_deref(),
            execution_time_ms: r.execution_time_ms,
            request: None,
        };
        let (shard, prev_row_hash) = lock_shard(&mut tx, &row).await?;
        append_at(&mut tx, &row, shard, &prev_row_hash, r.ts_micros).await?;
        appended += 1;
    }
    sqlx::query(
        "INSERT INTO import_progress (source, item, last_id) VALUES ($1, $2, $3) \
         ON CONFLICT (source, item) DO UPDATE SET last_id = excluded.last_id \
         WHERE import_progress.last_id < excluded.last_id",
    )
    .bind(source)
    .bind(AUDIT_ITEM)
    .bind(last.id)
    .execute(&mut *tx)
    .await
    .map_err(db_err("advance import progress"))?;
    tx.commit()
        .await
        .map_err(db_err("commit legacy audit import"))?;
    Ok(appended)
}
