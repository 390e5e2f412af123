//! Streaming, deterministic ZIP archives of a book (`get_book_archive`).
//!
//! An archive costs what copying costs. Blobs are immutable and content-addressed, so the form
//! an entry takes inside a ZIP (method, CRC-32, the deflate stream) is computed once, the first
//! time a blob is archived, and remembered by the [`ArchiveSource`] (the engine keeps the
//! metadata in `zip_streams` and the deflate stream as an object); every later archive writes
//! headers and copies stored streams. Misses are prepared on every core (hashing, CRC and
//! compression on the blocking pool, [`LOOKAHEAD`] entries ahead of the writer), in archive order.
//!
//! # Determinism
//! The same entries with the same bytes give the same archive bytes, whether their streams came
//! from the cache or were compressed now, so the HTTP layer derives an ETag from the manifest
//! ([`archive_etag`]): entries sorted by name (byte order), one timestamp
//! ([`ArchiveOptions::mtime`], default 1980-01-01 00:00:00), Unix mode 0644, the method fixed by
//! the name and size ([`deflates`]) and by whether deflate saves anything, one compressor
//! ([`CODEC`]: libdeflate at level [`LEVEL`], whole-buffer).
//!
//! # Memory
//! Entries up to [`IN_MEMORY_MAX`] are prepared in memory, at most [`LOOKAHEAD`] at a time;
//! larger ones (media, always stored) are streamed from storage with a 64 KiB buffer. The peak of
//! prepared bytes held is measured ([`ArchiveSummary::peak_buffered_bytes`]).
//!
//! # Failures
//! An entry is written only once its data is in hand (or, for a streamed one, open), so a file
//! that cannot be read is skipped and listed. A streamed entry whose read fails midway is padded
//! to its announced size and listed (its CRC then fails, as it should). A blob whose bytes do not
//! hash to the journal's sha256 is skipped and listed. When anything was listed, a last entry
//! [`ERRORS_ENTRY`] holds the list as JSON `[{"path", "error"}]`, and the summary says `partial`.
//! A failure of the *output* (client gone, disk full) aborts with an error.
//!
//! # Time budget and resumption
//! With [`ArchiveOptions::time_budget`], the budget is checked before each entry (at least one
//! entry is always written). When it runs out the archive is closed properly with a last entry
//! [`PARTIAL_ENTRY`] (`{"partial", "reason", "resume_after", "missing"}`), `partial` is set and
//! `resume_after` names the last entry written; passing it as [`ArchiveOptions::start_after`]
//! continues with the entries after it.

mod deflater;
pub use deflater::set_tidy_hook;
mod prepare;
#[cfg(test)]
mod tests;
pub mod zip;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use futures::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWrite;

use crate::error::PfsError;
use prepare::{Data, Prepared, prepare};
pub use zip::Method;
use zip::{EntryHeader, ZipWriter};

/// Name of the error-manifest entry appended when some files could not be archived.
pub const ERRORS_ENTRY: &str = "_archive_errors.json";
/// Name of the entry appended when the time budget ran out.
pub const PARTIAL_ENTRY: &str = "_archive_partial.json";
/// The compressor and level of every deflate stream (names the cache, see `zip_streams`).
pub const CODEC: &str = "libdeflate-6";
/// libdeflate's compression level (6: its default, 2.8-3.1:1 on lesson prose).
pub const LEVEL: i32 = 6;
/// Entries up to this size are prepared in memory; larger ones are streamed and stored.
pub const IN_MEMORY_MAX: u64 = 4 * 1024 * 1024;
/// How many entries are prepared ahead of the writer (and at most held in memory at once).
pub const LOOKAHEAD: usize = 4;
/// Copy block of streamed entries.
const BLOCK: usize = 64 * 1024;
/// Extensions deflated; everything else is stored as is.
pub const DEFLATE_EXTENSIONS: &[&str] = &[
    "md", "mdx", "json", "txt", "svg", "yml", "yaml", "csv", "html", "htm", "css", "js", "ts",
    "py", "xml", "tex",
];

/// One file to archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveEntry {
    /// Path inside the ZIP (e.g. `content/01-Part/01-Ch/01-lesson.md`).
    pub name: String,
    /// Size in bytes (from the journal).
    pub size: u64,
    /// sha256 (lowercase hex) from the journal: the blob to archive.
    pub sha256: String,
}

/// How a blob is stored inside an archive (cached by its sha256).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamInfo {
    pub method: Method,
    pub crc32: u32,
    /// Size of the stored form (the blob's size when `Stored`).
    pub compressed_size: u64,
}

/// Where an archive's bytes come from: blobs and the cache of their stored forms.
#[async_trait]
pub trait ArchiveSource: Send + Sync {
    /// The cached stored forms of these blobs (missing ones are simply absent).
    async fn cached(&self, shas: &[String]) -> HashMap<String, StreamInfo>;
    /// A cached deflate stream of `size` bytes (its remembered compressed size).
    async fn read_stream(&self, sha256: &str, size: u64) -> Result<Bytes, PfsError>;
    /// A whole blob.
    async fn read_blob(&self, entry: &ArchiveEntry) -> Result<Bytes, PfsError>;
    /// A reader that may block, for sources whose storage is local: the archive then reads (and
    /// for a miss verifies and compresses) in one job on its compression threads, so the big
    /// buffers are allocated on a few threads instead of the blocking pool's many. `None` (the
    /// default): [`ArchiveSource::read_blob`] and [`ArchiveSource::read_stream`].
    fn blocking_reader(&self) -> Option<BlockingReader> {
        None
    }
    /// A blob as a stream (entries larger than [`IN_MEMORY_MAX`]).
    async fn open_blob(
        &self,
        entry: &ArchiveEntry,
    ) -> Result<Box<dyn futures::io::AsyncRead + Unpin + Send>, PfsError>;
    /// Remember a blob's stored form (`deflated`: its deflate stream). Best effort.
    async fn remember(&self, sha256: &str, info: StreamInfo, deflated: Option<Bytes>);
    /// Make what [`ArchiveSource::remember`] took durable and visible (called once at the end).
    async fn flush(&self);
}

/// See [`ArchiveSource::blocking_reader`].
pub type BlockingReader =
    std::sync::Arc<dyn Fn(BlockingRead<'_>) -> Result<Bytes, PfsError> + Send + Sync>;

/// What a [`BlockingReader`] reads.
#[derive(Debug, Clone, Copy)]
pub enum BlockingRead<'a> {
    /// A whole blob (as [`ArchiveSource::read_blob`]).
    Blob(&'a ArchiveEntry),
    /// A cached deflate stream (as [`ArchiveSource::read_stream`]).
    Stream { sha256: &'a str, size: u64 },
}

/// Options of [`write_archive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveOptions {
    /// Timestamp of every entry (UTC; clamped to the DOS range 1980..=2107, 2-second precision).
    pub mtime: DateTime<Utc>,
    /// Only archive entries whose name sorts after this one (resumption).
    pub start_after: Option<String>,
    /// Stop starting new entries after this long (checked between entries).
    pub time_budget: Option<Duration>,
}

impl Default for ArchiveOptions {
    fn default() -> Self {
        ArchiveOptions {
            mtime: dos_epoch(),
            start_after: None,
            time_budget: None,
        }
    }
}

fn dos_epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(1980, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// A file that could not be archived (completely).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiveError {
    pub path: String,
    pub error: String,
}

/// What [`write_archive`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiveSummary {
    /// Entries written completely and verified (the manifests not counted).
    pub file_count: usize,
    /// Uncompressed bytes of all entries written.
    pub total_bytes: u64,
    /// Bytes of ZIP output written.
    pub archive_bytes: u64,
    /// Files skipped or incomplete, in archive order.
    pub errors: Vec<ArchiveError>,
    /// Some file is missing or incomplete, or the time budget ran out.
    pub partial: bool,
    /// Set when the time budget ran out: the last entry written; pass it as `start_after`.
    pub resume_after: Option<String>,
    /// Entries whose stored form came from the cache / was computed now.
    pub cache_hits: usize,
    pub cache_misses: usize,
    /// The most prepared entry bytes held in memory at once.
    pub peak_buffered_bytes: u64,
}

/// Whether `name` of `size` bytes is deflated (by extension, case-insensitive; small enough to
/// prepare in memory). Whether the deflated form is kept also depends on it being smaller.
pub fn deflates(name: &str, size: u64) -> bool {
    let file = name.rsplit('/').next().unwrap_or(name);
    size <= IN_MEMORY_MAX
        && matches!(file.rsplit_once('.'),
            Some((_, ext)) if DEFLATE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()))
}

/// A strong validator for the archive [`write_archive`] produces from `entries` and `opts` when
/// no file fails: sha256 over a format version (with the codec), the options and the sorted
/// `name:size:sha256` list after `start_after`. The HTTP layer can send it as the ETag before
/// streaming (a failed file changes the bytes; such responses are `partial`).
pub fn archive_etag(entries: &[ArchiveEntry], opts: &ArchiveOptions) -> String {
    let sorted = selected(entries, opts.start_after.as_deref());
    let mut h = Sha256::new();
    h.update(format!("pfs-archive-v2 {CODEC}\n").as_bytes());
    let (time, date) = dos_stamp(opts.mtime);
    h.update(format!("{time}:{date}\n").as_bytes());
    for e in sorted {
        h.update(format!("{}:{}:{}\n", e.name, e.size, e.sha256).as_bytes());
    }
    hex::encode(h.finalize())
}

/// Entries after `start_after`, sorted by name, one per name.
fn selected<'a>(entries: &'a [ArchiveEntry], start_after: Option<&str>) -> Vec<&'a ArchiveEntry> {
    let mut v: Vec<&ArchiveEntry> = entries
        .iter()
        .filter(|e| start_after.is_none_or(|s| e.name.as_str() > s))
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v.dedup_by(|a, b| a.name == b.name);
    v
}

fn dos_stamp(t: DateTime<Utc>) -> (u16, u16) {
    let t = t.max(dos_epoch());
    zip::dos_date_time(
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
    )
}

fn output_error(e: impl std::fmt::Display) -> PfsError {
    PfsError::Internal(format!("archive output failed: {e}"))
}

/// Write a ZIP of `entries` from `source` to `out` (see the module docs for order, determinism,
/// memory, failures and resumption). `out` is flushed and shut down at the end (so a pipe reader
/// sees EOF). Returns an error only when writing to `out` fails.
pub async fn write_archive<W, S>(
    entries: Vec<ArchiveEntry>,
    source: &S,
    out: W,
    opts: ArchiveOptions,
) -> Result<ArchiveSummary, PfsError>
where
    W: AsyncWrite + Unpin + Send,
    S: ArchiveSource + ?Sized,
{
    let started = Instant::now();
    let todo: Vec<ArchiveEntry> = selected(&entries, opts.start_after.as_deref())
        .into_iter()
        .cloned()
        .collect();
    let shas: Vec<String> = todo.iter().map(|e| e.sha256.clone()).collect();
    let cached = source.cached(&shas).await;
    let held = AtomicU64::new(0);
    let peak = AtomicU64::new(0);
    // Indices, not `&ArchiveEntry` closures: a closure over borrowed items makes the future
    // fail the `Send` check of a spawned task (rust-lang/rust#64552).
    let (todo_ref, cached_ref, held_ref, peak_ref) = (&todo, &cached, &held, &peak);
    let mut prepared = futures::stream::iter((0..todo.len()).map(move |i| {
        let e = &todo_ref[i];
        prepare_counted(
            source,
            e,
            cached_ref.get(&e.sha256).copied(),
            held_ref,
            peak_ref,
        )
    }))
    .buffered(LOOKAHEAD);

    let mut zip = ZipWriter::new(out, dos_stamp(opts.mtime));
    let mut summary = ArchiveSummary {
        file_count: 0,
        total_bytes: 0,
        archive_bytes: 0,
        errors: Vec::new(),
        partial: false,
        resume_after: None,
        cache_hits: 0,
        cache_misses: 0,
        peak_buffered_bytes: 0,
    };
    let mut index = 0usize;
    while let Some(p) = prepared.next().await {
        let entry = &todo[index];
        index += 1;
        let p = match p {
            Ok(p) => p,
            Err(error) => {
                summary.errors.push(ArchiveError {
                    path: entry.name.clone(),
                    error,
                });
                continue;
            }
        };
        if p.from_cache {
            summary.cache_hits += 1;
        } else {
            summary.cache_misses += 1;
        }
        write_entry(&mut zip, entry, p, &held, &mut summary).await?;
        // At least one entry per call, so a resumed archive always makes progress.
        if let Some(budget) = opts.time_budget
            && index < todo.len()
            && started.elapsed() >= budget
        {
            summary.resume_after = Some(entry.name.clone());
            let missing: Vec<&str> = todo[index..].iter().map(|e| e.name.as_str()).collect();
            let json = serde_json::to_vec_pretty(&serde_json::json!({
                "partial": true,
                "reason": format!("the archive's time budget of {} s ran out", budget.as_secs_f64()),
                "resume_after": entry.name,
                "missing": missing,
            }))
            .map_err(PfsError::internal)?;
            write_manifest(&mut zip, PARTIAL_ENTRY, &json).await?;
            break;
        }
    }
    drop(prepared);
    if !summary.errors.is_empty() {
        let json = serde_json::to_vec_pretty(&summary.errors).map_err(PfsError::internal)?;
        write_manifest(&mut zip, ERRORS_ENTRY, &json).await?;
    }
    let (_, written) = zip.finish().await.map_err(output_error)?;
    source.flush().await;
    summary.archive_bytes = written;
    summary.partial = !summary.errors.is_empty() || summary.resume_after.is_some();
    summary.peak_buffered_bytes = peak.load(Ordering::Relaxed);
    Ok(summary)
}

/// [`prepare`], counting the bytes it holds in `held` (and their peak).
fn prepare_counted<'a, S: ArchiveSource + ?Sized>(
    source: &'a S,
    entry: &'a ArchiveEntry,
    cached: Option<StreamInfo>,
    held: &'a AtomicU64,
    peak: &'a AtomicU64,
) -> futures::future::BoxFuture<'a, Result<Prepared, String>> {
    Box::pin(async move {
        let p = prepare(source, entry, cached).await;
        if let Ok(Prepared {
            data: Data::Bytes(b),
            ..
        }) = &p
        {
            let now = held.fetch_add(b.len() as u64, Ordering::Relaxed) + b.len() as u64;
            peak.fetch_max(now, Ordering::Relaxed);
        }
        p
    })
}

/// Write one prepared entry; a streamed entry whose read fails is padded and listed.
async fn write_entry<W: AsyncWrite + Unpin>(
    zip: &mut ZipWriter<W>,
    entry: &ArchiveEntry,
    p: Prepared,
    held: &AtomicU64,
    summary: &mut ArchiveSummary,
) -> Result<(), PfsError> {
    zip.start(EntryHeader {
        name: entry.name.clone(),
        method: p.info.method,
        crc32: p.info.crc32,
        compressed_size: p.info.compressed_size,
        uncompressed_size: entry.size,
    })
    .await
    .map_err(output_error)?;
    match p.data {
        Data::Bytes(b) => {
            zip.data(&b).await.map_err(output_error)?;
            held.fetch_sub(b.len() as u64, Ordering::Relaxed);
        }
        Data::Stream(mut reader) => {
            use futures::io::AsyncReadExt;
            let mut buf = vec![0u8; BLOCK];
            let mut failed = None;
            while zip.remaining() > 0 {
                let want = buf.len().min(zip.remaining() as usize);
                match reader.read(&mut buf[..want]).await {
                    Ok(0) => {
                        failed = Some("the blob ended early".to_string());
                        break;
                    }
                    Ok(n) => zip.data(&buf[..n]).await.map_err(output_error)?,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        failed = Some(format!("read failed: {e}"));
                        break;
                    }
                }
            }
            if let Some(why) = failed {
                let short = zip.remaining();
                buf.fill(0);
                while zip.remaining() > 0 {
                    let n = buf.len().min(zip.remaining() as usize);
                    zip.data(&buf[..n]).await.map_err(output_error)?;
                }
                summary.errors.push(ArchiveError {
                    path: entry.name.clone(),
                    error: format!(
                        "{why} with {short} bytes to go; the entry is padded with zeros and its CRC fails"
                    ),
                });
                return Ok(());
            }
        }
    }
    summary.file_count += 1;
    summary.total_bytes += entry.size;
    Ok(())
}

/// A small JSON entry (deflated) of the archive's own.
async fn write_manifest<W: AsyncWrite + Unpin>(
    zip: &mut ZipWriter<W>,
    name: &str,
    json: &[u8],
) -> Result<(), PfsError> {
    let (info, data) = deflater::deflate(json).map_err(PfsError::Internal)?;
    zip.start(EntryHeader {
        name: name.to_string(),
        method: info.method,
        crc32: info.crc32,
        compressed_size: info.compressed_size,
        uncompressed_size: json.len() as u64,
    })
    .await
    .map_err(output_error)?;
    zip.data(&data).await.map_err(output_error)
}
