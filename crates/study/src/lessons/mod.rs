//! Lesson content: pluggable sources (local docs, GitHub, PanaversityFS), parsing, and the cache.
//!
//! A lesson path is the Docusaurus source path without the `@site/docs/` prefix and extension
//! (e.g. `01-Part/02-Chapter/03-lesson`); the PanaversityFS form of the same file
//! (`content/01-Part/02-Chapter/03-lesson.md`, as MCP tools name it) is accepted and normalised
//! to it. Every source resolves it by trying `{path}.md`,
//! `{path}.mdx`, `{path}/index.md`, `{path}/README.md` in that order (a path that already ends in
//! `.md`/`.mdx` is tried as is).

mod cache;
mod github;
mod local;
pub mod parse;
mod pfs_source;
mod service;

pub use cache::{CacheStore, MemoryCache, RedisCache};
pub use github::{GitHubConfig, GitHubSource};
pub use local::LocalDocsSource;
pub use parse::{Chunk, Lesson};
pub use pfs_source::PfsBookSource;
pub use service::{CacheConfig, LessonService, SourceStatus};

/// Raw lesson text as a source returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLesson {
    pub text: String,
    /// A validator for conditional requests (GitHub ETag), if the source has one.
    pub etag: Option<String>,
}

/// The answer to a conditional fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// New content.
    Modified(RawLesson),
    /// The validator still matches: the cached copy is current.
    NotModified,
    /// No such lesson.
    NotFound,
}

/// Why a lesson could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LessonError {
    /// The lesson path is malformed or escapes the docs root.
    #[error("invalid lesson path: {0}")]
    InvalidPath(String),
    /// The source is down or answered with an error.
    #[error("lesson source unavailable: {0}")]
    Unavailable(String),
}

/// A place lessons come from.
#[async_trait::async_trait]
pub trait LessonSource: Send + Sync + 'static {
    /// Fetch a lesson by (already validated) path; `user` selects a per-user overlay where the
    /// source supports one. `Ok(None)`: no such lesson.
    async fn fetch(
        &self,
        lesson_path: &str,
        user: Option<&str>,
    ) -> Result<Option<RawLesson>, LessonError>;

    /// Conditional fetch: `etag` is the validator of the copy we hold. The default ignores it.
    async fn fetch_if_changed(
        &self,
        lesson_path: &str,
        user: Option<&str>,
        etag: Option<&str>,
    ) -> Result<Fetched, LessonError> {
        let _ = etag;
        Ok(match self.fetch(lesson_path, user).await? {
            Some(raw) => Fetched::Modified(raw),
            None => Fetched::NotFound,
        })
    }

    /// True when the content depends on the user (then the cache key includes the user).
    fn per_user(&self) -> bool {
        false
    }

    /// A short name for logs and health checks.
    fn name(&self) -> &'static str;
}

/// Maximum length of a lesson path.
pub const MAX_LESSON_PATH: usize = 512;
/// Maximum length of one segment (file systems allow 255 bytes per name; the source adds an
/// extension or `/README.md`).
pub const MAX_LESSON_SEGMENT: usize = 200;

/// Validate and normalise a lesson path: trailing slashes removed; only `[A-Za-z0-9_./-]`;
/// no leading slash (absolute), no empty, `.` or `..` segments, no backslash or `%` (encoded).
pub fn validate_lesson_path(path: &str) -> Result<String, LessonError> {
    let p = path.trim().trim_end_matches('/');
    let bad = |why: &str| Err(LessonError::InvalidPath(format!("{why}: {path:?}")));
    if p.is_empty() {
        return bad("empty");
    }
    if p.len() > MAX_LESSON_PATH {
        return bad("too long");
    }
    if p.starts_with('/') {
        return bad("absolute path");
    }
    if let Some(c) = p
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')))
    {
        return bad(&format!("character {c:?} not allowed"));
    }
    for seg in p.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return bad("empty, '.' or '..' segment");
        }
        if seg.starts_with('.') {
            return bad("hidden segment");
        }
        if seg.len() > MAX_LESSON_SEGMENT {
            return bad(&format!(
                "a segment is longer than {MAX_LESSON_SEGMENT} characters"
            ));
        }
    }
    // One format everywhere: a PanaversityFS book path (`content/….md`, what MCP tools take) names
    // the same lesson as its Docusaurus form.
    // (an explicit extension is kept: `x.mdx` means that file even when `x.md` exists).
    let p = p.strip_prefix("content/").unwrap_or(p);
    Ok(p.to_string())
}

/// The candidate file names for a validated lesson path, in resolution order.
pub fn candidates(path: &str) -> Vec<String> {
    if path.ends_with(".md") || path.ends_with(".mdx") {
        return vec![path.to_string()];
    }
    vec![
        format!("{path}.md"),
        format!("{path}.mdx"),
        format!("{path}/index.md"),
        format!("{path}/README.md"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_validation() {
        assert_eq!(
            validate_lesson_path("01-Part/02-Chapter/03-lesson/").unwrap(),
            "01-Part/02-Chapter/03-lesson"
        );
        assert_eq!(
            validate_lesson_path("content/01-Part/02-Chapter/03-lesson.md").unwrap(),
            "01-Part/02-Chapter/03-lesson.md"
        );
        for bad in [
            "",
            "/etc/passwd",
            "../secret",
            "a/../../b",
            "a/./b",
            "a//b",
            "a\\b",
            "a%2e%2e/b",
            "a/.git/config",
            "a b",
            "a?x=1",
            &format!("01-Part/{}", "x".repeat(MAX_LESSON_SEGMENT + 1)),
        ] {
            assert!(validate_lesson_path(bad).is_err(), "{bad}");
        }
        validate_lesson_path(&format!("01-Part/{}", "x".repeat(MAX_LESSON_SEGMENT))).unwrap();
    }
}
