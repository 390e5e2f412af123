//! `validate_book`: check every file of a book against its schema profile.
//!
//! Pure: the caller lists the book's files (book-relative paths, including `users/…` overlays
//! and anything stray) and gets the report of the `validate_book` tool.
//!
//! Response shape (a superset of the predecessor's):
//!
//! ```json
//! {"valid": true, "book_id": "my-book", "profile": "strict",
//!  "summary": {"total_files": 3, "content_files": 2, "asset_files": 1, "error_count": 0, "warning_count": 0},
//!  "errors": [{"path": "…", "severity": "error", "message": "…", "suggestion": "…"}],
//!  "warnings": [{"path": "…", "severity": "warning", "message": "…", "suggestion": null}]}
//! ```
//!
//! With `strict = true` validation stops at the first error and the report also carries
//! `"error"` (the message), `"failed_at"` (the path) and `"suggestion"`.
//!
//! Unknown book (the caller decides, e.g. no registry row): [`ValidationReport::book_not_found`]
//! gives `{"valid": false, "book_id": "x", "error": "Book not found: x", "summary": {…0, "error_count": 1…},
//! "errors": [{"path": "books/x/", "severity": "error", "message": "Book directory does not exist",
//! "suggestion": "Create the book directory first"}], "warnings": []}`.
//! A known book without files is valid with all counts 0.

use serde::Serialize;

use crate::error::PfsError;
use crate::path::BookPath;
use crate::schema::{Profile, suggest_asset};

/// `error` | `warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One finding of [`validate_book`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Issue {
    pub path: String,
    pub severity: Severity,
    pub message: String,
    /// What to do about it; `null` when there is nothing to do.
    pub suggestion: Option<String>,
}

/// File counts of a [`ValidationReport`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Every listed file, overlays and stray files included.
    pub total_files: usize,
    /// Files under `content/`.
    pub content_files: usize,
    /// Files under `static/`.
    pub asset_files: usize,
    pub error_count: usize,
    /// Warnings collected (0 when `include_warnings` is false).
    pub warning_count: usize,
}

/// The `validate_book` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValidationReport {
    pub valid: bool,
    pub book_id: String,
    pub profile: Profile,
    /// Set when validation stopped (strict mode) or the book does not exist.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Strict mode: the path of the first error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<String>,
    /// Strict mode: the suggestion for the first error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<String>,
    pub summary: Summary,
    pub errors: Vec<Issue>,
    pub warnings: Vec<Issue>,
}

impl ValidationReport {
    /// The report for a book that does not exist (same shape as the predecessor's).
    pub fn book_not_found(book_id: &str, profile: Profile) -> ValidationReport {
        ValidationReport {
            valid: false,
            book_id: book_id.to_string(),
            profile,
            error: Some(format!("Book not found: {book_id}")),
            failed_at: None,
            suggestion: None,
            summary: Summary {
                error_count: 1,
                ..Summary::default()
            },
            errors: vec![Issue {
                path: format!("books/{book_id}/"),
                severity: Severity::Error,
                message: "Book directory does not exist".into(),
                suggestion: Some("Create the book directory first".into()),
            }],
            warnings: Vec::new(),
        }
    }
}

/// Validate a book's files against `profile`.
///
/// * `content/…`: the security rules, then the profile. In the strict profile a non-markdown file
///   is a warning (the predecessor's rule), not an error; a `.md` file that does not fit is an
///   error with a suggestion.
/// * `static/…`: must be `static/{images|slides|videos|audio}/{file}` (both profiles).
/// * `users/…`: overlay files are skipped with a warning.
/// * anything else: warning "File outside of content/ or static/ directories".
///
/// Files are processed in path order, so the report is deterministic. `strict` stops at the first
/// error; `include_warnings = false` collects no warnings.
pub fn validate_book(
    book_id: &str,
    profile: Profile,
    files: &[String],
    strict: bool,
    include_warnings: bool,
) -> ValidationReport {
    let mut sorted: Vec<&str> = files.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut report = ValidationReport {
        valid: true,
        book_id: book_id.to_string(),
        profile,
        error: None,
        failed_at: None,
        suggestion: None,
        summary: Summary::default(),
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    for path in sorted {
        report.summary.total_files += 1;
        let (errors, warnings) = check_file(profile, path, &mut report.summary);
        if include_warnings {
            report.warnings.extend(warnings);
        }
        if let Some(first) = errors {
            if strict {
                report.error = Some(first.message.clone());
                report.failed_at = Some(first.path.clone());
                report.suggestion = first.suggestion.clone();
                report.errors.push(first);
                break;
            }
            report.errors.push(first);
        }
    }
    report.summary.error_count = report.errors.len();
    report.summary.warning_count = report.warnings.len();
    report.valid = report.errors.is_empty();
    report
}

fn issue(
    path: &str,
    severity: Severity,
    message: impl Into<String>,
    suggestion: Option<String>,
) -> Issue {
    Issue {
        path: path.to_string(),
        severity,
        message: message.into(),
        suggestion,
    }
}

/// Classify one file: at most one error, and warnings.
fn check_file(profile: Profile, path: &str, summary: &mut Summary) -> (Option<Issue>, Vec<Issue>) {
    let mut warnings = Vec::new();
    let top = path.split('/').next().unwrap_or("");
    match top {
        "content" | "static" => {
            if top == "content" {
                summary.content_files += 1;
            } else {
                summary.asset_files += 1;
            }
            let parsed = match BookPath::parse(path) {
                Ok(p) => p,
                Err(e) => {
                    let reason = match &e {
                        PfsError::InvalidPath { reason, .. } => reason.clone(),
                        other => other.to_string(),
                    };
                    let err = issue(
                        path,
                        Severity::Error,
                        format!("Unsafe or malformed path: {reason}"),
                        Some("Rename the file using only A-Z, a-z, 0-9, '.', '_' and '-' in each segment".into()),
                    );
                    return (Some(err), warnings);
                }
            };
            if top == "content" && profile == Profile::Strict && !path.ends_with(".md") {
                warnings.push(issue(
                    path,
                    Severity::Warning,
                    "Non-markdown file in content directory",
                    Some("Move to static/ directory or convert to markdown".into()),
                ));
                return (None, warnings);
            }
            match profile.check(&parsed) {
                Ok(()) => (None, warnings),
                Err(PfsError::SchemaViolation {
                    reason, suggestion, ..
                }) => {
                    let suggestion = if top == "static" {
                        Some(suggest_asset(path))
                    } else {
                        suggestion
                    };
                    (
                        Some(issue(path, Severity::Error, reason, suggestion)),
                        warnings,
                    )
                }
                Err(other) => (
                    Some(issue(path, Severity::Error, other.to_string(), None)),
                    warnings,
                ),
            }
        }
        "users" => {
            warnings.push(issue(
                path,
                Severity::Warning,
                "User overlay file (skipped from validation)",
                None,
            ));
            (None, warnings)
        }
        _ => {
            warnings.push(issue(
                path,
                Severity::Warning,
                "File outside of content/ or static/ directories",
                Some("Move to appropriate directory or remove".into()),
            ));
            (None, warnings)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn files(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const BOOK: &[&str] = &[
        "content/01-Part/01-Chapter/01-lesson.md",
        "content/01-Part/01-Chapter/01-lesson.summary.md",
        "content/01-Part/01-Chapter/README.md",
        "content/01-Part/01-Chapter/img/x.png",
        "content/1-Part/01-Chapter/01-lesson.md",
        "static/images/a.png",
        "static/img/b.png",
        "users/u1/content/01-Part/01-Chapter/01-lesson.md",
        "notes.txt",
    ];

    #[test]
    fn strict_profile_report() {
        let r = validate_book("bk", Profile::Strict, &files(BOOK), false, true);
        assert!(!r.valid);
        assert_eq!(
            r.summary,
            Summary {
                total_files: 9,
                content_files: 5,
                asset_files: 2,
                error_count: 3,
                warning_count: 3
            }
        );
        let err_paths: Vec<&str> = r.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            err_paths,
            vec![
                "content/01-Part/01-Chapter/README.md",
                "content/1-Part/01-Chapter/01-lesson.md",
                "static/img/b.png"
            ]
        );
        assert!(
            r.errors
                .iter()
                .all(|e| e.severity == Severity::Error && e.suggestion.is_some())
        );
        assert_eq!(
            r.errors[1]
                .suggestion
                .as_deref()
                .unwrap()
                .split("; ")
                .next(),
            Some("Part '1-Part' should start with NN- (e.g., '01-1-Part')")
        );
        assert_eq!(
            r.errors[2].suggestion.as_deref(),
            Some("Unknown asset type 'img'. Use one of: images, slides, videos, audio")
        );
        let warn: Vec<(&str, &str)> = r
            .warnings
            .iter()
            .map(|w| (w.path.as_str(), w.message.as_str()))
            .collect();
        assert_eq!(
            warn,
            vec![
                (
                    "content/01-Part/01-Chapter/img/x.png",
                    "Non-markdown file in content directory"
                ),
                (
                    "notes.txt",
                    "File outside of content/ or static/ directories"
                ),
                (
                    "users/u1/content/01-Part/01-Chapter/01-lesson.md",
                    "User overlay file (skipped from validation)"
                ),
            ]
        );
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["profile"], "strict");
        assert!(j.get("failed_at").is_none() && j.get("error").is_none());
        assert_eq!(j["warnings"][2]["suggestion"], serde_json::Value::Null);
        assert_eq!(j["errors"][0]["severity"], "error");
    }

    #[test]
    fn docusaurus_profile_report() {
        let r = validate_book("bk", Profile::Docusaurus, &files(BOOK), false, false);
        let err_paths: Vec<&str> = r.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(err_paths, vec!["static/img/b.png"]);
        assert!(r.warnings.is_empty());
        assert_eq!(r.summary.warning_count, 0);
    }

    #[test]
    fn strict_mode_stops_at_the_first_error() {
        let r = validate_book("bk", Profile::Strict, &files(BOOK), true, true);
        assert!(!r.valid);
        assert_eq!(
            r.failed_at.as_deref(),
            Some("content/01-Part/01-Chapter/README.md")
        );
        assert_eq!(r.errors.len(), 1);
        assert_eq!(r.error.as_deref(), Some(r.errors[0].message.as_str()));
        assert!(r.suggestion.is_some());
        // Stopped early: not every file was counted.
        assert!(r.summary.total_files < BOOK.len());
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["failed_at"], "content/01-Part/01-Chapter/README.md");
    }

    #[test]
    fn unsafe_paths_are_errors_and_empty_books_are_valid() {
        let r = validate_book(
            "bk",
            Profile::Docusaurus,
            &files(&["content/a b.md", "static/images/../x.png"]),
            false,
            true,
        );
        assert_eq!(r.summary.error_count, 2);
        assert!(
            r.errors
                .iter()
                .all(|e| e.message.starts_with("Unsafe or malformed path"))
        );
        let r = validate_book("bk", Profile::Strict, &[], true, true);
        assert!(r.valid);
        assert_eq!(r.summary, Summary::default());
    }

    #[test]
    fn not_found_shape() {
        let j = serde_json::to_value(ValidationReport::book_not_found("x-book", Profile::Strict))
            .unwrap();
        assert_eq!(j["valid"], false);
        assert_eq!(j["error"], "Book not found: x-book");
        assert_eq!(j["summary"]["error_count"], 1);
        assert_eq!(j["errors"][0]["path"], "books/x-book/");
        assert_eq!(j["warnings"], serde_json::json!([]));
    }

    proptest! {
        /// Counts add up and validity follows errors, for any mix of files.
        #[test]
        fn counts_are_consistent(paths in prop::collection::vec("(content|static|users|other)/[a-z0-9_ .-]{1,8}(/[0-9]{2}-[a-z]{1,4}){0,3}\\.(md|png)", 0..30),
                                 docusaurus in any::<bool>(), include_warnings in any::<bool>()) {
            let profile = if docusaurus { Profile::Docusaurus } else { Profile::Strict };
            let r = validate_book("bk", profile, &paths, false, include_warnings);
            let mut uniq = paths.clone();
            uniq.sort();
            uniq.dedup();
            prop_assert_eq!(r.summary.total_files, uniq.len());
            prop_assert_eq!(r.summary.error_count, r.errors.len());
            prop_assert_eq!(r.summary.warning_count, r.warnings.len());
            prop_assert_eq!(r.valid, r.errors.is_empty());
            prop_assert!(r.summary.content_files + r.summary.asset_files <= r.summary.total_files);
            if !include_warnings { prop_assert!(r.warnings.is_empty()); }
            // Every error is about a content/static file that the profile (or security) rejects.
            for e in &r.errors {
                let ok = BookPath::parse(&e.path).map(|p| profile.check(&p).is_ok()).unwrap_or(false);
                prop_assert!(!ok, "{} reported but valid", e.path);
            }
        }
    }
}
