//! The archive download route: `GET /books/{book}/archive?scope=…[&user_id=…][&expires=…&sig=…]`.
//!
//! The ZIP is produced in a spawned task into one end of a bounded `tokio::io::duplex` pipe and
//! the other end is the response body, so memory stays bounded whatever the book size (see
//! [`pfs::archive`]: entries' stored forms come from the engine's cache, misses are compressed
//! on every core). Entries are in path order with a fixed timestamp, so the same manifest always
//! gives the same bytes; the ETag is a hash of manifest + scope + user.
//!
//! How it ended is said three ways: inside the ZIP (`_archive_errors.json`,
//! `_archive_partial.json` with `resume_after` and the missing names), in HTTP trailers
//! `x-archive-status: complete|partial` and `x-archive-resume-after` (announced by `Trailer:`;
//! HTTP/1.1 clients must send `TE: trailers` to get them), and, for a failed output, as an
//! aborted body. `?start_after=<resume_after>` continues a partial archive.
//!
//! Access: a valid signature from `get_book_archive` (HMAC over book, scope, user, expiry), or an
//! authenticated caller (an [`Identity`] in the request extensions) with the `read` scope, who
//! may include only their own overlay unless admin.

use std::time::Instant;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use http_body::Frame;
use http_body_util::StreamBody;
use pfs::archive::{ArchiveEntry, ArchiveOptions, ArchiveSummary, archive_etag, write_archive};
use pfs::engine::{Engine, JournalEntry, ListView};
use pfs::{BookId, DirPrefix, PfsError, UserId};
use platform::Identity;
use serde::Deserialize;
use tokio_util::io::ReaderStream;

use crate::args::ArchiveScope;
use crate::auth::{self, Need};
use crate::sign::{self, SigError};
use crate::state::PfsMcpState;

/// Size of the in-memory pipe between the ZIP writer and the response body.
pub const PIPE_BYTES: usize = 256 * 1024;
/// Largest HTTP body frame of an archive download.
const BODY_FRAME_BYTES: usize = 64 * 1024;

/// What an archive of one book/scope/user contains.
#[derive(Debug)]
pub struct ArchivePlan {
    /// Files in path order (overlay rows replace base rows when a user is given).
    pub entries: Vec<JournalEntry>,
    /// Sum of the file sizes.
    pub total_bytes: u64,
    /// Manifest hash over `(path, sha256)` of the entries.
    pub manifest_hash: String,
}

/// List the files of an archive.
pub async fn plan(
    engine: &Engine,
    book: &BookId,
    scope: ArchiveScope,
    user: Option<&UserId>,
) -> Result<ArchivePlan, PfsError> {
    let view = match user {
        Some(u) => ListView::Merged(u.clone()),
        None => ListView::Base,
    };
    let prefix = match scope {
        ArchiveScope::Content => Some(DirPrefix::parse("content")?),
        ArchiveScope::Assets => Some(DirPrefix::parse("static")?),
        ArchiveScope::All => None,
    };
    let entries: Vec<JournalEntry> = engine
        .list(book, view, prefix.as_ref())
        .await?
        .into_iter()
        .filter(|e| scope.admits(&e.path))
        .collect();
    let pairs: Vec<(String, String)> = entries
        .iter()
        .map(|e| (e.path.clone(), e.sha256.clone()))
        .collect();
    Ok(ArchivePlan {
        total_bytes: entries.iter().map(|e| e.size).sum(),
        manifest_hash: pfs::manifest::manifest_hash(&pairs),
        entries,
    })
}

/// Query parameters of the archive route.
#[derive(Debug, Deserialize)]
pub struct ArchiveQuery {
    /// content (default), assets or all.
    pub scope: Option<String>,
    /// Merge this user's overlay.
    pub user_id: Option<String>,
    /// Signed URLs: expiry (unix seconds).
    pub expires: Option<i64>,
    /// Signed URLs: hex HMAC-SHA256.
    pub sig: Option<String>,
    /// Resumption: only entries whose path sorts after this one (the `resume_after` of a
    /// time-budgeted partial archive).
    pub start_after: Option<String>,
}

fn status_of(e: &PfsError) -> StatusCode {
    use pfs::ErrorCode::*;
    match e.code() {
        InvalidPath | SchemaViolation | InvalidInput | HashRequired | EditNoMatch
        | RequestIdReused | EditAmbiguous => StatusCode::BAD_REQUEST,
        NotFound => StatusCode::NOT_FOUND,
        Conflict | AlreadyExists => StatusCode::CONFLICT,
        PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Unauthorized => StatusCode::UNAUTHORIZED,
        Forbidden => StatusCode::FORBIDDEN,
        StorageUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error_response(e: PfsError) -> Response {
    if let PfsError::Internal(msg) = &e {
        tracing::error!(error = %msg, "archive failed");
    }
    (status_of(&e), axum::Json(e.to_json())).into_response()
}

/// Decide whether the request may download this archive.
fn authorize(
    state: &PfsMcpState,
    book: &BookId,
    scope: ArchiveScope,
    user: Option<&UserId>,
    q: &ArchiveQuery,
    identity: Option<&Identity>,
) -> Result<(), PfsError> {
    if let Some(sig) = &q.sig {
        let expires = q
            .expires
            .ok_or_else(|| PfsError::InvalidInput("a signed archive URL needs expires".into()))?;
        return match sign::verify(
            &state.config.archive_signing_key,
            book.as_str(),
            scope.as_str(),
            user.map(UserId::as_str),
            expires,
            sig,
            Utc::now().timestamp(),
        ) {
            Ok(()) => Ok(()),
            Err(SigError::Expired) => Err(PfsError::Forbidden(
                "this archive URL has expired; call get_book_archive again for a fresh one".into(),
            )),
            Err(SigError::Invalid) => Err(PfsError::Forbidden(
                "the archive URL signature does not match; use the URL exactly as get_book_archive returned it".into(),
            )),
        };
    }
    let id = identity.ok_or_else(|| {
        PfsError::Unauthorized("authentication required: send a bearer token or use a signed URL from get_book_archive".into())
    })?;
    auth::require(id, Need::Read)?;
    if let Some(u) = user {
        auth::check_overlay(id, u)?;
    }
    Ok(())
}

/// The trailers of a finished archive: `x-archive-status: complete|partial`, and where to resume.
fn outcome_trailers(s: &ArchiveSummary) -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert(
        "x-archive-status",
        HeaderValue::from_static(if s.partial { "partial" } else { "complete" }),
    );
    if let Some(r) = &s.resume_after
        && let Ok(v) = HeaderValue::from_str(r)
    {
        t.insert("x-archive-resume-after", v);
    }
    t
}

/// `GET /books/{book}/archive`.
pub async fn archive_handler(
    State(state): State<PfsMcpState>,
    Path(book): Path<String>,
    Query(q): Query<ArchiveQuery>,
    identity: Option<Extension<Identity>>,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let scope = match q.scope.as_deref().map(ArchiveScope::parse).transpose() {
        Ok(s) => s.unwrap_or_default(),
        Err(e) => return error_response(e),
    };
    let prepared = async {
        let book = BookId::parse(&book)?;
        let user = q.user_id.as_deref().map(UserId::parse).transpose()?;
        authorize(
            &state,
            &book,
            scope,
            user.as_ref(),
            &q,
            identity.as_ref().map(|Extension(i)| i),
        )?;
        if state.engine.book(&book).await?.is_none() {
            return Err(PfsError::not_found(format!("book {book}")));
        }
        let plan = plan(&state.engine, &book, scope, user.as_ref()).await?;
        Ok::<_, PfsError>((book, user, plan))
    }
    .await;
    let (book, user, plan) = match prepared {
        Ok(p) => p,
        Err(e) => {
            crate::metrics::archive(scope.as_str(), "error", started.elapsed(), 0);
            return error_response(e);
        }
    };
    let entries: Vec<ArchiveEntry> = plan
        .entries
        .iter()
        .map(|e| ArchiveEntry {
            name: e.path.clone(),
            size: e.size,
            sha256: e.sha256.clone(),
        })
        .collect();
    let opts = ArchiveOptions {
        start_after: q.start_after.clone(),
        time_budget: state.config.archive_time_budget,
        ..ArchiveOptions::default()
    };
    let etag = format!("\"{}\"", &archive_etag(&entries, &opts)[..32]);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        crate::metrics::archive(scope.as_str(), "not_modified", started.elapsed(), 0);
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let filename = match &user {
        Some(u) => format!("{book}-{}-{u}.zip", scope.as_str()),
        None => format!("{book}-{}.zip", scope.as_str()),
    };
    let (writer, reader) = tokio::io::duplex(PIPE_BYTES);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Result<ArchiveSummary, PfsError>>();
    let engine = state.engine.clone();
    let scope_name = scope.as_str();
    tokio::spawn(async move {
        let source = engine.archive_source();
        let res = write_archive(entries, &source, writer, opts).await;
        let status = match &res {
            Ok(summary) if summary.partial => {
                tracing::warn!(
                    errors = summary.errors.len(),
                    resume_after = ?summary.resume_after,
                    "archive is partial (see _archive_errors.json in the ZIP)"
                );
                "partial"
            }
            Ok(_) => "success",
            Err(e) => {
                tracing::warn!(error = %e, "archive stream failed");
                "error"
            }
        };
        // Memory measured: the prepared entries held at the peak plus the pipe.
        let held = res.as_ref().map_or(0, |s| s.peak_buffered_bytes) + PIPE_BYTES as u64;
        crate::metrics::archive(scope_name, status, started.elapsed(), held);
        if let Ok(s) = &res {
            crate::metrics::archive_cache(s.cache_hits, s.cache_misses);
        }
        let _ = done_tx.send(res);
    });
    // After the pipe ends: the outcome as trailers, or a failed archive as a body error (the
    // client sees an aborted transfer instead of a truncated ZIP that looks complete).
    let tail = futures::stream::once(async move {
        match done_rx.await {
            Ok(Ok(summary)) => Ok(Frame::trailers(outcome_trailers(&summary))),
            Ok(Err(e)) => Err(std::io::Error::other(e.to_string())),
            Err(_) => Err(std::io::Error::other("archive writer stopped")),
        }
    });
    // Frames of up to BODY_FRAME_BYTES: ReaderStream's default (4 KiB) made a 200 MB archive
    // ~50,000 frames and socket writes, with the client woken for each.
    let data = ReaderStream::with_capacity(reader, BODY_FRAME_BYTES)
        .map(|chunk: std::io::Result<Bytes>| chunk.map(Frame::data));
    let body = Body::new(StreamBody::new(data.chain(tail)));
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::TRAILER,
        HeaderValue::from_static("x-archive-status, x-archive-resume-after"),
    );
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    if let Ok(v) = HeaderValue::from_str(&plan.manifest_hash) {
        h.insert("x-manifest-hash", v);
    }
    resp
}
