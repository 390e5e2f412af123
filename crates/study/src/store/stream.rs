//! Streaming replies and idempotent user messages in the store.
//!
//! A reply row is inserted at its first token with `stream_state = 'streaming'` and rewritten at
//! each checkpoint (text so far, `updated_at` = now). Its final write clears the state (complete)
//! or sets `'incomplete'`. A `streaming` row whose `updated_at` is older than the store's stream
//! lease belongs to a turn whose process died: listings show it as incomplete, and history keeps
//! the model's text as it was checkpointed.
//!
//! User messages carry two optional keys: `request_key` (the client's `Idempotency-Key`, unique
//! per user, so a retried request finds the first one even when both race) and `content_key` (a
//! hash of where the text was sent, the text and the mode, for the short duplicate window used
//! when the client sends no key).

use std::time::Duration;

use platform::db::ExecuteWrite;
use sqlx::{AssertSqlSafe, Row};

use super::{ITEM_COLS, Owner, StoreError, ThreadStore, corrupt, db_err, item_from_row};
use crate::chatkit::{AssistantContent, ItemBody, ThreadItem, ThreadMetadata, Timestamp};

/// Appended (on the wire only) to a reply that ended before the model finished.
pub const INCOMPLETE_NOTE: &str = "\n\n*(This reply was interrupted before it finished.)*";

/// Where a reply's stream stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamState {
    /// Still being generated and checkpointed.
    Streaming,
    /// Ended early (provider failure, stop, or a crash noticed later).
    Incomplete,
    /// Finished normally.
    Complete,
}

impl StreamState {
    fn column(self) -> Option<&'static str> {
        match self {
            StreamState::Streaming => Some("streaming"),
            StreamState::Incomplete => Some("incomplete"),
            StreamState::Complete => None,
        }
    }

    /// True when a row with this `stream_state` and last checkpoint is an interrupted reply.
    pub fn interrupted(state: Option<&str>, updated_at: i64, lease: Duration, now: i64) -> bool {
        match state {
            Some("incomplete") => true,
            Some("streaming") => {
                let lease_us = i64::try_from(lease.as_micros()).unwrap_or(i64::MAX);
                now.saturating_sub(updated_at) > lease_us
            }
            _ => false,
        }
    }
}

/// Mark an assistant message as interrupted for display.
pub(super) fn mark_incomplete(item: &mut ThreadItem) {
    if let ItemBody::AssistantMessage { content } = &mut item.body {
        match content.last_mut() {
            Some(last) => last.text.push_str(INCOMPLETE_NOTE),
            None => content.push(AssistantContent::text(INCOMPLETE_NOTE.trim_start())),
        }
    }
}

/// The duplicate-detection keys of a new user message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemKeys {
    /// The client's idempotency key (already scoped by request type by the caller).
    pub request_key: Option<String>,
    /// Hash of scope, text and mode (see [`ItemKeys::content_key`]).
    pub content_key: Option<String>,
}

impl ItemKeys {
    /// A content key: SHA-256 over where the message goes (a thread id, or `new` with the lesson
    /// path for a new thread), the mode and the text.
    pub fn content_key(scope: &str, mode: &str, text: &str) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [scope, mode, text] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(&h.finalize()[..16])
    }
}

/// The outcome of inserting a keyed user message.
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    /// The message is new and stored.
    New,
    /// A message with the same request key already exists: nothing was written.
    Duplicate(ThreadItem),
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

impl ThreadStore {
    /// Insert the first checkpoint of a reply (`streaming`, `updated_at` = now).
    pub async fn begin_reply(&self, owner: &Owner, item: &ThreadItem) -> Result<(), StoreError> {
        let payload = serde_json::to_string(item).map_err(corrupt("item"))?;
        sqlx::query(
            "INSERT INTO study_items (user_id, thread_id, id, type, created_at, payload, \
             stream_state, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'streaming', $7)",
        )
        .bind(&owner.user_id)
        .bind(&item.thread_id)
        .bind(&item.id)
        .bind(item.body.type_name())
        .bind(item.created_at.micros())
        .bind(payload)
        .bind(Timestamp::now().micros())
        .execute_write(&self.db)
        .await
        .map_err(db_err("starting a reply"))?;
        Ok(())
    }

    /// Rewrite a reply with its text so far and its state; `updated_at` becomes now.
    pub async fn checkpoint_reply(
        &self,
        owner: &Owner,
        item: &ThreadItem,
        state: StreamState,
    ) -> Result<(), StoreError> {
        let payload = serde_json::to_string(item).map_err(corrupt("item"))?;
        let done = sqlx::query(
            "UPDATE study_items SET payload = $4, stream_state = $5, updated_at = $6 \
             WHERE user_id = $1 AND thread_id = $2 AND id = $3",
        )
        .bind(&owner.user_id)
        .bind(&item.thread_id)
        .bind(&item.id)
        .bind(payload)
        .bind(state.column())
        .bind(Timestamp::now().micros())
        .execute_write(&self.db)
        .await
        .map_err(db_err("checkpointing a reply"))?;
        if done.rows_affected() == 0 {
            // Deleted meanwhile (thread deleted, retry): nothing to keep.
            return Err(StoreError::NotFound(format!("item {}", item.id)));
        }
        Ok(())
    }

    /// Refresh a streaming reply's lease without rewriting its text.
    pub async fn touch_reply(&self, owner: &Owner, item: &ThreadItem) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE study_items SET updated_at = $4 \
             WHERE user_id = $1 AND thread_id = $2 AND id = $3 AND stream_state = 'streaming'",
        )
        .bind(&owner.user_id)
        .bind(&item.thread_id)
        .bind(&item.id)
        .bind(Timestamp::now().micros())
        .execute_write(&self.db)
        .await
        .map_err(db_err("refreshing a reply lease"))?;
        Ok(())
    }

    /// The user message stored for this request key, if any.
    pub async fn find_by_request_key(
        &self,
        owner: &Owner,
        key: &str,
    ) -> Result<Option<ThreadItem>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ITEM_COLS} FROM study_items WHERE user_id = $1 AND request_key = $2"
        )))
        .bind(&owner.user_id)
        .bind(key)
        .fetch_optional(self.db.pool())
        .await
        .map_err(db_err("looking up a request key"))?;
        row.map(|r| item_from_row(&r, None)).transpose()
    }

    /// The newest user message with this content key created at or after `since`, if any.
    pub async fn find_recent_by_content(
        &self,
        owner: &Owner,
        content_key: &str,
        since: Timestamp,
    ) -> Result<Option<ThreadItem>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ITEM_COLS} FROM study_items WHERE user_id = $1 AND content_key = $2 \
             AND created_at >= $3 ORDER BY created_at DESC, id DESC LIMIT 1"
        )))
        .bind(&owner.user_id)
        .bind(content_key)
        .bind(since.micros())
        .fetch_optional(self.db.pool())
        .await
        .map_err(db_err("looking up a recent message"))?;
        row.map(|r| item_from_row(&r, None)).transpose()
    }

    /// Insert a user message with its keys. A request key seen before → [`Inserted::Duplicate`]
    /// with the first message, and nothing written.
    pub async fn add_user_item(
        &self,
        owner: &Owner,
        item: &ThreadItem,
        keys: &ItemKeys,
    ) -> Result<Inserted, StoreError> {
        let q = insert_keyed(owner, item, keys)?;
        match q.execute_write(&self.db).await {
            Ok(_) => Ok(Inserted::New),
            Err(e) if is_unique_violation(&e) && keys.request_key.is_some() => {
                self.duplicate_of(owner, keys).await
            }
            Err(e) => Err(db_err("adding a message")(e)),
        }
    }

    /// Insert a new thread and its first (keyed) message atomically; a request key seen before →
    /// [`Inserted::Duplicate`] and neither is written.
    pub async fn create_thread_with_user_item(
        &self,
        owner: &Owner,
        meta: &ThreadMetadata,
        item: &ThreadItem,
        keys: &ItemKeys,
    ) -> Result<Inserted, StoreError> {
        let mut tx = self
            .db
            .begin_write()
            .await
            .map_err(db_err("starting a thread creation"))?;
        super::insert_thread(owner, meta)?
            .execute(&mut *tx)
            .await
            .map_err(db_err("creating a thread"))?;
        match insert_keyed(owner, item, keys)?.execute(&mut *tx).await {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) && keys.request_key.is_some() => {
                drop(tx); // rolls back the thread row
                return self.duplicate_of(owner, keys).await;
            }
            Err(e) => return Err(db_err("adding the first item")(e)),
        }
        tx.commit()
            .await
            .map_err(db_err("committing a thread creation"))?;
        Ok(Inserted::New)
    }

    async fn duplicate_of(&self, owner: &Owner, keys: &ItemKeys) -> Result<Inserted, StoreError> {
        let key = keys.request_key.as_deref().unwrap_or_default();
        match self.find_by_request_key(owner, key).await? {
            Some(first) => Ok(Inserted::Duplicate(first)),
            None => Err(StoreError::Invalid(format!(
                "request key {key:?} collided with a message that no longer exists; retry with a new key"
            ))),
        }
    }

    /// The visible items of a thread after `item`, oldest first (at most 100), as listings show
    /// them. Used to answer a duplicate request with what the first one produced.
    pub async fn items_after(
        &self,
        owner: &Owner,
        item: &ThreadItem,
    ) -> Result<Vec<ThreadItem>, StoreError> {
        let cursor = Some((item.created_at.micros(), item.id.clone()));
        let page = self
            .items_page(
                owner,
                &item.thread_id,
                crate::chatkit::requests::Order::Asc,
                cursor,
                100,
                true,
            )
            .await?;
        Ok(page
            .data
            .into_iter()
            .filter(|i| !i.body.is_hidden())
            .collect())
    }

    /// True when a reply after `item` finished, or is streaming with a live lease: a repeat of
    /// `item` is then a retry of a turn that worked (a failed or dead one is tried again).
    pub async fn has_live_reply_after(
        &self,
        owner: &Owner,
        item: &ThreadItem,
    ) -> Result<bool, StoreError> {
        let lease_us = i64::try_from(self.stream_lease.as_micros()).unwrap_or(i64::MAX);
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM study_items WHERE user_id = $1 AND thread_id = $2 \
             AND type = 'assistant_message' \
             AND (created_at > $3 OR (created_at = $3 AND id > $4)) \
             AND (stream_state IS NULL OR (stream_state = 'streaming' AND updated_at > $5))",
        )
        .bind(&owner.user_id)
        .bind(&item.thread_id)
        .bind(item.created_at.micros())
        .bind(&item.id)
        .bind(Timestamp::now().micros().saturating_sub(lease_us))
        .fetch_one(self.db.pool())
        .await
        .map_err(db_err("checking for a reply"))?;
        let n = row
            .try_get::<i64, _>("n")
            .map_err(db_err("decoding a row"))?;
        Ok(n > 0)
    }

    /// Rows of this thread still marked `streaming` (for tests and diagnostics).
    pub async fn streaming_count(&self, owner: &Owner, thread_id: &str) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM study_items WHERE user_id = $1 AND thread_id = $2 \
             AND stream_state = 'streaming'",
        )
        .bind(&owner.user_id)
        .bind(thread_id)
        .fetch_one(self.db.pool())
        .await
        .map_err(db_err("counting streaming replies"))?;
        row.try_get::<i64, _>("n").map_err(db_err("decoding a row"))
    }
}

type AnyQuery = sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments>;

fn insert_keyed(owner: &Owner, item: &ThreadItem, keys: &ItemKeys) -> Result<AnyQuery, StoreError> {
    let payload = serde_json::to_string(item).map_err(corrupt("item"))?;
    Ok(sqlx::query(
        "INSERT INTO study_items (user_id, thread_id, id, type, created_at, payload, \
         request_key, content_key, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $5)",
    )
    .bind(owner.user_id.clone())
    .bind(item.thread_id.clone())
    .bind(item.id.clone())
    .bind(item.body.type_name())
    .bind(item.created_at.micros())
    .bind(payload)
    .bind(keys.request_key.clone())
    .bind(keys.content_key.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupted_rows() {
        let lease = Duration::from_secs(30);
        let now = 100_000_000;
        assert!(!StreamState::interrupted(None, 0, lease, now));
        assert!(StreamState::interrupted(
            Some("incomplete"),
            now,
            lease,
            now
        ));
        assert!(!StreamState::interrupted(
            Some("streaming"),
            now - 29_000_000,
            lease,
            now
        ));
        assert!(StreamState::interrupted(
            Some("streaming"),
            now - 31_000_000,
            lease,
            now
        ));
    }

    #[test]
    fn content_keys_separate_scope_mode_and_text() {
        let a = ItemKeys::content_key("thr_1", "teach", "A");
        assert_eq!(a, ItemKeys::content_key("thr_1", "teach", "A"));
        assert_ne!(a, ItemKeys::content_key("thr_2", "teach", "A"));
        assert_ne!(a, ItemKeys::content_key("thr_1", "ask", "A"));
        assert_ne!(
            ItemKeys::content_key("ab", "c", ""),
            ItemKeys::content_key("a", "bc", "")
        );
    }
}
