//! Lessons from a PanaversityFS book: the student's overlay is what gets taught.

use pfs::engine::Engine;
use pfs::{BookId, BookPath, ErrorCode, UserId};

use super::{Fetched, LessonError, LessonSource, RawLesson, candidates, validate_lesson_path};

/// Reads `content/{lesson}.md|.mdx|/index.md|/README.md` from one book, through the engine's
/// overlay-aware read: with a user, that user's personalized copy wins over the base.
/// The ETag is the file's SHA-256 from the journal.
#[derive(Clone)]
pub struct PfsBookSource {
    engine: Engine,
    book: BookId,
}

impl PfsBookSource {
    /// A source over `book` in `engine`.
    pub fn new(engine: Engine, book: BookId) -> PfsBookSource {
        PfsBookSource { engine, book }
    }
}

#[async_trait::async_trait]
impl LessonSource for PfsBookSource {
    async fn fetch(
        &self,
        lesson_path: &str,
        user: Option<&str>,
    ) -> Result<Option<RawLesson>, LessonError> {
        let path = validate_lesson_path(lesson_path)?;
        // A user id pfs cannot represent has no overlay: read the base.
        let user = user.and_then(|u| match UserId::parse(u) {
            Ok(id) => Some(id),
            Err(_) => {
                tracing::debug!(
                    user = u,
                    "user id not valid for pfs overlays; reading the base"
                );
                None
            }
        });
        for rel in candidates(&path) {
            let Ok(bp) = BookPath::parse_content(&format!("content/{rel}")) else {
                continue; // not a path pfs can hold
            };
            match self.engine.read_text(&self.book, &bp, user.as_ref()).await {
                Ok((text, entry, _)) => {
                    return Ok(Some(RawLesson {
                        text,
                        etag: Some(entry.sha256),
                    }));
                }
                Err(e) if e.code() == ErrorCode::NotFound => continue,
                Err(e) if e.code() == ErrorCode::InvalidPath => continue,
                Err(e) => {
                    return Err(LessonError::Unavailable(format!(
                        "PanaversityFS read of {bp} failed: {e}"
                    )));
                }
            }
        }
        Ok(None)
    }

    async fn fetch_if_changed(
        &self,
        lesson_path: &str,
        user: Option<&str>,
        etag: Option<&str>,
    ) -> Result<Fetched, LessonError> {
        Ok(match self.fetch(lesson_path, user).await? {
            Some(raw) if etag.is_some() && raw.etag.as_deref() == etag => Fetched::NotModified,
            Some(raw) => Fetched::Modified(raw),
            None => Fetched::NotFound,
        })
    }

    fn per_user(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        "pfs"
    }
}
