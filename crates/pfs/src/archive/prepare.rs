//! Getting one entry's stored form in hand: from the cache, or computed now (verify the blob
//! against the journal's sha256, CRC-32, deflate with libdeflate) on the compression threads.

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::{
    ArchiveEntry, ArchiveSource, BlockingRead, IN_MEMORY_MAX, Method, StreamInfo, deflates,
};
use crate::error::PfsError;

/// An entry's data, ready to copy into the ZIP.
pub(super) enum Data {
    Bytes(Bytes),
    Stream(Box<dyn futures::io::AsyncRead + Unpin + Send>),
}

pub(super) struct Prepared {
    pub info: StreamInfo,
    pub data: Data,
    /// The stored form came from the cache.
    pub from_cache: bool,
}

/// The caller-facing text of an error (internal details stay in the logs).
fn caller_message(e: &PfsError) -> String {
    match e {
        PfsError::Internal(_) => {
            tracing::warn!(error = %e, "archive: could not read a file");
            "internal error".to_string()
        }
        other => other.to_string(),
    }
}

/// Prepare `entry` (`cached`: its remembered stored form). `Err` is the text listed in the
/// archive's error manifest; the entry is then skipped.
pub(super) async fn prepare<S: ArchiveSource + ?Sized>(
    source: &S,
    entry: &ArchiveEntry,
    cached: Option<StreamInfo>,
) -> Result<Prepared, String> {
    if entry.size > IN_MEMORY_MAX {
        return prepare_streamed(source, entry, cached).await;
    }
    match cached {
        Some(info) if info.method == Method::Deflate => {
            let size = info.compressed_size;
            let sha = entry.sha256.clone();
            let read = match source.blocking_reader() {
                Some(read) => {
                    super::deflater::run(move || read(BlockingRead::Stream { sha256: &sha, size }))
                        .await
                        .map_err(PfsError::Internal)
                        .and_then(|r| r)
                }
                None => source.read_stream(&sha, size).await,
            };
            if let Ok(b) = read
                && b.len() as u64 == info.compressed_size
            {
                return Ok(Prepared {
                    info,
                    data: Data::Bytes(b),
                    from_cache: true,
                });
            }
            // A lost or torn stream: compute it again below.
        }
        Some(info) => {
            let b = read_blob(source, entry)
                .await
                .map_err(|e| format!("could not read: {}", caller_message(&e)))?;
            if b.len() as u64 == entry.size && info.compressed_size == entry.size {
                return Ok(Prepared {
                    info,
                    data: Data::Bytes(b),
                    from_cache: true,
                });
            }
        }
        None => {}
    }
    let (expected, size, deflate) = (
        entry.sha256.clone(),
        entry.size,
        deflates(&entry.name, entry.size),
    );
    let (info, data) = match source.blocking_reader() {
        Some(read) => {
            let owned = entry.clone();
            super::deflater::run(move || {
                let raw = read(BlockingRead::Blob(&owned))
                    .map_err(|e| format!("could not read: {}", caller_message(&e)))?;
                compute(&raw, &expected, size, deflate)
            })
            .await??
        }
        None => {
            let raw = source
                .read_blob(entry)
                .await
                .map_err(|e| format!("could not read: {}", caller_message(&e)))?;
            super::deflater::run(move || compute(&raw, &expected, size, deflate)).await??
        }
    };
    let deflated = (info.method == Method::Deflate).then(|| data.clone());
    source.remember(&entry.sha256, info, deflated).await;
    Ok(Prepared {
        info,
        data: Data::Bytes(data),
        from_cache: false,
    })
}

/// Verify `raw` against the journal, then its stored form: deflated when `deflate` and smaller.
fn compute(
    raw: &Bytes,
    expected_sha: &str,
    size: u64,
    deflate: bool,
) -> Result<(StreamInfo, Bytes), String> {
    if raw.len() as u64 != size {
        return Err(format!(
            "size mismatch: the journal says {size} bytes, the blob has {}",
            raw.len()
        ));
    }
    if !expected_sha.is_empty() && hex::encode(Sha256::digest(raw)) != expected_sha {
        return Err("sha256 mismatch with the journal (the blob is damaged; run fsck)".into());
    }
    if deflate {
        let (info, out) = super::deflater::deflate(raw)?;
        if info.compressed_size < size {
            return Ok((info, out));
        }
    }
    let crc32 = crc32fast::hash(raw);
    Ok((
        StreamInfo {
            method: Method::Stored,
            crc32,
            compressed_size: size,
        },
        raw.clone(),
    ))
}

/// A whole blob, on a compression thread when the source can read blocking.
async fn read_blob<S: ArchiveSource + ?Sized>(
    source: &S,
    entry: &ArchiveEntry,
) -> Result<Bytes, PfsError> {
    match source.blocking_reader() {
        Some(read) => {
            let owned = entry.clone();
            super::deflater::run(move || read(BlockingRead::Blob(&owned)))
                .await
                .map_err(PfsError::Internal)?
        }
        None => source.read_blob(entry).await,
    }
}

/// A large entry: stored, streamed from the blob. Without a cached CRC the blob is read once to
/// compute it (and to check its sha256) before the entry starts.
async fn prepare_streamed<S: ArchiveSource + ?Sized>(
    source: &S,
    entry: &ArchiveEntry,
    cached: Option<StreamInfo>,
) -> Result<Prepared, String> {
    use futures::io::AsyncReadExt;
    let open_failed = |e: PfsError| format!("could not open: {}", caller_message(&e));
    let (info, from_cache) = match cached {
        Some(info) if info.method == Method::Stored && info.compressed_size == entry.size => {
            (info, true)
        }
        _ => {
            let mut reader = source.open_blob(entry).await.map_err(open_failed)?;
            let mut crc = crc32fast::Hasher::new();
            let mut sha = Sha256::new();
            let mut buf = vec![0u8; 256 * 1024];
            let mut read = 0u64;
            loop {
                let n = reader
                    .read(&mut buf)
                    .await
                    .map_err(|e| format!("read failed after {read} bytes: {e}"))?;
                if n == 0 {
                    break;
                }
                crc.update(&buf[..n]);
                sha.update(&buf[..n]);
                read += n as u64;
            }
            if read != entry.size {
                return Err(format!(
                    "size mismatch: the journal says {} bytes, the blob has {read}",
                    entry.size
                ));
            }
            if !entry.sha256.is_empty() && hex::encode(sha.finalize()) != entry.sha256 {
                return Err(
                    "sha256 mismatch with the journal (the blob is damaged; run fsck)".into(),
                );
            }
            let info = StreamInfo {
                method: Method::Stored,
                crc32: crc.finalize(),
                compressed_size: entry.size,
            };
            source.remember(&entry.sha256, info, None).await;
            (info, false)
        }
    };
    let reader = source.open_blob(entry).await.map_err(open_failed)?;
    Ok(Prepared {
        info,
        data: Data::Stream(reader),
        from_cache,
    })
}
