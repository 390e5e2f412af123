//! The engine as an [`ArchiveSource`]: blobs from storage, and the cache of their stored forms
//! (`zip_streams` rows for method/CRC/size, deflate streams as `_pfs/zip/{codec}/{sha256}`).
//!
//! A stream object is written without waiting for the disk; its row is inserted only after the
//! store was flushed (`syncfs` on local files, once per archive), so a row never names a stream
//! that a crash could have lost. A lost or short stream is computed again (the archive checks
//! its size); a row is never wrong because streams are named by the blob's content hash.

use std::sync::Mutex;

use async_trait::async_trait;

use super::*;
use crate::archive::{ArchiveEntry, ArchiveSource, BlockingRead, CODEC, Method, StreamInfo};

/// How many hashes one cache lookup names.
const LOOKUP_CHUNK: usize = 500;

fn stream_key(sha256: &str) -> String {
    format!(
        "_pfs/zip/{CODEC}/{}/{sha256}",
        sha256.get(..2).unwrap_or("xx")
    )
}

/// See the module docs. One per archive.
pub struct EngineArchiveSource {
    engine: Engine,
    learned: Mutex<Vec<(String, StreamInfo)>>,
}

impl Engine {
    /// The source of one archive of this engine's books.
    pub fn archive_source(&self) -> EngineArchiveSource {
        EngineArchiveSource {
            engine: self.clone(),
            learned: Mutex::new(Vec::new()),
        }
    }
}

impl EngineArchiveSource {
    async fn lookup(&self, shas: &[String]) -> Result<HashMap<String, StreamInfo>> {
        let mut out = HashMap::with_capacity(shas.len());
        for chunk in shas.chunks(LOOKUP_CHUNK) {
            let marks: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = format!(
                "SELECT sha256, method, crc32, compressed_size FROM zip_streams \
                 WHERE codec = $1 AND sha256 IN ({})",
                marks.join(", ")
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(CODEC);
            for s in chunk {
                q = q.bind(s.as_str());
            }
            let rows = q
                .fetch_all(self.engine.inner.db.pool())
                .await
                .map_err(db_err("read the archive stream cache"))?;
            for r in rows {
                let g = db_err("decode an archive stream row");
                let sha: String = r.try_get("sha256").map_err(&g)?;
                let method: i64 = r.try_get("method").map_err(&g)?;
                let crc: i64 = r.try_get("crc32").map_err(&g)?;
                let size: i64 = r.try_get("compressed_size").map_err(&g)?;
                if let (Some(method), Ok(crc32), Ok(compressed_size)) = (
                    Method::from_code(method),
                    u32::try_from(crc),
                    u64::try_from(size),
                ) {
                    out.insert(
                        sha,
                        StreamInfo {
                            method,
                            crc32,
                            compressed_size,
                        },
                    );
                }
            }
        }
        Ok(out)
    }

    async fn record(&self, learned: Vec<(String, StreamInfo)>) -> Result<()> {
        let storage = self.engine.inner.storage.clone();
        if storage.is_local_fs() {
            match tokio::task::spawn_blocking(move || storage.sync_all_blocking()).await {
                Ok(Some(Ok(()))) | Ok(None) => {}
                Ok(Some(Err(e))) => return Err(e),
                Err(e) => return Err(PfsError::internal(e)),
            }
        }
        let mut tx = self
            .engine
            .inner
            .db
            .begin_write()
            .await
            .map_err(db_err("begin archive stream cache"))?;
        for (sha, info) in &learned {
            sqlx::query(
                "INSERT INTO zip_streams (codec, sha256, method, crc32, compressed_size) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (codec, sha256) DO NOTHING",
            )
            .bind(CODEC)
            .bind(sha.as_str())
            .bind(i64::from(info.method.code()))
            .bind(i64::from(info.crc32))
            .bind(i64::try_from(info.compressed_size).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await
            .map_err(db_err("remember archive streams"))?;
        }
        tx.commit()
            .await
            .map_err(db_err("commit archive stream cache"))
    }
}

#[async_trait]
impl ArchiveSource for EngineArchiveSource {
    async fn cached(&self, shas: &[String]) -> HashMap<String, StreamInfo> {
        match self.lookup(shas).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "archive stream cache unavailable; compressing everything");
                HashMap::new()
            }
        }
    }

    async fn read_stream(&self, sha256: &str, size: u64) -> Result<Bytes> {
        self.engine
            .inner
            .storage
            .get_sized(&stream_key(sha256), size)
            .await
    }

    async fn read_blob(&self, entry: &ArchiveEntry) -> Result<Bytes> {
        check_sha(&entry.sha256)?;
        self.engine
            .inner
            .storage
            .get_sized(&blob_key(&entry.sha256), entry.size)
            .await
    }

    fn blocking_reader(&self) -> Option<crate::archive::BlockingReader> {
        let storage = self.engine.inner.storage.clone();
        if !storage.is_local_fs() {
            return None;
        }
        Some(std::sync::Arc::new(move |what: BlockingRead<'_>| {
            let (key, size) = match what {
                BlockingRead::Blob(e) => {
                    check_sha(&e.sha256)?;
                    (blob_key(&e.sha256), e.size)
                }
                BlockingRead::Stream { sha256, size } => {
                    check_sha(sha256)?;
                    (stream_key(sha256), size)
                }
            };
            storage
                .get_sized_blocking(&key, size)
                .unwrap_or_else(|| Err(PfsError::Internal("not local storage".into())))
        }))
    }

    async fn open_blob(
        &self,
        entry: &ArchiveEntry,
    ) -> Result<Box<dyn futures::io::AsyncRead + Unpin + Send>> {
        Ok(Box::new(self.engine.open_blob(&entry.sha256).await?))
    }

    async fn remember(&self, sha256: &str, info: StreamInfo, deflated: Option<Bytes>) {
        if let Some(bytes) = deflated
            && let Err(e) = self
                .engine
                .inner
                .storage
                .put_unsynced(&stream_key(sha256), bytes)
                .await
        {
            tracing::debug!(error = %e, "could not keep an archive stream");
            return;
        }
        if let Ok(mut l) = self.learned.lock() {
            l.push((sha256.to_string(), info));
        }
    }

    async fn flush(&self) {
        let learned = match self.learned.lock() {
            Ok(mut l) => std::mem::take(&mut *l),
            Err(_) => return,
        };
        if learned.is_empty() {
            return;
        }
        let n = learned.len();
        match self.record(learned).await {
            Ok(()) => {
                metrics::counter!("panaversityfs_archive_streams_cached_total").increment(n as u64)
            }
            Err(e) => tracing::warn!(error = %e, "could not remember archive streams"),
        }
    }
}

/// How many blob presence checks run at once.
const PRESENCE_CONCURRENCY: usize = 16;

impl Engine {
    /// The paths among `entries` whose blob storage does not have (or cannot stat) at the
    /// recorded size: what an archive of them would list in `_archive_errors.json`.
    pub async fn unreadable_blobs(&self, entries: &[JournalEntry]) -> Vec<String> {
        use futures::StreamExt as _;
        let checks: Vec<(String, String, u64)> = entries
            .iter()
            .map(|e| (e.path.clone(), blob_key(&e.sha256), e.size))
            .collect();
        let storage = self.inner.storage.clone();
        if storage.is_local_fs() {
            // One blocking call for the whole list instead of a blocking task per file.
            let local = storage.clone();
            let found = tokio::task::spawn_blocking(move || {
                checks
                    .into_iter()
                    .filter(|(_, key, size)| {
                        !matches!(local.stat_blocking(key), Some(Ok(Some(n))) if n == *size)
                    })
                    .map(|(path, _, _)| path)
                    .collect::<Vec<String>>()
            })
            .await;
            return match found {
                Ok(mut missing) => {
                    missing.sort();
                    missing
                }
                Err(e) => {
                    tracing::warn!(error = %e, "archive: checking the blobs failed");
                    Vec::new()
                }
            };
        }
        let mut missing: Vec<String> = futures::stream::iter(checks)
            .map(move |(path, key, size)| {
                let storage = storage.clone();
                async move {
                    match storage.stat(&key).await {
                        Ok(Some(n)) if n == size => None,
                        _ => Some(path),
                    }
                }
            })
            .buffer_unordered(PRESENCE_CONCURRENCY)
            .filter_map(std::future::ready)
            .collect()
            .await;
        missing.sort();
        missing
    }
}
