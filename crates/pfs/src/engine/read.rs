//! Reads: journal lookups (inline on SQLite files) and the blobs they name.

use super::*;

/// The columns `version, sha256, size, written_at, agent_id, operation` of a `file_versions` row.
fn decode_version(r: &sqlx::any::AnyRow) -> Result<VersionEntry> {
    let g = db_err("decode version row");
    let size: i64 = r.try_get("size").map_err(&g)?;
    Ok(VersionEntry {
        version: r.try_get("version").map_err(&g)?,
        sha256: r.try_get("sha256").map_err(&g)?,
        size: u64::try_from(size).unwrap_or(0),
        written_at: from_micros(r.try_get("written_at").map_err(&g)?),
        agent_id: r.try_get("agent_id").map_err(&g)?,
        operation: r.try_get("operation").map_err(&g)?,
    })
}

impl Engine {
    /// The journal row of `path` in `ns`, if any.
    pub async fn stat(
        &self,
        book: &BookId,
        path: &BookPath,
        ns: &Namespace,
    ) -> Result<Option<JournalEntry>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOURNAL_COLS} FROM file_journal WHERE book_id = $1 AND path = $2 AND user_id = $3"
        )))
        .bind(book.as_str())
        .bind(path.as_str())
        .bind(ns.journal_user())
        .fetch_optional(self.inner.db.pool())
        .await
        .map_err(db_err("stat"))?;
        row.map(|r| decode_entry(&r)).transpose()
    }

    /// Read a file: `user`'s overlay if present, else the base; `NOT_FOUND` if neither exists.
    pub async fn read(
        &self,
        book: &BookId,
        path: &BookPath,
        user: Option<&UserId>,
    ) -> Result<ReadOutput> {
        let user = user.map(UserId::as_str).unwrap_or(BASE_USER);
        let mut base = None;
        let mut overlay = None;
        for e in self
            .journal_rows(book.as_str(), path.as_str(), user)
            .await?
        {
            if e.is_overlay() {
                overlay = Some(e);
            } else {
                base = Some(e);
            }
        }
        let base_sha256 = base.as_ref().map(|b| b.sha256.clone());
        let (entry, source) = match (overlay, base) {
            (Some(o), _) => (o, Source::Overlay),
            (None, Some(b)) => (b, Source::Base),
            (None, None) => {
                return Err(PfsError::not_found(format!("{path} in book {book}")));
            }
        };
        let bytes = self.read_entry(&entry).await?;
        Ok(ReadOutput {
            bytes,
            entry,
            source,
            base_sha256,
        })
    }

    /// Run `f` inline on a query-only SQLite connection (see `platform::db::sqlite_read`):
    /// `None` when there is none (PostgreSQL, in-memory SQLite) or SQLite asked the reader to
    /// wait; the caller then uses the pool.
    pub(super) fn try_sync_read<T>(
        &self,
        ctx: &'static str,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Option<Result<T>> {
        match self.inner.db.sync_reader()?.read(f) {
            Ok(SyncRead::Done(v)) => Some(Ok(v)),
            Ok(SyncRead::Busy) => {
                metrics::counter!("panaversityfs_sqlite_sync_read_fallback_total").increment(1);
                None
            }
            Err(e) => Some(Err(sync_db_err(ctx)(e))),
        }
    }

    /// The journal rows of `path` for the base and for `user` (at most two; `user` may be the
    /// base). One indexed lookup: inline on SQLite files (see `platform::db::sqlite_read`),
    /// through the pool otherwise or when SQLite asks the reader to wait.
    pub(super) async fn journal_rows(
        &self,
        book: &str,
        path: &str,
        user: &str,
    ) -> Result<Vec<JournalEntry>> {
        const SQL_SYNC: &str = "SELECT book_id, path, user_id, sha256, size, last_written_at, version, \
             storage_backend, base_sha256 FROM file_journal WHERE book_id = ?1 AND path = ?2 AND user_id IN (?3, ?4)";
        let sync = self.try_sync_read("read journal", |c| {
            let mut st = c.prepare_cached(SQL_SYNC)?;
            let rows = st.query_map([book, path, BASE_USER, user], |r| {
                let size: i64 = r.get(4)?;
                Ok(JournalEntry {
                    book_id: r.get(0)?,
                    path: r.get(1)?,
                    user_id: r.get(2)?,
                    sha256: r.get(3)?,
                    size: u64::try_from(size).unwrap_or(0),
                    last_written_at: from_micros(r.get(5)?),
                    version: r.get(6)?,
                    storage_backend: r.get(7)?,
                    base_sha256: r.get(8)?,
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        });
        if let Some(rows) = sync {
            return rows;
        }
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOURNAL_COLS} FROM file_journal WHERE book_id = $1 AND path = $2 AND user_id IN ($3, $4)"
        )))
        .bind(book)
        .bind(path)
        .bind(BASE_USER)
        .bind(user)
        .fetch_all(self.inner.db.pool())
        .await
        .map_err(db_err("read journal"))?;
        rows.iter().map(decode_entry).collect()
    }

    /// [`Engine::read`] as UTF-8 text (`INVALID_INPUT` if the file is not UTF-8).
    pub async fn read_text(
        &self,
        book: &BookId,
        path: &BookPath,
        user: Option<&UserId>,
    ) -> Result<(String, JournalEntry, Source)> {
        let out = self.read(book, path, user).await?;
        let text = String::from_utf8(out.bytes.to_vec()).map_err(|_| {
            PfsError::InvalidInput(format!(
                "{path} is not UTF-8 text; fetch it as an asset (bytes) instead"
            ))
        })?;
        Ok((text, out.entry, out.source))
    }

    /// Journal rows of a book, sorted by path (byte order), optionally under `prefix`.
    pub async fn list(
        &self,
        book: &BookId,
        view: ListView,
        prefix: Option<&DirPrefix>,
    ) -> Result<Vec<JournalEntry>> {
        let (u1, u2) = match &view {
            ListView::Base => (BASE_USER, BASE_USER),
            ListView::Overlay(u) => (u.as_str(), u.as_str()),
            ListView::Merged(u) => (BASE_USER, u.as_str()),
        };
        let mut sql = format!(
            "SELECT {JOURNAL_COLS} FROM file_journal WHERE book_id = $1 AND user_id IN ($2, $3)"
        );
        if prefix.is_some() {
            sql.push_str(" AND path LIKE $4 ESCAPE '\\'");
        }
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(book.as_str())
            .bind(u1)
            .bind(u2);
        if let Some(p) = prefix {
            q = q.bind(format!("{}/%", like_escape(p.as_str())));
        }
        let rows = q
            .fetch_all(self.inner.db.pool())
            .await
            .map_err(db_err("list journal"))?;
        let mut by_path: BTreeMap<String, JournalEntry> = BTreeMap::new();
        for r in &rows {
            let e = decode_entry(r)?;
            match by_path.get(&e.path) {
                // Merged view: the overlay row wins over the base row.
                Some(existing) if existing.is_overlay() && !e.is_overlay() => {}
                _ => {
                    by_path.insert(e.path.clone(), e);
                }
            }
        }
        Ok(by_path.into_values().collect())
    }

    /// The bytes of a blob (`NOT_FOUND` if missing).
    pub async fn read_blob(&self, sha256: &str) -> Result<Bytes> {
        check_sha(sha256)?;
        match self.inner.storage.get(&blob_key(sha256)).await {
            Err(PfsError::NotFound { .. }) => Err(PfsError::Internal(format!(
                "blob {sha256} named by the journal is missing from storage; run fsck"
            ))),
            other => other,
        }
    }

    /// Read a blob whose size the journal records (the fast path for whole-file reads).
    /// Small blobs come from the in-memory cache when present (blobs never change).
    pub async fn read_blob_sized(&self, sha256: &str, size: u64) -> Result<Bytes> {
        check_sha(sha256)?;
        let cache = self
            .inner
            .blobs
            .as_ref()
            .filter(|c| size <= c.max_item_bytes());
        if let Some(hit) = cache.and_then(|c| c.get(sha256)) {
            return Ok(hit);
        }
        match self.inner.storage.get_sized(&blob_key(sha256), size).await {
            Err(PfsError::NotFound { .. }) => Err(PfsError::Internal(format!(
                "blob {sha256} named by the journal is missing from storage; run fsck"
            ))),
            Ok(bytes) => {
                // Only bytes of the size the journal records: a short or long read is not
                // remembered (fsck reports such a blob).
                if let Some(c) = cache
                    && bytes.len() as u64 == size
                {
                    c.insert(sha256, &bytes);
                }
                Ok(bytes)
            }
            other => other,
        }
    }

    /// Read the bytes a journal entry names.
    pub async fn read_entry(&self, entry: &JournalEntry) -> Result<Bytes> {
        self.read_blob_sized(&entry.sha256, entry.size).await
    }

    /// A streaming reader over a blob (bounded memory; for archives and downloads).
    pub async fn open_blob(&self, sha256: &str) -> Result<opendal::FuturesAsyncReader> {
        check_sha(sha256)?;
        self.inner.storage.reader(&blob_key(sha256)).await
    }

    /// Every committed version of a file, oldest first.
    pub async fn history(
        &self,
        book: &BookId,
        path: &BookPath,
        ns: &Namespace,
    ) -> Result<Vec<VersionEntry>> {
        let mut all = self.versions(book, path, ns, i64::MAX, None).await?;
        all.reverse();
        Ok(all)
    }

    /// One page of a file's versions, newest first: at most `limit`, only those older than
    /// version `before` when given (the previous page's last version: a stable cursor, since
    /// versions are only ever added above it).
    pub async fn versions(
        &self,
        book: &BookId,
        path: &BookPath,
        ns: &Namespace,
        limit: i64,
        before: Option<i64>,
    ) -> Result<Vec<VersionEntry>> {
        let rows = sqlx::query(
            "SELECT version, sha256, size, written_at, agent_id, operation FROM file_versions \
             WHERE book_id = $1 AND path = $2 AND user_id = $3 AND version < $4 \
             ORDER BY version DESC LIMIT $5",
        )
        .bind(book.as_str())
        .bind(path.as_str())
        .bind(ns.journal_user())
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit.max(0))
        .fetch_all(self.inner.db.pool())
        .await
        .map_err(db_err("read history"))?;
        rows.iter().map(decode_version).collect()
    }

    /// The bytes of the version of `path` with content hash `sha256`, if that hash is in the
    /// file's own history in `ns` (never any other file's: a hash alone gives no access).
    /// `None` when it is not.
    pub async fn read_version_by_hash(
        &self,
        book: &BookId,
        path: &BookPath,
        ns: &Namespace,
        sha256: &str,
    ) -> Result<Option<(VersionEntry, Bytes)>> {
        let Some(v) = self.find_version(book, path, ns, sha256).await? else {
            return Ok(None);
        };
        let bytes = self.read_blob_sized(&v.sha256, v.size).await?;
        Ok(Some((v, bytes)))
    }

    /// The newest version of `path` in `ns` with content hash `sha256` (metadata only).
    pub async fn find_version(
        &self,
        book: &BookId,
        path: &BookPath,
        ns: &Namespace,
        sha256: &str,
    ) -> Result<Option<VersionEntry>> {
        check_sha(sha256)?;
        let row = sqlx::query(
            "SELECT version, sha256, size, written_at, agent_id, operation FROM file_versions \
             WHERE book_id = $1 AND path = $2 AND user_id = $3 AND sha256 = $4 \
             ORDER BY version DESC LIMIT 1",
        )
        .bind(book.as_str())
        .bind(path.as_str())
        .bind(ns.journal_user())
        .bind(sha256)
        .fetch_optional(self.inner.db.pool())
        .await
        .map_err(db_err("find version"))?;
        row.map(|r| decode_version(&r)).transpose()
    }

    /// The bytes of one earlier (or the current) version.
    pub async fn read_version(
        &self,
        book: &BookId,
        path: &BookPath,
        ns: &Namespace,
        version: i64,
    ) -> Result<Bytes> {
        let sha: Option<String> = sqlx::query_scalar(
            "SELECT sha256 FROM file_versions WHERE book_id = $1 AND path = $2 AND user_id = $3 AND version = $4",
        )
        .bind(book.as_str())
        .bind(path.as_str())
        .bind(ns.journal_user())
        .bind(version)
        .fetch_optional(self.inner.db.pool())
        .await
        .map_err(db_err("read version"))?;
        match sha {
            Some(sha) => self.read_blob(&sha).await,
            None => Err(PfsError::not_found(format!("version {version} of {path}"))),
        }
    }
}
