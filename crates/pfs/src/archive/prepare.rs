//! Getting one entry's stored form in hand: from the cache, or computed now (verify the blob
//! against the journal's sha256, CRC-32, deflate with libdeflate) on the blocking pool.

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::{ArchiveEntry, ArchiveSource, IN_MEMORY_MAX, LEVEL, Method, StreamInfo, deflates};
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
            if let Ok(b) = source.read_stream(&entry.sha256).await
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
            let b = source
                .read_blob(entry)
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
    let raw = source
        .read_blob(entry)
        .await
        .map_err(|e| format!("could not read: {}", caller_message(&e)))?;
    let (expected, size, deflate) = (
        entry.sha256.clone(),
        entry.size,
        deflates(&entry.name, entry.size),
    );
    let (info, data) = tokio::task::spawn_blocking(move || compute(&raw, &expected, size, deflate))
        .await
        .map_err(|e| format!("preparing failed: {e}"))??;
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
    let crc32 = crc32fast::hash(raw);
    if deflate {
        let (info, out) = deflate_now(raw)?;
        if info.compressed_size < size {
            return Ok((StreamInfo { crc32, ..info }, out));
        }
    }
    Ok((
        StreamInfo {
            method: Method::Stored,
            crc32,
            compressed_size: size,
        },
        raw.clone(),
    ))
}

/// Deflate `raw` now (raw DEFLATE, libdeflate at [`LEVEL`]).
pub(super) fn deflate_now(raw: &[u8]) -> Result<(StreamInfo, Bytes), String> {
    let level =
        libdeflater::CompressionLvl::new(LEVEL).map_err(|e| format!("compression level: {e:?}"))?;
    let mut c = libdeflater::Compressor::new(level);
    let mut out = vec![0u8; c.deflate_compress_bound(raw.len())];
    let n = c
        .deflate_compress(raw, &mut out)
        .map_err(|e| format!("deflate failed: {e:?}"))?;
    out.truncate(n);
    Ok((
        StreamInfo {
            method: Method::Deflate,
            crc32: crc32fast::hash(raw),
            compressed_size: n as u64,
        },
        Bytes::from(out),
    ))
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
