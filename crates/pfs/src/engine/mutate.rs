//! The other mutations (assets, deletes), the shared commit-and-materialize tail and failure
//! audit rows.

use super::*;

impl Engine {
    /// Upload an asset (`static/…`): upsert with internal compare-and-swap retries. `Unchanged`
    /// (no write, no audit row) when the bytes equal the current version.
    pub async fn put_asset(
        &self,
        actor: &Actor,
        book: &BookId,
        path: &BookPath,
        bytes: Bytes,
    ) -> Result<AssetOutcome> {
        let started = Instant::now();
        if !is_binary_file(path) {
            return Err(PfsError::invalid_path(
                path.as_str(),
                "assets live under static/{images|slides|videos|audio}/ (or, in a docusaurus book, \
                 are binary files such as images next to the pages); write text with write_content",
            ));
        }
        if let Err(e) = self.check_write(book, path, &Namespace::Base, &bytes).await {
            self.audit_failure(
                actor,
                OP_UPLOAD_ASSET,
                book,
                path,
                &Namespace::Base,
                &e,
                started,
            )
            .await;
            write_metrics(STATUS_ERROR, "none", OP_UPLOAD_ASSET, started);
            return Err(e);
        }
        let sha = Sha256::of(&bytes);
        let size = bytes.len() as u64;
        let mut blob_stored = false;
        for _attempt in 0..32 {
            let current = self.stat(book, path, &Namespace::Base).await?;
            if let Some(cur) = &current
                && *cur.sha256 == *sha
            {
                return Ok(AssetOutcome {
                    status: AssetStatus::Unchanged,
                    sha256: sha.to_string(),
                    size,
                    version: cur.version,
                });
            }
            if !blob_stored {
                if let Err(e) = self.inner.storage.put_blob(&sha, bytes.clone()).await {
                    self.audit_failure(
                        actor,
                        OP_UPLOAD_ASSET,
                        book,
                        path,
                        &Namespace::Base,
                        &e,
                        started,
                    )
                    .await;
                    write_metrics(STATUS_ERROR, "none", OP_UPLOAD_ASSET, started);
                    return Err(e);
                }
                blob_stored = true;
            }
            let expect = match &current {
                Some(cur) => Expect::Hash(Sha256::from_journal(cur.sha256.clone())),
                None => Expect::Absent,
            };
            match self
                .commit_write(
                    WriteReq {
                        actor,
                        op: OP_UPLOAD_ASSET,
                        book,
                        path,
                        ns: &Namespace::Base,
                        started,
                    },
                    &sha,
                    size,
                    expect,
                    None,
                )
                .await
            {
                Ok(o) => {
                    let (status, mode) = match o.mode {
                        WriteMode::Created => (AssetStatus::Created, "created"),
                        WriteMode::Updated => (AssetStatus::Updated, "updated"),
                        WriteMode::Unchanged => (AssetStatus::Unchanged, "unchanged"),
                    };
                    write_metrics(STATUS_SUCCESS, mode, OP_UPLOAD_ASSET, started);
                    return Ok(AssetOutcome {
                        status,
                        sha256: o.sha256,
                        size,
                        version: o.version,
                    });
                }
                Err(
                    PfsError::Conflict { .. }
                    | PfsError::HashRequired { .. }
                    | PfsError::NotFound { .. },
                ) => {
                    continue;
                }
                Err(e) => {
                    write_metrics(STATUS_ERROR, "none", OP_UPLOAD_ASSET, started);
                    return Err(e);
                }
            }
        }
        write_metrics(STATUS_CONFLICT, "none", OP_UPLOAD_ASSET, started);
        Err(PfsError::Conflict {
            path: path.to_string(),
            expected: "(any)".into(),
            current: "(changing too fast)".into(),
            diff: None,
        })
    }

    /// Delete a file in `ns` (an overlay delete never touches the base). Idempotent: deleting a
    /// missing file succeeds with `existed: false` and is audited too.
    pub async fn delete(
        &self,
        actor: &Actor,
        book: &BookId,
        path: &BookPath,
        ns: &Namespace,
    ) -> Result<DeleteOutcome> {
        let started = Instant::now();
        let op = if path.area() == Area::Content {
            OP_DELETE_CONTENT
        } else {
            OP_DELETE_ASSET
        };
        let res = self.delete_inner(actor, book, path, ns, op, started).await;
        match &res {
            Ok(_) => write_metrics(STATUS_SUCCESS, "deleted", op, started),
            Err(e) => write_metrics(audit_status(e), "none", op, started),
        }
        res
    }

    pub(super) async fn delete_inner(
        &self,
        actor: &Actor,
        book: &BookId,
        path: &BookPath,
        ns: &Namespace,
        op: &'static str,
        started: Instant,
    ) -> Result<DeleteOutcome> {
        if matches!(ns, Namespace::Overlay(_)) && path.area() != Area::Content {
            let e = PfsError::InvalidInput("overlays hold content/ files only".into());
            return Err(e);
        }
        let db = &self.inner.db;
        let user = ns.journal_user();
        let mut tx = db.begin_write().await.map_err(db_err("begin delete"))?;
        let prev: Option<String> = sqlx::query_scalar(
            "DELETE FROM file_journal WHERE book_id = $1 AND path = $2 AND user_id = $3 RETURNING sha256",
        )
        .bind(book.as_str())
        .bind(path.as_str())
        .bind(user)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err("delete journal row"))?;
        let seq = match &prev {
            Some(p) => {
                audit::append_in_tx(
                    &mut tx,
                    &NewAuditRow {
                        agent_id: actor.agent_id(),
                        operation: op,
                        book_id: book.as_str(),
                        path: path.as_str(),
                        user_id: user,
                        prev_hash: Some(p),
                        new_hash: None,
                        status: STATUS_SUCCESS,
                        error_message: None,
                        execution_time_ms: Some(started.elapsed().as_millis() as i64),
                        request: actor.request(),
                    },
                )
                .await?
            }
            // Nothing to delete: the row records the unchanged state (absent → absent), taken
            // under the head lock like every other no-change row.
            None => {
                audit::append_failure_in_tx(
                    &mut tx,
                    NewAuditRow {
                        agent_id: actor.agent_id(),
                        operation: op,
                        book_id: book.as_str(),
                        path: path.as_str(),
                        user_id: user,
                        prev_hash: None,
                        new_hash: None,
                        status: STATUS_SUCCESS,
                        error_message: None,
                        execution_time_ms: Some(started.elapsed().as_millis() as i64),
                        request: actor.request(),
                    },
                )
                .await?
            }
        };
        // Always enqueue: a stray canonical object (e.g. left by a crash) is removed too.
        self.commit_and_materialize(
            tx,
            book.as_str(),
            path.as_str(),
            user,
            seq,
            None,
            "commit delete",
        )
        .await?;
        Ok(DeleteOutcome {
            existed: prev.is_some(),
            prev_hash: prev,
        })
    }

    /// The common tail of every mutation: queue the canonical-key materialization in the same
    /// transaction, commit (through the test fault hooks), then materialize. An `Err` after the
    /// commit only comes from the simulated crash; the reconciler finishes that materialization.
    /// `state` is what the transaction leaves at the key (the blob's sha256, or `None` for a
    /// delete), applied without re-reading it (see [`Engine::materialize_committed`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn commit_and_materialize(
        &self,
        mut tx: WriteTx,
        book: &str,
        path: &str,
        user: &str,
        ticket: i64,
        state: Option<&str>,
        what: &'static str,
    ) -> Result<()> {
        match (user == BASE_USER, self.inner.db.kind()) {
            // One round trip on PostgreSQL (a data-modifying CTE always runs to completion).
            (true, platform::db::DbKind::Postgres) => {
                const SQL: &str = concat!(
                    "WITH g AS (",
                    generation_insert!(),
                    "VALUES ($1, $5, 1) ",
                    generation_bump_on_conflict!(),
                    ") ",
                    pending_insert!(),
                    "VALUES ($1, $2, $3, $4) ",
                    pending_take_ticket_on_conflict!()
                );
                sqlx::query(SQL)
                    .bind(book)
                    .bind(path)
                    .bind(user)
                    .bind(ticket)
                    .bind(audit::shard_of(book, path, user))
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err("bump book generation and enqueue materialization"))?;
            }
            (true, platform::db::DbKind::Sqlite) => {
                bump_generation(&mut tx, book, path, user).await?;
                enqueue_pending(&mut tx, book, path, user, ticket).await?;
            }
            (false, _) => enqueue_pending(&mut tx, book, path, user, ticket).await?,
        }
        self.commit_enqueued(tx, book, path, user, ticket, state, what)
            .await
    }

    /// Commit a transaction that has enqueued its materialization with `ticket`, then
    /// materialize `state` (see [`Engine::commit_and_materialize`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn commit_enqueued(
        &self,
        tx: WriteTx,
        book: &str,
        path: &str,
        user: &str,
        ticket: i64,
        state: Option<&str>,
        what: &'static str,
    ) -> Result<()> {
        if let Some(f) = &self.inner.cfg.faults {
            f.before_commit()?;
        }
        tx.commit().await.map_err(db_err(what))?;
        if let Some(f) = &self.inner.cfg.faults
            && f.after_commit_crash()
        {
            return Err(PfsError::Internal(
                "simulated crash after commit (test fault)".into(),
            ));
        }
        self.materialize_committed(book, path, user, ticket, state)
            .await;
        Ok(())
    }

    /// [`Engine::audit_failure`] of a write.
    pub(super) async fn audit_req_failure(&self, req: WriteReq<'_>, err: &PfsError) {
        self.audit_failure(
            req.actor,
            req.op,
            req.book,
            req.path,
            req.ns,
            err,
            req.started,
        )
        .await;
    }

    /// Write an audit row for a failed mutation (own transaction; failures are logged).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn audit_failure(
        &self,
        actor: &Actor,
        op: &'static str,
        book: &BookId,
        path: &BookPath,
        ns: &Namespace,
        err: &PfsError,
        started: Instant,
    ) {
        let db = &self.inner.db;
        let msg = err.to_string();
        let res = async {
            let mut tx = db
                .begin_write()
                .await
                .map_err(db_err("begin failure audit"))?;
            audit::relax_failure_durability(&mut tx, self.inner.db.kind()).await?;
            audit::append_failure_in_tx(
                &mut tx,
                NewAuditRow {
                    agent_id: actor.agent_id(),
                    operation: op,
                    book_id: book.as_str(),
                    path: path.as_str(),
                    user_id: ns.journal_user(),
                    prev_hash: None,
                    new_hash: None,
                    status: audit_status(err),
                    error_message: Some(&msg),
                    execution_time_ms: Some(started.elapsed().as_millis() as i64),
                    request: actor.request(),
                },
            )
            .await?;
            tx.commit().await.map_err(db_err("commit failure audit"))
        }
        .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, "writing a failure audit row failed");
        }
    }
}
