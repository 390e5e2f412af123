//! Base manifests (plan_build) with the generation-validated cache, and manifest snapshots.

use super::*;

impl Engine {
    /// Store a manifest snapshot (`{path: sha256}` JSON with sorted keys). Idempotent and safe
    /// under concurrent calls (`ON CONFLICT DO NOTHING`).
    pub async fn save_manifest_snapshot(
        &self,
        book: &BookId,
        manifest_hash: &str,
        entries: &[(String, String)],
    ) -> Result<()> {
        let map: BTreeMap<&str, &str> = entries
            .iter()
            .map(|(p, s)| (p.as_str(), s.as_str()))
            .collect();
        let json = serde_json::to_string(&map).map_err(PfsError::internal)?;
        let _w = self.inner.db.lock_writes().await;
        sqlx::query(
            "INSERT INTO manifest_snapshots (book_id, manifest_hash, created_at, file_count, content_json) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (book_id, manifest_hash) DO NOTHING",
        )
        .bind(book.as_str())
        .bind(manifest_hash)
        .bind(now_micros())
        .bind(map.len() as i64)
        .bind(json)
        .execute(self.inner.db.pool())
        .await
        .map_err(db_err("save manifest snapshot"))?;
        Ok(())
    }

    /// A stored manifest snapshot as sorted `(path, sha256)` entries.
    pub async fn load_manifest_snapshot(
        &self,
        book: &BookId,
        manifest_hash: &str,
    ) -> Result<Option<Vec<(String, String)>>> {
        let json: Option<String> = sqlx::query_scalar(
            "SELECT content_json FROM manifest_snapshots WHERE book_id = $1 AND manifest_hash = $2",
        )
        .bind(book.as_str())
        .bind(manifest_hash)
        .fetch_optional(self.inner.db.pool())
        .await
        .map_err(db_err("load manifest snapshot"))?;
        json.map(|j| {
            serde_json::from_str::<BTreeMap<String, String>>(&j)
                .map(|m| m.into_iter().collect())
                .map_err(|e| PfsError::Internal(format!("corrupt manifest snapshot: {e}")))
        })
        .transpose()
    }

    /// `(path, sha256)` of every base file of a book, sorted by path (byte order): the narrow
    /// read behind [`Engine::base_manifest`].
    pub async fn base_hashes(&self, book: &BookId) -> Result<Vec<(String, String)>> {
        base_hash_rows(self.inner.db.pool(), book.as_str()).await
    }

    /// The book's current base manifest, cached per book.
    ///
    /// Every commit that changes a base row increments, in the same transaction, a counter of
    /// the book (`book_generations`, one row per audit shard). A cached manifest is served when
    /// the book's counters read now equal the ones read with the cached rows (in one snapshot),
    /// so an unchanged book costs one small query instead of reading every row, and a write
    /// through any engine or replica on the same database is seen by the next call.
    pub async fn base_manifest(&self, book: &BookId) -> Result<Arc<BaseManifest>> {
        let db = &self.inner.db;
        let now = read_generation(db.pool(), book.as_str()).await?;
        if let Some(hit) = self.cached_manifest(book.as_str(), &now) {
            metrics::counter!("panaversityfs_manifest_cache_total", "result" => "hit").increment(1);
            return Ok(hit);
        }
        metrics::counter!("panaversityfs_manifest_cache_total", "result" => "miss").increment(1);
        // Counters and rows from one snapshot (SQLite WAL read transaction; PostgreSQL
        // REPEATABLE READ), so the counters name exactly the rows read.
        let begin = match db.kind() {
            platform::db::DbKind::Sqlite => "BEGIN",
            platform::db::DbKind::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        };
        let mut tx = db
            .pool()
            .begin_with(begin)
            .await
            .map_err(db_err("begin manifest read"))?;
        let generation = read_generation(&mut *tx, book.as_str()).await?;
        let entries = base_hash_rows(&mut *tx, book.as_str()).await?;
        tx.commit().await.map_err(db_err("end manifest read"))?;
        let manifest = Arc::new(BaseManifest {
            generation,
            manifest_hash: crate::manifest::manifest_hash(&entries),
            entries,
            snapshot_saved: AtomicBool::new(false),
        });
        let mut cache = self
            .inner
            .manifests
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MANIFEST_CACHE_BOOKS && !cache.contains_key(book.as_str()) {
            cache.clear();
        }
        cache.insert(book.as_str().to_string(), manifest.clone());
        Ok(manifest)
    }

    pub(super) fn cached_manifest(
        &self,
        book: &str,
        generation: &[(i64, i64)],
    ) -> Option<Arc<BaseManifest>> {
        let cache = self
            .inner
            .manifests
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        cache
            .get(book)
            .filter(|m| m.generation == generation)
            .cloned()
    }

    /// [`Engine::save_manifest_snapshot`] of `manifest`, skipped when this engine stored it
    /// already (snapshots are immutable and keyed by their hash).
    pub async fn save_base_manifest_snapshot(
        &self,
        book: &BookId,
        manifest: &BaseManifest,
    ) -> Result<()> {
        if manifest.snapshot_saved.load(Ordering::Acquire) {
            return Ok(());
        }
        self.save_manifest_snapshot(book, &manifest.manifest_hash, &manifest.entries)
            .await?;
        manifest.snapshot_saved.store(true, Ordering::Release);
        Ok(())
    }
}
