//! `write` and its commit strategies: policy checks, the hash-protocol pre-check, the blob, then
//! one journal commit (grouped SQLite transaction, PostgreSQL one-statement write, or the portable
//! pool transaction that also reports a lost compare-and-swap).

use super::*;

impl Engine {
    /// Write a file with the hash protocol: no `expected_hash` creates (`HASH_REQUIRED` if it
    /// exists), an `expected_hash` updates (`NOT_FOUND` if absent, `CONFLICT` with the current
    /// hash on mismatch). Checks the book's schema profile (a base write creates the book with
    /// the default profile), UTF-8 and size limits for `content/`, and that overlays hold only
    /// `content/` paths.
    pub async fn write(
        &self,
        actor: &Actor,
        book: &BookId,
        path: &BookPath,
        ns: &Namespace,
        bytes: Bytes,
        expected_hash: Option<&str>,
    ) -> Result<WriteOutcome> {
        let started = Instant::now();
        let op = if path.area() == Area::Content {
            OP_WRITE_CONTENT
        } else {
            OP_UPLOAD_ASSET
        };
        let res = self
            .write_inner(actor, book, path, ns, bytes, expected_hash, op, started)
            .await;
        match &res {
            Ok(o) => write_metrics(STATUS_SUCCESS, o.mode.as_str(), op, started),
            Err(e) => write_metrics(audit_status(e), "none", op, started),
        }
        res
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn write_inner(
        &self,
        actor: &Actor,
        book: &BookId,
        path: &BookPath,
        ns: &Namespace,
        bytes: Bytes,
        expected_hash: Option<&str>,
        op: &'static str,
        started: Instant,
    ) -> Result<WriteOutcome> {
        let req = WriteReq {
            actor,
            op,
            book,
            path,
            ns,
            started,
        };
        if let Some(o) = self.write_pg_fast(req, &bytes, expected_hash).await? {
            return Ok(o);
        }
        let checks = self.check_write(book, path, ns, &bytes).await;
        let sha = Sha256::of(&bytes);
        if let Ok(Some(current)) = &checks
            && *current == *sha.as_str()
            && expected_hash.is_none_or(|h| Sha256::parse(h).is_ok())
            && let Some(o) = self.unchanged(book, path, ns, &sha, bytes.len()).await?
        {
            return Ok(o);
        }
        let expected = match expected_hash {
            None => Ok(Expect::Absent),
            Some(h) => Sha256::parse(h).map(Expect::Hash),
        };
        // Fail fast on a stale or missing hash before storing any bytes; the compare-and-swap in
        // the transaction stays the authority (the journal may change in between).
        let expected = checks.and_then(|current| {
            let exp = expected?;
            match (&exp, current) {
                (Expect::Absent, Some(cur)) => Err(PfsError::HashRequired {
                    path: path.to_string(),
                    current: cur,
                }),
                (Expect::Hash(_), None) => Err(not_found_for_update(path)),
                (Expect::Hash(h), Some(cur)) if *h != *cur.as_str() => Err(PfsError::Conflict {
                    path: path.to_string(),
                    expected: h.to_string(),
                    current: cur,
                    diff: None,
                }),
                _ => Ok(exp),
            }
        });
        let expected = match expected {
            Ok(e) => e,
            Err(e) => {
                self.audit_failure(actor, op, book, path, ns, &e, started)
                    .await;
                return Err(e);
            }
        };
        let size = bytes.len() as u64;
        if self.inner.commit_path == CommitPath::SqliteLocal {
            return self.write_local(req, sha, bytes, expected).await;
        }
        let unsynced = self.store_write_blob(req, &sha, &bytes).await?;
        self.commit_write(req, &sha, size, expected, unsynced.as_deref())
            .await
    }

    /// The outcome of a write whose bytes are already the current version of the file: nothing
    /// is stored, committed or audited. Whatever `expected_hash` said, the file ends up as the
    /// caller wanted and nothing is overwritten. `None` when the file changed since the
    /// pre-check (the caller then writes as usual).
    async fn unchanged(
        &self,
        book: &BookId,
        path: &BookPath,
        ns: &Namespace,
        sha: &Sha256,
        size: usize,
    ) -> Result<Option<WriteOutcome>> {
        let row: Option<(String, i64)> = self
            .key_pair(
                "read current version",
                SQL_HASH_AND_VERSION,
                book.as_str(),
                path.as_str(),
                ns.journal_user(),
            )
            .await?;
        Ok(row
            .filter(|(current, _)| *current == *sha.as_str())
            .map(|(current, version)| WriteOutcome {
                mode: WriteMode::Unchanged,
                sha256: sha.to_string(),
                size: size as u64,
                prev_hash: Some(current),
                version,
            }))
    }

    /// Store a write's blob before the journal names it (a failure is audited and returned) and
    /// remember it in the blob cache (right whether or not the commit succeeds: blobs are
    /// content-addressed). A small blob on local storage skips its fsync and is returned: its
    /// bytes must commit with the journal row (see "Unsynced blobs" in the module docs).
    pub(super) async fn store_write_blob(
        &self,
        req: WriteReq<'_>,
        sha: &str,
        bytes: &Bytes,
    ) -> Result<Option<Bytes>> {
        let unsynced = self.unsynced_copy(bytes);
        let durable = unsynced.is_none();
        if let Err(e) = self
            .inner
            .storage
            .put_blob_with(sha, bytes.clone(), durable)
            .await
        {
            self.audit_req_failure(req, &e).await;
            return Err(e);
        }
        if let Some(c) = &self.inner.blobs {
            c.insert(sha, bytes);
        }
        Ok(unsynced)
    }

    /// `bytes` when a write of them may leave its blob unsynced (see "Unsynced blobs").
    pub(super) fn unsynced_copy(&self, bytes: &Bytes) -> Option<Bytes> {
        (self.inner.defer_blob_sync && bytes.len() <= UNSYNCED_BLOB_MAX).then(|| bytes.clone())
    }

    /// Schema, namespace, encoding and size checks of a write.
    pub(super) async fn check_write(
        &self,
        book: &BookId,
        path: &BookPath,
        ns: &Namespace,
        bytes: &Bytes,
    ) -> Result<Option<String>> {
        if matches!(ns, Namespace::Overlay(_)) && path.area() != Area::Content {
            return Err(PfsError::InvalidInput(
                "overlays hold content/ files only; write assets without user_id".into(),
            ));
        }
        // One lookup for the book's profile and the file's current hash.
        let (profile, current) = match self
            .profile_and_hash(book.as_str(), path.as_str(), ns.journal_user())
            .await?
        {
            Some((profile, current)) => (Profile::parse(&profile)?, current),
            None => (self.ensure_book(book, None).await?.profile, None),
        };
        self.remember_profile(book.as_str(), profile);
        self.check_bytes(profile, path, bytes)?;
        Ok(current)
    }

    /// The checks of a write that need no database: the path under `profile`, the size limit,
    /// UTF-8 for text.
    pub(super) fn check_bytes(
        &self,
        profile: Profile,
        path: &BookPath,
        bytes: &Bytes,
    ) -> Result<()> {
        profile.check(path)?;
        let size = bytes.len() as u64;
        if is_binary_file(path) {
            // Assets under static/ and binary files co-located in a docs tree (docusaurus
            // profile, e.g. content/…/img/x.png): bytes, with the asset limit.
            if size > self.inner.cfg.limits.max_asset_bytes {
                return Err(PfsError::PayloadTooLarge {
                    what: path.to_string(),
                    size,
                    limit: self.inner.cfg.limits.max_asset_bytes,
                });
            }
        } else {
            if size > self.inner.cfg.limits.max_content_bytes {
                return Err(PfsError::PayloadTooLarge {
                    what: path.to_string(),
                    size,
                    limit: self.inner.cfg.limits.max_content_bytes,
                });
            }
            if std::str::from_utf8(bytes).is_err() {
                return Err(PfsError::InvalidInput(format!(
                    "content of {path} is not valid UTF-8 text; upload binary files as assets under static/"
                )));
            }
        }
        Ok(())
    }

    /// The book's profile and the current sha256 of (path, user) in one lookup; `None` when the
    /// book does not exist.
    pub(super) async fn profile_and_hash(
        &self,
        book: &str,
        path: &str,
        user: &str,
    ) -> Result<Option<(String, Option<String>)>> {
        self.key_pair(
            "read book and current hash",
            SQL_PROFILE_AND_HASH,
            book,
            path,
            user,
        )
        .await
    }

    /// The two columns of the (at most one) row `sql` returns for a key bound as `$1…$3`:
    /// inline on SQLite files (like [`Engine::journal_rows`]), through the pool otherwise.
    pub(super) async fn key_pair<A, B>(
        &self,
        ctx: &'static str,
        sql: &'static str,
        book: &str,
        path: &str,
        user: &str,
    ) -> Result<Option<(A, B)>>
    where
        A: rusqlite::types::FromSql + for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
        B: rusqlite::types::FromSql + for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        let sync = self.try_sync_read(ctx, |c| {
            let mut st = sync_stmt(c, sql, &[&book, &path, &user])?;
            let mut rows = st.raw_query();
            match rows.next()? {
                Some(r) => Ok(Some((r.get(0)?, r.get(1)?))),
                None => Ok(None),
            }
        });
        if let Some(v) = sync {
            return v;
        }
        let row = sqlx::query(sql)
            .bind(book)
            .bind(path)
            .bind(user)
            .fetch_optional(self.inner.db.pool())
            .await
            .map_err(db_err(ctx))?;
        match row {
            Some(r) => {
                let g = db_err(ctx);
                Ok(Some((r.try_get(0).map_err(&g)?, r.try_get(1).map_err(&g)?)))
            }
            None => Ok(None),
        }
    }

    /// The journal transaction of a write (blob already stored), then materialization.
    pub(super) async fn commit_write(
        &self,
        req: WriteReq<'_>,
        sha: &Sha256,
        size: u64,
        expected: Expect,
        unsynced_blob: Option<&[u8]>,
    ) -> Result<WriteOutcome> {
        let grouped = matches!(
            self.inner.commit_path,
            CommitPath::SqliteLocal | CommitPath::SqliteGrouped
        );
        if grouped && unsynced_blob.is_none() {
            let w = self.intent(req, sha, size, &expected)?;
            if let Some(outcome) = self.commit_write_sync(w, size).await? {
                return Ok(outcome);
            }
            // Lost the compare-and-swap: the pool path below finds the current state again
            // and records the failure with the audit head held.
        }
        self.commit_write_pool(req, sha, size, expected, unsynced_blob)
            .await
    }

    /// [`Engine::commit_write`] through the pool (PostgreSQL, in-memory SQLite, and the report
    /// of a compare-and-swap the synchronous path lost).
    /// `unsynced_blob`: the bytes of a blob written without fsync, kept in `unsynced_blobs` by
    /// the same transaction (see "Unsynced blobs" in the module docs).
    pub(super) async fn commit_write_pool(
        &self,
        req: WriteReq<'_>,
        sha: &Sha256,
        size: u64,
        expected: Expect,
        unsynced_blob: Option<&[u8]>,
    ) -> Result<WriteOutcome> {
        let WriteReq {
            actor,
            op,
            book,
            path,
            ns,
            started,
        } = req;
        let db = &self.inner.db;
        let user = ns.journal_user();
        let now = now_micros();
        let backend = self.inner.storage.backend_name();
        let size_i =
            i64::try_from(size).map_err(|_| PfsError::InvalidInput("file too large".into()))?;
        // PostgreSQL: the version row and the audit head lock ride on the compare-and-swap
        // statement, and the audit row with the commit's bookkeeping on one more (each statement
        // is a network round trip).
        let pg = db.kind() == platform::db::DbKind::Postgres;
        let shard = audit::shard_of(book.as_str(), path.as_str(), user);
        if pg {
            let one = self.intent(req, sha, size, &expected)?;
            if let Some(version) = self
                .commit_write_pg_once(one, &expected, unsynced_blob, None)
                .await?
            {
                return Ok(WriteOutcome::of(expected, sha.clone(), size, version));
            }
            // The compare-and-swap found another state: the transaction below looks again,
            // commits if the file is back in the expected state, and otherwise reports and
            // audits the failure with the audit head held.
        }
        let mut tx = db.begin_write().await.map_err(db_err("begin write"))?;
        let (cas, prev_hash, mode) = match &expected {
            Expect::Absent => {
                // A create loses to an existing row (HASH_REQUIRED below). If the row it lost to
                // was deleted by a transaction that committed meanwhile (PostgreSQL), the key is
                // free again: insert again instead of reporting a conflict with nothing.
                let mut v = None;
                for _ in 0..3 {
                    let q = bind_journal_values(
                        sqlx::query(if pg {
                            SQL_CREATE_JOURNAL_PG
                        } else {
                            SQL_CREATE_JOURNAL
                        }),
                        [book.as_str(), path.as_str(), user, sha.as_str(), backend],
                        size_i,
                        now,
                    );
                    let q = if pg {
                        q.bind(actor.agent_id()).bind(shard)
                    } else {
                        q
                    };
                    v = q
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err("insert journal row"))?;
                    if v.is_some() {
                        break;
                    }
                    let exists: Option<i64> = sqlx::query_scalar(
                        "SELECT version FROM file_journal WHERE book_id = $1 AND path = $2 AND user_id = $3",
                    )
                    .bind(book.as_str())
                    .bind(path.as_str())
                    .bind(user)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err("read journal row"))?;
                    if exists.is_some() {
                        break;
                    }
                }
                (v, None, WriteMode::Created)
            }
            Expect::Hash(h) => {
                let q = bind_journal_values(
                    sqlx::query(if pg {
                        SQL_UPDATE_JOURNAL_CAS_PG
                    } else {
                        SQL_UPDATE_JOURNAL_CAS
                    }),
                    [book.as_str(), path.as_str(), user, sha.as_str(), backend],
                    size_i,
                    now,
                )
                .bind(h.as_str());
                let q = if pg {
                    q.bind(actor.agent_id()).bind(shard)
                } else {
                    q
                };
                let v = q
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err("update journal row"))?;
                (v, Some(h.clone()), WriteMode::Updated)
            }
        };
        let Some(cas) = cas else {
            // Lost the compare-and-swap: audit the failure in this transaction with the hash that
            // is current once we hold the audit head (so the per-file chain stays ordered).
            let current: Option<String> = sqlx::query_scalar(
                "SELECT sha256 FROM file_journal WHERE book_id = $1 AND path = $2 AND user_id = $3",
            )
            .bind(book.as_str())
            .bind(path.as_str())
            .bind(user)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err("read current hash"))?;
            let err = match (&expected, current) {
                (Expect::Absent, Some(cur)) => PfsError::HashRequired {
                    path: path.to_string(),
                    current: cur,
                },
                (Expect::Hash(_), None) => not_found_for_update(path),
                (Expect::Hash(h), Some(cur)) => PfsError::Conflict {
                    path: path.to_string(),
                    expected: h.to_string(),
                    current: cur,
                    diff: None,
                },
                // The insert lost to a row that was deleted again before we looked: retryable.
                (Expect::Absent, None) => PfsError::Conflict {
                    path: path.to_string(),
                    expected: "(absent)".into(),
                    current: "(absent)".into(),
                    diff: None,
                },
            };
            let msg = err.to_string();
            if let Err(e) = audit::relax_failure_durability(&mut tx, db.kind()).await {
                tracing::warn!(error = %e, "relaxing failure-row durability failed");
                return Err(err);
            }
            let res = audit::append_failure_in_tx(
                &mut tx,
                NewAuditRow {
                    agent_id: actor.agent_id(),
                    operation: op,
                    book_id: book.as_str(),
                    path: path.as_str(),
                    user_id: user,
                    prev_hash: None,
                    new_hash: None,
                    status: audit_status(&err),
                    error_message: Some(&msg),
                    execution_time_ms: Some(started.elapsed().as_millis() as i64),
                    request: actor.request(),
                },
            )
            .await;
            match res {
                Ok(_) => {
                    if let Err(e) = tx.commit().await {
                        tracing::warn!(error = %e, "committing a failure audit row failed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "writing a failure audit row failed"),
            }
            return Err(err);
        };
        let row = NewAuditRow {
            agent_id: actor.agent_id(),
            operation: op,
            book_id: book.as_str(),
            path: path.as_str(),
            user_id: user,
            prev_hash: prev_hash.as_deref(),
            new_hash: Some(sha),
            status: STATUS_SUCCESS,
            error_message: None,
            execution_time_ms: Some(started.elapsed().as_millis() as i64),
            request: actor.request(),
        };
        let g = db_err("decode journal write");
        let version: i64 = cas.try_get(0).map_err(&g)?;
        if pg {
            // The compare-and-swap statement locked and advanced the shard's audit head.
            let (prev_row_hash, seq): (Option<String>, Option<i64>) =
                (cas.try_get(1).map_err(&g)?, cas.try_get(2).map_err(&g)?);
            let (Some(prev_row_hash), Some(seq)) = (prev_row_hash, seq) else {
                return Err(PfsError::Internal(format!(
                    "audit head of shard {shard} is missing"
                )));
            };
            let seq = audit::append_and_enqueue_pg(
                &mut tx,
                &row,
                audit::LockedHead {
                    shard,
                    seq,
                    prev_row_hash: &prev_row_hash,
                },
                user == BASE_USER,
                unsynced_blob,
            )
            .await?;
            self.commit_enqueued(
                tx,
                book.as_str(),
                path.as_str(),
                user,
                seq,
                Some(sha),
                "commit write",
            )
            .await?;
        } else {
            sqlx::query(SQL_INSERT_VERSION)
                .bind(book.as_str())
                .bind(path.as_str())
                .bind(user)
                .bind(version)
                .bind(sha.as_str())
                .bind(size_i)
                .bind(now)
                .bind(actor.agent_id())
                .execute(&mut *tx)
                .await
                .map_err(db_err("insert version row"))?;
            let seq = audit::append_in_tx(&mut tx, &row).await?;
            if let Some(data) = unsynced_blob {
                sqlx::query(SQL_KEEP_UNSYNCED_BLOB)
                    .bind(sha.as_str())
                    .bind(data)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err("keep unsynced blob"))?;
            }
            self.commit_and_materialize(
                tx,
                book.as_str(),
                path.as_str(),
                user,
                seq,
                Some(sha),
                "commit write",
            )
            .await?;
        }
        if unsynced_blob.is_some() {
            self.inner.unsynced.notify_one();
        }
        Ok(WriteOutcome {
            mode,
            sha256: sha.to_string(),
            size,
            prev_hash: prev_hash.map(Sha256::into_string),
            version,
        })
    }
}
