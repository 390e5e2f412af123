//! Deferred confirmation of materializations.
//!
//! Every commit enqueues its key in `pending_materializations` with a fresh ticket; after the
//! committer has applied the committed state to the canonical object it must *confirm* it: delete
//! the pending row if it still holds its ticket. A successful delete proves no later commit touched
//! the key since, so the state applied was current; a failed one means a later commit exists and
//! the key is materialized again by the general loop ([`crate::Engine`]'s `materialize`).
//!
//! Doing that delete inline cost every write a second write transaction (on SQLite: another turn
//! of the process's write lock and another thread hand-off; on PostgreSQL: another round trip).
//! Here the committer queues `(key, ticket)` instead and one background task per engine confirms
//! everything queued in one transaction (one statement on PostgreSQL). Under load a batch holds
//! many writes; when idle each write gets its own, as before, just off the request path.
//!
//! What this changes: a write returns once its canonical copy is applied, before it is confirmed.
//! Reads never depend on it (they serve the blob the journal names); only when two writers of the
//! same key apply their copies out of order is the canonical object briefly stale, until the
//! confirmer finds the failed delete and re-materializes (the same loop as before, later). A crash
//! before confirmation leaves the pending row, which the reconciler completes as after any crash.
//! [`crate::Engine::settle`] confirms everything queued so far and waits for it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// One applied materialization waiting for confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Applied {
    pub book: String,
    pub path: String,
    pub user: String,
    pub ticket: i64,
}

/// The queue of applied materializations of one engine, drained by its confirmer task.
#[derive(Default)]
pub(crate) struct ConfirmQueue {
    queue: Mutex<Vec<Applied>>,
    notify: Notify,
    closed: AtomicBool,
    /// Held while a batch is confirmed, so [`crate::Engine::settle`] also waits for a batch the
    /// background task has already taken.
    pub(crate) flushing: tokio::sync::Mutex<()>,
}

impl ConfirmQueue {
    /// Queue `a` and wake the confirmer.
    pub(crate) fn push(&self, a: Applied) {
        match self.queue.lock() {
            Ok(mut q) => q.push(a),
            Err(p) => p.into_inner().push(a),
        }
        self.notify.notify_one();
    }

    /// Everything queued so far.
    pub(crate) fn take(&self) -> Vec<Applied> {
        match self.queue.lock() {
            Ok(mut q) => std::mem::take(&mut *q),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        }
    }

    /// Wait until something is queued or the queue is closed; `false` once closed.
    pub(crate) async fn wait(&self) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        self.notify.notified().await;
        !self.closed.load(Ordering::Acquire)
    }

    /// Stop the confirmer (its engine is gone).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_one();
    }
}

/// Confirm at most this many entries per transaction.
pub(crate) const BATCH: usize = 256;

/// Confirm one entry: delete its pending row if it still holds the ticket.
pub(crate) const SQL_CLEAR_PENDING: &str = "DELETE FROM pending_materializations \
     WHERE book_id = $1 AND path = $2 AND user_id = $3 AND ticket = $4";

/// Confirm a batch on PostgreSQL in one statement: `$1` is a JSON array of
/// `{"b","p","u","t"}` objects; returns the entries whose row was deleted.
pub(crate) const SQL_CLEAR_PENDING_BATCH_PG: &str = "DELETE FROM pending_materializations m \
     USING json_to_recordset($1::json) AS d(b text, p text, u text, t bigint) \
     WHERE m.book_id = d.b AND m.path = d.p AND m.user_id = d.u AND m.ticket = d.t \
     RETURNING m.book_id, m.path, m.user_id, m.ticket";

/// The JSON argument of [`SQL_CLEAR_PENDING_BATCH_PG`].
pub(crate) fn batch_json(batch: &[Applied]) -> String {
    let items: Vec<serde_json::Value> = batch
        .iter()
        .map(|a| serde_json::json!({"b": a.book, "p": a.path, "u": a.user, "t": a.ticket}))
        .collect();
    serde_json::Value::Array(items).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(t: i64) -> Applied {
        Applied {
            book: "b".into(),
            path: "content/x \"q\".md".into(),
            user: "__base__".into(),
            ticket: t,
        }
    }

    #[test]
    fn queue_takes_everything_in_order() {
        let q = ConfirmQueue::default();
        q.push(a(1));
        q.push(a(2));
        assert_eq!(q.take(), vec![a(1), a(2)]);
        assert!(q.take().is_empty());
    }

    #[tokio::test]
    async fn wait_wakes_on_push_and_stops_on_close() {
        let q = std::sync::Arc::new(ConfirmQueue::default());
        q.push(a(1));
        assert!(q.wait().await, "a permit stored by push wakes the waiter");
        let q2 = q.clone();
        let h = tokio::spawn(async move { q2.wait().await });
        tokio::task::yield_now().await;
        q.close();
        assert!(!h.await.expect("join"));
        assert!(!q.wait().await);
    }

    #[test]
    fn batch_json_escapes_strings() {
        let j = batch_json(&[a(7)]);
        let v: serde_json::Value = serde_json::from_str(&j).expect("json");
        assert_eq!(v[0]["p"], "content/x \"q\".md");
        assert_eq!(v[0]["t"], 7);
    }
}
