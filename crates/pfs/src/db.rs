//! The book store's tables and their migrations.
//!
//! Two migration sets with the same tables (`migrations/sqlite`, `migrations/postgres`; they
//! differ only in the append-only trigger syntax), versioned and reversible
//! (`NNNN_name.up.sql` / `.down.sql`), tracked in `_pfs_migrations` so other libraries can keep
//! their own sets in the same database.
//!
//! Tables: `books`, `file_journal` (current state per (book, path, user)), `file_versions`
//! (every committed version), `pending_materializations` (canonical objects still to be
//! written/deleted), `manifest_snapshots`, `audit_log` (INSERT-only, with a tamper-evident row
//! chain) and `audit_head` (last seq + row hash of that chain).

use chrono::{DateTime, TimeZone, Utc};
use platform::db::{Db, DbKind, migrator_with_table};
use sqlx::migrate::Migrator;

use crate::error::{PfsError, Result};

/// The migration tracking table of this library.
pub const MIGRATIONS_TABLE: &str = "_pfs_migrations";

fn migrator(kind: DbKind) -> Migrator {
    match kind {
        DbKind::Sqlite => {
            migrator_with_table(sqlx::migrate!("./migrations/sqlite"), MIGRATIONS_TABLE)
        }
        DbKind::Postgres => {
            migrator_with_table(sqlx::migrate!("./migrations/postgres"), MIGRATIONS_TABLE)
        }
    }
}

/// Apply every pending migration. PostgreSQL serialises concurrent migrators with an advisory
/// lock; SQLite has none, so when several processes start on one file at once the loser of the
/// race retries and then finds the migrations applied.
pub async fn migrate_up(db: &Db) -> Result<()> {
    let m = migrator(db.kind());
    let mut attempt = 0;
    loop {
        match m.run(db.pool()).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 3 && db.kind() == DbKind::Sqlite => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "pfs migrations raced; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
            }
            Err(e) => return Err(PfsError::Internal(format!("applying pfs migrations: {e}"))),
        }
    }
}

/// Revert every applied migration (all the way down; CI runs down-then-up).
pub async fn migrate_down(db: &Db) -> Result<()> {
    migrator(db.kind())
        .undo(db.pool(), 0)
        .await
        .map_err(|e| PfsError::Internal(format!("reverting pfs migrations: {e}")))
}

/// Microseconds since the Unix epoch (UTC): how timestamps are stored.
pub fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

/// Stored microseconds → `DateTime<Utc>` (out-of-range values clamp to the epoch).
pub fn from_micros(us: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(us).single().unwrap_or_default()
}

/// `DateTime<Utc>` → stored microseconds.
pub fn to_micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// Wrap a database error with what we were doing.
/// A database that is busy, locked by another process, out of disk space or unreachable is
/// `STORAGE_UNAVAILABLE` (retryable, 503); anything else is `INTERNAL`.
pub(crate) fn db_err(ctx: &'static str) -> impl Fn(sqlx::Error) -> PfsError {
    move |e| {
        if platform::db::is_transient(&e) {
            PfsError::Storage(format!("database unavailable ({ctx}): {e}; retry later"))
        } else {
            PfsError::Internal(format!("database ({ctx}): {e}"))
        }
    }
}

/// [`db_err`] for an error of the direct SQLite connections.
pub(crate) fn sync_anyhow_err(ctx: &'static str, e: anyhow::Error) -> PfsError {
    if platform::db::is_transient_sqlite(&e) {
        PfsError::Storage(format!("database unavailable ({ctx}): {e:#}; retry later"))
    } else {
        PfsError::Internal(format!("database ({ctx}): {e:#}"))
    }
}

/// Prepare (cached) `sql` written with PostgreSQL-style `$1…$n` placeholders on a rusqlite
/// connection and bind `params[i-1]` to every `$i` by name: SQLite numbers named parameters in
/// order of first appearance, so positional binding would mismatch `… $4 … $1 …`. The same SQL
/// text thus serves the sqlx path and the synchronous path.
pub(crate) fn sync_stmt<'c>(
    conn: &'c rusqlite::Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> rusqlite::Result<rusqlite::CachedStatement<'c>> {
    let mut st = conn.prepare_cached(sql)?;
    for (i, p) in params.iter().enumerate() {
        let name = format!("${}", i + 1);
        if let Some(idx) = st.parameter_index(&name)? {
            st.raw_bind_parameter(idx, p)?;
        }
    }
    Ok(st)
}

/// Wrap an error of the inline SQLite reader with what we were doing.
pub(crate) fn sync_db_err(ctx: &'static str) -> impl Fn(rusqlite::Error) -> PfsError {
    move |e| sync_anyhow_err(ctx, anyhow::Error::new(e))
}

/// Escape `%`, `_` and `\` for a `LIKE … ESCAPE '\'` pattern.
pub fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micros_round_trip() {
        let t = from_micros(1_700_000_000_123_456);
        assert_eq!(to_micros(t), 1_700_000_000_123_456);
    }

    #[test]
    fn like_escaping() {
        assert_eq!(like_escape(r"a_b%c\d"), r"a\_b\%c\\d");
    }
}
