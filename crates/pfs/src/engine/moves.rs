//! `move_content`: an atomic rename within a book and namespace, with the file's history carried
//! to the new path.

use super::*;

/// What [`Engine::move_file`] did.
#[derive(Debug, Clone, Serialize)]
pub struct MoveOutcome {
    /// sha256 of the moved content (unchanged by the move).
    pub sha256: String,
    pub size: u64,
    /// The version number of the file at its new path.
    pub version: i64,
}

/// The highest version number of a key's history (0: none).
async fn last_version(tx: &mut WriteTx, book: &str, path: &str, user: &str) -> Result<i64> {
    sqlx::query_scalar(
        "SELECT COALESCE(MAX(version), 0) FROM file_versions \
         WHERE book_id = $1 AND path = $2 AND user_id = $3",
    )
    .bind(book)
    .bind(path)
    .bind(user)
    .fetch_one(&mut **tx)
    .await
    .map_err(db_err("move: read the history"))
}

impl Engine {
    /// Rename `from` to `to` in `ns` in one transaction: `expected_hash` must be `from`'s current
    /// hash (`NOT_FOUND` if absent, `CONFLICT` otherwise) and `to` must not exist
    /// (`ALREADY_EXISTS`). `from`'s versions are copied to `to`'s history (after any versions `to`
    /// had before it was deleted) and a `move_content` version is added; `from`'s own history
    /// stays readable. Both paths get a `move_content` audit row (`from`: hash → NULL, `to`: NULL
    /// → hash), so both per-file chains hold. Content paths only.
    pub async fn move_file(
        &self,
        actor: &Actor,
        book: &BookId,
        from: &BookPath,
        to: &BookPath,
        ns: &Namespace,
        expected_hash: &str,
    ) -> Result<MoveOutcome> {
        let started = Instant::now();
        let res = self
            .move_inner(actor, book, from, to, ns, expected_hash, started)
            .await;
        match &res {
            Ok(_) => write_metrics(STATUS_SUCCESS, "moved", OP_MOVE_CONTENT, started),
            Err(e) => {
                self.audit_failure(actor, OP_MOVE_CONTENT, book, from, ns, e, started)
                    .await;
                write_metrics(audit_status(e), "none", OP_MOVE_CONTENT, started);
            }
        }
        res
    }

    #[allow(clippy::too_many_arguments)]
    async fn move_inner(
        &self,
        actor: &Actor,
        book: &BookId,
        from: &BookPath,
        to: &BookPath,
        ns: &Namespace,
        expected_hash: &str,
        started: Instant,
    ) -> Result<MoveOutcome> {
        if from.area() != Area::Content || to.area() != Area::Content {
            return Err(PfsError::InvalidInput(
                "move_content moves content/ files; upload assets again under the new name".into(),
            ));
        }
        if from.as_str() == to.as_str() {
            return Err(PfsError::InvalidInput(
                "from_path and to_path are the same".into(),
            ));
        }
        let expected = Sha256::parse(expected_hash)?;
        let Some(info) = self.book(book).await? else {
            return Err(PfsError::not_found(format!("book {book}")));
        };
        info.profile.check(to)?;
        let user = ns.journal_user();
        let (b, f, t) = (book.as_str(), from.as_str(), to.as_str());
        let now = now_micros();
        let mut tx = self
            .inner
            .db
            .begin_write()
            .await
            .map_err(db_err("begin move"))?;
        let moved: Option<(i64, String)> = sqlx::query_as(
            "DELETE FROM file_journal WHERE book_id = $1 AND path = $2 AND user_id = $3 \
             AND sha256 = $4 RETURNING size, storage_backend",
        )
        .bind(b)
        .bind(f)
        .bind(user)
        .bind(&*expected)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err("move: remove the old journal row"))?;
        let Some((size, backend)) = moved else {
            drop(tx);
            return Err(match self.stat(book, from, ns).await? {
                None => PfsError::not_found(format!("{from} in book {book}")),
                Some(cur) => PfsError::Conflict {
                    path: from.to_string(),
                    expected: expected.to_string(),
                    current: cur.sha256,
                    diff: None,
                },
            });
        };
        let target: Option<String> = sqlx::query_scalar(
            "SELECT sha256 FROM file_journal WHERE book_id = $1 AND path = $2 AND user_id = $3",
        )
        .bind(b)
        .bind(t)
        .bind(user)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err("move: look at the target"))?;
        if let Some(current) = target {
            return Err(PfsError::AlreadyExists {
                path: to.to_string(),
                current,
            });
        }
        // The old path's versions continue the new path's history (which a deleted file at the
        // new path may have started), then the move itself is one more version.
        let offset = last_version(&mut tx, b, t, user).await?;
        sqlx::query(
            "INSERT INTO file_versions (book_id, path, user_id, version, sha256, size, written_at, \
             agent_id, operation) SELECT book_id, $4, user_id, version + $5, sha256, size, \
             written_at, agent_id, operation FROM file_versions \
             WHERE book_id = $1 AND path = $2 AND user_id = $3",
        )
        .bind(b)
        .bind(f)
        .bind(user)
        .bind(t)
        .bind(offset)
        .execute(&mut *tx)
        .await
        .map_err(db_err("move: carry the history"))?;
        let version = last_version(&mut tx, b, t, user).await? + 1;
        sqlx::query(
            "INSERT INTO file_versions (book_id, path, user_id, version, sha256, size, written_at, \
             agent_id, operation) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(b)
        .bind(t)
        .bind(user)
        .bind(version)
        .bind(&*expected)
        .bind(size)
        .bind(now)
        .bind(actor.agent_id())
        .bind(OP_MOVE_CONTENT)
        .execute(&mut *tx)
        .await
        .map_err(db_err("move: version row"))?;
        let created = sqlx::query(concat!(
            "INSERT INTO file_journal (book_id, path, user_id, sha256, size, last_written_at, \
             storage_backend, version, base_sha256) SELECT $1, $2, $3, $4, $5, $6, $7, $8, ",
            overlay_base_hash!(),
            " ON CONFLICT (book_id, path, user_id) DO NOTHING"
        ))
        .bind(b)
        .bind(t)
        .bind(user)
        .bind(&*expected)
        .bind(size)
        .bind(now)
        .bind(&backend)
        .bind(version)
        .execute(&mut *tx)
        .await
        .map_err(db_err("move: new journal row"))?;
        if created.rows_affected() != 1 {
            return Err(PfsError::AlreadyExists {
                path: to.to_string(),
                current: "(created concurrently)".into(),
            });
        }
        // Audit rows in shard order (the head locks of both chains are taken in one order by
        // every mover, so two crossing moves cannot deadlock on them).
        let elapsed = Some(started.elapsed().as_millis() as i64);
        let from_row = NewAuditRow {
            agent_id: actor.agent_id(),
            operation: OP_MOVE_CONTENT,
            book_id: b,
            path: f,
            user_id: user,
            prev_hash: Some(&*expected),
            new_hash: None,
            status: STATUS_SUCCESS,
            error_message: None,
            execution_time_ms: elapsed,
            request: actor.request(),
        };
        let to_row = NewAuditRow {
            path: t,
            prev_hash: None,
            new_hash: Some(&*expected),
            ..from_row.clone()
        };
        let from_first = audit::shard_of(b, f, user) <= audit::shard_of(b, t, user);
        let (first, second) = if from_first {
            (&from_row, &to_row)
        } else {
            (&to_row, &from_row)
        };
        let s1 = audit::append_in_tx(&mut tx, first).await?;
        let s2 = audit::append_in_tx(&mut tx, second).await?;
        let (from_seq, to_seq) = if from_first { (s1, s2) } else { (s2, s1) };
        if user == BASE_USER {
            // (`to`'s generation is bumped by `commit_and_materialize`.)
            bump_generation(&mut tx, b, f, user).await?;
        }
        enqueue_pending(&mut tx, b, f, user, from_seq).await?;
        self.commit_and_materialize(tx, b, t, user, to_seq, Some(&*expected), "commit move")
            .await?;
        self.materialize_committed(b, f, user, from_seq, None).await;
        Ok(MoveOutcome {
            sha256: expected.to_string(),
            size: u64::try_from(size).unwrap_or(0),
            version,
        })
    }
}
