//! Convergence of canonical objects with the journal: materialize, confirm (batched), reconcile.

use super::*;

/// How long the confirmer gathers applied copies before one flush and one confirmation batch
/// (local storage).
const CONFIRM_GATHER: std::time::Duration = std::time::Duration::from_millis(250);

impl Engine {
    /// Materialize right after this process committed `state` at the key with pending `ticket`:
    /// apply that state without reading it back, then queue its confirmation with the ticket.
    /// The confirmation is the same as [`Engine::materialize`]'s (deleting the pending row `WHERE
    /// ticket = t` succeeds only if no commit touched the key since ours, so what we applied is
    /// current), batched by the confirmer task (see [`crate::confirm`]); when it fails, a later
    /// commit exists and the general loop takes over. Failures are logged and left to the
    /// reconciler, as in [`Engine::materialize_logged`].
    pub(super) async fn materialize_committed(
        &self,
        book: &str,
        path: &str,
        user: &str,
        ticket: i64,
        state: Option<&str>,
    ) {
        let key = key_for(book, path, user);
        let applied = match state {
            Some(sha) => self.inner.storage.copy(&blob_key(sha), &key).await,
            None => self.inner.storage.delete(&key).await,
        };
        match applied {
            // Confirmed in a batch by the confirmer task (see `crate::confirm`).
            Ok(()) => self.inner.confirm.push(Applied {
                book: book.to_string(),
                path: path.to_string(),
                user: user.to_string(),
                ticket,
            }),
            Err(e) => {
                metrics::counter!("panaversityfs_materialize_failures_total").increment(1);
                tracing::warn!(error = %e, book, path, user, "materialization deferred; the reconciler or fsck will finish it");
                self.keep_pending(book, path, user).await;
            }
        }
    }

    /// Start this engine's confirmer: a task that confirms queued materializations in batches
    /// and ends when the engine is dropped.
    pub(super) fn spawn_confirmer(&self) {
        let queue = self.inner.confirm.clone();
        let weak = Arc::downgrade(&self.inner);
        // On local storage each batch costs a `syncfs` (see `flush_applied`): gather a period's
        // worth of applied copies first, so the flush is shared and stays off the disk's busy
        // path. Elsewhere confirm at once.
        let gather = if self.inner.storage.is_local_fs() {
            CONFIRM_GATHER
        } else {
            std::time::Duration::ZERO
        };
        tokio::spawn(async move {
            while queue.wait().await {
                if !gather.is_zero() {
                    tokio::time::sleep(gather).await;
                }
                let Some(inner) = weak.upgrade() else { break };
                Engine { inner }.confirm_queued().await;
            }
        });
    }

    /// Confirm every materialization applied by this engine so far (and re-materialize the keys
    /// whose confirmation shows a later commit), waiting for a batch already in progress. Writes
    /// return before their confirmation (see [`crate::confirm`]); call this to observe the
    /// settled state, e.g. before comparing canonical objects with the journal.
    pub async fn settle(&self) {
        self.confirm_queued().await;
    }

    pub(super) async fn confirm_queued(&self) {
        let _flushing = self.inner.confirm.flushing.lock().await;
        loop {
            let mut all = self.inner.confirm.take();
            if all.is_empty() {
                return;
            }
            while !all.is_empty() {
                let rest = all.split_off(all.len().min(confirm::BATCH));
                let batch = std::mem::replace(&mut all, rest);
                let confirmed = match self.clear_pending_batch(&batch).await {
                    Ok(c) => c,
                    Err(e) => {
                        // The pending rows stay: the reconciler (or fsck) completes them.
                        metrics::counter!("panaversityfs_materialize_failures_total")
                            .increment(batch.len() as u64);
                        tracing::warn!(error = %e, count = batch.len(), "confirming materializations failed; the reconciler or fsck will finish them");
                        continue;
                    }
                };
                // A failed confirmation means a later commit touched the key after the commit
                // that applied it: materialize it again until the applied state is current.
                let mut again: Vec<(&str, &str, &str)> = batch
                    .iter()
                    .zip(confirmed)
                    .filter(|(_, ok)| !ok)
                    .map(|(a, _)| (a.book.as_str(), a.path.as_str(), a.user.as_str()))
                    .collect();
                again.sort_unstable();
                again.dedup();
                for (book, path, user) in again {
                    self.materialize_logged(book, path, user).await;
                }
            }
        }
    }

    /// Delete each entry's pending row if it still holds the entry's ticket, in one transaction
    /// (one statement on PostgreSQL); per entry, whether it did.
    pub(super) async fn clear_pending_batch(&self, batch: &[Applied]) -> Result<Vec<bool>> {
        self.flush_applied().await?;
        let db = &self.inner.db;
        if db.kind() == platform::db::DbKind::Postgres {
            let rows: Vec<(String, String, String, i64)> =
                sqlx::query_as(confirm::SQL_CLEAR_PENDING_BATCH_PG)
                    .bind(confirm::batch_json(batch))
                    .fetch_all(db.pool())
                    .await
                    .map_err(db_err("confirm materializations"))?;
            let done: std::collections::HashSet<(String, String, String, i64)> =
                rows.into_iter().collect();
            return Ok(batch
                .iter()
                .map(|a| done.contains(&(a.book.clone(), a.path.clone(), a.user.clone(), a.ticket)))
                .collect());
        }
        let owned = batch.to_vec();
        if let Some(r) = db
            .write_sync(move |c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let mut out = Vec::with_capacity(owned.len());
                for a in &owned {
                    let n = sync_stmt(
                        &tx,
                        confirm::SQL_CLEAR_PENDING,
                        &[&a.book, &a.path, &a.user, &a.ticket],
                    )?
                    .raw_execute()?;
                    out.push(n == 1);
                }
                tx.commit()?;
                Ok(out)
            })
            .await
        {
            return r.map_err(|e| {
                PfsError::Internal(format!("database (confirm materializations): {e:#}"))
            });
        }
        let mut tx = db.begin_write().await.map_err(db_err("begin confirm"))?;
        let mut out = Vec::with_capacity(batch.len());
        for a in batch {
            let n = sqlx::query(confirm::SQL_CLEAR_PENDING)
                .bind(a.book.as_str())
                .bind(a.path.as_str())
                .bind(a.user.as_str())
                .bind(a.ticket)
                .execute(&mut *tx)
                .await
                .map_err(db_err("confirm materialization"))?
                .rows_affected();
            out.push(n == 1);
        }
        tx.commit().await.map_err(db_err("commit confirm"))?;
        Ok(out)
    }

    pub(super) async fn materialize_logged(&self, book: &str, path: &str, user: &str) {
        if let Err(e) = self.materialize(book, path, user).await {
            metrics::counter!("panaversityfs_materialize_failures_total").increment(1);
            tracing::warn!(error = %e, book, path, user, "materialization deferred; the reconciler or fsck will finish it");
            self.keep_pending(book, path, user).await;
        }
    }

    /// Make the canonical object of (book, path, user) hold what the journal says (copy of the
    /// blob, or nothing), looping until the state applied is confirmed current.
    ///
    /// Each round reads the pending ticket and the journal hash in one statement (one snapshot),
    /// applies that state, then confirms: with a ticket, deleting the pending row `WHERE ticket
    /// = t` succeeds only if no commit touched the key since the read (every commit bumps the
    /// ticket), so the applied state is current; without one, a re-read must show the same state.
    /// Anyone who applied a stale state fails its confirmation and applies again, so the last
    /// apply of all is of the last committed state.
    pub(crate) async fn materialize(&self, book: &str, path: &str, user: &str) -> Result<()> {
        let key = key_for(book, path, user);
        for attempt in 0..16 {
            if attempt > 0 {
                metrics::counter!("panaversityfs_materialize_retry_total").increment(1);
            }
            let (ticket, state) = self.pending_and_state(book, path, user).await?;
            match &state {
                Some(sha) => self.inner.storage.copy(&blob_key(sha), &key).await?,
                None => self.inner.storage.delete(&key).await?,
            }
            match ticket {
                Some(t) => {
                    if self.clear_pending_ticket(book, path, user, t).await? {
                        return Ok(());
                    }
                }
                None => {
                    let (t2, s2) = self.pending_and_state(book, path, user).await?;
                    if t2.is_none() && s2 == state {
                        return Ok(());
                    }
                }
            }
        }
        Err(PfsError::Storage(format!(
            "{key} kept changing while being materialized; it stays pending"
        )))
    }

    /// Make every canonical copy applied so far durable before a confirmation forgets its
    /// pending row, so that after a power loss a canonical object is either right or still
    /// pending (local files: one `syncfs` for the batch; an object store's completed put is
    /// already durable).
    pub(super) async fn flush_applied(&self) -> Result<()> {
        if !self.inner.storage.is_local_fs() {
            return Ok(());
        }
        let storage = self.inner.storage.clone();
        match tokio::task::spawn_blocking(move || storage.sync_all_blocking()).await {
            Ok(Some(r)) => r,
            Ok(None) => Ok(()),
            Err(e) => Err(PfsError::Internal(format!("storage sync task failed: {e}"))),
        }
    }

    /// Delete the pending row of a key if it still holds `ticket`; whether it did.
    pub(super) async fn clear_pending_ticket(
        &self,
        book: &str,
        path: &str,
        user: &str,
        ticket: i64,
    ) -> Result<bool> {
        self.flush_applied().await?;
        self.pending_row_stmt(
            confirm::SQL_CLEAR_PENDING,
            "clear pending ticket",
            book,
            path,
            user,
            ticket,
        )
        .await
        .map(|n| n == 1)
    }

    /// After a failed materialization, make sure the key is pending, so the reconciler (not
    /// only fsck) finishes it: a later commit may have confirmed the key's pending row already,
    /// and the failed apply (a stale state, or one a storage error left half done) may have
    /// changed the canonical object after that commit's own apply. Ticket 0 stands for "no
    /// commit of its own"; an existing row (a newer commit's) is kept.
    pub(super) async fn keep_pending(&self, book: &str, path: &str, user: &str) {
        if let Err(e) = self
            .pending_row_stmt(SQL_KEEP_PENDING, "keep key pending", book, path, user, 0)
            .await
        {
            tracing::warn!(error = %e, book, path, user, "could not mark a failed materialization pending; fsck will find it");
        }
    }

    /// Run `sql` (parameters: book, path, user, ticket) on the write connection; rows affected.
    pub(super) async fn pending_row_stmt(
        &self,
        sql: &'static str,
        ctx: &'static str,
        book: &str,
        path: &str,
        user: &str,
        ticket: i64,
    ) -> Result<u64> {
        let (b, p, u) = (book.to_string(), path.to_string(), user.to_string());
        if let Some(r) = self
            .inner
            .db
            .write_sync(move |c| sync_stmt(c, sql, &[&b, &p, &u, &ticket])?.raw_execute())
            .await
        {
            return r
                .map(|n| n as u64)
                .map_err(|e| PfsError::Internal(format!("database ({ctx}): {e:#}")));
        }
        let w = self.inner.db.lock_writes().await;
        let n = sqlx::query(sql)
            .bind(book)
            .bind(path)
            .bind(user)
            .bind(ticket)
            .execute(self.inner.db.pool())
            .await
            .map_err(db_err(ctx))?
            .rows_affected();
        drop(w);
        Ok(n)
    }

    /// The pending ticket and journal hash of a key, read in one statement.
    pub(super) async fn pending_and_state(
        &self,
        book: &str,
        path: &str,
        user: &str,
    ) -> Result<(Option<i64>, Option<String>)> {
        // The statement selects two scalar subqueries, so it always returns one row.
        Ok(self
            .key_pair(
                "read materialization state",
                SQL_PENDING_AND_STATE,
                book,
                path,
                user,
            )
            .await?
            .unwrap_or((None, None)))
    }

    /// Complete every pending materialization (after a crash or a storage outage). Returns how
    /// many entries were completed; entries that still fail stay pending.
    pub async fn reconcile_pending(&self) -> Result<usize> {
        let rows = sqlx::query(
            "SELECT book_id, path, user_id FROM pending_materializations ORDER BY ticket",
        )
        .fetch_all(self.inner.db.pool())
        .await
        .map_err(db_err("list pending materializations"))?;
        let mut done = 0;
        let mut first_err = None;
        for r in &rows {
            let g = db_err("decode pending row");
            let book: String = r.try_get("book_id").map_err(&g)?;
            let path: String = r.try_get("path").map_err(&g)?;
            let user: String = r.try_get("user_id").map_err(&g)?;
            match self.materialize(&book, &path, &user).await {
                Ok(()) => done += 1,
                Err(e) => {
                    tracing::warn!(error = %e, book, path, user, "pending materialization failed again");
                    self.keep_pending(&book, &path, &user).await;
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) if done == 0 && !rows.is_empty() => Err(e),
            _ => Ok(done),
        }
    }

    /// Run [`Engine::reconcile_pending`] every `every` in a background task (for servers; a
    /// crash-free process needs it only after storage outages). Also publishes the
    /// `panaversityfs_pending_materializations` and `panaversityfs_journal_entries_total`
    /// gauges. Abort the handle to stop it.
    pub fn spawn_reconciler(&self, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM file_journal")
                    .fetch_one(engine.inner.db.pool())
                    .await
                {
                    Ok(n) => metrics::gauge!("panaversityfs_journal_entries_total").set(n as f64),
                    Err(e) => {
                        tracing::warn!(error = %e, "reconciler: counting journal rows failed")
                    }
                }
                match engine.pending_count().await {
                    Ok(0) => {
                        metrics::gauge!("panaversityfs_pending_materializations").set(0.0);
                        continue;
                    }
                    Ok(n) => {
                        metrics::gauge!("panaversityfs_pending_materializations").set(n as f64)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reconciler: counting pending materializations failed");
                        continue;
                    }
                }
                if let Err(e) = engine.reconcile_pending().await {
                    tracing::warn!(error = %e, "reconciler: pending materializations still failing");
                }
            }
        })
    }

    /// Number of pending materializations (after confirming this engine's queued ones, see
    /// [`Engine::settle`]).
    pub async fn pending_count(&self) -> Result<i64> {
        self.settle().await;
        sqlx::query_scalar("SELECT COUNT(*) FROM pending_materializations")
            .fetch_one(self.inner.db.pool())
            .await
            .map_err(db_err("count pending"))
    }
}
