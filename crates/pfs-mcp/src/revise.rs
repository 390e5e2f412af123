//! The revision tools: `edit_content`, `move_content`, `list_versions`, and `read_content` of an
//! earlier version. The engine does the work under the hash protocol; this maps arguments and
//! results.

use pfs::edit::TextEdit;
use pfs::engine::WriteMode;
use pfs::{BookId, BookPath, Namespace, PfsError, RequestKey};
use platform::Identity;

use crate::args::*;
use crate::auth;
use crate::ops::{actor, missing_book, namespace_name, parse_expected_hash, ts};
use crate::output::*;
use crate::tools::PfsTools;

/// Default and largest `list_versions` page.
const DEFAULT_VERSIONS_PAGE: u64 = 20;
const MAX_VERSIONS_PAGE: u64 = 100;

/// A required `expected_hash`, normalized like `write_content`'s.
pub(crate) fn required_hash(h: &str) -> Result<String, PfsError> {
    parse_expected_hash(Some(h))?
        .ok_or_else(|| PfsError::InvalidInput("expected_hash is required".into()))
}

impl PfsTools {
    pub(crate) async fn op_edit_content(
        &self,
        id: Identity,
        req: Option<RequestKey>,
        a: EditContentArgs,
    ) -> Result<EditContentOutput, PfsError> {
        let book = BookId::parse(&a.book_id)?;
        let user = auth::overlay_user(&id, a.user_id.as_deref())?;
        let path = BookPath::parse_content(&a.path)?;
        let expected = required_hash(&a.expected_hash)?;
        let edits: Vec<TextEdit> = a.edits.into_iter().map(TextEdit::from).collect();
        let ns = Namespace::from_user(user);
        let out = match self
            .engine()
            .edit(
                &actor(&id)?.with_request(req),
                &book,
                &path,
                &ns,
                &expected,
                &edits,
            )
            .await
        {
            Ok(o) => o,
            Err(e) => return Err(self.explain_not_found(&book, e).await),
        };
        Ok(EditContentOutput {
            mode: out.mode.unwrap_or(WriteMode::Unchanged).as_str().into(),
            path: path.as_str().to_string(),
            file_hash: out.sha256,
            prev_hash: out.prev_hash,
            file_size: out.size,
            replacements: out.replacements,
            diff: out.diff,
            namespace: namespace_name(&ns).into(),
            replayed: None,
        })
    }

    pub(crate) async fn op_move_content(
        &self,
        id: Identity,
        req: Option<RequestKey>,
        a: MoveContentArgs,
    ) -> Result<MoveContentOutput, PfsError> {
        let book = BookId::parse(&a.book_id)?;
        let user = auth::overlay_user(&id, a.user_id.as_deref())?;
        let from = BookPath::parse_content(&a.from_path)?;
        let to = BookPath::parse_content(&a.to_path)?;
        let expected = required_hash(&a.expected_hash)?;
        let ns = Namespace::from_user(user);
        let out = match self
            .engine()
            .move_file(
                &actor(&id)?.with_request(req),
                &book,
                &from,
                &to,
                &ns,
                &expected,
            )
            .await
        {
            Ok(o) => o,
            Err(e) => {
                let e = self.engine().with_conflict_diff(e, &book, &from, &ns).await;
                return Err(self.explain_not_found(&book, e).await);
            }
        };
        Ok(MoveContentOutput {
            status: "success".into(),
            from_path: from.as_str().to_string(),
            to_path: to.as_str().to_string(),
            file_hash: out.sha256,
            version: out.version,
            namespace: namespace_name(&ns).into(),
            replayed: None,
        })
    }

    pub(crate) async fn op_list_versions(
        &self,
        id: Identity,
        a: ListVersionsArgs,
    ) -> Result<ListVersionsOutput, PfsError> {
        let book = BookId::parse(&a.book_id)?;
        let user = auth::overlay_user(&id, a.user_id.as_deref())?;
        let path = BookPath::parse(&a.path)?;
        let ns = Namespace::from_user(user);
        let limit = a.limit.unwrap_or(DEFAULT_VERSIONS_PAGE);
        if !(1..=MAX_VERSIONS_PAGE).contains(&limit) {
            return Err(PfsError::InvalidInput(format!(
                "limit must be between 1 and {MAX_VERSIONS_PAGE}"
            )));
        }
        let before = match a.cursor.as_deref() {
            None | Some("") => None,
            Some(c) => Some(c.parse::<i64>().ok().filter(|v| *v > 0).ok_or_else(|| {
                PfsError::InvalidInput("cursor is not one this tool returned".into())
            })?),
        };
        // One more than asked tells whether another page exists.
        let mut versions = self
            .engine()
            .versions(&book, &path, &ns, limit as i64 + 1, before)
            .await?;
        let current = self.engine().stat(&book, &path, &ns).await?;
        if versions.is_empty() && current.is_none() && before.is_none() {
            if self.engine().book(&book).await?.is_none() {
                return Err(missing_book(&book));
            }
            return Err(PfsError::not_found(format!(
                "{path} in book {book} (no versions)"
            )));
        }
        let more = versions.len() as u64 > limit;
        versions.truncate(limit as usize);
        let next_cursor = if more {
            versions.last().map(|v| v.version.to_string())
        } else {
            None
        };
        Ok(ListVersionsOutput {
            path: path.as_str().to_string(),
            namespace: namespace_name(&ns).into(),
            current_hash: current.map(|c| c.sha256),
            versions: versions
                .into_iter()
                .map(|v| VersionInfo {
                    version: v.version,
                    sha256: v.sha256,
                    size: v.size,
                    agent_id: v.agent_id,
                    operation: v.operation,
                    written_at: ts(v.written_at),
                })
                .collect(),
            next_cursor,
        })
    }

    /// `read_content` with `version`: the bytes of that version of the file, from the caller's
    /// overlay history when reading with `user_id` and the hash is there, else from the base's.
    pub(crate) async fn read_version(
        &self,
        book: &BookId,
        path: &BookPath,
        user: Option<&pfs::UserId>,
        sha: &str,
        requested_path: String,
    ) -> Result<ReadContentOutput, PfsError> {
        let sha = required_hash(sha)?;
        let mut namespaces = Vec::with_capacity(2);
        if let Some(u) = user {
            namespaces.push(Namespace::Overlay(u.clone()));
        }
        namespaces.push(Namespace::Base);
        for ns in namespaces {
            let Some((v, bytes)) = self
                .engine()
                .read_version_by_hash(book, path, &ns, &sha)
                .await?
            else {
                continue;
            };
            let current = self.engine().stat(book, path, &ns).await?;
            let content = String::from_utf8(bytes.to_vec()).map_err(|_| {
                PfsError::InvalidInput(format!("version {sha} of {path} is not UTF-8 text"))
            })?;
            return Ok(ReadContentOutput {
                scope: "file".into(),
                path: requested_path,
                content: Some(content),
                file_size: Some(v.size),
                file_hash_sha256: Some(v.sha256),
                last_modified: Some(ts(v.written_at)),
                source: Some(namespace_name(&ns).into()),
                version: Some(v.version),
                is_current: Some(current.is_some_and(|c| c.sha256 == sha)),
                ..Default::default()
            });
        }
        if self.engine().book(book).await?.is_none() {
            return Err(missing_book(book));
        }
        Err(PfsError::not_found(format!(
            "version {sha} of {path} (list_versions shows the versions that exist)"
        )))
    }
}
