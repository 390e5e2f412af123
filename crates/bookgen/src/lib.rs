//! Synthetic books that look like the real thing to a compressor and to a build.
//!
//! A lesson has YAML front matter, headings, paragraphs of varied prose (a Zipf-distributed
//! vocabulary of a few thousand words, sentences of varied length and punctuation), bullet and
//! numbered lists, code fences (identifiers, keywords, numbers), tables and links. Deflate
//! compresses it about 2.7:1, like the real 724-lesson book (11 MB → 3.9 MB, 2.8:1), where a repeated paragraph compresses
//! 100:1 and proves nothing (the test below keeps the ratio within 2.5–3.5:1). Assets are
//! incompressible bytes behind a PNG signature, like real images.
//!
//! Everything is a pure function of the seed: the same [`BookSpec`] gives the same bytes.

mod rng;
mod text;

pub use rng::Rng;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookSpec {
    /// Number of markdown lessons.
    pub lessons: usize,
    /// Approximate size of each lesson in bytes (varied ±25 % around it).
    pub lesson_bytes: usize,
    /// Number of binary assets (under `static/images/`).
    pub assets: usize,
    /// Size of each asset in bytes.
    pub asset_bytes: usize,
    /// Lessons per chapter directory.
    pub lessons_per_chapter: usize,
    /// Seed of everything.
    pub seed: u64,
}

impl BookSpec {
    /// The benchmark book: 500 files / ~200 MiB (490 lessons of ~400 KiB, 10 assets of 1 MiB).
    pub fn bench_200mib() -> Self {
        BookSpec {
            lessons: 490,
            lesson_bytes: 396 * 1024,
            assets: 10,
            asset_bytes: 1 << 20,
            lessons_per_chapter: 25,
            seed: 0x5eed_b00c,
        }
    }

    /// A small book for tests: a few lessons of real lesson size and two assets.
    pub fn small(lessons: usize) -> Self {
        BookSpec {
            lessons,
            lesson_bytes: 12 * 1024,
            assets: 2,
            asset_bytes: 64 * 1024,
            lessons_per_chapter: 8,
            seed: 7,
        }
    }

    /// The files, in a stable order (lessons, then assets). Lazy: one file in memory at a time.
    pub fn files(&self) -> impl Iterator<Item = BookFile> + '_ {
        let lessons = (0..self.lessons).map(move |i| self.lesson(i));
        let assets = (0..self.assets).map(move |i| self.asset(i));
        lessons.chain(assets)
    }

    /// Lesson `i`: its book-relative path and markdown.
    pub fn lesson(&self, i: usize) -> BookFile {
        let chapter = i / self.lessons_per_chapter.max(1);
        let mut rng = Rng::new(self.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let spread = self.lesson_bytes / 4;
        let target = self.lesson_bytes - spread + rng.below(2 * spread.max(1) as u64) as usize;
        let title = text::title(&mut rng);
        let body = text::lesson(&mut rng, &title, i, target);
        let per = self.lessons_per_chapter.max(1);
        let part = chapter / 4;
        let name = |salt: u64, n: usize| {
            text::slug(&text::title(&mut Rng::new(self.seed ^ salt ^ n as u64)))
        };
        BookFile {
            path: format!(
                "content/{:02}-{}/{:02}-{}/{:02}-{}.md",
                part + 1,
                name(0x9a47, part),
                chapter % 4 + 1,
                name(0xc4a9, chapter),
                i % per + 1,
                text::slug(&title)
            ),
            bytes: body.into_bytes(),
        }
    }

    /// Asset `i`: a PNG signature then incompressible bytes.
    pub fn asset(&self, i: usize) -> BookFile {
        let mut rng = Rng::new(self.seed.rotate_left(17) ^ i as u64);
        let mut bytes = Vec::with_capacity(self.asset_bytes);
        bytes.extend_from_slice(b"\x89PNG\r\n\x1a\n");
        while bytes.len() < self.asset_bytes {
            bytes.extend_from_slice(&rng.next_u64().to_le_bytes());
        }
        bytes.truncate(self.asset_bytes.max(8));
        BookFile {
            path: format!("static/images/figure-{i:03}.png"),
            bytes,
        }
    }
}

/// One generated file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookFile {
    /// Book-relative path (`content/…` or `static/…`).
    pub path: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deflate_ratio(data: &[u8]) -> f64 {
        let mut c = libdeflater::Compressor::new(libdeflater::CompressionLvl::new(6).unwrap());
        let mut out = vec![0; c.deflate_compress_bound(data.len())];
        let n = c.deflate_compress(data, &mut out).unwrap();
        data.len() as f64 / n as f64
    }

    #[test]
    fn lessons_compress_like_real_prose() {
        let spec = BookSpec {
            lessons: 40,
            lesson_bytes: 48 * 1024,
            assets: 0,
            ..BookSpec::small(0)
        };
        let mut all = Vec::new();
        for f in spec.files() {
            let r = deflate_ratio(&f.bytes);
            assert!((2.3..3.8).contains(&r), "{} deflates {r:.2}:1", f.path);
            all.extend_from_slice(&f.bytes);
        }
        let r = deflate_ratio(&all);
        eprintln!("40 lessons deflate {r:.2}:1");
        assert!((2.5..=3.5).contains(&r), "the book deflates {r:.2}:1");
    }

    #[test]
    fn the_bench_book_is_500_files_of_about_200_mib_and_deflates_about_3_to_1() {
        let spec = BookSpec::bench_200mib();
        let (mut n, mut bytes, mut sampled) = (0usize, 0usize, Vec::new());
        for (i, f) in spec.files().enumerate() {
            n += 1;
            bytes += f.bytes.len();
            if i % 50 == 0 && f.path.ends_with(".md") {
                sampled.extend_from_slice(&f.bytes);
            }
        }
        assert_eq!(n, 500);
        let mib = bytes as f64 / (1 << 20) as f64;
        assert!((190.0..210.0).contains(&mib), "{mib:.1} MiB");
        let r = deflate_ratio(&sampled);
        eprintln!("{n} files, {mib:.1} MiB, sampled lessons deflate {r:.2}:1");
        assert!((2.5..=3.5).contains(&r), "lessons deflate {r:.2}:1");
    }

    #[test]
    fn same_seed_same_bytes_and_lessons_differ() {
        let spec = BookSpec::small(3);
        let a: Vec<BookFile> = spec.files().collect();
        let b: Vec<BookFile> = spec.files().collect();
        assert_eq!(a, b);
        assert_ne!(a[0].bytes, a[1].bytes);
        assert_ne!(a[0].path, a[1].path);
        let paths: std::collections::BTreeSet<&str> = a.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths.len(), a.len(), "paths are unique");
    }

    #[test]
    fn lessons_look_like_lessons() {
        let f = BookSpec::small(1).lesson(0);
        let s = String::from_utf8(f.bytes).unwrap();
        assert!(s.starts_with("---\ntitle: "), "{}", &s[..80]);
        for needle in ["\n## ", "\n- ", "\n1. ", "\n```", "\n| "] {
            assert!(s.contains(needle), "no {needle:?} in the lesson");
        }
        assert!(f.path.starts_with("content/01-") && f.path.ends_with(".md"));
        assert_eq!(
            f.path.matches('/').count(),
            3,
            "content/part/chapter/lesson.md"
        );
        let a = BookSpec::small(1).asset(0);
        assert!(a.bytes.starts_with(b"\x89PNG") && deflate_ratio(&a.bytes) < 1.01);
    }
}
