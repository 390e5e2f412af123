//! Lessons from a local docs directory.

use std::path::{Path, PathBuf};

use super::{LessonError, LessonSource, RawLesson, candidates, validate_lesson_path};

/// Reads lessons from a directory (e.g. a checkout's `apps/learn-app/docs`). Every resolved file
/// is canonicalized and must stay under the canonical root (symlinks cannot escape it).
#[derive(Debug, Clone)]
pub struct LocalDocsSource {
    root: PathBuf,
}

impl LocalDocsSource {
    /// A source rooted at `root` (which must exist).
    pub fn new(root: impl AsRef<Path>) -> std::io::Result<LocalDocsSource> {
        let root = std::fs::canonicalize(root.as_ref())?;
        if !root.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(LocalDocsSource { root })
    }

    /// The canonical docs root.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

#[async_trait::async_trait]
impl LessonSource for LocalDocsSource {
    async fn fetch(
        &self,
        lesson_path: &str,
        _user: Option<&str>,
    ) -> Result<Option<RawLesson>, LessonError> {
        let path = validate_lesson_path(lesson_path)?;
        for rel in candidates(&path) {
            let full = self.root.join(&rel);
            let canon = match tokio::fs::canonicalize(&full).await {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => continue,
                // A name the file system refuses is this request's problem, not an outage.
                Err(e) if e.kind() == std::io::ErrorKind::InvalidFilename => {
                    return Err(LessonError::InvalidPath(format!("{lesson_path:?}: {e}")));
                }
                Err(e) => {
                    // Logged with the server path; the caller sees only the lesson path.
                    tracing::warn!(path = %full.display(), error = %e, "cannot resolve a lesson");
                    return Err(LessonError::Unavailable(format!(
                        "cannot resolve {rel}: {}",
                        e.kind()
                    )));
                }
            };
            if !canon.starts_with(&self.root) {
                return Err(LessonError::InvalidPath(format!(
                    "{lesson_path:?} resolves outside the docs root"
                )));
            }
            if !canon.is_file() {
                continue;
            }
            return match tokio::fs::read(&canon).await {
                Ok(bytes) => Ok(Some(RawLesson {
                    text: String::from_utf8_lossy(&bytes).into_owned(),
                    etag: None,
                })),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    tracing::warn!(path = %canon.display(), error = %e, "cannot read a lesson");
                    Err(LessonError::Unavailable(format!(
                        "cannot read {rel}: {}",
                        e.kind()
                    )))
                }
            };
        }
        Ok(None)
    }

    fn name(&self) -> &'static str {
        "local"
    }
}
