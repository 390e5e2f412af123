//! Timings of the pure book-level features: grep over 10 MB, plan_build over 10,000 files and a
//! 500-file / ~200 MB streamed archive (with the peak RSS of the process).
//!
//! Run: `cargo bench -p pfs --bench book_features` (plain timing, best of 5; no criterion).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pfs::PfsError;
use pfs::archive::{ArchiveEntry, ArchiveOptions, write_archive};
use pfs::manifest::{manifest_hash, plan_build};
use pfs::search::GrepQuery;

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        let v = f();
        best = best.min(t.elapsed());
        last = Some(v);
    }
    (best, last.expect("at least one run"))
}

fn vm_hwm() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_else(|| "n/a".into())
}

fn bench_grep() {
    let mut text = String::with_capacity(10 << 20);
    let mut i = 0usize;
    while text.len() < (10 << 20) {
        text.push_str(
            "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor ",
        );
        if i.is_multiple_of(5000) {
            text.push_str("needle-42 ");
        }
        text.push('\n');
        i += 1;
    }
    // ~10 MB over 525 files of 20 KB, like a book.
    let files: Vec<(String, &[u8])> = text
        .as_bytes()
        .chunks(20_000)
        .enumerate()
        .map(|(i, c)| (format!("content/{i:03}.md"), c))
        .collect();
    for (pattern, ci) in [
        (r"needle-\d+", false),
        ("python", true),
        ("zzz(a|b)+q", false),
        (r"\bconsectetur\s+adipiscing\b", false),
    ] {
        let q = GrepQuery::new(pattern, ci, 1000).expect("valid pattern");
        let (t, r) = best_of(5, || q.run(files.iter().map(|(p, b)| (p.as_str(), *b))));
        println!(
            "grep {pattern:?} (case_insensitive={ci}) over {} bytes / {} files: {t:?}, {} matches, truncated={}",
            text.len(),
            files.len(),
            r.matches.len(),
            r.truncated
        );
    }
}

fn bench_plan() {
    let cur: Vec<(String, String)> = (0..10_000)
        .map(|i| {
            (
                format!("content/{:02}-p/{:02}-c/{i:05}-l.md", i % 97, i % 13),
                format!("{i:064x}"),
            )
        })
        .collect();
    let mut target = cur.clone();
    for (i, t) in target.iter_mut().enumerate().filter(|(i, _)| i % 10 == 0) {
        t.1 = format!("{:064x}", i + 1_000_000);
    }
    target.truncate(9_000);
    let th = manifest_hash(&target);
    let (t, p) = best_of(5, || plan_build("bench", &cur, Some(&th), Some(&target)));
    println!(
        "plan_build over 10,000 files (manifest hash + diff): {t:?}, {} changes",
        p.changed_count
    );
}

/// Generates `left` bytes without holding them.
struct Generated {
    left: u64,
    seed: u8,
}

impl futures::io::AsyncRead for Generated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let n = (buf.len() as u64).min(self.left) as usize;
        let seed = self.seed;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = seed.wrapping_add((i as u8).wrapping_mul(31)) ^ (i >> 7) as u8;
        }
        self.left -= n as u64;
        Poll::Ready(Ok(n))
    }
}

fn bench_archive() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut entries = Vec::new();
    for i in 0..400 {
        entries.push(ArchiveEntry {
            name: format!("content/{:02}-Part/{i:03}-lesson.md", i % 20),
            size: 12_000,
            sha256: String::new(),
        });
    }
    for i in 0..100 {
        entries.push(ArchiveEntry {
            name: format!("static/images/{i:03}.png"),
            size: 2_050_000,
            sha256: String::new(),
        });
    }
    let total: u64 = entries.iter().map(|e| e.size).sum();
    let before = vm_hwm();
    let started = Instant::now();
    let summary = rt.block_on(async move {
        let (tx, mut rx) = tokio::io::duplex(64 * 1024);
        let drain =
            tokio::spawn(async move { tokio::io::copy(&mut rx, &mut tokio::io::sink()).await });
        let open = |e: &ArchiveEntry| {
            let g = Generated {
                left: e.size,
                seed: e.name.len() as u8,
            };
            async move { Ok::<_, PfsError>(g) }
        };
        let s = write_archive(entries, open, tx, ArchiveOptions::default()).await;
        let _ = drain.await;
        s
    });
    let elapsed = started.elapsed();
    match summary {
        Ok(s) => println!(
            "archive of 500 files / {} MB (400 deflated .md, 100 stored .png) into a 64 KiB pipe: {elapsed:?}, {} bytes out; VmHWM {before} -> {}",
            total / 1_000_000,
            s.archive_bytes,
            vm_hwm()
        ),
        Err(e) => println!("archive failed: {e}"),
    }
}

fn main() {
    // The archive first, so its VmHWM is not inflated by the grep corpus.
    bench_archive();
    bench_grep();
    bench_plan();
}
