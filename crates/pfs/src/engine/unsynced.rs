//! Unsynced blobs (see the module docs of `engine`): restore at open, periodic flush.

use super::*;

impl Engine {
    /// Rewrite every blob still listed in `unsynced_blobs` whose file a crash lost or tore, then
    /// flush the store and forget them (see "Unsynced blobs" in the module docs). Runs at open,
    /// before anything reads or materializes blobs.
    pub(super) async fn restore_unsynced_blobs(&self) -> Result<()> {
        if !self.inner.storage.is_local_fs() {
            return Ok(());
        }
        // A few rows at a time: a row holds up to a whole blob (1 MiB), and start-up memory
        // counts toward the process peak.
        const BATCH: i64 = 8;
        let (mut after, mut restored) = (0i64, 0u64);
        loop {
            let rows: Vec<(i64, String, Vec<u8>)> = sqlx::query_as(
                "SELECT id, sha256, data FROM unsynced_blobs WHERE id > $1 ORDER BY id LIMIT $2",
            )
            .bind(after)
            .bind(BATCH)
            .fetch_all(self.inner.db.pool())
            .await
            .map_err(db_err("read unsynced blobs"))?;
            let Some(last) = rows.last() else { break };
            after = last.0;
            let storage = self.inner.storage.clone();
            restored += tokio::task::spawn_blocking(move || -> Result<u64> {
                let mut n = 0;
                for (_, sha, data) in &rows {
                    if sha256_hex(data) != *sha {
                        // Never write bytes under a name they do not hash to.
                        tracing::warn!(sha256 = %sha, "unsynced blob copy does not match its hash; skipped");
                        continue;
                    }
                    if let Some(r) = storage.restore_blob_blocking(sha, data) {
                        n += u64::from(r?);
                    }
                }
                Ok(n)
            })
            .await
            .map_err(|e| PfsError::Internal(format!("blob restore task failed: {e}")))??;
        }
        if restored > 0 {
            metrics::counter!("panaversityfs_unsynced_blobs_restored_total").increment(restored);
            tracing::warn!(
                count = restored,
                "rewrote blobs lost or torn by a crash from their durable copies"
            );
        }
        self.sync_unsynced_blobs().await
    }

    /// Flush the local store's filesystem, then forget the `unsynced_blobs` rows committed before
    /// the flush began (their files are durable now).
    pub(super) async fn sync_unsynced_blobs(&self) -> Result<()> {
        let db = &self.inner.db;
        let mark: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM unsynced_blobs")
            .fetch_one(db.pool())
            .await
            .map_err(db_err("read unsynced blobs"))?;
        let Some(mark) = mark else { return Ok(()) };
        let storage = self.inner.storage.clone();
        match tokio::task::spawn_blocking(move || storage.sync_all_blocking()).await {
            Ok(Some(r)) => r?,
            Ok(None) => return Ok(()),
            Err(e) => return Err(PfsError::Internal(format!("storage sync task failed: {e}"))),
        }
        const SQL: &str = "DELETE FROM unsynced_blobs WHERE id <= $1";
        if let Some(r) = db
            .write_sync(move |c| sync_stmt(c, SQL, &[&mark])?.raw_execute())
            .await
        {
            return r
                .map(|_| ())
                .map_err(|e| PfsError::Internal(format!("database (forget synced blobs): {e:#}")));
        }
        let _w = db.lock_writes().await;
        sqlx::query(SQL)
            .bind(mark)
            .execute(db.pool())
            .await
            .map_err(db_err("forget synced blobs"))?;
        Ok(())
    }

    /// Start this engine's blob syncer: after a write leaves a blob unsynced, wait one
    /// [`EngineConfig::blob_sync_interval`] (gathering that period's writes), then flush and
    /// forget them. Ends when the engine is dropped.
    pub(super) fn spawn_blob_syncer(&self) {
        let notify = self.inner.unsynced.clone();
        let weak = Arc::downgrade(&self.inner);
        let every = self.inner.cfg.blob_sync_interval;
        tokio::spawn(async move {
            loop {
                notify.notified().await;
                tokio::time::sleep(every).await;
                let Some(inner) = weak.upgrade() else { break };
                if let Err(e) = (Engine { inner }).sync_unsynced_blobs().await {
                    metrics::counter!("panaversityfs_blob_sync_failures_total").increment(1);
                    tracing::warn!(error = %e, "flushing unsynced blobs failed; their database copies stay until a flush succeeds");
                }
            }
        });
    }
}
