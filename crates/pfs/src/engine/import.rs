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
    /// version change nothing (mode `unchanged`). A path the book's profile rejects is an error
    /// (nothing written).
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
