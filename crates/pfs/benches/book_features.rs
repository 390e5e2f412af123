//! Timings of the pure book-level features: grep over 10 MB and plan_build over 10,000 files.
//! Archives are measured end to end by `pv-bench archive` (realistic book, real server).
//!
//! Run: `cargo bench -p pfs --bench book_features` (plain timing, best of 5; no criterion).

use std::time::{Duration, Instant};

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

fn main() {
    bench_grep();
    bench_plan();
}
