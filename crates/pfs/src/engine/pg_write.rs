//! PostgreSQL's commit strategy for a successful write: one autocommit statement (compare-and-swap,
//! version row, audit head lock and row, bookkeeping), with the book's profile remembered.

use super::*;

impl Engine {
    /// PostgreSQL's fast write: with the book's profile remembered from an earlier write, no
    /// pre-check round trip: checks in memory, the blob, then the one write statement, which also
    /// requires the book to still have that profile. `None` (nothing written, nothing audited)
    /// when anything else is off — no remembered profile, a check fails, a stale or missing
    /// hash, a changed profile: the general path then does the whole write again and reports and
    /// audits whatever failure there is. A storage failure is audited and returned here.
    pub(super) async fn write_pg_fast(
        &self,
        req: WriteReq<'_>,
        bytes: &Bytes,
        expected_hash: Option<&str>,
    ) -> Result<Option<WriteOutcome>> {
        if self.inner.commit_path != CommitPath::Postgres {
            return Ok(None);
        }
        let Some(profile) = self.cached_profile(req.book.as_str()) else {
            return Ok(None);
        };
        if matches!(req.ns, Namespace::Overlay(_)) && req.path.area() != Area::Content
            || self.check_bytes(profile, req.path, bytes).is_err()
        {
            return Ok(None);
        }
        let expected = match expected_hash.map(Sha256::parse) {
            None => Expect::Absent,
            Some(Ok(h)) => Expect::Hash(h),
            Some(Err(_)) => return Ok(None),
        };
        let sha = Sha256::of(bytes);
        let size = bytes.len() as u64;
        // Bytes equal to the expected (current) hash are a no-op: the general path reports it
        // without writing (see `Engine::unchanged`).
        if i64::try_from(size).is_err() || matches!(&expected, Expect::Hash(h) if *h == sha) {
            return Ok(None);
        }
        // As on the general path: a storage failure is audited and reported, nothing committed.
        let unsynced = self.store_write_blob(req, &sha, bytes).await?;
        let one = self.intent(req, &sha, size, &expected)?;
        let version = self
            .commit_write_pg_once(one, &expected, unsynced.as_deref(), Some(profile))
            .await?;
        Ok(version.map(|v| WriteOutcome::of(expected, sha, size, v)))
    }

    /// PostgreSQL: a successful write in one autocommit statement ([`SQL_CREATE_ONCE_PG`] /
    /// [`SQL_UPDATE_ONCE_PG`]: compare-and-swap, version row, audit head lock, audit row with its
    /// row hash computed in SQL, bookkeeping), then materialization. One round trip instead of
    /// five (BEGIN, compare-and-swap, audit row, COMMIT). `None` when the compare-and-swap finds
    /// another state (or a racing create took the version number): nothing was written, and the
    /// caller's transaction takes over.
    /// With `profile`, the statement also requires the book to have that profile.
    pub(super) async fn commit_write_pg_once(
        &self,
        w: WriteIntent,
        expected: &Expect,
        unsynced_blob: Option<&[u8]>,
        profile: Option<Profile>,
    ) -> Result<Option<i64>> {
        let prev_hash = match expected {
            Expect::Absent => None,
            Expect::Hash(h) => Some(h.as_str()),
        };
        let row = NewAuditRow {
            agent_id: &w.agent_id,
            operation: w.op,
            book_id: w.book.as_str(),
            path: w.path.as_str(),
            user_id: &w.user,
            prev_hash,
            new_hash: Some(w.sha.as_str()),
            status: STATUS_SUCCESS,
            error_message: None,
            execution_time_ms: Some(w.started.elapsed().as_millis() as i64),
            request: w.request.as_ref(),
        };
        let ts = now_micros();
        let middle = audit::row_hash_middle(&row, w.shard, ts);
        // The statement commits by itself: a commit fault is injected before it (nothing written).
        if let Some(f) = &self.inner.cfg.faults {
            f.before_commit()?;
        }
        let res = sqlx::query(match expected {
            Expect::Absent => SQL_CREATE_ONCE_PG,
            Expect::Hash(_) => SQL_UPDATE_ONCE_PG,
        })
        .bind(w.book.as_str())
        .bind(w.path.as_str())
        .bind(w.user.as_str())
        .bind(w.sha.as_str())
        .bind(w.size)
        .bind(w.now)
        .bind(w.backend.as_str())
        .bind(prev_hash)
        .bind(w.agent_id.as_str())
        .bind(w.shard)
        .bind(&middle)
        .bind(ts)
        .bind(w.op)
        .bind(row.execution_time_ms)
        .bind(w.user == BASE_USER)
        .bind(unsynced_blob)
        .bind(profile.map(|p| p.as_str()))
        .bind(w.request.as_ref().map(RequestKey::id))
        .bind(w.request.as_ref().map(RequestKey::call_hash))
        .fetch_optional(self.inner.db.pool())
        .await;
        let res = match res {
            // A create whose snapshot predates a racing create + delete of the same file draws
            // a version number that now exists: nothing was written (the statement is atomic);
            // the caller looks again, like after a lost compare-and-swap.
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                metrics::counter!("panaversityfs_write_version_races_total").increment(1);
                return Ok(None);
            }
            other => other.map_err(db_err("write (one statement)"))?,
        };
        let Some(res) = res else { return Ok(None) };
        let g = db_err("decode write (one statement)");
        let (version, seq): (i64, i64) = (res.try_get(0).map_err(&g)?, res.try_get(1).map_err(&g)?);
        if unsynced_blob.is_some() {
            self.inner.unsynced.notify_one();
        }
        if let Some(f) = &self.inner.cfg.faults
            && f.after_commit_crash()
        {
            return Err(PfsError::Internal(
                "simulated crash after commit (test fault)".into(),
            ));
        }
        self.materialize_committed(
            w.book.as_str(),
            w.path.as_str(),
            &w.user,
            seq,
            Some(w.sha.as_str()),
        )
        .await;
        Ok(Some(version))
    }
}
