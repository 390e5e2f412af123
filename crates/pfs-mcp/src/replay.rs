//! Idempotent retries of the mutating tools.
//!
//! A call may carry a client-chosen `request_id`. The engine records it, with a hash of the
//! call (tool name and canonical arguments), on the audit rows of the change it makes, in the
//! transaction of that change: the rows exist exactly when the change committed, on every replica
//! sharing the database, for as long as the audit log (which is append-only) keeps them. So a
//! retry of a call whose reply was lost (a timeout, a dropped connection, a crash after the
//! commit) finds its rows and is answered from them, with `replayed: true`, without writing again;
//! the same `request_id` with another call is `REQUEST_ID_REUSED`. A call that failed changed
//! nothing and left no such row, so retrying it runs it again. Two copies of one call racing
//! each other: one commits, the other loses the compare-and-swap and, finding the winner's rows,
//! answers with its outcome.

use pfs::audit::{AuditRow, OP_MOVE_CONTENT};
use pfs::edit::{TextEdit, apply_edits, unified_diff};
use pfs::{BookId, BookPath, ErrorCode, Namespace, PfsError, RequestKey, WriteMode};
use platform::Identity;
use rmcp::model::JsonObject;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::args::*;
use crate::ops::{asset_path, delete_content_target, delete_output, namespace_name, write_output};
use crate::output::*;
use crate::revise::required_hash;
use crate::tools::PfsTools;

/// Take `request_id` out of flat arguments and key the call: the id and a hash of `tool` and
/// the remaining arguments in canonical form (object keys sorted), so a retry in another key
/// order or in the wrapped form is the same call.
pub(crate) fn request_key(
    tool: &str,
    flat: &mut JsonObject,
) -> Result<Option<RequestKey>, PfsError> {
    let id = match flat.remove("request_id") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s,
        Some(_) => {
            return Err(PfsError::InvalidInput(
                "request_id must be a string (a UUID is ideal)".into(),
            ));
        }
    };
    let mut canonical = String::new();
    write_canonical(&Value::Object(flat.clone()), &mut canonical);
    let mut h = Sha256::new();
    h.update(tool.as_bytes());
    h.update([0u8]);
    h.update(canonical.as_bytes());
    RequestKey::new(&id, hex::encode(h.finalize())).map(Some)
}

/// JSON with object keys sorted at every level (whatever map order serde_json was built with).
fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Errors a second copy of an already committed call gets (the first one changed the state it
/// expected): worth looking for that call's rows before reporting them.
pub(crate) fn may_have_lost_to_itself(e: &PfsError) -> bool {
    matches!(
        e.code(),
        ErrorCode::Conflict
            | ErrorCode::HashRequired
            | ErrorCode::NotFound
            | ErrorCode::AlreadyExists
    )
}

fn book_path(row: &AuditRow) -> Result<(BookId, BookPath, Namespace), PfsError> {
    let book = BookId::parse(&row.book_id)?;
    let path = BookPath::parse(&row.path)?;
    let ns = if row.user_id == pfs::BASE_USER {
        Namespace::Base
    } else {
        Namespace::Overlay(pfs::UserId::parse(&row.user_id)?)
    };
    Ok((book, path, ns))
}

fn inconsistent(what: &str) -> PfsError {
    PfsError::Internal(format!(
        "the audit rows of a request do not describe a {what}"
    ))
}

impl PfsTools {
    /// The committed rows of `id`'s call `key`, if it made a change: `REQUEST_ID_REUSED` when
    /// they belong to a different call.
    pub(crate) async fn request_rows(
        &self,
        id: &Identity,
        key: &RequestKey,
    ) -> Result<Option<Vec<AuditRow>>, PfsError> {
        let rows = self
            .engine()
            .audit()
            .request_rows(id.agent_id(), key.id())
            .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        if rows
            .iter()
            .any(|r| r.request_hash.as_deref() != Some(key.call_hash()))
        {
            return Err(PfsError::RequestIdReused {
                request_id: key.id().to_string(),
            });
        }
        crate::metrics::replayed();
        Ok(Some(rows))
    }

    /// What a committed content write (`write_content`) answered, from its audit row.
    pub(crate) async fn replay_write(
        &self,
        _a: WriteContentArgs,
        rows: Vec<AuditRow>,
    ) -> Result<WriteContentOutput, PfsError> {
        let row = rows.first().ok_or_else(|| inconsistent("write"))?;
        let (book, path, ns) = book_path(row)?;
        let sha = row.new_hash.clone().ok_or_else(|| inconsistent("write"))?;
        let v = self
            .engine()
            .find_version(&book, &path, &ns, &sha)
            .await?
            .ok_or_else(|| inconsistent("write"))?;
        let mode = if row.prev_hash.is_none() {
            WriteMode::Created
        } else {
            WriteMode::Updated
        };
        let mut out = write_output(&book, &path, &ns, v.size, sha, row.prev_hash.clone(), mode);
        out.replayed = Some(true);
        Ok(out)
    }

    /// What a committed `edit_content` answered: its rows give the hashes; the edits are applied
    /// again to the version they were made against for the count and the diff.
    pub(crate) async fn replay_edit(
        &self,
        a: EditContentArgs,
        rows: Vec<AuditRow>,
    ) -> Result<EditContentOutput, PfsError> {
        let row = rows.first().ok_or_else(|| inconsistent("edit"))?;
        let (book, path, ns) = book_path(row)?;
        let sha = row.new_hash.clone().ok_or_else(|| inconsistent("edit"))?;
        let prev = required_hash(&a.expected_hash)?;
        // An edit that created an overlay was made against the base.
        let source_ns = if row.prev_hash.is_none() {
            Namespace::Base
        } else {
            ns.clone()
        };
        let (_, old) = self
            .engine()
            .read_version_by_hash(&book, &path, &source_ns, &prev)
            .await?
            .ok_or_else(|| inconsistent("edit"))?;
        let (v, new) = self
            .engine()
            .read_version_by_hash(&book, &path, &ns, &sha)
            .await?
            .ok_or_else(|| inconsistent("edit"))?;
        let old = String::from_utf8_lossy(&old);
        let edits: Vec<TextEdit> = a.edits.into_iter().map(TextEdit::from).collect();
        let replacements = apply_edits(path.as_str(), &old, &edits)
            .map(|(_, n)| n)
            .unwrap_or(0);
        Ok(EditContentOutput {
            mode: if row.prev_hash.is_none() {
                "created"
            } else {
                "updated"
            }
            .into(),
            path: path.as_str().to_string(),
            diff: unified_diff(path.as_str(), &old, &String::from_utf8_lossy(&new)),
            file_hash: sha,
            prev_hash: prev,
            file_size: v.size,
            replacements,
            namespace: namespace_name(&ns).into(),
            replayed: Some(true),
        })
    }

    /// What a committed `move_content` answered, from its two rows.
    pub(crate) async fn replay_move(
        &self,
        _a: MoveContentArgs,
        rows: Vec<AuditRow>,
    ) -> Result<MoveContentOutput, PfsError> {
        let moved = |to: bool| {
            rows.iter()
                .find(|r| r.operation == OP_MOVE_CONTENT && r.new_hash.is_some() == to)
                .ok_or_else(|| inconsistent("move"))
        };
        let (from, to) = (moved(false)?, moved(true)?);
        let (book, to_path, ns) = book_path(to)?;
        let sha = to.new_hash.clone().ok_or_else(|| inconsistent("move"))?;
        let v = self
            .engine()
            .find_version(&book, &to_path, &ns, &sha)
            .await?
            .ok_or_else(|| inconsistent("move"))?;
        Ok(MoveContentOutput {
            status: "success".into(),
            from_path: from.path.clone(),
            to_path: to.path.clone(),
            file_hash: sha,
            version: v.version,
            namespace: namespace_name(&ns).into(),
            replayed: Some(true),
        })
    }

    /// What a committed `delete_content` answered (the first delete of the request).
    pub(crate) async fn replay_delete_content(
        &self,
        id: Identity,
        a: DeleteContentArgs,
        rows: Vec<AuditRow>,
    ) -> Result<DeleteOutput, PfsError> {
        let (book, path, ns) = delete_content_target(&id, &a)?;
        let row = rows.first().ok_or_else(|| inconsistent("delete"))?;
        let mut out = delete_output(&book, &path, &ns, row.prev_hash.clone());
        out.replayed = Some(true);
        Ok(out)
    }

    /// What a committed `delete_asset` answered.
    pub(crate) async fn replay_delete_asset(
        &self,
        a: DeleteAssetArgs,
        rows: Vec<AuditRow>,
    ) -> Result<DeleteOutput, PfsError> {
        let book = BookId::parse(&a.book_id)?;
        let path = asset_path(a.asset_type, &a.filename)?;
        let row = rows.first().ok_or_else(|| inconsistent("delete"))?;
        let mut out = delete_output(&book, &path, &Namespace::Base, row.prev_hash.clone());
        out.replayed = Some(true);
        Ok(out)
    }

    /// What a committed `upload_asset` answered: the asset as that upload stored it.
    pub(crate) async fn replay_upload(
        &self,
        _a: UploadAssetArgs,
        rows: Vec<AuditRow>,
    ) -> Result<UploadAssetOutput, PfsError> {
        let row = rows.first().ok_or_else(|| inconsistent("upload"))?;
        let (book, path, ns) = book_path(row)?;
        let sha = row.new_hash.clone().ok_or_else(|| inconsistent("upload"))?;
        let v = self
            .engine()
            .find_version(&book, &path, &ns, &sha)
            .await?
            .ok_or_else(|| inconsistent("upload"))?;
        let entry = pfs::JournalEntry {
            book_id: row.book_id.clone(),
            path: row.path.clone(),
            user_id: row.user_id.clone(),
            sha256: sha,
            size: v.size,
            last_written_at: v.written_at,
            version: v.version,
            storage_backend: String::new(),
            base_sha256: None,
        };
        Ok(UploadAssetOutput {
            status: "success".into(),
            method: "direct".into(),
            asset: self.asset_info(&entry, None),
            replayed: Some(true),
        })
    }
}
