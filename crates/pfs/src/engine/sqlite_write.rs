//! The SQLite-file commit strategy: the write's statements as one job of a group commit on the
//! direct write connection (`platform::db::Db::write_grouped_blocking`), and with local storage
//! the whole write (blob, commit, canonical copy) on one blocking thread.

use super::*;

impl Engine {
    /// The owned inputs of a synchronous write transaction ([`sync_write_tx`]).
    pub(super) fn intent(
        &self,
        req: WriteReq<'_>,
        sha: &Sha256,
        size: u64,
        expected: &Expect,
    ) -> Result<WriteIntent> {
        let user = req.ns.journal_user();
        Ok(WriteIntent {
            agent_id: req.actor.agent_id().to_string(),
            op: req.op,
            book: req.book.as_str().to_string(),
            path: req.path.as_str().to_string(),
            user: user.to_string(),
            shard: audit::shard_of(req.book.as_str(), req.path.as_str(), user),
            sha: sha.clone(),
            size: i64::try_from(size)
                .map_err(|_| PfsError::InvalidInput("file too large".into()))?,
            now: now_micros(),
            backend: self.inner.storage.backend_name().to_string(),
            expected: match expected {
                Expect::Absent => None,
                Expect::Hash(h) => Some(h.clone()),
            },
            started: req.started,
            request: req.actor.request().cloned(),
        })
    }

    /// [`Engine::commit_write`]'s transaction on the synchronous SQLite write connection: the
    /// same statements (the same SQL text), run in one blocking task instead of one thread
    /// hand-off per statement (see `platform::db::sqlite_read`). `None` when the compare-and-swap
    /// finds another state (nothing was written; the caller takes the general path, which
    /// reports and audits it).
    pub(super) async fn commit_write_sync(
        &self,
        w: WriteIntent,
        size: u64,
    ) -> Result<Option<WriteOutcome>> {
        let faults = self.inner.cfg.faults.clone();
        let (book, path, user) = (w.book.clone(), w.path.clone(), w.user.clone());
        let (sha, prev_hash) = (w.sha.clone(), w.expected.clone());
        let res = self
            .inner
            .db
            .write_grouped(move |conn| sync_write_tx(conn, &w, &faults, None))
            .await;
        let Some((version, seq)) = self.sync_committed(res)? else {
            return Ok(None);
        };
        self.materialize_committed(&book, &path, &user, seq, Some(sha.as_str()))
            .await;
        Ok(Some(sync_outcome(sha, size, prev_hash, version)))
    }

    /// `(version, ticket)` of a committed [`sync_write_tx`], `None` when it lost the
    /// compare-and-swap (or no write connection exists); also the test fault "crash after commit".
    pub(super) fn sync_committed(
        &self,
        res: Option<anyhow::Result<SyncTxResult>>,
    ) -> Result<Option<(i64, i64)>> {
        let committed = match res {
            None => return Ok(None),
            Some(Err(e)) => return Err(crate::db::sync_anyhow_err("commit write", e)),
            Some(Ok(r)) => r?,
        };
        if committed.is_some()
            && let Some(f) = &self.inner.cfg.faults
            && f.after_commit_crash()
        {
            return Err(PfsError::Internal(
                "simulated crash after commit (test fault)".into(),
            ));
        }
        Ok(committed)
    }

    /// A whole write on one blocking thread, for a SQLite file with local-file storage: store the
    /// blob, run the transaction (queued FIFO on the process's write lock), copy the blob to the
    /// canonical key and queue the confirmation. One thread hand-off per write instead of three
    /// (blob, transaction, copy), each of which also woke a parked thread.
    pub(super) async fn write_local(
        &self,
        req: WriteReq<'_>,
        sha: Sha256,
        bytes: Bytes,
        expected: Expect,
    ) -> Result<WriteOutcome> {
        let size = bytes.len() as u64;
        let w = self.intent(req, &sha, size, &expected)?;
        // If the write below leaves the blob unsynced and then loses its compare-and-swap, the
        // general path may still commit it (the file went back to the expected hash meanwhile):
        // it needs the bytes too.
        let unsynced = self.unsynced_copy(&bytes);
        let engine = self.clone();
        let res = tokio::task::spawn_blocking(move || engine.write_local_blocking(w, bytes)).await;
        match res {
            Ok(LocalWrite::Done(o)) => Ok(o),
            Ok(LocalWrite::Failed(e)) => Err(e),
            Ok(LocalWrite::BlobFailed(e)) => {
                self.audit_req_failure(req, &e).await;
                Err(e)
            }
            // The general path finds the current state again and reports and audits the failure
            // with the audit head held.
            Ok(LocalWrite::Lost) => {
                self.commit_write_pool(req, &sha, size, expected, unsynced.as_deref())
                    .await
            }
            Err(e) => Err(PfsError::Internal(format!("write task failed: {e}"))),
        }
    }

    pub(super) fn write_local_blocking(&self, w: WriteIntent, bytes: Bytes) -> LocalWrite {
        let storage = &self.inner.storage;
        // A small blob skips its fsync: its bytes commit with the journal row instead (see
        // "Unsynced blobs" in the module docs).
        let unsynced = self.unsynced_copy(&bytes);
        let deferred = unsynced.is_some();
        match storage.put_blob_blocking(&w.sha, &bytes, !deferred) {
            Some(Ok(())) => {}
            Some(Err(e)) => return LocalWrite::BlobFailed(e),
            None => return LocalWrite::Lost,
        }
        if let Some(c) = &self.inner.blobs {
            c.insert(&w.sha, &bytes);
        }
        let faults = self.inner.cfg.faults.clone();
        let job_w = w.clone();
        let res = self.inner.db.write_grouped_blocking(move |conn| {
            sync_write_tx(conn, &job_w, &faults, unsynced.as_deref())
        });
        if deferred {
            self.inner.unsynced.notify_one();
        }
        let (version, ticket) = match self.sync_committed(res) {
            Ok(Some(v)) => v,
            Ok(None) => return LocalWrite::Lost,
            Err(e) => return LocalWrite::Failed(e),
        };
        let key = key_for(&w.book, &w.path, &w.user);
        match storage.copy_blocking(&blob_key(&w.sha), &key) {
            Some(Ok(())) => self.inner.confirm.push(Applied {
                book: w.book,
                path: w.path,
                user: w.user,
                ticket,
            }),
            Some(Err(e)) => {
                metrics::counter!("panaversityfs_materialize_failures_total").increment(1);
                tracing::warn!(error = %e, book = w.book, path = w.path, user = w.user, "materialization deferred; the reconciler or fsck will finish it");
                // As in `Engine::keep_pending`.
                let (b, p, u) = (&w.book, &w.path, &w.user);
                let kept = self.inner.db.write_sync_blocking(|c| {
                    sync_stmt(c, SQL_KEEP_PENDING, &[b, p, u, &0i64])?.raw_execute()
                });
                if let Some(Err(e)) = kept {
                    tracing::warn!(error = %e, book = w.book, path = w.path, user = w.user, "could not mark a failed materialization pending; fsck will find it");
                }
            }
            None => {}
        }
        LocalWrite::Done(sync_outcome(w.sha, bytes.len() as u64, w.expected, version))
    }
}
