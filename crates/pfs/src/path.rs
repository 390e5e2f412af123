//! Book-relative paths, checked for every security rule once at the edge (spec R1).
//!
//! A [`BookPath`] is a path inside one book, relative to the book root: `content/…` (lessons,
//! summaries, and in the docusaurus profile any docs-tree file) or `static/{images|slides|videos|audio}/…`
//! (assets). Whether it also fits the book's *schema profile* is a separate check
//! ([`crate::schema`]); the security rules here are the same for every profile.
//!
//! Object-storage keys keep the predecessor's layout:
//! `books/{book}/{rel}` for base content and assets, `books/{book}/users/{user}/{rel}` for overlays.

use std::fmt;

use serde::Serialize;

use crate::error::PfsError;
use crate::ids::{BookId, Namespace};

/// Longest accepted book-relative path, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;
/// Longest accepted path segment, in bytes.
pub const MAX_SEGMENT_BYTES: usize = 255;

/// The four asset directories under `static/`.
pub const ASSET_TYPES: [&str; 4] = ["images", "slides", "videos", "audio"];

/// The top-level area a path belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Area {
    Content,
    Static,
}

/// A security-checked path relative to a book root. Always starts with `content/` or `static/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct BookPath(String);

/// Check the security rules shared by every path we accept (content, assets, overlays, search
/// roots): not empty, relative, `/`-separated, no empty/`.`/`..`/hidden segments, no backslash, no
/// percent-encoded bytes, no NUL/control/whitespace characters, only `[A-Za-z0-9._-]` in segments,
/// and bounded lengths. `allow_trailing_slash` admits a directory prefix such as `content/01-Part/`.
pub fn check_security(path: &str, allow_trailing_slash: bool) -> Result<(), PfsError> {
    let bad = |reason: &str| Err(PfsError::invalid_path(path, reason));
    if path.is_empty() {
        return bad("path is empty");
    }
    if path.len() > MAX_PATH_BYTES {
        return bad("path is longer than 1024 bytes");
    }
    if path.contains('\0') {
        return bad("NUL byte in path");
    }
    if path.chars().any(|c| c.is_control()) {
        return bad("control characters (newline, tab, …) are not allowed in paths");
    }
    if path.starts_with('/') {
        return bad(
            "absolute paths are not allowed; use a path relative to the book, like content/…",
        );
    }
    if path.starts_with('~') {
        return bad("home-directory expansion is not allowed");
    }
    if path.contains('\\') {
        return bad("backslashes are not allowed; use '/' as the separator");
    }
    if path.contains("//") {
        return bad("empty path segment ('//')");
    }
    if path.contains('%') {
        return bad("percent-encoded characters are not allowed in paths");
    }
    let trimmed = if allow_trailing_slash {
        path.strip_suffix('/').unwrap_or(path)
    } else {
        if path.ends_with('/') {
            return bad("path ends with '/'; name a file");
        }
        path
    };
    if trimmed.is_empty() {
        return bad("path is empty");
    }
    for seg in trimmed.split('/') {
        if seg == ".." {
            return bad("path traversal ('..') is not allowed");
        }
        if seg == "." {
            return bad("'.' segments are not allowed");
        }
        if seg.starts_with('.') {
            return bad("hidden files and directories (starting with '.') are not allowed");
        }
        if seg.len() > MAX_SEGMENT_BYTES {
            return bad("a path segment is longer than 255 bytes");
        }
        if let Some(c) = seg
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(PfsError::invalid_path(
                path,
                format!("character {c:?} is not allowed; use A-Z, a-z, 0-9, '.', '_' and '-'"),
            ));
        }
    }
    Ok(())
}

impl BookPath {
    /// Parse a file path inside a book (`content/…` or `static/…`).
    pub fn parse(path: &str) -> Result<BookPath, PfsError> {
        check_security(path, false)?;
        let area_ok = path.starts_with("content/") || path.starts_with("static/");
        if !area_ok {
            return Err(PfsError::invalid_path(
                path,
                "paths must start with content/ (lessons) or static/ (assets)",
            ));
        }
        Ok(BookPath(path.to_string()))
    }

    /// Parse a content path (`content/…`).
    pub fn parse_content(path: &str) -> Result<BookPath, PfsError> {
        let p = BookPath::parse(path)?;
        if p.area() != Area::Content {
            return Err(PfsError::invalid_path(
                path,
                "content paths start with content/",
            ));
        }
        Ok(p)
    }

    /// Parse an asset path (`static/{images|slides|videos|audio}/…`).
    pub fn parse_asset(path: &str) -> Result<BookPath, PfsError> {
        let p = BookPath::parse(path)?;
        let mut segs = p.0.split('/');
        let _static = segs.next();
        let ty = segs.next().unwrap_or("");
        if p.area() != Area::Static || !ASSET_TYPES.contains(&ty) || segs.next().is_none() {
            return Err(PfsError::invalid_path(
                path,
                "asset paths look like static/{images|slides|videos|audio}/{file}",
            ));
        }
        Ok(p)
    }

    /// Build `static/{asset_type}/{filename}` from its parts (each checked).
    pub fn asset(asset_type: &str, filename: &str) -> Result<BookPath, PfsError> {
        if !ASSET_TYPES.contains(&asset_type) {
            return Err(PfsError::InvalidInput(format!(
                "unknown asset_type {asset_type:?}; use one of images, slides, videos, audio"
            )));
        }
        BookPath::parse_asset(&format!("static/{asset_type}/{filename}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn area(&self) -> Area {
        if self.0.starts_with("content/") {
            Area::Content
        } else {
            Area::Static
        }
    }

    /// The asset type of a `static/…` path.
    pub fn asset_type(&self) -> Option<&str> {
        match self.area() {
            Area::Static => self.0.split('/').nth(1),
            Area::Content => None,
        }
    }

    /// Segments of the path.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The last segment (file name).
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// The canonical object-storage key for this path in `ns`.
    pub fn storage_key(&self, book: &BookId, ns: &Namespace) -> String {
        storage_key(book, ns, &self.0)
    }
}

/// `books/{book}/{rel}` or `books/{book}/users/{user}/{rel}`.
pub fn storage_key(book: &BookId, ns: &Namespace, rel: &str) -> String {
    match ns {
        Namespace::Base => format!("books/{book}/{rel}"),
        Namespace::Overlay(u) => format!("books/{book}/users/{u}/{rel}"),
    }
}

impl fmt::Display for BookPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for BookPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A directory prefix inside a book (for bulk reads and search roots), e.g. `content/01-Part`.
/// Same security rules; a trailing slash is allowed and removed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DirPrefix(String);

impl DirPrefix {
    pub fn parse(path: &str) -> Result<DirPrefix, PfsError> {
        check_security(path, true)?;
        let p = path.strip_suffix('/').unwrap_or(path);
        if !(p == "content"
            || p == "static"
            || p.starts_with("content/")
            || p.starts_with("static/"))
        {
            return Err(PfsError::invalid_path(
                path,
                "directory paths must be content, static, or below them",
            ));
        }
        Ok(DirPrefix(p.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `path` is inside this directory.
    pub fn contains(&self, path: &str) -> bool {
        path.len() > self.0.len()
            && path.starts_with(&self.0)
            && path.as_bytes()[self.0.len()] == b'/'
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_paths() {
        for p in [
            "content/01-intro/01-basics/01-hello.md",
            "content/01-intro/02-setup/03-install.summary.md",
            "content/05-Part/17-Chapter/README.md",
            "content/05-Part/_category_.json",
            "content/05-Part/17-Chapter/img/diagram_1.png",
            "static/images/chapter1/diagram.png",
        ] {
            BookPath::parse(p).unwrap();
        }
    }

    #[test]
    fn rejects_unsafe_paths() {
        for p in [
            "",
            "/etc/passwd",
            "../x",
            "content/../../x",
            "content/a/./b.md",
            "content//a.md",
            "content\\a.md",
            "content/%2e%2e/a.md",
            "content/a%2fb.md",
            "content/a\0.md",
            "content/a\n.md",
            "content/a b.md",
            "content/.hidden.md",
            "~/x",
            "content/",
            "lessons/01-a/01-b/01-c.md",
            "content/a@b.md",
        ] {
            assert!(BookPath::parse(p).is_err(), "{p:?} must be rejected");
        }
    }

    #[test]
    fn storage_keys_keep_the_layout() {
        let b = BookId::parse("my-book").unwrap();
        let p = BookPath::parse("content/01-a/01-b/01-c.md").unwrap();
        assert_eq!(
            p.storage_key(&b, &Namespace::Base),
            "books/my-book/content/01-a/01-b/01-c.md"
        );
        let u = crate::ids::UserId::parse("u1").unwrap();
        assert_eq!(
            p.storage_key(&b, &Namespace::Overlay(u)),
            "books/my-book/users/u1/content/01-a/01-b/01-c.md"
        );
    }

    #[test]
    fn assets() {
        assert_eq!(
            BookPath::asset("images", "a.png").unwrap().as_str(),
            "static/images/a.png"
        );
        assert!(BookPath::asset("img", "a.png").is_err());
        assert!(BookPath::parse_asset("static/images").is_err());
        assert!(BookPath::parse_asset("static/docs/a.txt").is_err());
        assert_eq!(
            BookPath::parse_asset("static/images/x/a.png")
                .unwrap()
                .asset_type(),
            Some("images")
        );
    }

    #[test]
    fn dir_prefixes() {
        let d = DirPrefix::parse("content/01-Part/").unwrap();
        assert!(d.contains("content/01-Part/01-x.md"));
        assert!(!d.contains("content/01-Partial/01-x.md"));
        assert!(DirPrefix::parse("users/bob/content").is_err());
        assert!(DirPrefix::parse("content/../x").is_err());
    }
}
