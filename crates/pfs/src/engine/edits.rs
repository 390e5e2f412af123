//! `edit_content` (exact-text edits under the hash protocol) and the diff a `CONFLICT` carries.

use super::*;
use crate::edit::{TextEdit, apply_edits, unified_diff};

/// What [`Engine::edit`] did.
#[derive(Debug, Clone, Serialize)]
pub struct EditOutcome {
    /// `Some` when a write happened (`Created` for an overlay made from the base).
    pub mode: Option<WriteMode>,
    pub sha256: String,
    pub prev_hash: String,
    pub size: u64,
    pub replacements: usize,
    /// Unified diff of the change (empty when nothing changed).
    pub diff: String,
}

impl Engine {
    /// Apply `edits` to the text at `path` in `ns` atomically with the hash protocol:
    /// `expected_hash` must be the hash of the text the edits were made against: the file in
    /// `ns`, or for an overlay that does not exist yet the base file (the overlay is then created
    /// from the edited base). A stale hash is `CONFLICT` with a diff from the expected version to
    /// the current one; the write is a compare-and-swap, so a concurrent change between the read
    /// and the write is a `CONFLICT` too. Edits that change nothing write nothing.
    pub async fn edit(
        &self,
        actor: &Actor,
        book: &BookId,
        path: &BookPath,
        ns: &Namespace,
        expected_hash: &str,
        edits: &[TextEdit],
    ) -> Result<EditOutcome> {
        let expected = Sha256::parse(expected_hash)?;
        let user = ns.journal_user();
        let mut own = None;
        let mut base = None;
        for e in self
            .journal_rows(book.as_str(), path.as_str(), user)
            .await?
        {
            if e.user_id == user {
                own = Some(e);
            } else {
                base = Some(e);
            }
        }
        // The row the edits apply to, and whether the write creates the overlay from it.
        let (current, creates_overlay) = match (own, base) {
            (Some(o), _) => (o, false),
            (None, Some(b)) if ns != &Namespace::Base => (b, true),
            _ => return Err(PfsError::not_found(format!("{path} in book {book}"))),
        };
        let source_ns = if creates_overlay {
            Namespace::Base
        } else {
            ns.clone()
        };
        if current.sha256 != *expected {
            let e = PfsError::Conflict {
                path: path.to_string(),
                expected: expected.to_string(),
                current: current.sha256.clone(),
                diff: None,
            };
            return Err(self.with_conflict_diff(e, book, path, &source_ns).await);
        }
        let bytes = self.read_entry(&current).await?;
        let old = std::str::from_utf8(&bytes).map_err(|_| {
            PfsError::InvalidInput(format!("{path} is not UTF-8 text and cannot be edited"))
        })?;
        let (new, replacements) = apply_edits(path.as_str(), old, edits)?;
        if new == old {
            return Ok(EditOutcome {
                mode: None,
                sha256: current.sha256.clone(),
                prev_hash: current.sha256,
                size: current.size,
                replacements,
                diff: String::new(),
            });
        }
        let diff = unified_diff(path.as_str(), old, &new);
        let write_expected = (!creates_overlay).then_some(&*expected);
        let out = match self
            .write(actor, book, path, ns, Bytes::from(new), write_expected)
            .await
        {
            Ok(o) => o,
            // The overlay was created by someone else meanwhile: stale like any lost race.
            Err(PfsError::HashRequired { current: cur, .. }) => {
                return Err(PfsError::Conflict {
                    path: path.to_string(),
                    expected: expected.to_string(),
                    current: cur,
                    diff: None,
                });
            }
            Err(e) => return Err(self.with_conflict_diff(e, book, path, ns).await),
        };
        Ok(EditOutcome {
            mode: Some(out.mode),
            sha256: out.sha256,
            prev_hash: expected.to_string(),
            size: out.size,
            replacements,
            diff,
        })
    }

    /// A `CONFLICT` gains a unified diff from the version the caller expected to the current
    /// content, when the expected hash is a version of this file in `ns` (a hash of anything
    /// else reveals nothing) and both are text. Other errors pass through unchanged.
    pub async fn with_conflict_diff(
        &self,
        e: PfsError,
        book: &BookId,
        path: &BookPath,
        ns: &Namespace,
    ) -> PfsError {
        let PfsError::Conflict {
            path: p,
            expected,
            current,
            diff: None,
        } = e
        else {
            return e;
        };
        let diff = self
            .diff_versions(book, path, ns, &expected, &current)
            .await;
        PfsError::Conflict {
            path: p,
            expected,
            current,
            diff,
        }
    }

    async fn diff_versions(
        &self,
        book: &BookId,
        path: &BookPath,
        ns: &Namespace,
        from_sha: &str,
        to_sha: &str,
    ) -> Option<String> {
        if !is_sha256_hex(from_sha) || !is_sha256_hex(to_sha) {
            return None;
        }
        let (_, old) = self
            .read_version_by_hash(book, path, ns, from_sha)
            .await
            .ok()??;
        let new = self.read_blob(to_sha).await.ok()?;
        let (old, new) = (
            std::str::from_utf8(&old).ok()?,
            std::str::from_utf8(&new).ok()?,
        );
        Some(unified_diff(path.as_str(), old, new))
    }
}
