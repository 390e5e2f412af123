use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_zip::base::read1::seek::ZipArchiveReader;
use futures::io::AsyncRead;
use tokio::io::AsyncReadExt as _;

use super::*;

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
    let n = noise(seed, len.max(1));
    let mut out = Vec::with_capacity(len + 16);
    let mut i = 0;
    while out.len() < len {
        out.extend_from_slice(words[(n[i % n.len()] % 8) as usize].as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Blobs in memory by name, the stream cache in memory, failures on demand.
#[derive(Default)]
struct MemSource {
    files: HashMap<String, Arc<Vec<u8>>>,
    /// Names whose blob cannot be read at all.
    unreadable: Vec<String>,
    /// Names whose streamed read fails halfway.
    breaks_midway: Vec<String>,
    cache: Mutex<HashMap<String, (StreamInfo, Option<Bytes>)>>,
    pending: Mutex<Vec<(String, StreamInfo, Option<Bytes>)>>,
}

impl MemSource {
    fn blob(&self, entry: &ArchiveEntry) -> Result<Arc<Vec<u8>>, PfsError> {
        if self.unreadable.contains(&entry.name) {
            return Err(PfsError::Storage("disk on fire".into()));
        }
        self.files
            .get(&entry.name)
            .cloned()
            .ok_or_else(|| PfsError::not_found(entry.name.clone()))
    }
}

/// A reader over bytes in irregular chunks that can fail after `fail_at` bytes.
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

#[async_trait]
impl ArchiveSource for MemSource {
    async fn cached(&self, shas: &[String]) -> HashMap<String, StreamInfo> {
        let c = self.cache.lock().unwrap();
        shas.iter()
            .filter_map(|s| c.get(s).map(|(i, _)| (s.clone(), *i)))
            .collect()
    }
    async fn read_stream(&self, sha256: &str, _size: u64) -> Result<Bytes, PfsError> {
        self.cache
            .lock()
            .unwrap()
            .get(sha256)
            .and_then(|(_, b)| b.clone())
            .ok_or_else(|| PfsError::not_found("stream"))
    }
    async fn read_blob(&self, entry: &ArchiveEntry) -> Result<Bytes, PfsError> {
        Ok(Bytes::from(self.blob(entry)?.to_vec()))
    }
    async fn open_blob(
        &self,
        entry: &ArchiveEntry,
    ) -> Result<Box<dyn futures::io::AsyncRead + Unpin + Send>, PfsError> {
        let data = self.blob(entry)?;
        let fail_at = self
            .breaks_midway
            .contains(&entry.name)
            .then_some(data.len() / 2);
        Ok(Box::new(Chunky {
            data,
            pos: 0,
            step: entry.name.len(),
            fail_at,
        }))
    }
    async fn remember(&self, sha256: &str, info: StreamInfo, deflated: Option<Bytes>) {
        self.pending
            .lock()
            .unwrap()
            .push((sha256.to_string(), info, deflated));
    }
    async fn flush(&self) {
        let mut c = self.cache.lock().unwrap();
        for (s, i, d) in self.pending.lock().unwrap().drain(..) {
            c.insert(s, (i, d));
        }
    }
}

fn book(n: usize) -> (Vec<ArchiveEntry>, MemSource) {
    let mut src = MemSource::default();
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
        src.files.insert(name, Arc::new(data));
    }
    // Reverse so the writer has to sort.
    entries.reverse();
    (entries, src)
}

/// Run write_archive into a duplex pipe drained by another task; the summary and the bytes.
async fn archive(
    entries: Vec<ArchiveEntry>,
    src: &MemSource,
    opts: ArchiveOptions,
    pipe: usize,
) -> (ArchiveSummary, Vec<u8>) {
    let (tx, mut rx) = tokio::io::duplex(pipe);
    let drain = tokio::spawn(async move {
        let mut out = Vec::new();
        rx.read_to_end(&mut out).await.map(|_| out)
    });
    let summary = write_archive(entries, src, tx, opts).await.unwrap();
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
        futures::io::AsyncReadExt::read_to_end(&mut f, &mut data)
            .await
            .unwrap();
        out.push((name, data));
    }
    out
}

#[tokio::test]
async fn cached_and_fresh_streams_give_the_same_archive_and_it_round_trips() {
    let (entries, src) = book(200);
    let (cold, b1) = archive(entries.clone(), &src, ArchiveOptions::default(), 64 * 1024).await;
    assert_eq!(
        (cold.file_count, cold.partial, cold.errors.len()),
        (200, false, 0)
    );
    assert_eq!((cold.cache_hits, cold.cache_misses), (0, 200));
    let expected_total: u64 = entries.iter().map(|e| e.size).sum();
    assert_eq!(cold.total_bytes, expected_total);
    assert!(cold.peak_buffered_bytes > 0);

    // Every stored form is cached now: the same bytes from headers plus copies, whatever the
    // input order and the pipe's back-pressure.
    let mut shuffled = entries.clone();
    shuffled.rotate_left(77);
    let (warm, b2) = archive(shuffled, &src, ArchiveOptions::default(), 1024).await;
    assert_eq!((warm.cache_hits, warm.cache_misses), (200, 0));
    assert_eq!(b1, b2);
    // Half of the cache gone (a new codec, lost objects): still the same bytes.
    src.cache
        .lock()
        .unwrap()
        .retain(|k, _| k.as_bytes()[0] % 2 == 0);
    let (mixed, b3) = archive(entries.clone(), &src, ArchiveOptions::default(), 8192).await;
    assert!(mixed.cache_hits > 0 && mixed.cache_misses > 0, "{mixed:?}");
    assert_eq!(b1, b3);

    // A different timestamp changes the bytes (and the ETag), the same one does not.
    let later = ArchiveOptions {
        mtime: Utc.with_ymd_and_hms(2025, 6, 1, 12, 30, 10).unwrap(),
        ..ArchiveOptions::default()
    };
    let (_, b4) = archive(entries.clone(), &src, later.clone(), 8192).await;
    assert_ne!(b1, b4);
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
    let got = unzip(b1).await;
    assert_eq!(got.len(), 200);
    let mut names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    names.sort();
    assert_eq!(
        got.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        names
    );
    for (name, data) in &got {
        assert_eq!(data.as_slice(), src.files[name].as_slice(), "{name}");
    }
}

#[tokio::test]
async fn failures_go_to_the_error_manifest() {
    let (mut entries, mut src) = book(20);
    entries.push(ArchiveEntry {
        name: "content/00-missing.md".into(),
        size: 10,
        sha256: "1".repeat(64),
    });
    // A journal row whose hash no longer matches the stored bytes.
    let victim = entries
        .iter_mut()
        .find(|e| e.name.ends_with(".png"))
        .unwrap();
    victim.sha256 = "0".repeat(64);
    let victim = victim.name.clone();
    let unreadable = entries
        .iter()
        .find(|e| e.name.ends_with("005-lesson.md"))
        .unwrap()
        .name
        .clone();
    src.unreadable.push(unreadable.clone());
    // A large (streamed) file whose read fails halfway.
    let big = noise(9, (IN_MEMORY_MAX + 1000) as usize);
    let big_name = "static/videos/talk.mp4".to_string();
    entries.push(ArchiveEntry {
        name: big_name.clone(),
        size: big.len() as u64,
        sha256: sha(&big),
    });
    src.files.insert(big_name.clone(), Arc::new(big));
    // First run with the big file readable (its CRC gets cached), then it breaks midway.
    let (ok, _) = archive(entries.clone(), &src, ArchiveOptions::default(), 4096).await;
    assert!(ok.errors.iter().all(|e| e.path != big_name), "{ok:?}");
    src.breaks_midway.push(big_name.clone());
    let (s, bytes) = archive(entries.clone(), &src, ArchiveOptions::default(), 4096).await;
    assert!(s.partial);
    assert_eq!(s.file_count, 18);
    let mut err_paths: Vec<&str> = s.errors.iter().map(|e| e.path.as_str()).collect();
    err_paths.sort();
    let mut want = vec![
        "content/00-missing.md",
        victim.as_str(),
        unreadable.as_str(),
        big_name.as_str(),
    ];
    want.sort();
    assert_eq!(err_paths, want);
    assert!(
        s.errors
            .iter()
            .any(|e| e.error.contains("padded with zeros"))
    );
    assert!(s.errors.iter().any(|e| e.error.contains("could not read")));
    assert!(s.errors.iter().any(|e| e.error.contains("sha256 mismatch")));

    // The archive is well-formed: every entry but the padded one reads back with a good CRC.
    let mut zip = ZipArchiveReader::open(futures::io::Cursor::new(bytes))
        .await
        .unwrap();
    let names: Vec<String> = zip
        .cdrs()
        .iter()
        .map(|c| c.insecure_file_name.as_str().unwrap().to_string())
        .collect();
    // 18 good files, the padded one, and the error manifest, last.
    assert_eq!(names.len(), 20, "{names:?}");
    assert_eq!(names.last().map(String::as_str), Some(ERRORS_ENTRY));
    let mut manifest = Vec::new();
    let last = names.len() - 1;
    futures::io::AsyncReadExt::read_to_end(&mut zip.file(last).await.unwrap(), &mut manifest)
        .await
        .unwrap();
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(listed.len(), s.errors.len());
    assert!(!names.iter().any(|n| n.contains("missing")));
}

#[tokio::test]
async fn time_budget_and_resume_cover_every_entry_once() {
    let (entries, src) = book(7);
    let mut seen: Vec<String> = Vec::new();
    let mut start_after = None;
    let mut runs = 0;
    loop {
        let opts = ArchiveOptions {
            start_after: start_after.clone(),
            time_budget: Some(Duration::ZERO),
            ..ArchiveOptions::default()
        };
        let (s, bytes) = archive(entries.clone(), &src, opts, 4096).await;
        runs += 1;
        let got = unzip(bytes).await;
        match s.resume_after {
            Some(r) => {
                // A zero budget still makes progress: one entry, then the partial manifest
                // naming what is missing.
                assert_eq!(got.len(), 2, "{got:?}");
                let (name, body) = &got[1];
                assert_eq!(name, PARTIAL_ENTRY);
                let m: serde_json::Value = serde_json::from_slice(body).unwrap();
                assert_eq!(m["resume_after"], serde_json::json!(got[0].0));
                assert_eq!(
                    m["missing"].as_array().unwrap().len(),
                    entries.len() - seen.len() - 1
                );
                assert!(s.partial);
                assert_eq!(r, got[0].0);
                seen.push(got[0].0.clone());
                start_after = Some(r);
            }
            None => {
                assert_eq!(got.len(), 1);
                assert!(!s.partial);
                seen.push(got[0].0.clone());
                break;
            }
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
    let (s, bytes) = archive(entries.clone(), &src, opts, 4096).await;
    assert_eq!((s.file_count, s.partial, s.resume_after), (4, false, None));
    let got: Vec<String> = unzip(bytes).await.into_iter().map(|(n, _)| n).collect();
    assert_eq!(got, names[3..].to_vec());
}

#[tokio::test]
async fn empty_archive_is_valid() {
    let src = MemSource::default();
    let (s, bytes) = archive(Vec::new(), &src, ArchiveOptions::default(), 1024).await;
    assert_eq!((s.file_count, s.partial), (0, false));
    assert!(unzip(bytes).await.is_empty());
}

#[tokio::test]
async fn more_than_65535_entries_use_zip64_end_records() {
    let mut src = MemSource::default();
    let mut entries = Vec::new();
    for i in 0..70_000u32 {
        let name = format!("content/x/{i:05}.md");
        let data = vec![b'a' + (i % 26) as u8];
        entries.push(ArchiveEntry {
            name: name.clone(),
            size: 1,
            sha256: sha(&data),
        });
        src.files.insert(name, Arc::new(data));
    }
    let (s, bytes) = archive(entries, &src, ArchiveOptions::default(), 1 << 20).await;
    assert_eq!(s.file_count, 70_000);
    let zip = ZipArchiveReader::open(futures::io::Cursor::new(bytes))
        .await
        .unwrap();
    assert_eq!(zip.cdrs().len(), 70_000);
}

#[test]
fn deflated_by_extension_and_size() {
    assert!(deflates("content/a/b.MD", 10));
    assert!(deflates("content/a/_category_.json", 10));
    assert!(deflates("static/images/x.svg", 10));
    assert!(!deflates("static/images/x.png", 10));
    assert!(!deflates("static/videos/x.mp4", 10));
    assert!(!deflates("static/slides/README", 10));
    assert!(!deflates("content/huge.md", IN_MEMORY_MAX + 1));
}

/// Generates `len` bytes (from a block) without holding them.
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

/// Large blobs made on the fly (nothing held), as a streamed source.
struct BigSource {
    text: Arc<Vec<u8>>,
    noise: Arc<Vec<u8>>,
}

#[async_trait]
impl ArchiveSource for BigSource {
    async fn cached(&self, _: &[String]) -> HashMap<String, StreamInfo> {
        HashMap::new()
    }
    async fn read_stream(&self, _: &str, _: u64) -> Result<Bytes, PfsError> {
        Err(PfsError::not_found("stream"))
    }
    async fn read_blob(&self, e: &ArchiveEntry) -> Result<Bytes, PfsError> {
        Err(PfsError::Internal(format!("{} is streamed", e.name)))
    }
    async fn open_blob(
        &self,
        e: &ArchiveEntry,
    ) -> Result<Box<dyn futures::io::AsyncRead + Unpin + Send>, PfsError> {
        let block = if e.name.ends_with(".md") {
            self.text.clone()
        } else {
            self.noise.clone()
        };
        Ok(Box::new(Generated {
            block,
            remaining: e.size,
            offset: 0,
        }))
    }
    async fn remember(&self, _: &str, _: StreamInfo, _: Option<Bytes>) {}
    async fn flush(&self) {}
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

/// R4: streaming 200 MiB keeps the peak RSS growth small. The measurement needs a process of its
/// own: under nextest every test has one; under `cargo test` the test re-runs itself in a child.
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
    let src = BigSource {
        text: Arc::new(text(1, 1 << 20)),
        noise: Arc::new(noise(2, 1 << 20)),
    };
    // 20 files of 10 MiB (streamed, stored) = 200 MiB.
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
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0u64;
            loop {
                let n = rx.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            total
        });
        let s = write_archive(entries, &src, tx, ArchiveOptions::default())
            .await
            .unwrap();
        assert_eq!(drain.await.unwrap(), s.archive_bytes);
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
        summary.archive_bytes > 199 * mib,
        "large entries are stored"
    );
    assert!(
        growth_mib < 40.0,
        "peak RSS grew by {growth_mib:.1} MiB while streaming 200 MiB"
    );
}
