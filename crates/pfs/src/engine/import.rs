//! Adopting files written elsewhere (`panaversity fs import`, `fs adopt-storage`): the bytes
//! become the current version with one `import` audit row, keeping the source's writer and time.

use super::*;

/// How [`Engine::import_file`] records a file.
#[derive(Debug, Clone, Copy)]
pub struct ImportOptions {
    /// When the source wrote it (kept on the journal and version rows).
    pub written_at: Option<DateTime<Utc>>,
    /// The profile of a book the import creates (an existing book keeps its own).
    pub profile: Profile,
}

impl Engine {
    /// Make `bytes` the current version of (book, path, ns), as the source's `actor` wrote it
    /// (see [`ImportOptions`]; the `import` audit row is stamped now). Bytes equal to the current
    /// version change nothing (mode `unchanged`). A file whose last change here was not an import
    /// (edited since, or created here) is never overwritten: `CONFLICT`. A path the book's
    /// profile rejects is an error (nothing written).
    pub async fn import_file(
        &self,
        actor: &Actor,
        book: &BookId,
        path: &BookPath,
        ns: &Namespace,
        bytes: Bytes,
        opts: ImportOptions,
    ) -> Result<WriteOutcome> {
        let started = Instant::now();
        self.ensure_book(book, Some(opts.profile)).await?;
        let current = self
            .profile_and_hash(book.as_str(), path.as_str(), ns.journal_user())
            .await?
            .and_then(|(_, h)| h);
        if let Some(cur) = &current
            && *cur != sha256_hex(&bytes)
            && self.last_change(book, path, ns).await?.as_deref() != Some(OP_IMPORT)
        {
            // Changed here since it was imported (or never imported): never overwrite that.
            return Err(PfsError::Conflict {
                path: path.to_string(),
                expected: "(the version imported last time)".into(),
                current: cur.clone(),
                diff: None,
            });
        }
        let out = self
            .write_inner(
                actor,
                book,
                path,
                ns,
                bytes,
                current.as_deref(),
                OP_IMPORT,
                started,
            )
            .await?;
        if let (Some(at), false) = (opts.written_at, out.mode == WriteMode::Unchanged) {
            self.stamp_version(book, path, ns, out.version, to_micros(at))
                .await?;
        }
        Ok(out)
    }

    /// The operation of the last successful change of (book, path, ns) in the audit log
    /// (`import` when nothing changed it here since it was imported).
    pub async fn last_change(
        &self,
        book: &BookId,
        path: &BookPath,
        ns: &Namespace,
    ) -> Result<Option<String>> {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT operation FROM audit_log WHERE book_id = $1 AND path = $2 AND user_id = $3 \
             AND status = 'success' AND operation IN ({}) ORDER BY seq DESC LIMIT 1",
            audit::CHAIN_OPERATIONS
                .iter()
                .map(|o| format!("'{o}'"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
        .bind(book.as_str())
        .bind(path.as_str())
        .bind(ns.journal_user())
        .fetch_optional(self.inner.db.pool())
        .await
        .map_err(db_err("read the last change"))
    }

    /// Set the write time of a just-imported version (the journal row while it is still that
    /// version, and its version row).
    async fn stamp_version(
        &self,
        book: &BookId,
        path: &BookPath,
        ns: &Namespace,
        version: i64,
        at: i64,
    ) -> Result<()> {
        let key = [book.as_str(), path.as_str(), ns.journal_user()];
        for sql in [
            "UPDATE file_journal SET last_written_at = $4 \
             WHERE book_id = $1 AND path = $2 AND user_id = $3 AND version = $5",
            "UPDATE file_versions SET written_at = $4 \
             WHERE book_id = $1 AND path = $2 AND user_id = $3 AND version = $5",
        ] {
            self.inner
                .db
                .execute_write(
                    sqlx::query(sql)
                        .bind(key[0])
                        .bind(key[1])
                        .bind(key[2])
                        .bind(at)
                        .bind(version),
                )
                .await
                .map_err(db_err("stamp imported version"))?;
        }
        Ok(())
    }
}
