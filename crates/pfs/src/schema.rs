//! Book schema profiles: which (already security-checked) paths a book admits.
//!
//! * `strict` (default for new books): spec FR-007/FR-008, `content/{NN-Name}/{NN-Name}/{NN-name}(.summary)?.md`
//!   and `static/{images|slides|videos|audio}/{path}`.
//! * `docusaurus`: a real Docusaurus docs tree, losslessly: any depth under `content/`, `.md`/`.mdx`
//!   pages (README.md, index.md, `NN_name.md`, …), `_category_.json`, and co-located images/files
//!   with common asset extensions; plus the same `static/` rule.
//!
//! The security rules ([`crate::path::check_security`]) are identical in both profiles.

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::error::PfsError;
use crate::path::{Area, BookPath};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    #[default]
    Strict,
    Docusaurus,
}

static STRICT_CONTENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^content/(\d{2}-[a-zA-Z0-9][a-zA-Z0-9-]*)/(\d{2}-[a-zA-Z0-9][a-zA-Z0-9-]*)/(\d{2}-[a-zA-Z0-9][a-zA-Z0-9-]*)(\.summary)?\.md$")
        .expect("static regex")
});

/// File extensions admitted under `content/` by the docusaurus profile besides pages.
pub const DOCUSAURUS_FILE_EXTENSIONS: &[&str] = &[
    "md", "mdx", "json", "png", "jpg", "jpeg", "gif", "svg", "webp", "avif", "ico", "pdf", "mp4",
    "webm", "mov", "mp3", "wav", "ogg", "yml", "yaml", "txt", "csv", "py", "ts", "js", "zip",
];

impl Profile {
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Strict => "strict",
            Profile::Docusaurus => "docusaurus",
        }
    }

    pub fn parse(s: &str) -> Result<Profile, PfsError> {
        match s {
            "strict" => Ok(Profile::Strict),
            "docusaurus" => Ok(Profile::Docusaurus),
            other => Err(PfsError::InvalidInput(format!(
                "unknown schema profile {other:?}; use strict or docusaurus"
            ))),
        }
    }

    /// Whether `path` fits this profile. Errors are `SCHEMA_VIOLATION` with a suggestion.
    pub fn check(self, path: &BookPath) -> Result<(), PfsError> {
        let violation = |reason: String, suggestion: Option<String>| PfsError::SchemaViolation {
            path: path.as_str().to_string(),
            profile: self.as_str().to_string(),
            reason,
            suggestion,
        };
        match path.area() {
            Area::Static => {
                // BookPath::parse_asset enforces static/{type}/{file}.
                BookPath::parse_asset(path.as_str()).map(|_| ()).map_err(|_| {
                    violation(
                        "assets live under static/{images|slides|videos|audio}/{file}".into(),
                        Some("move the file to static/images/, static/slides/, static/videos/ or static/audio/".into()),
                    )
                })
            }
            Area::Content => match self {
                Profile::Strict => {
                    if STRICT_CONTENT.is_match(path.as_str()) {
                        Ok(())
                    } else {
                        Err(violation(
                            "path must match content/{NN-Name}/{NN-Name}/{NN-name}(.summary)?.md".into(),
                            Some(suggest_strict(path.as_str())),
                        ))
                    }
                }
                Profile::Docusaurus => {
                    let name = path.file_name();
                    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
                    match ext {
                        Some(e) if DOCUSAURUS_FILE_EXTENSIONS.contains(&e.as_str()) => Ok(()),
                        _ => Err(violation(
                            format!("file type of {name:?} is not admitted in a docs tree"),
                            Some(format!(
                                "use one of the extensions: {}",
                                DOCUSAURUS_FILE_EXTENSIONS.join(", ")
                            )),
                        )),
                    }
                }
            },
        }
    }
}

/// A concrete suggestion for a content path that fails the strict profile.
pub fn suggest_strict(path: &str) -> String {
    let segs: Vec<&str> = path.split('/').collect();
    if segs.len() != 4 {
        return "content paths need exactly three levels: content/{NN-Part}/{NN-Chapter}/{NN-lesson}.md".into();
    }
    let nn = |s: &str| s.len() >= 3 && s.as_bytes()[..2].iter().all(u8::is_ascii_digit) && s.as_bytes()[2] == b'-';
    let mut tips = Vec::new();
    for (label, seg) in [("Part", segs[1]), ("Chapter", segs[2])] {
        if !nn(seg) {
            tips.push(format!("{label} '{seg}' should start with NN- (e.g. '01-{seg}')"));
        }
    }
    let lesson = segs[3];
    if !lesson.ends_with(".md") {
        tips.push(format!("lesson '{lesson}' should be a .md file"));
    } else {
        let stem = lesson.trim_end_matches(".md").trim_end_matches(".summary");
        if !nn(stem) {
            tips.push(format!("lesson '{stem}' should start with NN- (e.g. '01-{stem}')"));
        }
        if stem.contains('_') {
            tips.push(format!("replace '_' with '-' in '{stem}'"));
        }
    }
    if tips.is_empty() {
        "rename to match content/{NN-Part}/{NN-Chapter}/{NN-lesson}.md".into()
    } else {
        tips.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> BookPath {
        BookPath::parse(s).unwrap()
    }

    #[test]
    fn strict_profile() {
        for ok in [
            "content/01-intro/01-basics/01-hello.md",
            "content/01-intro/02-setup/03-install.summary.md",
            "content/00-a/99-B/05-x-y-z.md",
            "static/images/chapter1/diagram.png",
        ] {
            Profile::Strict.check(&p(ok)).unwrap();
        }
        for bad in [
            "content/1-intro/01-basics/01-hello.md",
            "content/01-intro/01-basics/01-hello.txt",
            "content/01-intro/01-basics/06_chapter_quiz.md",
            "content/05-Part/17-Chapter/README.md",
            "content/05-Part/17-Chapter/01-Section/02-Sub/01-lesson.md",
            "content/01-Part/01-lesson.md",
            "content/01-intro/01-basics/01-hello.summary.summary.md",
        ] {
            let e = Profile::Strict.check(&p(bad)).unwrap_err();
            assert_eq!(e.code(), crate::ErrorCode::SchemaViolation, "{bad}");
        }
    }

    #[test]
    fn docusaurus_profile() {
        for ok in [
            "content/05-Part/17-Chapter/README.md",
            "content/05-Part/17-Chapter/06_chapter_06_quiz.md",
            "content/05-Part/_category_.json",
            "content/05-Part/17-Chapter/01-Section/02-Sub/01-lesson.mdx",
            "content/05-Part/17-Chapter/img/x.png",
            "content/index.md",
        ] {
            Profile::Docusaurus.check(&p(ok)).unwrap();
        }
        assert!(Profile::Docusaurus.check(&p("content/05-Part/run.exe")).is_err());
    }
}
