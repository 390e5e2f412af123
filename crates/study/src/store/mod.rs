//! The durable thread/item store (SQLite or PostgreSQL through `platform::db::Db`).
//!
//! Invariants:
//! - Every query is scoped by the [`Owner`] (user id and organization): a row of another owner is
//!   indistinguishable from a missing one ([`StoreError::NotFound`]).
//! - Items are the ChatKit item JSON (`payload`), plus the columns needed to page them.
//! - Listings are keyset-paginated on `(created_at, id)`; `after` is the id of the last row of the
//!   previous page and `has_more` is exact (one extra row is fetched).
//! - Every write has committed when the method returns (no write-behind queue).
//! - An assistant reply exists from its first token (`stream_state = 'streaming'`) and is
//!   checkpointed while it streams ([`stream`]); listings show a reply whose stream ended early,
//!   or whose last checkpoint is older than the stream lease (its process died), as incomplete.

mod import;
mod stream;

pub use import::Imported;
pub use stream::{INCOMPLETE_NOTE, Inserted, ItemKeys, StreamState};

use std::time::Duration;

use platform::db::{Db, DbKind, ExecuteWrite, migrator_with_table};
use serde_json::{Map, Value};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use crate::chatkit::requests::{FeedbackKind, ListParams, Order};
use crate::chatkit::{ItemBody, Page, ThreadItem, ThreadMetadata, ThreadStatus, Timestamp};

/// The page size when a listing does not give `limit` (the SDK's `DEFAULT_PAGE_SIZE`).
pub const DEFAULT_PAGE_SIZE: i64 = 20;
/// The largest page a listing returns.
pub const MAX_PAGE_SIZE: i64 = 100;

/// Name of the migration tracking table of this library.
pub const MIGRATIONS_TABLE: &str = "_study_migrations";

/// Who owns a row: the authenticated user and their organization (empty when none).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub user_id: String,
    pub org_id: String,
}

impl Owner {
    /// An owner from a user id and an optional organization.
    pub fn new(user_id: impl Into<String>, org: Option<&str>) -> Owner {
        Owner {
            user_id: user_id.into(),
            org_id: org.unwrap_or("").to_string(),
        }
    }
}

/// A thread row with the server-side fields the wire never shows.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredThread {
    pub meta: ThreadMetadata,
    /// True once the user renamed the thread: generated titles never overwrite it.
    pub title_set_by_user: bool,
    /// The tutor's per-thread state (`Value::Null` before the first turn).
    pub tutor_state: Value,
    pub updated_at: Timestamp,
}

/// Store failures, each mapping to one stable API error code.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The thread or item does not exist for this owner.
    #[error("{0} not found")]
    NotFound(String),
    /// The request is inconsistent with the stored data (bad cursor, bad limit).
    #[error("{0}")]
    Invalid(String),
    /// The database could not be reached in time (pool exhausted, connection refused).
    #[error("database unavailable while {context}: {source}")]
    Unavailable {
        context: &'static str,
        source: sqlx::Error,
    },
    /// Any other database error.
    #[error("database error while {context}: {source}")]
    Db {
        context: &'static str,
        source: sqlx::Error,
    },
    /// A stored row could not be decoded.
    #[error("stored {what} is corrupt: {detail}")]
    Corrupt { what: &'static str, detail: String },
    /// Running migrations failed.
    #[error("study migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

fn db_err(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| match source {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::Unavailable { context, source }
        }
        other => StoreError::Db {
            context,
            source: other,
        },
    }
}

fn corrupt(what: &'static str) -> impl FnOnce(serde_json::Error) -> StoreError {
    move |e| StoreError::Corrupt {
        what,
        detail: e.to_string(),
    }
}

/// The ChatKit thread and item store. Cheap to clone (shares the pool).
#[derive(Debug, Clone)]
pub struct ThreadStore {
    db: Db,
    /// A `streaming` reply whose last checkpoint is older than this is shown as incomplete.
    stream_lease: Duration,
}

/// Default of [`ThreadStore::with_stream_lease`].
pub const DEFAULT_STREAM_LEASE: Duration = Duration::from_secs(30);

const ITEM_COLS: &str = "payload, stream_state, updated_at";

const THREAD_COLS: &str =
    "id, title, title_set_by_user, status, metadata, tutor_state, created_at, updated_at";

impl ThreadStore {
    /// A store over an open database. Call [`ThreadStore::migrate_up`] once at startup.
    pub fn new(db: Db) -> ThreadStore {
        ThreadStore {
            db,
            stream_lease: DEFAULT_STREAM_LEASE,
        }
    }

    /// How long a streaming reply may go without a checkpoint before listings treat its writer
    /// as dead and show the reply as incomplete (the turn driver heartbeats at a third of it).
    pub fn with_stream_lease(mut self, lease: Duration) -> ThreadStore {
        self.stream_lease = lease.max(Duration::from_millis(300));
        self
    }

    /// The stream lease (see [`ThreadStore::with_stream_lease`]).
    pub fn stream_lease(&self) -> Duration {
        self.stream_lease
    }

    /// The underlying database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    fn migrator(&self) -> sqlx::migrate::Migrator {
        match self.db.kind() {
            DbKind::Sqlite => {
                migrator_with_table(sqlx::migrate!("./migrations/sqlite"), MIGRATIONS_TABLE)
            }
            DbKind::Postgres => {
                migrator_with_table(sqlx::migrate!("./migrations/postgres"), MIGRATIONS_TABLE)
            }
        }
    }

    /// Apply every pending migration (tracked in `_study_migrations`).
    pub async fn migrate_up(&self) -> Result<(), StoreError> {
        self.migrator().run(self.db.pool()).await?;
        Ok(())
    }

    /// Revert every applied migration of this library (drops the study tables).
    pub async fn migrate_down(&self) -> Result<(), StoreError> {
        self.migrator().undo(self.db.pool(), 0).await?;
        Ok(())
    }

    // ---------------------------------------------------------------- threads

    /// Insert a new thread.
    pub async fn create_thread(
        &self,
        owner: &Owner,
        meta: &ThreadMetadata,
    ) -> Result<(), StoreError> {
        insert_thread(owner, meta)?
            .execute_write(&self.db)
            .await
            .map_err(db_err("creating a thread"))?;
        Ok(())
    }

    /// Insert a new thread together with its first item, atomically.
    pub async fn create_thread_with_item(
        &self,
        owner: &Owner,
        meta: &ThreadMetadata,
        item: &ThreadItem,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .db
            .begin_write()
            .await
            .map_err(db_err("starting a thread creation"))?;
        insert_thread(owner, meta)?
            .execute(&mut *tx)
            .await
            .map_err(db_err("creating a thread"))?;
        insert_item(owner, item)?
            .execute(&mut *tx)
            .await
            .map_err(db_err("adding the first item"))?;
        tx.commit()
            .await
            .map_err(db_err("committing a thread creation"))?;
        Ok(())
    }

    /// Load one thread of this owner.
    pub async fn load_thread(
        &self,
        owner: &Owner,
        thread_id: &str,
    ) -> Result<StoredThread, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {THREAD_COLS} FROM study_threads WHERE user_id = $1 AND org_id = $2 AND id = $3"
        )))
        .bind(&owner.user_id)
        .bind(&owner.org_id)
        .bind(thread_id)
        .fetch_optional(self.db.pool())
        .await
        .map_err(db_err("loading a thread"))?
        .ok_or_else(|| StoreError::NotFound(format!("thread {thread_id}")))?;
        thread_from_row(&row)
    }

    /// Set the title. `by_user` marks it as the user's own (generated titles never replace it).
    /// Returns the updated thread.
    pub async fn set_title(
        &self,
        owner: &Owner,
        thread_id: &str,
        title: &str,
        by_user: bool,
    ) -> Result<StoredThread, StoreError> {
        let sql = if by_user {
            "UPDATE study_threads SET title = $4, title_set_by_user = 1, updated_at = $5 \
             WHERE user_id = $1 AND org_id = $2 AND id = $3"
        } else {
            "UPDATE study_threads SET title = $4, updated_at = $5 \
             WHERE user_id = $1 AND org_id = $2 AND id = $3 AND title_set_by_user = 0"
        };
        let done = sqlx::query(sql)
            .bind(&owner.user_id)
            .bind(&owner.org_id)
            .bind(thread_id)
            .bind(title)
            .bind(Timestamp::now().micros())
            .execute_write(&self.db)
            .await
            .map_err(db_err("updating a thread title"))?;
        if by_user && done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("thread {thread_id}")));
        }
        self.load_thread(owner, thread_id).await
    }

    /// Replace the tutor's per-thread state.
    pub async fn save_tutor_state(
        &self,
        owner: &Owner,
        thread_id: &str,
        state: &Value,
    ) -> Result<(), StoreError> {
        let text = serde_json::to_string(state).map_err(corrupt("tutor state"))?;
        let done = sqlx::query(
            "UPDATE study_threads SET tutor_state = $4, updated_at = $5 \
             WHERE user_id = $1 AND org_id = $2 AND id = $3",
        )
        .bind(&owner.user_id)
        .bind(&owner.org_id)
        .bind(thread_id)
        .bind(text)
        .bind(Timestamp::now().micros())
        .execute_write(&self.db)
        .await
        .map_err(db_err("saving tutor state"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("thread {thread_id}")));
        }
        Ok(())
    }

    /// Delete a thread with its items and feedback, in one transaction.
    pub async fn delete_thread(&self, owner: &Owner, thread_id: &str) -> Result<(), StoreError> {
        let mut tx = self
            .db
            .begin_write()
            .await
            .map_err(db_err("starting a delete"))?;
        let done =
            sqlx::query("DELETE FROM study_threads WHERE user_id = $1 AND org_id = $2 AND id = $3")
                .bind(&owner.user_id)
                .bind(&owner.org_id)
                .bind(thread_id)
                .execute(&mut *tx)
                .await
                .map_err(db_err("deleting a thread"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("thread {thread_id}")));
        }
        sqlx::query("DELETE FROM study_items WHERE user_id = $1 AND thread_id = $2")
            .bind(&owner.user_id)
            .bind(thread_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err("deleting thread items"))?;
        sqlx::query("DELETE FROM study_feedback WHERE user_id = $1 AND thread_id = $2")
            .bind(&owner.user_id)
            .bind(thread_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err("deleting thread feedback"))?;
        tx.commit().await.map_err(db_err("committing a delete"))?;
        Ok(())
    }

    /// One page of this owner's threads.
    pub async fn list_threads(
        &self,
        owner: &Owner,
        page: &ListParams,
    ) -> Result<Page<StoredThread>, StoreError> {
        let limit = page_limit(page.limit)?;
        let cursor = match &page.after {
            None => None,
            Some(after) => {
                let row = sqlx::query(
                    "SELECT created_at FROM study_threads \
                     WHERE user_id = $1 AND org_id = $2 AND id = $3",
                )
                .bind(&owner.user_id)
                .bind(&owner.org_id)
                .bind(after)
                .fetch_optional(self.db.pool())
                .await
                .map_err(db_err("resolving a thread cursor"))?
                .ok_or_else(|| StoreError::NotFound(format!("thread {after} (cursor)")))?;
                Some((get_i64(&row, "created_at")?, after.clone()))
            }
        };
        let (cmp, dir) = order_sql(page.order);
        let keyset = if cursor.is_some() {
            format!("AND (created_at {cmp} $3 OR (created_at = $3 AND id {cmp} $4))")
        } else {
            String::new()
        };
        let limit_param = if cursor.is_some() { "$5" } else { "$3" };
        let sql = format!(
            "SELECT {THREAD_COLS} FROM study_threads WHERE user_id = $1 AND org_id = $2 {keyset} \
             ORDER BY created_at {dir}, id {dir} LIMIT {limit_param}"
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(&owner.user_id)
            .bind(&owner.org_id);
        if let Some((ca, id)) = cursor {
            q = q.bind(ca).bind(id);
        }
        let rows = q
            .bind(limit + 1)
            .fetch_all(self.db.pool())
            .await
            .map_err(db_err("listing threads"))?;
        let mut data = rows
            .iter()
            .map(thread_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(finish_page(&mut data, limit, |t| t.meta.id.clone()))
    }

    // ------------------------------------------------------------------ items

    /// Insert a new item into a thread of this owner.
    pub async fn add_item(&self, owner: &Owner, item: &ThreadItem) -> Result<(), StoreError> {
        insert_item(owner, item)?
            .execute_write(&self.db)
            .await
            .map_err(db_err("adding an item"))?;
        Ok(())
    }

    /// Replace an existing item (same id and thread).
    pub async fn save_item(&self, owner: &Owner, item: &ThreadItem) -> Result<(), StoreError> {
        let payload = serde_json::to_string(item).map_err(corrupt("item"))?;
        let done = sqlx::query(
            "UPDATE study_items SET payload = $4, type = $5 \
             WHERE user_id = $1 AND thread_id = $2 AND id = $3",
        )
        .bind(&owner.user_id)
        .bind(&item.thread_id)
        .bind(&item.id)
        .bind(payload)
        .bind(item.body.type_name())
        .execute_write(&self.db)
        .await
        .map_err(db_err("saving an item"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("item {}", item.id)));
        }
        Ok(())
    }

    /// Load one item of a thread of this owner.
    pub async fn load_item(
        &self,
        owner: &Owner,
        thread_id: &str,
        item_id: &str,
    ) -> Result<ThreadItem, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ITEM_COLS} FROM study_items WHERE user_id = $1 AND thread_id = $2 AND id = $3"
        )))
        .bind(&owner.user_id)
        .bind(thread_id)
        .bind(item_id)
        .fetch_optional(self.db.pool())
        .await
        .map_err(db_err("loading an item"))?
        .ok_or_else(|| StoreError::NotFound(format!("item {item_id}")))?;
        item_from_row(&row, None)
    }

    /// Delete items of a thread by id; returns how many were deleted.
    pub async fn delete_items(
        &self,
        owner: &Owner,
        thread_id: &str,
        item_ids: &[String],
    ) -> Result<u64, StoreError> {
        let mut n = 0;
        for id in item_ids {
            n += sqlx::query(
                "DELETE FROM study_items WHERE user_id = $1 AND thread_id = $2 AND id = $3",
            )
            .bind(&owner.user_id)
            .bind(thread_id)
            .bind(id)
            .execute_write(&self.db)
            .await
            .map_err(db_err("deleting an item"))?
            .rows_affected();
        }
        Ok(n)
    }

    /// Delete every item of the thread that comes after `item` in `(created_at, id)` order.
    pub async fn delete_items_after(
        &self,
        owner: &Owner,
        item: &ThreadItem,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM study_items WHERE user_id = $1 AND thread_id = $2 \
             AND (created_at > $3 OR (created_at = $3 AND id > $4))",
        )
        .bind(&owner.user_id)
        .bind(&item.thread_id)
        .bind(item.created_at.micros())
        .bind(&item.id)
        .execute_write(&self.db)
        .await
        .map_err(db_err("deleting items after a retry point"))?;
        Ok(done.rows_affected())
    }

    /// One page of a thread's items (the caller checks the thread exists). Hidden items are
    /// filtered out after paging, as the SDK does, so a page may be shorter than `limit`.
    pub async fn list_items(
        &self,
        owner: &Owner,
        thread_id: &str,
        page: &ListParams,
    ) -> Result<Page<ThreadItem>, StoreError> {
        let limit = page_limit(page.limit)?;
        let cursor = match &page.after {
            None => None,
            Some(after) => {
                let row = sqlx::query(
                    "SELECT created_at FROM study_items \
                     WHERE user_id = $1 AND thread_id = $2 AND id = $3",
                )
                .bind(&owner.user_id)
                .bind(thread_id)
                .bind(after)
                .fetch_optional(self.db.pool())
                .await
                .map_err(db_err("resolving an item cursor"))?
                .ok_or_else(|| StoreError::NotFound(format!("item {after} (cursor)")))?;
                Some((get_i64(&row, "created_at")?, after.clone()))
            }
        };
        let mut out = self
            .items_page(owner, thread_id, page.order, cursor, limit, true)
            .await?;
        out.data.retain(|i| !i.body.is_hidden());
        Ok(out)
    }

    async fn items_page(
        &self,
        owner: &Owner,
        thread_id: &str,
        order: Order,
        cursor: Option<(i64, String)>,
        limit: i64,
        present: bool,
    ) -> Result<Page<ThreadItem>, StoreError> {
        let (cmp, dir) = order_sql(order);
        let keyset = if cursor.is_some() {
            format!("AND (created_at {cmp} $3 OR (created_at = $3 AND id {cmp} $4))")
        } else {
            String::new()
        };
        let limit_param = if cursor.is_some() { "$5" } else { "$3" };
        let sql = format!(
            "SELECT {ITEM_COLS} FROM study_items WHERE user_id = $1 AND thread_id = $2 {keyset} \
             ORDER BY created_at {dir}, id {dir} LIMIT {limit_param}"
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(&owner.user_id)
            .bind(thread_id);
        if let Some((ca, id)) = cursor {
            q = q.bind(ca).bind(id);
        }
        let rows = q
            .bind(limit + 1)
            .fetch_all(self.db.pool())
            .await
            .map_err(db_err("listing items"))?;
        let lease = present.then_some(self.stream_lease);
        let mut data = rows
            .iter()
            .map(|r| item_from_row(r, lease))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(finish_page(&mut data, limit, |i| i.id.clone()))
    }

    /// The last `n` items of a thread strictly before `before` (all of them when `None`), oldest
    /// first. Hidden items are included; callers filter what they need.
    pub async fn recent_items(
        &self,
        owner: &Owner,
        thread_id: &str,
        before: Option<&ThreadItem>,
        n: i64,
    ) -> Result<Vec<ThreadItem>, StoreError> {
        let cursor = before.map(|i| (i.created_at.micros(), i.id.clone()));
        let mut page = self
            .items_page(owner, thread_id, Order::Desc, cursor, n.max(1), false)
            .await?;
        page.data.reverse();
        Ok(page.data)
    }

    /// Record feedback on items of a thread (the latest kind per item wins). Every item must exist.
    pub async fn add_feedback(
        &self,
        owner: &Owner,
        thread_id: &str,
        item_ids: &[String],
        kind: FeedbackKind,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .db
            .begin_write()
            .await
            .map_err(db_err("starting feedback"))?;
        let now = Timestamp::now().micros();
        for id in item_ids {
            let exists = sqlx::query(
                "SELECT id FROM study_items WHERE user_id = $1 AND thread_id = $2 AND id = $3",
            )
            .bind(&owner.user_id)
            .bind(thread_id)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err("checking a feedback item"))?;
            if exists.is_none() {
                return Err(StoreError::NotFound(format!("item {id}")));
            }
            sqlx::query(
                "INSERT INTO study_feedback (user_id, thread_id, item_id, kind, created_at) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (user_id, item_id) DO UPDATE SET kind = excluded.kind, \
                 created_at = excluded.created_at",
            )
            .bind(&owner.user_id)
            .bind(thread_id)
            .bind(id)
            .bind(kind.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db_err("storing feedback"))?;
        }
        tx.commit().await.map_err(db_err("committing feedback"))?;
        Ok(())
    }

    /// The stored feedback kind of an item, if any.
    pub async fn feedback(
        &self,
        owner: &Owner,
        item_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let row =
            sqlx::query("SELECT kind FROM study_feedback WHERE user_id = $1 AND item_id = $2")
                .bind(&owner.user_id)
                .bind(item_id)
                .fetch_optional(self.db.pool())
                .await
                .map_err(db_err("loading feedback"))?;
        row.map(|r| {
            r.try_get::<String, _>("kind")
                .map_err(db_err("decoding feedback"))
        })
        .transpose()
    }
}

type AnyQuery = sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments>;

fn insert_thread(owner: &Owner, meta: &ThreadMetadata) -> Result<AnyQuery, StoreError> {
    insert_thread_sql(owner, meta, "")
}

/// The thread INSERT with `tail` appended (e.g. an `ON CONFLICT` clause).
fn insert_thread_sql(
    owner: &Owner,
    meta: &ThreadMetadata,
    tail: &'static str,
) -> Result<AnyQuery, StoreError> {
    let status = serde_json::to_string(&meta.status).map_err(corrupt("thread status"))?;
    let metadata = serde_json::to_string(&meta.metadata).map_err(corrupt("thread metadata"))?;
    Ok(sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO study_threads (user_id, id, org_id, title, title_set_by_user, status, \
         metadata, tutor_state, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, 0, $5, $6, NULL, $7, $7){tail}"
    )))
    .bind(owner.user_id.clone())
    .bind(meta.id.clone())
    .bind(owner.org_id.clone())
    .bind(meta.title.clone())
    .bind(status)
    .bind(metadata)
    .bind(meta.created_at.micros()))
}

fn insert_item(owner: &Owner, item: &ThreadItem) -> Result<AnyQuery, StoreError> {
    insert_item_sql(owner, item, "")
}

/// The item INSERT with `tail` appended (e.g. an `ON CONFLICT` clause).
fn insert_item_sql(
    owner: &Owner,
    item: &ThreadItem,
    tail: &'static str,
) -> Result<AnyQuery, StoreError> {
    let payload = serde_json::to_string(item).map_err(corrupt("item"))?;
    Ok(sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO study_items (user_id, thread_id, id, type, created_at, payload) \
         VALUES ($1, $2, $3, $4, $5, $6){tail}"
    )))
    .bind(owner.user_id.clone())
    .bind(item.thread_id.clone())
    .bind(item.id.clone())
    .bind(item.body.type_name())
    .bind(item.created_at.micros())
    .bind(payload))
}

fn page_limit(limit: Option<i64>) -> Result<i64, StoreError> {
    match limit {
        None => Ok(DEFAULT_PAGE_SIZE),
        Some(n) if n < 1 => Err(StoreError::Invalid(format!(
            "limit must be at least 1 (got {n})"
        ))),
        Some(n) => Ok(n.min(MAX_PAGE_SIZE)),
    }
}

fn order_sql(order: Order) -> (&'static str, &'static str) {
    match order {
        Order::Asc => (">", "ASC"),
        Order::Desc => ("<", "DESC"),
    }
}

fn finish_page<T>(data: &mut Vec<T>, limit: i64, id: impl Fn(&T) -> String) -> Page<T> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let has_more = data.len() > limit;
    data.truncate(limit);
    let after = if has_more { data.last().map(id) } else { None };
    Page {
        data: std::mem::take(data),
        has_more,
        after,
    }
}

fn get_i64(row: &AnyRow, col: &'static str) -> Result<i64, StoreError> {
    row.try_get::<i64, _>(col).map_err(db_err("decoding a row"))
}

fn get_str(row: &AnyRow, col: &'static str) -> Result<String, StoreError> {
    row.try_get::<String, _>(col)
        .map_err(db_err("decoding a row"))
}

fn thread_from_row(row: &AnyRow) -> Result<StoredThread, StoreError> {
    let status: ThreadStatus =
        serde_json::from_str(&get_str(row, "status")?).map_err(corrupt("thread status"))?;
    let metadata: Map<String, Value> =
        serde_json::from_str(&get_str(row, "metadata")?).map_err(corrupt("thread metadata"))?;
    let tutor_state = match row
        .try_get::<Option<String>, _>("tutor_state")
        .map_err(db_err("decoding a row"))?
    {
        Some(s) => serde_json::from_str(&s).map_err(corrupt("tutor state"))?,
        None => Value::Null,
    };
    let title_flag = row
        .try_get::<i64, _>("title_set_by_user")
        .or_else(|_| row.try_get::<i32, _>("title_set_by_user").map(i64::from))
        .map_err(db_err("decoding a row"))?;
    Ok(StoredThread {
        meta: ThreadMetadata {
            title: row
                .try_get::<Option<String>, _>("title")
                .map_err(db_err("decoding a row"))?,
            id: get_str(row, "id")?,
            created_at: Timestamp::from_micros(get_i64(row, "created_at")?),
            status,
            metadata,
        },
        title_set_by_user: title_flag != 0,
        tutor_state,
        updated_at: Timestamp::from_micros(get_i64(row, "updated_at")?),
    })
}

/// An item from a row of [`ITEM_COLS`]; with a lease, an interrupted reply is presented with
/// [`INCOMPLETE_NOTE`] (the stored text stays the model's own).
fn item_from_row(row: &AnyRow, lease: Option<Duration>) -> Result<ThreadItem, StoreError> {
    let mut item: ThreadItem =
        serde_json::from_str(&get_str(row, "payload")?).map_err(corrupt("item"))?;
    if let Some(lease) = lease {
        let state = row
            .try_get::<Option<String>, _>("stream_state")
            .map_err(db_err("decoding a row"))?;
        let updated = get_i64(row, "updated_at")?;
        if StreamState::interrupted(state.as_deref(), updated, lease, Timestamp::now().micros()) {
            stream::mark_incomplete(&mut item);
        }
    }
    Ok(item)
}

/// Whether an item is an assistant message (used to detect the first turn).
pub fn is_assistant(item: &ThreadItem) -> bool {
    matches!(item.body, ItemBody::AssistantMessage { .. })
}
