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
use crate::path::{ASSET_TYPES, Area, BookPath};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// `content/{NN-Name}/{NN-Name}/{NN-name}(.summary)?.md` only (the default for new books).
    #[default]
    Strict,
    /// A real Docusaurus docs tree: any depth, pages, category files and co-located assets.
    Docusaurus,
}

static STRICT_CONTENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^content/(\d{2}-[a-zA-Z0-9][a-zA-Z0-9-]*)/(\d{2}-[a-zA-Z0-9][a-zA-Z0-9-]*)/(\d{2}-[a-zA-Z0-9][a-zA-Z0-9-]*)(\.summary)?\.md$")
        .expect("static regex")
});

/// File extensions (compared case-insensitively) admitted under `content/` by the docusaurus
/// profile: pages (`md`, `mdx`), category/metadata files and co-located assets.
pub const DOCUSAURUS_FILE_EXTENSIONS: &[&str] = &[
    "md", "mdx", "json", "png", "jpg", "jpeg", "gif", "svg", "webp", "avif", "ico", "pdf", "mp4",
    "webm", "mov", "mp3", "wav", "ogg", "yml", "yaml", "txt", "csv", "py", "ts", "js", "zip",
];

/// File extensions of Docusaurus pages.
pub const PAGE_EXTENSIONS: &[&str] = &["md", "mdx"];

impl Profile {
    /// Both profiles, strict first.
    pub const ALL: [Profile; 2] = [Profile::Strict, Profile::Docusaurus];

    /// The wire name (`strict` | `docusaurus`).
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Strict => "strict",
            Profile::Docusaurus => "docusaurus",
        }
    }

    /// Parse a wire name; anything else is `INVALID_INPUT`.
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
                BookPath::parse_asset(path.as_str())
                    .map(|_| ())
                    .map_err(|_| {
                        violation(
                            "assets live under static/{images|slides|videos|audio}/{file}".into(),
                            Some(suggest_asset(path.as_str())),
                        )
                    })
            }
            Area::Content => match self {
                Profile::Strict => {
                    if STRICT_CONTENT.is_match(path.as_str()) {
                        Ok(())
                    } else {
                        Err(violation(
                            "path must match content/{NN-Name}/{NN-Name}/{NN-name}(.summary)?.md"
                                .into(),
                            Some(suggest_strict(path.as_str())),
                        ))
                    }
                }
                Profile::Docusaurus => check_docusaurus(path.file_name())
                    .map_err(|(reason, suggestion)| violation(reason, suggestion)),
            },
        }
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Profile {
    type Err = PfsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Profile::parse(s)
    }
}

/// Whether a file name is a Docusaurus page (`.md`/`.mdx`, any case).
pub fn is_page(file_name: &str) -> bool {
    extension(file_name).is_some_and(|e| PAGE_EXTENSIONS.contains(&e.as_str()))
}

fn extension(file_name: &str) -> Option<String> {
    file_name
        .rsplit_once('.')
        .filter(|(stem, _)| !stem.is_empty())
        .map(|(_, e)| e.to_ascii_lowercase())
}

/// The docusaurus rule for the last segment of a `content/…` path (any directory depth is fine;
/// the security rules already vetted every segment).
fn check_docusaurus(name: &str) -> Result<(), (String, Option<String>)> {
    let ext = extension(name);
    if name.starts_with("_category_.") && !matches!(ext.as_deref(), Some("json" | "yml" | "yaml")) {
        return Err((
            format!("category file {name:?} must be _category_.json or _category_.yml"),
            Some("rename it to _category_.json".into()),
        ));
    }
    match ext {
        Some(e) if DOCUSAURUS_FILE_EXTENSIONS.contains(&e.as_str()) => Ok(()),
        _ => Err((
            format!("file type of {name:?} is not admitted in a docs tree"),
            Some(format!(
                "use one of the extensions: {}",
                DOCUSAURUS_FILE_EXTENSIONS.join(", ")
            )),
        )),
    }
}

/// Why a `content/…` path fails the strict profile and what to do, as one sentence list joined
/// by `"; "` (reference `_suggest_content_fix`, extended with the real-book cases: chapter
/// intros, category files, `.mdx`, deeper nesting and `_` in names). When a mechanical rename
/// fits the profile, the suggestion ends with it (`rename to '…'`).
pub fn suggest_strict(path: &str) -> String {
    let segs: Vec<&str> = path.split('/').collect();
    let file = segs.last().copied().unwrap_or("");
    let lower = file.to_ascii_lowercase();
    let switch = "or switch the book to the docusaurus profile";
    if lower == "readme.md" || lower == "index.md" || lower == "readme.mdx" || lower == "index.mdx"
    {
        return format!(
            "chapter intro pages ({file}) are not admitted by the strict profile: rename it to a numbered lesson such as '00-introduction.md', {switch}"
        );
    }
    if lower.starts_with("_category_.") {
        return format!(
            "Docusaurus category files ({file}) are not admitted by the strict profile; drop it {switch}"
        );
    }
    let ext = file.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("md") => {}
        Some("mdx") => {
            return format!(
                "the strict profile stores .md lessons only: rename '{file}' to .md {switch}"
            );
        }
        _ => {
            return format!(
                "lessons are .md files; put images and other files under static/{{images|slides|videos|audio}}/ {switch}"
            );
        }
    }
    let levels = segs.len().saturating_sub(1);
    if levels < 3 {
        return "Content path needs: content/{NN-Part}/{NN-Chapter}/{NN-lesson}.md".into();
    }
    if levels > 3 {
        return format!(
            "the strict profile has exactly three levels below content/ (content/{{NN-Part}}/{{NN-Chapter}}/{{NN-lesson}}.md), this path has {levels}: flatten the sections into the lesson name {switch}"
        );
    }
    let is_nn = |s: &str| {
        let b = s.as_bytes();
        b.len() >= 4
            && b[0].is_ascii_digit()
            && b[1].is_ascii_digit()
            && b[2] == b'-'
            && b[3].is_ascii_alphanumeric()
    };
    let stem_full = &file[..file.len() - 3];
    let (stem, summary) = match stem_full.strip_suffix(".summary") {
        Some(s) => (s, ".summary"),
        None => (stem_full, ""),
    };
    let mut tips = Vec::new();
    for (label, seg) in [("Part", segs[1]), ("Chapter", segs[2]), ("Lesson", stem)] {
        if !seg.as_bytes().iter().take(2).all(u8::is_ascii_digit) || seg.len() < 2 {
            tips.push(format!(
                "{label} '{seg}' should start with NN- (e.g., '01-{seg}')"
            ));
        } else if !is_nn(seg) {
            tips.push(format!("{label} '{seg}' should look like NN-name (two digits, '-', then letters/digits/'-')"));
        }
        if seg.contains('_') || seg.contains('.') {
            tips.push(format!(
                "{label} '{seg}' may only use letters, digits and '-' (no '_' or '.')"
            ));
        }
    }
    let fixed = format!(
        "content/{}/{}/{}{summary}.md",
        normalize_segment(segs[1]),
        normalize_segment(segs[2]),
        normalize_segment(stem)
    );
    if fixed != path && STRICT_CONTENT.is_match(&fixed) {
        tips.push(format!("rename to '{fixed}'"));
    }
    if tips.is_empty() {
        "Rename to match content/{NN-Part}/{NN-Chapter}/{NN-lesson}.md pattern".into()
    } else {
        tips.join("; ")
    }
}

/// Best-effort `NN-name` form of one segment: `06_chapter_quiz` → `06-chapter-quiz`,
/// `intro` → `01-intro`.
fn normalize_segment(seg: &str) -> String {
    let mut s: String = seg
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    let s = s.trim_matches('-').to_string();
    let b = s.as_bytes();
    let has_nn = b.len() >= 2 && b[0].is_ascii_digit() && b[1].is_ascii_digit();
    if has_nn && b.len() > 2 && b[2] == b'-' {
        s
    } else if has_nn && b.len() > 2 {
        format!("{}-{}", &s[..2], &s[2..])
    } else {
        format!("01-{s}")
    }
}

/// Suggestion for a `static/…` path that is not `static/{images|slides|videos|audio}/{file}`
/// (reference `validate_book`).
pub fn suggest_asset(path: &str) -> String {
    let mut segs = path.split('/');
    let _static = segs.next();
    match (segs.next(), segs.next()) {
        (Some(t), Some(_)) if !t.is_empty() && !ASSET_TYPES.contains(&t) => {
            format!("Unknown asset type '{t}'. Use one of: images, slides, videos, audio")
        }
        _ => "Asset path needs: static/{type}/{filename} where type is images|slides|videos|audio"
            .into(),
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
        assert!(
            Profile::Docusaurus
                .check(&p("content/05-Part/run.exe"))
                .is_err()
        );
    }

    #[test]
    fn docusaurus_admits_a_real_docs_tree() {
        for ok in [
            "content/01-Introducing-AI-Driven-Development/README.md",
            "content/01-Introducing-AI-Driven-Development/_category_.json",
            "content/01-Introducing-AI-Driven-Development/01-ai-development-revolution/index.md",
            "content/01-Introducing-AI-Driven-Development/01-ai-development-revolution/08_chapter_01_quiz.md",
            "content/01-Introducing-AI-Driven-Development/01-ai-development-revolution/01-moment.summary.md",
            "content/04-Python/15-python-uv/03-section/01-sub/02-deeper/01-lesson.md",
            "content/04-Python/15-python-uv/img/uv_install.PNG",
            "content/04-Python/15-python-uv/img/diagram.svg",
            "content/04-Python/15-python-uv/_category_.yml",
            "content/04-Python/15-python-uv/01-lesson.mdx",
            "content/intro.md",
        ] {
            Profile::Docusaurus
                .check(&p(ok))
                .unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "content/05-Part/_category_.txt",
            "content/05-Part/Makefile",
            "content/05-Part/script.sh",
            "static/img/logo.png",
        ] {
            let e = Profile::Docusaurus.check(&p(bad)).unwrap_err();
            assert_eq!(e.code(), crate::ErrorCode::SchemaViolation, "{bad}");
        }
        assert!(is_page("a.MDX") && is_page("README.md") && !is_page("x.png"));
    }

    fn suggestion(profile: Profile, path: &str) -> String {
        match profile.check(&p(path)).unwrap_err() {
            PfsError::SchemaViolation { suggestion, .. } => suggestion.unwrap(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn strict_suggestions() {
        let s = suggestion(Profile::Strict, "content/1-Part/01-Chapter/01-lesson.md");
        assert!(
            s.contains("Part '1-Part' should start with NN- (e.g., '01-1-Part')"),
            "{s}"
        );
        let s = suggestion(Profile::Strict, "content/01-Part/01-lesson.md");
        assert_eq!(
            s,
            "Content path needs: content/{NN-Part}/{NN-Chapter}/{NN-lesson}.md"
        );
        let s = suggestion(Profile::Strict, "content/05-Part/17-Chapter/README.md");
        assert!(
            s.contains("docusaurus profile") && s.contains("00-introduction.md"),
            "{s}"
        );
        let s = suggestion(
            Profile::Strict,
            "content/05-Part/17-Chapter/06_chapter_06_quiz.md",
        );
        assert!(
            s.contains("rename to 'content/05-Part/17-Chapter/06-chapter-06-quiz.md'"),
            "{s}"
        );
        let s = suggestion(
            Profile::Strict,
            "content/05-Part/17-Chapter/01-Section/02-Sub/01-lesson.md",
        );
        assert!(s.contains("this path has 5"), "{s}");
        let s = suggestion(Profile::Strict, "content/05-Part/17-Chapter/01-lesson.mdx");
        assert!(s.contains(".md"), "{s}");
        let s = suggestion(Profile::Strict, "content/intro/basics/hello.summary.md");
        assert!(
            s.contains("rename to 'content/01-intro/01-basics/01-hello.summary.md'"),
            "{s}"
        );
        // Every mechanical rename the suggestion proposes really fits the profile.
        let fixed = "content/01-intro/01-basics/01-hello.summary.md";
        Profile::Strict.check(&p(fixed)).unwrap();
        let s = suggestion(Profile::Strict, "static/img/file.png");
        assert_eq!(
            s,
            "Unknown asset type 'img'. Use one of: images, slides, videos, audio"
        );
        let s = suggestion(Profile::Docusaurus, "static/images");
        assert!(s.starts_with("Asset path needs"), "{s}");
    }

    #[test]
    fn parse_and_display() {
        for pr in Profile::ALL {
            assert_eq!(Profile::parse(pr.as_str()).unwrap(), pr);
            assert_eq!(pr.to_string().parse::<Profile>().unwrap(), pr);
        }
        assert_eq!(
            Profile::parse("loose").unwrap_err().code(),
            crate::ErrorCode::InvalidInput
        );
        assert_eq!(
            serde_json::to_string(&Profile::Docusaurus).unwrap(),
            "\"docusaurus\""
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn name() -> impl Strategy<Value = String> {
            "[A-Za-z0-9][A-Za-z0-9_-]{0,12}"
        }
        fn nn_name() -> impl Strategy<Value = String> {
            "[0-9]{2}-[a-zA-Z0-9][a-zA-Z0-9-]{0,10}"
        }

        proptest! {
            /// Every strict-valid path is docusaurus-valid (the docusaurus profile is a superset).
            #[test]
            fn strict_is_subset_of_docusaurus(a in nn_name(), b in nn_name(), c in nn_name(), summary in any::<bool>()) {
                let path = format!("content/{a}/{b}/{c}{}.md", if summary { ".summary" } else { "" });
                let bp = p(&path);
                prop_assert!(Profile::Strict.check(&bp).is_ok(), "{}", path);
                prop_assert!(Profile::Docusaurus.check(&bp).is_ok(), "{}", path);
            }

            /// Any docs-tree shape (depth 0..6, pages, category files, images) is admitted by
            /// docusaurus; strict rejects everything it admits that is not a three-level NN- lesson.
            #[test]
            fn docusaurus_admits_trees(dirs in prop::collection::vec(name(), 0..6), file in name(),
                                       ext in prop::sample::select(vec!["md", "mdx", "png", "jpg", "svg", "json"])) {
                let mut path = String::from("content/");
                for d in &dirs { path.push_str(d); path.push('/'); }
                path.push_str(&file); path.push('.'); path.push_str(ext);
                let bp = p(&path);
                prop_assert!(Profile::Docusaurus.check(&bp).is_ok(), "{}", path);
                if Profile::Strict.check(&bp).is_ok() {
                    prop_assert!(STRICT_CONTENT.is_match(&path));
                } else {
                    // The suggestion is never empty.
                    prop_assert!(!suggest_strict(&path).is_empty());
                }
            }
        }
    }
}
