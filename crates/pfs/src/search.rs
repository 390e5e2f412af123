//! Search inside books: glob over paths, regex over text. Pure functions; the caller lists files
//! and reads their bytes.
//!
//! # Glob semantics ([`GlobMatcher`])
//!
//! A pattern is matched against whole book-relative paths such as
//! `content/01-Part/02-Chapter/03-lesson.md` (or, when the caller searches all books, against
//! `{book_id}/content/…`; the caller decides what it feeds in). Case-sensitive.
//!
//! | syntax | matches |
//! |---|---|
//! | `*` | any run of characters except `/` (`content/*.md` does not reach into sub-directories) |
//! | `**` | any number of whole directories: `content/**/*.md`, `**/README.md`, `static/**` |
//! | `?` | one character except `/` |
//! | `[abc]`, `[a-z]`, `[!a]` | one character from / not from the class |
//! | `{a,b}` | either alternative (`content/**/*.{md,mdx}`) |
//!
//! Unlike the predecessor (Python `fnmatch`, where `*.md` matched at any depth), `*` never
//! crosses `/`: write `**/*.md` for "every markdown file". Patterns longer than 255 characters,
//! absolute patterns, `..`/`.` segments, backslashes and control characters are rejected with
//! `INVALID_INPUT`.
//!
//! # Grep semantics ([`GrepQuery`], [`grep_bytes`])
//!
//! Rust `regex` syntax (no look-around or back-references: linear-time matching), per line:
//! `^`/`$` anchor at line boundaries (`\r\n` endings understood), `.` does not match a newline.
//! One result per matching line, in file order, with a 1-based line number and the line without its
//! line terminator (capped at [`MAX_LINE_CHARS`] characters). Files that are not UTF-8 are skipped.
//! The search stops after `max_results` matches; `truncated` is true only when a further match
//! exists.

use std::path::Path;

use globset::GlobBuilder;
use regex::{Regex, RegexBuilder};
use serde::Serialize;

use crate::error::PfsError;

/// Longest accepted glob pattern, in characters.
pub const MAX_GLOB_CHARS: usize = 255;
/// Longest accepted grep pattern, in characters.
pub const MAX_GREP_PATTERN_CHARS: usize = 500;
/// Most results a grep may ask for.
pub const MAX_GREP_RESULTS: usize = 1000;
/// Longest line returned by grep, in characters (longer lines are cut and end with `…`).
pub const MAX_LINE_CHARS: usize = 500;
/// Compiled-program size limit for grep patterns (bytes).
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Lazy-DFA cache limit for grep patterns (bytes).
const REGEX_DFA_SIZE_LIMIT: usize = 2 << 20;

/// A compiled glob pattern (see the module docs for the syntax).
#[derive(Debug, Clone)]
pub struct GlobMatcher {
    pattern: String,
    matcher: globset::GlobMatcher,
}

impl GlobMatcher {
    /// Compile `pattern`. Errors are `INVALID_INPUT` with the reason.
    pub fn new(pattern: &str) -> Result<GlobMatcher, PfsError> {
        let bad = |why: String| {
            PfsError::InvalidInput(format!("invalid glob pattern {pattern:?}: {why}"))
        };
        if pattern.is_empty() {
            return Err(bad("the pattern is empty".into()));
        }
        if pattern.chars().count() > MAX_GLOB_CHARS {
            return Err(bad(format!("longer than {MAX_GLOB_CHARS} characters")));
        }
        if pattern.chars().any(char::is_control) {
            return Err(bad("control characters are not allowed".into()));
        }
        if pattern.starts_with('/') || pattern.starts_with('~') {
            return Err(bad(
                "patterns are relative to the book, like content/**/*.md".into(),
            ));
        }
        if pattern.contains('\\') {
            return Err(bad("backslashes are not allowed; paths use '/'".into()));
        }
        if pattern.split('/').any(|s| s == ".." || s == ".") {
            return Err(bad("'..' and '.' segments are not allowed".into()));
        }
        let glob = GlobBuilder::new(pattern)
            .literal_separator(true)
            .backslash_escape(false)
            .build()
            .map_err(|e| bad(e.kind().to_string()))?;
        Ok(GlobMatcher {
            pattern: pattern.to_string(),
            matcher: glob.compile_matcher(),
        })
    }

    /// Whether the book-relative `path` matches.
    pub fn is_match(&self, path: &str) -> bool {
        self.matcher.is_match(Path::new(path))
    }

    /// The pattern as given.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The leading directory segments that contain no glob syntax, e.g. `content/01-Part` for
    /// `content/01-Part/**/*.md` (empty when the first segment has a wildcard). Every match
    /// lies below this prefix, so the caller may list only that directory.
    pub fn literal_dir_prefix(&self) -> &str {
        let segs: Vec<&str> = self.pattern.split('/').collect();
        let mut end = 0;
        for (taken, seg) in segs[..segs.len().saturating_sub(1)].iter().enumerate() {
            if seg.contains(['*', '?', '[', ']', '{', '}']) {
                break;
            }
            end += seg.len() + usize::from(taken > 0);
        }
        &self.pattern[..end]
    }
}

/// One matching line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrepMatch {
    /// The path the caller passed for the file. Serialised as `file_path` (the predecessor's key).
    #[serde(rename = "file_path")]
    pub path: String,
    /// 1-based.
    pub line_number: usize,
    /// The line without its terminator, capped at [`MAX_LINE_CHARS`]. Serialised as `matched_line`.
    #[serde(rename = "matched_line")]
    pub line: String,
}

/// The outcome of a grep over several files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GrepResult {
    pub matches: Vec<GrepMatch>,
    /// More matches exist than `max_results`.
    pub truncated: bool,
    /// Files searched (UTF-8 or not) before the search finished or stopped.
    pub files_scanned: usize,
}

/// A compiled, bounded grep query.
#[derive(Debug, Clone)]
pub struct GrepQuery {
    re: Regex,
    max_results: usize,
}

impl GrepQuery {
    /// Compile `pattern` (1..=500 characters) with size limits; `max_results` must be 1..=1000.
    /// A bad pattern or limit is `INVALID_INPUT` naming the problem.
    pub fn new(
        pattern: &str,
        case_insensitive: bool,
        max_results: usize,
    ) -> Result<GrepQuery, PfsError> {
        if pattern.is_empty() {
            return Err(PfsError::InvalidInput("the grep pattern is empty".into()));
        }
        if pattern.chars().count() > MAX_GREP_PATTERN_CHARS {
            return Err(PfsError::InvalidInput(format!(
                "the grep pattern is longer than {MAX_GREP_PATTERN_CHARS} characters"
            )));
        }
        if !(1..=MAX_GREP_RESULTS).contains(&max_results) {
            return Err(PfsError::InvalidInput(format!(
                "max_results must be between 1 and {MAX_GREP_RESULTS}, got {max_results}"
            )));
        }
        let re = RegexBuilder::new(pattern)
            .case_insensitive(case_insensitive)
            .multi_line(true)
            .crlf(true)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
            .nest_limit(64)
            .build()
            .map_err(|e| {
                let why = match e {
                    regex::Error::CompiledTooBig(_) => {
                        "the pattern is too complex (compiled size limit)".to_string()
                    }
                    other => other.to_string(),
                };
                PfsError::InvalidInput(format!("Invalid regex pattern: {why}"))
            })?;
        Ok(GrepQuery { re, max_results })
    }

    /// The compiled regex.
    pub fn regex(&self) -> &Regex {
        &self.re
    }

    /// The result cap.
    pub fn max_results(&self) -> usize {
        self.max_results
    }

    /// Search one file into `result`. Returns `false` once the search is over (truncated), so
    /// the caller can stop reading files.
    pub fn scan(&self, path: &str, bytes: &[u8], result: &mut GrepResult) -> bool {
        if result.truncated {
            return false;
        }
        result.files_scanned += 1;
        result.truncated = grep_bytes(path, bytes, &self.re, &mut result.matches, self.max_results);
        !result.truncated
    }

    /// Search a sequence of files (in the given order).
    pub fn run<'a, I>(&self, files: I) -> GrepResult
    where
        I: IntoIterator<Item = (&'a str, &'a [u8])>,
    {
        let mut result = GrepResult::default();
        for (path, bytes) in files {
            if !self.scan(path, bytes, &mut result) {
                break;
            }
        }
        result
    }
}

/// Whether grep looks into this file by default: markdown pages (`.md`, `.mdx`), like the
/// predecessor (which searched `.md` only).
pub fn is_grep_candidate(path: &str) -> bool {
    let lower = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    lower.ends_with(".md") || lower.ends_with(".mdx")
}

/// Append the lines of `bytes` that match `re` to `out`, one entry per line, until `out` holds
/// `max_results` entries. Returns `true` when a further match was found but not added
/// (truncated). Non-UTF-8 input is skipped (returns `false`, adds nothing).
///
/// Matches are found over the whole buffer (one regex scan, not one per line); line numbers are
/// counted incrementally between matches, so the cost is linear in the file size.
pub fn grep_bytes(
    path: &str,
    bytes: &[u8],
    re: &Regex,
    out: &mut Vec<GrepMatch>,
    max_results: usize,
) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    let len = text.len();
    let mut pos = 0;
    let mut line_no = 1usize;
    let mut counted_to = 0usize;
    while pos <= len {
        let Some(m) = re.find_at(text, pos) else {
            break;
        };
        let start = m.start();
        // An empty match at the end of an empty file or after the final newline is not on a line.
        if start == len && (len == 0 || bytes[len - 1] == b'\n') {
            break;
        }
        line_no += count_newlines(&bytes[counted_to..start]);
        counted_to = start;
        let line_start = bytes[..start]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let line_end = bytes[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(len, |i| start + i);
        let line = &text[line_start..line_end];
        let line = line.strip_suffix('\r').unwrap_or(line);
        // The buffer-wide scan only finds candidates: a match that spans a line break (e.g. via
        // `\s`) or relies on a lone `\r` does not count unless the line matches on its own.
        if re.is_match(line) {
            if out.len() >= max_results {
                return true;
            }
            out.push(GrepMatch {
                path: path.to_string(),
                line_number: line_no,
                line: cap_line(line),
            });
        }
        pos = line_end + 1;
    }
    false
}

fn count_newlines(b: &[u8]) -> usize {
    b.iter().filter(|&&c| c == b'\n').count()
}

fn cap_line(line: &str) -> String {
    match line.char_indices().nth(MAX_LINE_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn glob_semantics() {
        let cases: &[(&str, &str, bool)] = &[
            ("content/*.md", "content/intro.md", true),
            ("content/*.md", "content/01-Part/intro.md", false),
            ("content/**/*.md", "content/intro.md", true),
            ("content/**/*.md", "content/01-Part/02-Ch/03-l.md", true),
            ("content/**/*.md", "static/images/a.md", false),
            ("**/README.md", "content/01-Part/README.md", true),
            ("**/README.md", "README.md", true),
            ("static/**", "static/images/x/y.png", true),
            ("static/**", "static", false),
            ("content/0?-Part/*", "content/01-Part/a.md", true),
            ("content/0?-Part/*", "content/1-Part/a.md", false),
            ("content/[0-9][0-9]-*/**", "content/05-x/a/b.md", true),
            ("content/[!0]*/a.md", "content/1x/a.md", true),
            ("content/[!0]*/a.md", "content/0x/a.md", false),
            ("content/**/*.{md,mdx}", "content/a/b.mdx", true),
            ("content/**/*.{md,mdx}", "content/a/b.png", false),
            ("*/content/**/*.md", "my-book/content/a/b.md", true),
            ("content/**/*.md", "content/A.MD", false),
            ("*", "content/a.md", false),
        ];
        for (pat, path, want) in cases {
            let g = GlobMatcher::new(pat).unwrap();
            assert_eq!(g.is_match(path), *want, "{pat} vs {path}");
        }
    }

    #[test]
    fn glob_rejections() {
        let long = "a".repeat(256);
        for bad in [
            "",
            "/etc/*",
            "content/../*",
            "../**",
            "./x",
            "content/\\*",
            "a\nb",
            "~/x",
            long.as_str(),
            "content/{a,b",
        ] {
            let e = GlobMatcher::new(bad).unwrap_err();
            assert_eq!(e.code(), crate::ErrorCode::InvalidInput, "{bad:?}");
        }
        GlobMatcher::new(&"a".repeat(255)).unwrap();
    }

    #[test]
    fn glob_literal_prefix() {
        for (pat, want) in [
            ("content/01-Part/**/*.md", "content/01-Part"),
            ("content/*.md", "content"),
            ("**/*.md", ""),
            ("content/01-Part/02-Ch/01-l.md", "content/01-Part/02-Ch"),
            ("c*/x", ""),
            ("content/{a,b}/x.md", "content"),
        ] {
            assert_eq!(
                GlobMatcher::new(pat).unwrap().literal_dir_prefix(),
                want,
                "{pat}"
            );
        }
    }

    fn grep(pattern: &str, ci: bool, max: usize, files: &[(&str, &str)]) -> GrepResult {
        let q = GrepQuery::new(pattern, ci, max).unwrap();
        q.run(files.iter().map(|(p, t)| (*p, t.as_bytes())))
    }

    #[test]
    fn grep_lines_numbers_and_anchors() {
        let text = "# Title\r\nfirst line has python\nsecond\n\nPython again and python twice\nlast python";
        let r = grep("python", false, 100, &[("content/a.md", text)]);
        let got: Vec<(usize, &str)> = r
            .matches
            .iter()
            .map(|m| (m.line_number, m.line.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (2, "first line has python"),
                (5, "Python again and python twice"),
                (6, "last python")
            ]
        );
        assert!(!r.truncated);
        assert_eq!(r.files_scanned, 1);

        let r = grep("^python", true, 100, &[("a", text)]);
        assert_eq!(
            r.matches.iter().map(|m| m.line_number).collect::<Vec<_>>(),
            vec![5]
        );
        let r = grep("Title$", false, 100, &[("a", text)]);
        assert_eq!(
            (r.matches[0].line_number, r.matches[0].line.as_str()),
            (1, "# Title")
        );
        let r = grep("^$", false, 100, &[("a", text)]);
        assert_eq!(
            r.matches.iter().map(|m| m.line_number).collect::<Vec<_>>(),
            vec![4]
        );
        // Leading/trailing whitespace is kept (only the terminator is removed).
        let r = grep("x", false, 100, &[("a", "  x  \n")]);
        assert_eq!(r.matches[0].line, "  x  ");
    }

    #[test]
    fn grep_truncation_and_files() {
        let files = [("a.md", "x\nx\n"), ("b.md", "x\n"), ("c.md", "y\n")];
        let r = grep("x", false, 3, &files);
        assert_eq!(
            (r.matches.len(), r.truncated, r.files_scanned),
            (3, false, 3)
        );
        let r = grep("x", false, 2, &files);
        assert_eq!(
            (r.matches.len(), r.truncated, r.files_scanned),
            (2, true, 2)
        );
        assert_eq!(r.matches[1].path, "a.md");
        let r = grep("x", false, 1, &files);
        assert_eq!(
            (r.matches.len(), r.truncated, r.files_scanned),
            (1, true, 1)
        );
        // Non-UTF-8 files are skipped but counted as scanned.
        let q = GrepQuery::new("x", false, 10).unwrap();
        let r = q.run([("bin", &b"x\xff\xfe"[..]), ("t.md", &b"x"[..])]);
        assert_eq!((r.matches.len(), r.files_scanned), (1, 2));
        assert_eq!(r.matches[0].path, "t.md");
    }

    #[test]
    fn grep_caps_long_lines_and_serialises_like_the_predecessor() {
        let long = "é".repeat(800);
        let r = grep("é", false, 10, &[("a.md", &long)]);
        assert_eq!(r.matches[0].line.chars().count(), MAX_LINE_CHARS + 1);
        assert!(r.matches[0].line.ends_with('…'));
        let j = serde_json::to_value(&r.matches[0]).unwrap();
        assert!(
            j.get("file_path").is_some()
                && j.get("matched_line").is_some()
                && j["line_number"] == 1
        );
    }

    #[test]
    fn grep_query_validation() {
        for (pat, max) in [
            ("(", 10),
            ("", 10),
            ("a", 0),
            ("a", 1001),
            ("(?=x)", 10),
            (r"\1", 10),
        ] {
            let e = GrepQuery::new(pat, false, max).unwrap_err();
            assert_eq!(e.code(), crate::ErrorCode::InvalidInput, "{pat:?} {max}");
        }
        let e = GrepQuery::new("(", false, 10).unwrap_err();
        assert!(e.to_string().starts_with("Invalid regex pattern"), "{e}");
        // A pattern whose compiled program exceeds the size limit.
        let e = GrepQuery::new(r"\w{200}\w{200}", false, 10).unwrap_err();
        assert!(e.to_string().contains("too complex"), "{e}");
        assert!(GrepQuery::new(&"a".repeat(501), false, 10).is_err());
        assert!(is_grep_candidate("content/a/B.MDX") && !is_grep_candidate("static/images/a.png"));
    }

    #[test]
    fn grep_ten_megabytes_quickly() {
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
        let q = GrepQuery::new(r"needle-\d+", false, 1000).unwrap();
        let start = std::time::Instant::now();
        let r = q.run([("content/big.md", text.as_bytes())]);
        let elapsed = start.elapsed();
        assert_eq!(r.matches.len(), i.div_ceil(5000));
        assert_eq!(r.matches[1].line_number, 5001);
        // Release: a few ms. This bound holds for an unoptimised build on a busy 2-core machine.
        let limit = if cfg!(debug_assertions) { 2000 } else { 100 };
        println!("grep over {} bytes: {elapsed:?}", text.len());
        assert!(elapsed.as_millis() < limit, "{elapsed:?}");
    }

    proptest! {
        /// grep_bytes agrees with a naive line-by-line search.
        #[test]
        fn grep_matches_naive_line_search(lines in prop::collection::vec("[abc \r]{0,12}", 0..40), pat in prop::sample::select(vec!["a", "ab", "b c", "^a", "c$", "^$", "a.c", "b+"]), max in 1usize..50) {
            let text = lines.join("\n");
            let re = RegexBuilder::new(pat).multi_line(true).crlf(true).build().unwrap();
            let mut out = Vec::new();
            let truncated = grep_bytes("f", text.as_bytes(), &re, &mut out, max);
            let mut naive = Vec::new();
            let mut parts: Vec<&str> = text.split('\n').collect();
            if text.is_empty() || text.ends_with('\n') {
                parts.pop();
            }
            for (i, line) in parts.into_iter().enumerate() {
                let l = line.strip_suffix('\r').unwrap_or(line);
                if re.is_match(l) {
                    naive.push((i + 1, l.to_string()));
                }
            }
            let got: Vec<(usize, String)> = out.iter().map(|m| (m.line_number, m.line.clone())).collect();
            let n = naive.len().min(max);
            prop_assert_eq!(&got[..], &naive[..n]);
            prop_assert_eq!(truncated, naive.len() > max);
        }
    }
}
