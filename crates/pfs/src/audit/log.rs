//! Reading the audit log: queries (newest first, keyset pages) and verification of the per-file
//! chains and every shard's row chain.

use super::*;

/// Filters for [`AuditLog::query`]. Every field is optional; results are newest first.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuditQuery {
    pub agent_id: Option<String>,
    pub operation: Option<String>,
    pub book_id: Option<String>,
    /// Glob over the book-relative path: `*` any run of characters, `?` one character; every
    /// other character (including `_`) is literal.
    pub path_pattern: Option<String>,
    /// Inclusive lower bound on the timestamp.
    pub since: Option<DateTime<Utc>>,
    /// Exclusive upper bound on the timestamp.
    pub until: Option<DateTime<Utc>>,
    pub status: Option<String>,
    pub user_id: Option<String>,
    /// Page size, 1–1000 (default 100).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One page of audit rows.
#[derive(Debug, Clone, Serialize)]
pub struct AuditPage {
    pub rows: Vec<AuditRow>,
    /// Pass as `cursor` to get the next (older) page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// A place where a chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainBreak {
    /// The row where the break shows (0 for head/summary problems).
    pub seq: i64,
    /// `row_hash`, `row_link`, `shard`, `file_chain`, `head`.
    pub kind: String,
    pub detail: String,
}

/// Result of [`AuditLog::verify`].
#[derive(Debug, Clone, Serialize)]
pub struct ChainReport {
    pub valid: bool,
    pub rows_checked: u64,
    /// Total rows according to the chain heads (global verification only).
    pub head_seq: Option<i64>,
    pub breaks: Vec<ChainBreak>,
}

/// Query, record and verify the audit log.
#[derive(Debug, Clone)]
pub struct AuditLog {
    db: Db,
}

/// Translate the glob of [`AuditQuery::path_pattern`] to a `LIKE … ESCAPE '\'` pattern.
pub fn glob_to_like(glob: &str) -> String {
    let mut out = String::with_capacity(glob.len() + 4);
    for c in glob.chars() {
        match c {
            '*' => out.push('%'),
            '?' => out.push('_'),
            other => out.push_str(&like_escape(&other.to_string())),
        }
    }
    out
}

const SELECT_ROW: &str = "SELECT seq, shard, ts, agent_id, operation, book_id, path, user_id, prev_hash, new_hash, status, \
     error_message, execution_time_ms, row_hash, prev_row_hash, request_id, request_hash FROM audit_log";

fn decode_row(r: &sqlx::any::AnyRow) -> Result<AuditRow> {
    let g = db_err("decode audit row");
    Ok(AuditRow {
        seq: r.try_get("seq").map_err(&g)?,
        shard: r.try_get("shard").map_err(&g)?,
        ts: from_micros(r.try_get("ts").map_err(&g)?),
        agent_id: r.try_get("agent_id").map_err(&g)?,
        operation: r.try_get("operation").map_err(&g)?,
        book_id: r.try_get("book_id").map_err(&g)?,
        path: r.try_get("path").map_err(&g)?,
        user_id: r.try_get("user_id").map_err(&g)?,
        prev_hash: r.try_get("prev_hash").map_err(&g)?,
        new_hash: r.try_get("new_hash").map_err(&g)?,
        status: r.try_get("status").map_err(&g)?,
        error_message: r.try_get("error_message").map_err(&g)?,
        execution_time_ms: r.try_get("execution_time_ms").map_err(&g)?,
        row_hash: r.try_get("row_hash").map_err(&g)?,
        prev_row_hash: r.try_get("prev_row_hash").map_err(&g)?,
        request_id: r.try_get("request_id").map_err(&g)?,
        request_hash: r.try_get("request_hash").map_err(&g)?,
    })
}

enum Arg {
    S(String),
    I(i64),
}

impl AuditLog {
    /// The audit log of `db`.
    pub fn new(db: Db) -> AuditLog {
        AuditLog { db }
    }

    /// The successful rows `agent_id`'s call with client request id `request_id` left, oldest
    /// first (empty: no change was made for it). They were written in the transaction of the
    /// change, so they exist exactly when the change committed.
    pub async fn request_rows(&self, agent_id: &str, request_id: &str) -> Result<Vec<AuditRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{SELECT_ROW} WHERE agent_id = $1 AND request_id = $2 AND status = 'success' ORDER BY seq"
        )))
        .bind(agent_id)
        .bind(request_id)
        .fetch_all(self.db.pool())
        .await
        .map_err(db_err("look up a request's audit rows"))?;
        rows.iter().map(decode_row).collect()
    }

    /// Rows matching `q`, newest first, paginated by `seq`.
    pub async fn query(&self, q: &AuditQuery) -> Result<AuditPage> {
        let limit = i64::from(q.limit.unwrap_or(100).clamp(1, 1000));
        let mut conds: Vec<String> = Vec::new();
        let mut args: Vec<Arg> = Vec::new();
        let mut push = |cond: &str, arg: Arg| {
            args.push(arg);
            conds.push(cond.replace('?', &format!("${}", args.len())));
        };
        if let Some(v) = &q.agent_id {
            push("agent_id = ?", Arg::S(v.clone()));
        }
        if let Some(v) = &q.operation {
            push("operation = ?", Arg::S(v.clone()));
        }
        if let Some(v) = &q.book_id {
            push("book_id = ?", Arg::S(v.clone()));
        }
        if let Some(v) = &q.user_id {
            push("user_id = ?", Arg::S(v.clone()));
        }
        if let Some(v) = &q.status {
            push("status = ?", Arg::S(v.clone()));
        }
        if let Some(v) = &q.path_pattern {
            push("path LIKE ? ESCAPE '\\'", Arg::S(glob_to_like(v)));
        }
        if let Some(v) = q.since {
            push("ts >= ?", Arg::I(to_micros(v)));
        }
        if let Some(v) = q.until {
            push("ts < ?", Arg::I(to_micros(v)));
        }
        if let Some(c) = &q.cursor {
            let before: i64 = c.parse().map_err(|_| {
                PfsError::InvalidInput(
                    "invalid cursor; pass the next_cursor of the previous page".into(),
                )
            })?;
            push("seq < ?", Arg::I(before));
        }
        let mut sql = SELECT_ROW.to_string();
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        sql.push_str(&format!(" ORDER BY seq DESC LIMIT {}", limit + 1));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for a in args {
            query = match a {
                Arg::S(s) => query.bind(s),
                Arg::I(i) => query.bind(i),
            };
        }
        let rows = query
            .fetch_all(self.db.pool())
            .await
            .map_err(db_err("query audit log"))?;
        let mut out = rows.iter().map(decode_row).collect::<Result<Vec<_>>>()?;
        let next_cursor = if out.len() as i64 > limit {
            out.truncate(limit as usize);
            out.last().map(|r| r.seq.to_string())
        } else {
            None
        };
        Ok(AuditPage {
            rows: out,
            next_cursor,
        })
    }

    /// Record an event that is not a file mutation (e.g. a read or an archive download). It has no
    /// hashes and is not part of a per-file chain, but is part of the global row chain.
    #[allow(clippy::too_many_arguments)]
    pub async fn record(
        &self,
        actor: &Actor,
        operation: &str,
        book_id: &str,
        path: &str,
        user_id: &str,
        status: &str,
        error_message: Option<&str>,
        execution_time_ms: Option<i64>,
    ) -> Result<i64> {
        if CHAIN_OPERATIONS.contains(&operation) {
            return Err(PfsError::InvalidInput(format!(
                "{operation} rows are written by the engine with the journal change"
            )));
        }
        let mut tx = self
            .db
            .begin_write()
            .await
            .map_err(db_err("begin audit record"))?;
        let seq = append_in_tx(
            &mut tx,
            &NewAuditRow {
                agent_id: actor.agent_id(),
                operation,
                book_id,
                path,
                user_id,
                prev_hash: None,
                new_hash: None,
                status,
                error_message,
                execution_time_ms,
                request: None,
            },
        )
        .await?;
        tx.commit().await.map_err(db_err("commit audit record"))?;
        Ok(seq)
    }

    /// Verify the chains. With `filter = Some((book, path, user))` only that file's rows are
    /// checked (their row hashes, shard and the per-file chain); with `None` every row is checked:
    /// row hashes, that each row is in its key's shard, the links `prev_row_hash == previous
    /// row_hash` of every shard chain, every shard head (row count and last hash, which catches
    /// deleted tail rows), and every per-file chain.
    pub async fn verify(&self, filter: Option<(&str, &str, &str)>) -> Result<ChainReport> {
        let mut breaks = Vec::new();
        let mut rows_checked = 0u64;
        let mut last_new: HashMap<(String, String, String), Option<String>> = HashMap::new();
        // Per shard: (rows seen, last row_hash).
        let mut shards: HashMap<i64, (i64, String)> = HashMap::new();
        let mut after = 0i64;
        const BATCH: i64 = 2000;
        loop {
            let rows = match filter {
                Some((b, p, u)) => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{SELECT_ROW} WHERE book_id = $1 AND path = $2 AND user_id = $3 AND seq > $4 ORDER BY seq LIMIT {BATCH}"
                )))
                .bind(b)
                .bind(p)
                .bind(u)
                .bind(after)
                .fetch_all(self.db.pool())
                .await,
                None => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{SELECT_ROW} WHERE seq > $1 ORDER BY seq LIMIT {BATCH}"
                )))
                .bind(after)
                .fetch_all(self.db.pool())
                .await,
            }
            .map_err(db_err("read audit log for verification"))?;
            let n = rows.len();
            for r in &rows {
                let row = decode_row(r)?;
                rows_checked += 1;
                after = row.seq;
                if row.expected_row_hash() != row.row_hash {
                    breaks.push(ChainBreak {
                        seq: row.seq,
                        kind: "row_hash".into(),
                        detail: "the row's fields do not match its row_hash (edited row)".into(),
                    });
                }
                if row.shard != shard_of(&row.book_id, &row.path, &row.user_id) {
                    breaks.push(ChainBreak {
                        seq: row.seq,
                        kind: "shard".into(),
                        detail: format!(
                            "row is in shard {} but its key belongs elsewhere",
                            row.shard
                        ),
                    });
                }
                if filter.is_none() {
                    let entry = shards
                        .entry(row.shard)
                        .or_insert_with(|| (0, GENESIS_HASH.to_string()));
                    if row.prev_row_hash != entry.1 {
                        breaks.push(ChainBreak {
                            seq: row.seq,
                            kind: "row_link".into(),
                            detail: format!(
                                "prev_row_hash differs from the previous row's row_hash in shard {} (rows missing or edited)",
                                row.shard
                            ),
                        });
                    }
                    entry.0 += 1;
                    entry.1 = row.row_hash.clone();
                }
                if CHAIN_OPERATIONS.contains(&row.operation.as_str()) {
                    let key = (row.book_id.clone(), row.path.clone(), row.user_id.clone());
                    if let Some(prev_new) = last_new.get(&key)
                        && *prev_new != row.prev_hash
                    {
                        breaks.push(ChainBreak {
                            seq: row.seq,
                            kind: "file_chain".into(),
                            detail: format!(
                                "{}/{} ({}): prev_hash {:?} does not equal the previous new_hash {:?}",
                                row.book_id, row.path, row.user_id, row.prev_hash, prev_new
                            ),
                        });
                    }
                    last_new.insert(key, row.new_hash.clone());
                }
            }
            if (n as i64) < BATCH {
                break;
            }
        }
        let mut head_seq = None;
        if filter.is_none() {
            let heads =
                sqlx::query("SELECT shard, row_count, row_hash FROM audit_head ORDER BY shard")
                    .fetch_all(self.db.pool())
                    .await
                    .map_err(db_err("read audit heads"))?;
            if heads.len() as i64 != AUDIT_SHARDS {
                breaks.push(ChainBreak {
                    seq: 0,
                    kind: "head".into(),
                    detail: format!("{} audit_head rows, expected {AUDIT_SHARDS}", heads.len()),
                });
            }
            let mut total = 0i64;
            for h in &heads {
                let g = db_err("decode audit head");
                let shard: i64 = h.try_get("shard").map_err(&g)?;
                let count: i64 = h.try_get("row_count").map_err(&g)?;
                let hash: String = h.try_get("row_hash").map_err(&g)?;
                total += count;
                let (seen, last) = shards
                    .remove(&shard)
                    .unwrap_or_else(|| (0, GENESIS_HASH.to_string()));
                if seen != count || last != hash {
                    breaks.push(ChainBreak {
                        seq: 0,
                        kind: "head".into(),
                        detail: format!(
                            "shard {shard}: the head records {count} rows, {seen} are present or the last one differs (rows missing or head edited)"
                        ),
                    });
                }
            }
            for shard in shards.keys() {
                breaks.push(ChainBreak {
                    seq: 0,
                    kind: "head".into(),
                    detail: format!("rows in shard {shard}, which has no head"),
                });
            }
            head_seq = Some(total);
        }
        metrics::counter!(
            "panaversityfs_audit_chain_check_total",
            "result" => if breaks.is_empty() { "valid" } else { "broken" }
        )
        .increment(1);
        Ok(ChainReport {
            valid: breaks.is_empty(),
            rows_checked,
            head_seq,
            breaks,
        })
    }
}
