//! Streaming, deterministic ZIP archives of a book (`get_book_archive`).
//!
//! [`write_archive`] writes entries one at a time from readers the caller opens on demand into any
//! `tokio::io::AsyncWrite` (an HTTP body pipe, a file, a hasher). Memory stays bounded and
//! independent of book size: one 64 KiB copy buffer, the deflate state of one entry and the ZIP
//! central directory (about 100 bytes plus the name per entry).
//!
//! # Determinism
//! The same entries with the same bytes and options give the same archive bytes, so the HTTP
//! layer can derive an ETag from the manifest ([`archive_etag`]):
//! entries are sorted by name (byte order), every entry carries the same timestamp
//! ([`ArchiveOptions::mtime`], default 1980-01-01 00:00:00, the earliest DOS time) and Unix mode
//! 0644 (regular file), and the compression is fixed per file extension ([`compression_for`]: Deflate for text
//! such as `md`/`mdx`/`json`/`svg`, Stored for already-compressed media). Input is fed to the
//! compressor in fixed 64 KiB blocks regardless of how the readers chunk their data.
//!
//! # Failures
//! A ZIP entry cannot be taken back once its bytes have been streamed, so each reader is opened
//! *before* its entry starts: a file that fails to open is skipped and listed. A read that fails
//! mid-entry ends that entry early (the ZIP stays well-formed: the entry holds the bytes read so
//! far, with a matching CRC) and is listed; so is an entry whose size or sha256 differs from the
//! manifest (the file changed while archiving). When anything was listed, a last entry
//! [`ERRORS_ENTRY`] holds the list as JSON `[{"path", "error"}]`, and the summary says `partial`.
//! A failure of the *output* (client gone, disk full) aborts with an error.
//!
//! # Time budget and resumption
//! With [`ArchiveOptions::time_budget`], the budget is checked before each entry (at least one entry
//! is always processed). When it runs out the archive is closed properly, `partial` is set and
//! `resume_after` names the last processed entry; passing it as [`ArchiveOptions::start_after`]
//! continues with the entries after it.
//!
//! # Readers
//! Readers are `futures::io::AsyncRead` (what OpenDAL's `Reader::into_futures_async_read` gives);
//! wrap a tokio reader with `tokio_util::compat::TokioAsyncReadCompatExt::compat`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_zip::base::write::ZipFileWriter;
use async_zip::{Compression, ZipDateTime, ZipDateTimeBuilder, ZipEntryBuilder};
use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use futures::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt as _};

use crate::error::PfsError;

/// Name of the error-manifest entry appended when some files could not be archived.
pub const ERRORS_ENTRY: &str = "_archive_errors.json";
/// Copy block size: the input of every entry is fed to the compressor in blocks of this size.
const BLOCK: usize = 64 * 1024;
/// Extensions stored with Deflate; everything else is stored as is.
pub const DEFLATE_EXTENSIONS: &[&str] = &[
    "md", "mdx", "json", "txt", "svg", "yml", "yaml", "csv", "html", "htm", "css", "js", "ts",
    "py", "xml", "tex",
];

/// One file to archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveEntry {
    /// Path inside the ZIP (e.g. `content/01-Part/01-Ch/01-lesson.md`).
    pub name: String,
    /// Expected size in bytes (from the journal); a different size read is reported.
    pub size: u64,
    /// Expected sha256 (lowercase hex) from the journal; empty = don't verify.
    pub sha256: String,
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
    /// Entries written completely and verified (the error manifest not counted).
    pub file_count: usize,
    /// Uncompressed bytes of all entries written (including incomplete ones).
    pub total_bytes: u64,
    /// Bytes of ZIP output written.
    pub archive_bytes: u64,
    /// Files skipped or incomplete, in archive order.
    pub errors: Vec<ArchiveError>,
    /// Some file is missing or incomplete, or the time budget ran out.
    pub partial: bool,
    /// Set when the time budget ran out: the last entry processed; pass it as `start_after`.
    pub resume_after: Option<String>,
}

/// The compression used for `name`, by extension (case-insensitive).
pub fn compression_for(name: &str) -> Compression {
    let file = name.rsplit('/').next().unwrap_or(name);
    match file.rsplit_once('.') {
        Some((_, ext)) if DEFLATE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()) => {
            Compression::Deflate
        }
        _ => Compression::Stored,
    }
}

/// A strong validator for the archive [`write_archive`] produces from `entries` and `opts` when
/// no file fails: sha256 over a format version, the options and the sorted `name:size:sha256`
/// list after `start_after`. The HTTP layer can send it as the ETag before streaming (a failed
/// file changes the bytes; such responses are `partial` and should not be cached).
pub fn archive_etag(entries: &[ArchiveEntry], opts: &ArchiveOptions) -> String {
    let mut sorted: Vec<&ArchiveEntry> = selected(entries, opts.start_after.as_deref());
    sorted.dedup_by(|a, b| a.name == b.name);
    let mut h = Sha256::new();
    h.update(b"pfs-archive-v1\n");
    let t = zip_time(opts.mtime);
    h.update(
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}\n",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )
        .as_bytes(),
    );
    for e in sorted {
        h.update(format!("{}:{}:{}\n", e.name, e.size, e.sha256).as_bytes());
    }
    hex::encode(h.finalize())
}

fn selected<'a>(entries: &'a [ArchiveEntry], start_after: Option<&str>) -> Vec<&'a ArchiveEntry> {
    let mut v: Vec<&ArchiveEntry> = entries
        .iter()
        .filter(|e| start_after.is_none_or(|s| e.name.as_str() > s))
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

fn zip_time(t: DateTime<Utc>) -> ZipDateTime {
    let lo = dos_epoch();
    let hi = Utc
        .with_ymd_and_hms(2107, 12, 31, 23, 59, 58)
        .single()
        .unwrap_or(lo);
    let t = t.clamp(lo, hi);
    ZipDateTimeBuilder::new()
        .year(t.year())
        .month(t.month())
        .day(t.day())
        .hour(t.hour())
        .minute(t.minute())
        .second(t.second())
        .build()
}

/// Counts bytes written through it.
struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Counting<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            this.count += *n as u64;
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn output_error(e: impl std::fmt::Display) -> PfsError {
    PfsError::Internal(format!("archive output failed: {e}"))
}

/// Read into `buf` until it is full or the reader ends. Returns the bytes read and the error that
/// stopped it early, if any.
async fn fill<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
) -> (usize, Option<std::io::Error>) {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]).await {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return (n, Some(e)),
        }
    }
    (n, None)
}

/// Write a ZIP of `entries` to `out` (see the module docs for order, determinism, failures and
/// resumption). `open` is called once per entry, in archive order, right before the entry is
/// written. `out` is flushed and shut down at the end (so a pipe reader sees EOF).
///
/// Returns an error only when writing to `out` fails; per-file problems are in the summary.
pub async fn write_archive<W, F, Fut, R>(
    entries: Vec<ArchiveEntry>,
    mut open: F,
    out: W,
    opts: ArchiveOptions,
) -> Result<ArchiveSummary, PfsError>
where
    W: AsyncWrite + Unpin + Send,
    F: FnMut(&ArchiveEntry) -> Fut + Send,
    Fut: Future<Output = Result<R, PfsError>> + Send,
    R: AsyncRead + Unpin + Send,
{
    let started = Instant::now();
    let mtime = zip_time(opts.mtime);
    let mut todo: Vec<&ArchiveEntry> = selected(&entries, opts.start_after.as_deref());
    todo.dedup_by(|a, b| a.name == b.name);

    let mut zip = ZipFileWriter::with_tokio(Counting {
        inner: out,
        count: 0,
    });
    let mut buf = vec![0u8; BLOCK];
    let mut errors: Vec<ArchiveError> = Vec::new();
    let mut file_count = 0usize;
    let mut total_bytes = 0u64;
    let mut resume_after = None;

    for (index, entry) in todo.iter().copied().enumerate() {
        // At least one entry per call, so a resumed archive always makes progress.
        if let Some(budget) = opts.time_budget
            && index > 0
            && started.elapsed() >= budget
        {
            resume_after = Some(todo[index - 1].name.clone());
            break;
        }
        let mut reader = match open(entry).await {
            Ok(r) => r,
            Err(e) => {
                errors.push(ArchiveError {
                    path: entry.name.clone(),
                    error: format!("could not open: {}", caller_message(&e)),
                });
                continue;
            }
        };
        let builder = ZipEntryBuilder::new(entry.name.clone().into(), compression_for(&entry.name))
            .last_modification_date(mtime)
            .unix_permissions(0o100_644);
        let mut w = zip
            .write_entry_stream(builder)
            .await
            .map_err(output_error)?;
        // Hash only when there is something to compare with.
        let mut hasher = (!entry.sha256.is_empty()).then(Sha256::new);
        let mut read = 0u64;
        let mut read_error = None;
        loop {
            let (n, err) = fill(&mut reader, &mut buf).await;
            if n > 0 {
                if let Some(h) = hasher.as_mut() {
                    h.update(&buf[..n]);
                }
                w.write_all(&buf[..n]).await.map_err(output_error)?;
                read += n as u64;
            }
            if let Some(e) = err {
                read_error = Some(e);
                break;
            }
            if n < buf.len() {
                break;
            }
        }
        w.close().await.map_err(output_error)?;
        total_bytes += read;
        let problem = if let Some(e) = read_error {
            Some(format!(
                "read failed after {read} bytes, the entry is incomplete: {e}"
            ))
        } else if read != entry.size {
            Some(format!(
                "size mismatch: expected {} bytes, read {read} (the file changed while archiving)",
                entry.size
            ))
        } else if hasher
            .is_some_and(|h| !hex::encode(h.finalize()).eq_ignore_ascii_case(&entry.sha256))
        {
            Some("sha256 mismatch with the journal (the file changed while archiving)".to_string())
        } else {
            None
        };
        match problem {
            Some(error) => errors.push(ArchiveError {
                path: entry.name.clone(),
                error,
            }),
            None => file_count += 1,
        }
    }

    if !errors.is_empty() {
        let json = serde_json::to_vec_pretty(&errors).map_err(PfsError::internal)?;
        let builder = ZipEntryBuilder::new(ERRORS_ENTRY.to_string().into(), Compression::Deflate)
            .last_modification_date(mtime)
            .unix_permissions(0o100_644);
        let mut w = zip
            .write_entry_stream(builder)
            .await
            .map_err(output_error)?;
        w.write_all(&json).await.map_err(output_error)?;
        w.close().await.map_err(output_error)?;
    }
    let mut counting = zip.close().await.map_err(output_error)?.into_inner();
    counting.flush().await.map_err(output_error)?;
    counting.shutdown().await.map_err(output_error)?;

    Ok(ArchiveSummary {
        file_count,
        total_bytes,
        archive_bytes: counting.count,
        partial: !errors.is_empty() || resume_after.is_some(),
        errors,
        resume_after,
    })
}

/// The caller-facing text of an error (internal details stay in the logs).
fn caller_message(e: &PfsError) -> String {
    match e {
        PfsError::Internal(_) => {
            tracing::warn!(error = %e, "archive: could not open a file");
            "internal error".to_string()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Arc;

    use async_zip::base::read1::seek::ZipArchiveReader;
    use tokio::io::AsyncReadExt as _;

    /// Deterministic pseudo-random bytes.
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn text(seed: u64, len: usize) -> Vec<u8> {
        let words = [
            "lesson ",
            "agent ",
            "python ",
            "the ",
            "book ",
            "chapter\n",
            "# Title\n",
            "`code` ",
        ];
        let n = noise(seed, len);
        let mut out = Vec::with_capacity(len + 16);
        let mut i = 0;
        while out.len() < len {
            out.extend_from_slice(words[(n[i % n.len().max(1)] % 8) as usize].as_bytes());
            i += 1;
        }
        out.truncate(len);
        out
    }

    fn sha(b: &[u8]) -> String {
        hex::encode(Sha256::digest(b))
    }

    /// A reader over bytes that returns chunks of irregular sizes (and can fail after `fail_at`).
    struct Chunky {
        data: Arc<Vec<u8>>,
        pos: usize,
        step: usize,
        fail_at: Option<usize>,
    }

    impl AsyncRead for Chunky {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<std::io::Result<usize>> {
            let this = &mut *self;
            if let Some(f) = this.fail_at
                && this.pos >= f
            {
                return Poll::Ready(Err(std::io::Error::other("disk on fire")));
            }
            this.step = (this.step * 7 + 3) % 9973 + 1;
            let mut n = this.step.min(buf.len()).min(this.data.len() - this.pos);
            if let Some(f) = this.fail_at {
                n = n.min(f - this.pos);
            }
            buf[..n].copy_from_slice(&this.data[this.pos..this.pos + n]);
            this.pos += n;
            Poll::Ready(Ok(n))
        }
    }

    type Book = Arc<HashMap<String, Arc<Vec<u8>>>>;

    fn book(n: usize) -> (Vec<ArchiveEntry>, Book) {
        let mut files = HashMap::new();
        let mut entries = Vec::new();
        for i in 0..n {
            let (name, data) = match i % 4 {
                0 | 1 => (
                    format!("content/{:02}-Part/{:02}-Ch/{i:03}-lesson.md", i % 7, i % 5),
                    text(i as u64, 100 + (i * 997) % 30_000),
                ),
                2 => (
                    format!("static/images/img-{i:03}.png"),
                    noise(i as u64, (i * 4099) % 70_000),
                ),
                _ => (
                    format!("content/{:02}-Part/_category_{i}.json", i % 7),
                    text(i as u64 + 1, 50 + i),
                ),
            };
            entries.push(ArchiveEntry {
                name: name.clone(),
                size: data.len() as u64,
                sha256: sha(&data),
            });
            files.insert(name, Arc::new(data));
        }
        // Reverse so the writer has to sort.
        entries.reverse();
        (entries, Arc::new(files))
    }

    /// Run write_archive into a duplex pipe drained by another task; returns the summary and bytes.
    async fn archive(
        entries: Vec<ArchiveEntry>,
        files: Book,
        opts: ArchiveOptions,
        pipe: usize,
        broken: &'static [&'static str],
    ) -> (ArchiveSummary, Vec<u8>) {
        let (tx, mut rx) = tokio::io::duplex(pipe);
        let drain = tokio::spawn(async move {
            let mut out = Vec::new();
            rx.read_to_end(&mut out).await.map(|_| out)
        });
        let open = move |e: &ArchiveEntry| {
            let files = files.clone();
            let name = e.name.clone();
            async move {
                if broken
                    .iter()
                    .any(|b| name.ends_with(b) && b.starts_with("open:"))
                    || name.contains("missing")
                {
                    return Err(PfsError::not_found(name));
                }
                let data = files
                    .get(&name)
                    .cloned()
                    .ok_or_else(|| PfsError::not_found(name.clone()))?;
                let fail_at = broken
                    .iter()
                    .any(|b| b.starts_with("read:") && name.ends_with(&b[5..]))
                    .then_some(data.len() / 2);
                Ok(Chunky {
                    data,
                    pos: 0,
                    step: name.len(),
                    fail_at,
                })
            }
        };
        // Spawned: proves the future is Send + 'static-compatible.
        let summary = tokio::spawn(write_archive(entries, open, tx, opts))
            .await
            .unwrap()
            .unwrap();
        let bytes = drain.await.unwrap().unwrap();
        assert_eq!(summary.archive_bytes, bytes.len() as u64);
        (summary, bytes)
    }

    /// Every entry of a ZIP, in order, read with async_zip's seeking reader (CRC and sizes checked).
    async fn unzip(bytes: Vec<u8>) -> Vec<(String, Vec<u8>)> {
        let mut zip = ZipArchiveReader::open(futures::io::Cursor::new(bytes))
            .await
            .unwrap();
        let names: Vec<String> = zip
            .cdrs()
            .iter()
            .map(|c| c.insecure_file_name.as_str().unwrap().to_string())
            .collect();
        let mut out = Vec::new();
        for (i, name) in names.into_iter().enumerate() {
            let mut f = zip.file(i).await.unwrap();
            let mut data = Vec::new();
            f.read_to_end(&mut data).await.unwrap();
            out.push((name, data));
        }
        out
    }

    #[tokio::test]
    async fn archive_round_trips_and_is_deterministic() {
        let (entries, files) = book(200);
        let (s1, b1) = archive(
            entries.clone(),
            files.clone(),
            ArchiveOptions::default(),
            64 * 1024,
            &[],
        )
        .await;
        assert_eq!(
            (s1.file_count, s1.partial, s1.errors.len()),
            (200, false, 0)
        );
        let expected_total: u64 = entries.iter().map(|e| e.size).sum();
        assert_eq!(s1.total_bytes, expected_total);

        // (b) same bytes with a different pipe size (different back-pressure) and a shuffled input.
        let mut shuffled = entries.clone();
        shuffled.rotate_left(77);
        let (_, b2) = archive(
            shuffled,
            files.clone(),
            ArchiveOptions::default(),
            1024,
            &[],
        )
        .await;
        assert_eq!(sha(&b1), sha(&b2));
        assert_eq!(b1, b2);

        // A different timestamp changes the bytes (and the ETag), the same one does not.
        let later = ArchiveOptions {
            mtime: Utc.with_ymd_and_hms(2025, 6, 1, 12, 30, 10).unwrap(),
            ..ArchiveOptions::default()
        };
        let (_, b3) = archive(entries.clone(), files.clone(), later.clone(), 8192, &[]).await;
        assert_ne!(b1, b3);
        assert_ne!(
            archive_etag(&entries, &ArchiveOptions::default()),
            archive_etag(&entries, &later)
        );
        let mut e2 = entries.clone();
        e2.reverse();
        assert_eq!(archive_etag(&entries, &later), archive_etag(&e2, &later));

        // Set PFS_ARCHIVE_DUMP=/path/x.zip to inspect the archive with other tools (unzip -t).
        if let Some(path) = std::env::var_os("PFS_ARCHIVE_DUMP") {
            std::fs::write(path, &b1).unwrap();
        }
        // (a) readable, sorted, byte-identical.
        let got = unzip(b1).await;
        assert_eq!(got.len(), 200);
        let mut names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        names.sort();
        assert_eq!(
            got.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            names
        );
        for (name, data) in &got {
            assert_eq!(data.as_slice(), files[name].as_slice(), "{name}");
        }
    }

    #[tokio::test]
    async fn failures_go_to_the_error_manifest() {
        let (mut entries, files) = book(20);
        entries.push(ArchiveEntry {
            name: "content/00-missing.md".into(),
            size: 10,
            sha256: String::new(),
        });
        // A journal row whose size/hash no longer match the stored bytes.
        let victim = entries
            .iter_mut()
            .find(|e| e.name.ends_with(".png"))
            .unwrap();
        victim.sha256 = "0".repeat(64);
        let victim = victim.name.clone();
        let read_fail = entries
            .iter()
            .find(|e| e.name.ends_with("005-lesson.md"))
            .unwrap()
            .name
            .clone();
        let (s, bytes) = archive(
            entries.clone(),
            files.clone(),
            ArchiveOptions::default(),
            4096,
            &["read:005-lesson.md"],
        )
        .await;
        assert!(s.partial);
        assert_eq!(s.file_count, 18);
        let mut err_paths: Vec<&str> = s.errors.iter().map(|e| e.path.as_str()).collect();
        err_paths.sort();
        let mut want = vec!["content/00-missing.md", victim.as_str(), read_fail.as_str()];
        want.sort();
        assert_eq!(err_paths, want);
        assert!(
            s.errors
                .iter()
                .any(|e| e.error.contains("read failed after"))
        );
        assert!(s.errors.iter().any(|e| e.error.contains("could not open")));
        assert!(s.errors.iter().any(|e| e.error.contains("sha256 mismatch")));

        let got = unzip(bytes).await;
        // 20 files (the missing one skipped, the incomplete one kept) + the error manifest, last.
        assert_eq!(got.len(), 21);
        let (last_name, last) = got.last().unwrap();
        assert_eq!(last_name, ERRORS_ENTRY);
        let listed: Vec<ArchiveError> = serde_json::from_slice::<Vec<serde_json::Value>>(last)
            .unwrap()
            .into_iter()
            .map(|v| ArchiveError {
                path: v["path"].as_str().unwrap().into(),
                error: v["error"].as_str().unwrap().into(),
            })
            .collect();
        assert_eq!(listed, s.errors);
        let partial = got.iter().find(|(n, _)| *n == read_fail).unwrap();
        assert_eq!(partial.1.len(), files[&read_fail].len() / 2);
        assert!(!got.iter().any(|(n, _)| n.contains("missing")));
    }

    #[tokio::test]
    async fn time_budget_and_resume_cover_every_entry_once() {
        let (entries, files) = book(7);
        let mut seen: Vec<String> = Vec::new();
        let mut start_after = None;
        let mut runs = 0;
        loop {
            let opts = ArchiveOptions {
                start_after: start_after.clone(),
                time_budget: Some(Duration::ZERO),
                ..ArchiveOptions::default()
            };
            let (s, bytes) = archive(entries.clone(), files.clone(), opts, 4096, &[]).await;
            runs += 1;
            let got = unzip(bytes).await;
            // A zero budget still makes progress: exactly one entry per run.
            assert_eq!(got.len(), 1);
            seen.extend(got.into_iter().map(|(n, _)| n));
            assert_eq!(s.partial, s.resume_after.is_some());
            match s.resume_after {
                Some(r) => {
                    assert_eq!(Some(&r), seen.last());
                    start_after = Some(r);
                }
                None => break,
            }
            assert!(runs <= 7);
        }
        let mut names: Vec<String> = entries.iter().map(|e| e.name.clone()).collect();
        names.sort();
        assert_eq!(seen, names);

        // Without a budget, resuming after the 3rd name gives the last 4.
        let opts = ArchiveOptions {
            start_after: Some(names[2].clone()),
            ..ArchiveOptions::default()
        };
        let (s, bytes) = archive(entries.clone(), files.clone(), opts, 4096, &[]).await;
        assert_eq!((s.file_count, s.partial, s.resume_after), (4, false, None));
        let got: Vec<String> = unzip(bytes).await.into_iter().map(|(n, _)| n).collect();
        assert_eq!(got, names[3..].to_vec());
    }

    #[tokio::test]
    async fn empty_archive_is_valid() {
        let (s, bytes) = archive(
            Vec::new(),
            Arc::new(HashMap::new()),
            ArchiveOptions::default(),
            1024,
            &[],
        )
        .await;
        assert_eq!((s.file_count, s.partial), (0, false));
        assert!(unzip(bytes).await.is_empty());
    }

    #[test]
    fn compression_by_extension() {
        assert_eq!(compression_for("content/a/b.MD"), Compression::Deflate);
        assert_eq!(
            compression_for("content/a/_category_.json"),
            Compression::Deflate
        );
        assert_eq!(compression_for("static/images/x.svg"), Compression::Deflate);
        assert_eq!(compression_for("static/images/x.png"), Compression::Stored);
        assert_eq!(compression_for("static/videos/x.mp4"), Compression::Stored);
        assert_eq!(compression_for("static/slides/README"), Compression::Stored);
    }

    /// Generates `len` bytes (text-like or random) without holding them.
    struct Generated {
        block: Arc<Vec<u8>>,
        remaining: u64,
        offset: usize,
    }

    impl AsyncRead for Generated {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<std::io::Result<usize>> {
            let this = &mut *self;
            let n = (buf.len() as u64).min(this.remaining) as usize;
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = this.block[(this.offset + i) % this.block.len()];
            }
            this.offset = (this.offset + n * 31) % this.block.len();
            this.remaining -= n as u64;
            Poll::Ready(Ok(n))
        }
    }

    fn vm_hwm_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    const CHILD_ENV: &str = "PFS_ARCHIVE_MEMORY_CHILD";

    /// R4: streaming 200 MiB keeps the peak RSS growth small. The measurement needs a process of
    /// its own: under nextest every test has one; under `cargo test` the test re-runs itself in a
    /// child process.
    #[test]
    fn memory_stays_bounded_for_200_mib() {
        let own_process = std::env::var_os(CHILD_ENV).is_some()
            || std::env::var("NEXTEST_EXECUTION_MODE").is_ok_and(|m| m == "process-per-test");
        if !own_process {
            let exe = std::env::current_exe().unwrap();
            let out = std::process::Command::new(exe)
                .args([
                    "--exact",
                    "archive::tests::memory_stays_bounded_for_200_mib",
                    "--test-threads=1",
                    "--nocapture",
                ])
                .env(CHILD_ENV, "1")
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "child failed:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                stdout.contains("1 passed"),
                "the child did not run the test:\n{stdout}"
            );
            return;
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let before = vm_hwm_kib();
        let mib = 1024 * 1024u64;
        let text_block = Arc::new(text(1, 1 << 20));
        let noise_block = Arc::new(noise(2, 1 << 20));
        // 18 stored 10 MiB files + 2 deflated 10 MiB text files = 200 MiB.
        let entries: Vec<ArchiveEntry> = (0..20)
            .map(|i| ArchiveEntry {
                name: if i < 2 {
                    format!("content/big-{i}.md")
                } else {
                    format!("static/videos/v{i:02}.mp4")
                },
                size: 10 * mib,
                sha256: String::new(),
            })
            .collect();
        let summary = rt.block_on(async {
            let (tx, mut rx) = tokio::io::duplex(64 * 1024);
            let drain = tokio::spawn(async move {
                let mut h = Sha256::new();
                let mut buf = vec![0u8; 64 * 1024];
                let mut total = 0u64;
                loop {
                    let n = rx.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                    total += n as u64;
                }
                (total, hex::encode(h.finalize()))
            });
            let open = |e: &ArchiveEntry| {
                let block = if e.name.ends_with(".md") {
                    text_block.clone()
                } else {
                    noise_block.clone()
                };
                let remaining = e.size;
                async move {
                    Ok::<_, PfsError>(Generated {
                        block,
                        remaining,
                        offset: 0,
                    })
                }
            };
            let s = write_archive(entries, open, tx, ArchiveOptions::default())
                .await
                .unwrap();
            let (total, _) = drain.await.unwrap();
            assert_eq!(total, s.archive_bytes);
            s
        });
        let after = vm_hwm_kib();
        let growth_mib = (after.saturating_sub(before)) as f64 / 1024.0;
        println!(
            "VmHWM before {before} KiB, after {after} KiB, growth {growth_mib:.1} MiB; archive {} bytes",
            summary.archive_bytes
        );
        assert_eq!(
            (summary.file_count, summary.total_bytes, summary.partial),
            (20, 200 * mib, false)
        );
        assert!(
            summary.archive_bytes > 180 * mib,
            "stored entries are not compressed"
        );
        assert!(
            growth_mib < 40.0,
            "peak RSS grew by {growth_mib:.1} MiB while streaming 200 MiB"
        );
    }
}
