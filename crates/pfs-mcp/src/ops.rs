//! The tool operations over the [`pfs::Engine`]: argument parsing into typed ids/paths,
//! authorization of overlays, and shaping of the results.

use std::collections::BTreeMap;
use std::time::Instant;

use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use pfs::engine::{AssetStatus, Engine, JournalEntry, ListView, Source};
use pfs::search::{GlobMatcher, is_grep_candidate};
use pfs::{Actor, BookId, BookPath, DirPrefix, Namespace, PfsError, RequestKey, UserId, WriteMode};
use platform::Identity;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::args::*;
use crate::auth;
use crate::output::*;
use crate::tools::PfsTools;

/// Most bytes a bulk `read_content` returns before asking for an archive instead.
const MAX_BULK_READ_BYTES: u64 = 32 * 1024 * 1024;
/// Parallel blob reads in bulk reads and grep.
const READ_CONCURRENCY: usize = 8;

/// The blobs of `entries`, in order, read `READ_CONCURRENCY` at a time.
pub(crate) fn read_stream(
    engine: &Engine,
    entries: &[JournalEntry],
) -> impl futures::Stream<Item = Result<Bytes, PfsError>> + Send + 'static {
    let jobs: Vec<(Engine, String, u64)> = entries
        .iter()
        .map(|e| (engine.clone(), e.sha256.clone(), e.size))
        .collect();
    futures::stream::iter(jobs)
        .map(|(engine, sha, size)| async move { engine.read_blob_sized(&sha, size).await })
        .buffered(READ_CONCURRENCY)
}

/// RFC 3339 with microseconds and `Z`.
pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Re-shape a library value into its advertised output type (keeps schema and value in step).
fn mirror<T: DeserializeOwned>(v: &impl Serialize) -> Result<T, PfsError> {
    let value = serde_json::to_value(v).map_err(PfsError::internal)?;
    serde_json::from_value(value).map_err(|e| PfsError::Internal(format!("result shape: {e}")))
}

pub(crate) fn actor(id: &Identity) -> Result<Actor, PfsError> {
    Actor::new(id.agent_id())
}

/// `write_content`'s result for a write of `sha` (`prev`: the hash it replaced, `None` for a create).
pub(crate) fn write_output(
    book: &BookId,
    path: &BookPath,
    ns: &Namespace,
    size: u64,
    sha: String,
    prev: Option<String>,
    mode: WriteMode,
) -> WriteContentOutput {
    WriteContentOutput {
        status: "success".into(),
        mode: mode.as_str().into(),
        storage_path: path.storage_key(book, ns),
        path: path.as_str().to_string(),
        file_size: size,
        file_hash: sha,
        prev_hash: prev,
        namespace: namespace_name(ns).into(),
        user_id: match ns {
            Namespace::Base => None,
            Namespace::Overlay(u) => Some(u.as_str().to_string()),
        },
        replayed: None,
    }
}

/// A delete's result (`prev`: the deleted content's hash, `None` when nothing was there).
pub(crate) fn delete_output(
    book: &BookId,
    path: &BookPath,
    ns: &Namespace,
    prev: Option<String>,
) -> DeleteOutput {
    DeleteOutput {
        status: "success".into(),
        storage_path: path.storage_key(book, ns),
        path: path.as_str().to_string(),
        existed: prev.is_some(),
        message: if prev.is_some() {
            "File deleted".into()
        } else {
            "File did not exist (idempotent delete)".into()
        },
        prev_hash: prev,
        namespace: namespace_name(ns).into(),
        replayed: None,
    }
}

fn source_name(s: Source) -> &'static str {
    match s {
        Source::Base => "base",
        Source::Overlay => "overlay",
    }
}

pub(crate) fn namespace_name(ns: &Namespace) -> &'static str {
    match ns {
        Namespace::Base => "base",
        Namespace::Overlay(_) => "overlay",
    }
}

/// MIME type from the file extension (the predecessor's table plus a few common ones).
pub fn mime_type(path: &str) -> &'static str {
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "md" => "text/markdown",
        "mdx" => "text/mdx",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "pdf" => "application/pdf",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mov" => "video/quicktime",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "ogg" => "audio/ogg",
        "yaml" | "yml" => "application/x-yaml",
        "json" => "application/json",
        "jsonl" => "application/jsonlines",
        "txt" => "text/plain",
        "csv" => "text/csv",
        _ => "application/octet-stream",
    }
}

/// Decode standard base64 (padding optional, whitespace ignored).
fn decode_base64(data: &str) -> Result<Vec<u8>, PfsError> {
    let cleaned: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let std = base64::engine::general_purpose::STANDARD;
    let nopad = base64::engine::general_purpose::STANDARD_NO_PAD;
    std.decode(&cleaned)
        .or_else(|_| nopad.decode(cleaned.trim_end_matches('=')))
        .map_err(|e| {
            PfsError::InvalidInput(format!(
                "binary_data is not valid base64 ({e}); send standard base64"
            ))
        })
}

pub(crate) fn parse_expected_hash(h: Option<&str>) -> Result<Option<String>, PfsError> {
    match h {
        None => Ok(None),
        Some(s) => {
            let s = s.trim().to_ascii_lowercase();
            if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(Some(s))
            } else {
                Err(PfsError::InvalidInput(
                    "expected_hash must be the 64-hex sha256 you got as file_hash_sha256 from read_content".into(),
                ))
            }
        }
    }
}

/// The asset path for `upload_asset`/`get_asset`/`delete_asset`: nested file names are allowed,
/// each segment passes the security rules.
pub(crate) fn asset_path(asset_type: AssetType, filename: &str) -> Result<BookPath, PfsError> {
    BookPath::asset(asset_type.as_str(), filename)
}

impl PfsTools {
    pub(crate) fn engine(&self) -> &Engine {
        &self.state.engine
    }

    fn cdn_url(&self, book: &str, path: &str) -> String {
        format!(
            "{}/books/{book}/{path}",
            self.state.config.cdn_base_url.trim_end_matches('/')
        )
    }

    pub(crate) fn asset_info(&self, e: &JournalEntry, binary: Option<String>) -> AssetInfo {
        let mut segs = e.path.splitn(3, '/');
        let _static = segs.next();
        let asset_type = segs.next().unwrap_or_default().to_string();
        let filename = segs.next().unwrap_or_default().to_string();
        AssetInfo {
            path: e.path.clone(),
            cdn_url: self.cdn_url(&e.book_id, &e.path),
            asset_type,
            filename,
            file_size: e.size,
            mime_type: mime_type(&e.path).to_string(),
            file_hash_sha256: e.sha256.clone(),
            upload_timestamp: ts(e.last_written_at),
            binary_data: binary,
        }
    }

    /// Bytes of many journal entries, in order, `READ_CONCURRENCY` at a time.
    async fn read_many(&self, entries: &[JournalEntry]) -> Vec<Result<Bytes, PfsError>> {
        read_stream(self.engine(), entries).collect().await
    }

    /// `book_id` parsed, and `NOT_FOUND` naming it when no such book exists (a misspelled id must
    /// not read as an empty book).
    async fn existing_book(&self, book_id: &str) -> Result<BookId, PfsError> {
        let book = BookId::parse(book_id)?;
        if self.engine().book(&book).await?.is_none() {
            return Err(missing_book(&book));
        }
        Ok(book)
    }

    /// A `NOT_FOUND` for a missing file becomes one for the missing book when that is the cause
    /// (checked only on the error path, so reads keep one lookup).
    pub(crate) async fn explain_not_found(&self, book: &BookId, e: PfsError) -> PfsError {
        if e.code() == pfs::ErrorCode::NotFound
            && matches!(self.engine().book(book).await, Ok(None))
        {
            return missing_book(book);
        }
        e
    }

    pub(crate) async fn op_read_content(
        &self,
        id: Identity,
        a: ReadContentArgs,
    ) -> Result<ReadContentOutput, PfsError> {
        let book = BookId::parse(&a.book_id)?;
        let user = auth::overlay_user(&id, a.user_id.as_deref())?;
        let scope = match a.scope {
            ReadScope::File => "file",
            ReadScope::Chapter => "chapter",
            ReadScope::Part => "part",
            ReadScope::Book => "book",
        };
        if a.scope == ReadScope::File {
            let path = BookPath::parse(&a.path)?;
            if path.area() == pfs::Area::Static {
                // Asset-hash mode: only whether it exists and its hash.
                let entry = self.engine().stat(&book, &path, &Namespace::Base).await?;
                if entry.is_none() && self.engine().book(&book).await?.is_none() {
                    return Err(missing_book(&book));
                }
                return Ok(ReadContentOutput {
                    scope: scope.into(),
                    path: a.path,
                    exists: Some(entry.is_some()),
                    file_hash_sha256: entry.map(|e| e.sha256),
                    ..Default::default()
                });
            }
            if let Some(v) = a.version.as_deref() {
                return self
                    .read_version(&book, &path, user.as_ref(), v, a.path)
                    .await;
            }
            let started = Instant::now();
            let out = match self.engine().read(&book, &path, user.as_ref()).await {
                Ok(o) => o,
                Err(e) => return Err(self.explain_not_found(&book, e).await),
            };
            if user.is_some() {
                crate::metrics::overlay_read(started.elapsed());
            }
            let content = String::from_utf8(out.bytes.to_vec()).map_err(|_| {
                PfsError::InvalidInput(format!(
                    "{path} is not UTF-8 text; read it with get_asset instead"
                ))
            })?;
            // An overlay says whether its base changed since the overlay was last written.
            let drift = (out.source == Source::Overlay).then(|| {
                let then = out.entry.base_sha256.clone();
                (then != out.base_sha256, then, out.base_sha256.clone())
            });
            return Ok(ReadContentOutput {
                scope: scope.into(),
                path: a.path,
                content: Some(content),
                file_size: Some(out.entry.size),
                file_hash_sha256: Some(out.entry.sha256),
                last_modified: Some(ts(out.entry.last_written_at)),
                storage_backend: Some(out.entry.storage_backend),
                source: Some(source_name(out.source).into()),
                base_changed: drift.as_ref().map(|d| d.0),
                base_hash_then: drift.as_ref().and_then(|d| d.1.clone()),
                base_hash_now: drift.and_then(|d| d.2),
                ..Default::default()
            });
        }
        if self.engine().book(&book).await?.is_none() {
            return Err(missing_book(&book));
        }
        let prefix = match a.scope {
            ReadScope::Book => DirPrefix::parse("content")?,
            _ => DirPrefix::parse(&a.path)?,
        };
        let view = match &user {
            Some(u) => ListView::Merged(u.clone()),
            None => ListView::Base,
        };
        let entries: Vec<JournalEntry> = self
            .engine()
            .list(&book, view, Some(&prefix))
            .await?
            .into_iter()
            .filter(|e| is_grep_candidate(&e.path))
            .filter(|e| {
                a.scope != ReadScope::Chapter || !e.path[prefix.as_str().len() + 1..].contains('/')
            })
            .collect();
        let total: u64 = entries.iter().map(|e| e.size).sum();
        if total > MAX_BULK_READ_BYTES {
            return Err(PfsError::PayloadTooLarge {
                what: format!("{scope} read of {}", prefix.as_str()),
                size: total,
                limit: MAX_BULK_READ_BYTES,
            });
        }
        let blobs = self.read_many(&entries).await;
        let mut files = Vec::with_capacity(entries.len());
        for (e, bytes) in entries.into_iter().zip(blobs) {
            let bytes = bytes?;
            // Non-UTF-8 pages are skipped (like the predecessor); the archive has them.
            let Ok(content) = String::from_utf8(bytes.to_vec()) else {
                continue;
            };
            files.push(FileContent {
                source: if e.is_overlay() { "overlay" } else { "base" }.into(),
                path: e.path,
                content,
                file_size: e.size,
                file_hash_sha256: e.sha256,
                last_modified: ts(e.last_written_at),
                storage_backend: e.storage_backend,
            });
        }
        Ok(ReadContentOutput {
            scope: scope.into(),
            path: prefix.as_str().to_string(),
            count: Some(files.len()),
            files: Some(files),
            ..Default::default()
        })
    }

    pub(crate) async fn op_write_content(
        &self,
        id: Identity,
        req: Option<RequestKey>,
        a: WriteContentArgs,
    ) -> Result<WriteContentOutput, PfsError> {
        let book = BookId::parse(&a.book_id)?;
        let user = auth::overlay_user(&id, a.user_id.as_deref())?;
        let path = BookPath::parse_content(&a.path)?;
        let expected = parse_expected_hash(a.expected_hash.as_deref())?;
        let max = self.engine().config().limits.max_content_bytes;
        if a.content.len() as u64 > max {
            return Err(PfsError::PayloadTooLarge {
                what: format!("content of {path}"),
                size: a.content.len() as u64,
                limit: max,
            });
        }
        let ns = Namespace::from_user(user.clone());
        let out = match self
            .engine()
            .write(
                &actor(&id)?.with_request(req),
                &book,
                &path,
                &ns,
                Bytes::from(a.content.into_bytes()),
                expected.as_deref(),
            )
            .await
        {
            Ok(o) => o,
            Err(e) => return Err(self.engine().with_conflict_diff(e, &book, &path, &ns).await),
        };
        Ok(write_output(
            &book,
            &path,
            &ns,
            out.size,
            out.sha256,
            out.prev_hash,
            out.mode,
        ))
    }

    pub(crate) async fn op_delete_content(
        &self,
        id: Identity,
        req: Option<RequestKey>,
        a: DeleteContentArgs,
    ) -> Result<DeleteOutput, PfsError> {
        let (book, path, ns) = delete_content_target(&id, &a)?;
        let out = self
            .engine()
            .delete(&actor(&id)?.with_request(req), &book, &path, &ns)
            .await?;
        Ok(delete_output(&book, &path, &ns, out.prev_hash))
    }

    pub(crate) async fn op_upload_asset(
        &self,
        id: Identity,
        req: Option<RequestKey>,
        a: UploadAssetArgs,
    ) -> Result<UploadAssetOutput, PfsError> {
        let book = BookId::parse(&a.book_id)?;
        let path = asset_path(a.asset_type, &a.filename)?;
        let max = self.state.config.max_asset_bytes;
        let data = match a.binary_data.as_deref().filter(|d| !d.is_empty()) {
            Some(d) => d,
            None => {
                return Err(match a.file_size {
                    Some(size) if size > max => PfsError::PayloadTooLarge {
                        what: format!("asset {path}"),
                        size,
                        limit: max,
                    },
                    Some(_) => PfsError::InvalidInput(
                        "presigned uploads are not supported by this server; send the bytes as base64 in binary_data"
                            .into(),
                    ),
                    None => PfsError::InvalidInput("send the asset bytes as base64 in binary_data".into()),
                });
            }
        };
        // Refuse oversized payloads before decoding them.
        let approx = (data.len() as u64 / 4) * 3;
        if approx > max + 3 {
            return Err(PfsError::PayloadTooLarge {
                what: format!("asset {path}"),
                size: approx,
                limit: max,
            });
        }
        let bytes = decode_base64(data)?;
        if bytes.len() as u64 > max {
            return Err(PfsError::PayloadTooLarge {
                what: format!("asset {path}"),
                size: bytes.len() as u64,
                limit: max,
            });
        }
        let out = self
            .engine()
            .put_asset(
                &actor(&id)?.with_request(req),
                &book,
                &path,
                Bytes::from(bytes),
            )
            .await?;
        let entry = self
            .engine()
            .stat(&book, &path, &Namespace::Base)
            .await?
            .ok_or_else(|| {
                PfsError::Internal(format!(
                    "asset {path} missing from the journal right after upload"
                ))
            })?;
        Ok(UploadAssetOutput {
            status: match out.status {
                AssetStatus::Unchanged => "skipped",
                AssetStatus::Created | AssetStatus::Updated => "success",
            }
            .into(),
            method: "direct".into(),
            asset: self.asset_info(&entry, None),
            replayed: None,
        })
    }

    pub(crate) async fn op_get_asset(
        &self,
        _id: Identity,
        a: GetAssetArgs,
    ) -> Result<AssetInfo, PfsError> {
        let book = BookId::parse(&a.book_id)?;
        let path = asset_path(a.asset_type, &a.filename)?;
        let entry = self
            .engine()
            .stat(&book, &path, &Namespace::Base)
            .await?
            .ok_or_else(|| PfsError::not_found(format!("asset {path} in book {book}")));
        let entry = match entry {
            Ok(e) => e,
            Err(e) => return Err(self.explain_not_found(&book, e).await),
        };
        let binary = if a.include_binary {
            // The reply carries the base64 twice (structured content and its text copy), so
            // inline bytes are capped well below the upload limit; bigger assets are fetched
            // from their URL or the archive.
            let max = self
                .state
                .config
                .max_inline_asset_bytes
                .min(self.state.config.max_asset_bytes);
            if entry.size > max {
                let info = self.asset_info(&entry, None);
                return Err(PfsError::PayloadTooLarge {
                    what: format!(
                        "inline bytes of {path} (download {} or use get_book_archive scope=assets)",
                        info.cdn_url
                    ),
                    size: entry.size,
                    limit: max,
                });
            }
            let bytes = self.engine().read_entry(&entry).await?;
            let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
            drop(bytes);
            Some(encoded)
        } else {
            None
        };
        Ok(self.asset_info(&entry, binary))
    }

    pub(crate) async fn op_list_assets(
        &self,
        _id: Identity,
        a: ListAssetsArgs,
    ) -> Result<ListAssetsOutput, PfsError> {
        let book = self.existing_book(&a.book_id).await?;
        let prefix = match a.asset_type {
            Some(t) => DirPrefix::parse(&format!("static/{}", t.as_str()))?,
            None => DirPrefix::parse("static")?,
        };
        let entries = self
            .engine()
            .list(&book, ListView::Base, Some(&prefix))
            .await?;
        let assets: Vec<AssetInfo> = entries
            .iter()
            .filter(|e| BookPath::parse_asset(&e.path).is_ok())
            .map(|e| self.asset_info(e, None))
            .collect();
        Ok(ListAssetsOutput {
            book_id: book.to_string(),
            count: assets.len(),
            assets,
        })
    }

    pub(crate) async fn op_delete_asset(
        &self,
        id: Identity,
        req: Option<RequestKey>,
        a: DeleteAssetArgs,
    ) -> Result<DeleteOutput, PfsError> {
        let book = BookId::parse(&a.book_id)?;
        let path = asset_path(a.asset_type, &a.filename)?;
        let out = self
            .engine()
            .delete(
                &actor(&id)?.with_request(req),
                &book,
                &path,
                &Namespace::Base,
            )
            .await?;
        Ok(delete_output(&book, &path, &Namespace::Base, out.prev_hash))
    }

    pub(crate) async fn op_list_books(
        &self,
        _id: Identity,
        a: ListBooksArgs,
    ) -> Result<ListBooksOutput, PfsError> {
        let filter = a.book_id.as_deref().map(BookId::parse).transpose()?;
        let include = a.include_structure.unwrap_or_default();
        let backend = self.engine().storage().backend_name().to_string();
        let mut books = Vec::new();
        for info in self.engine().list_books().await? {
            if filter.as_ref().is_some_and(|f| f.as_str() != info.book_id) {
                continue;
            }
            let mut item = BookItem {
                book_id: info.book_id.clone(),
                storage_backend: backend.clone(),
                profile: info.profile.as_str().to_string(),
                content: None,
                assets: None,
            };
            if include != IncludeStructure::None {
                let book = BookId::parse(&info.book_id)?;
                let entries = self.engine().list(&book, ListView::Base, None).await?;
                if matches!(include, IncludeStructure::Content | IncludeStructure::All) {
                    item.content = Some(content_tree(&entries));
                }
                if matches!(include, IncludeStructure::Assets | IncludeStructure::All) {
                    item.assets = Some(asset_tree(&entries));
                }
            }
            books.push(item);
        }
        if let Some(f) = &filter
            && books.is_empty()
        {
            return Err(missing_book(f));
        }
        Ok(ListBooksOutput {
            count: books.len(),
            books,
        })
    }

    /// The books a search covers.
    pub(crate) async fn search_books(
        &self,
        book_id: &str,
        all_books: bool,
    ) -> Result<Vec<BookId>, PfsError> {
        if !all_books {
            return Ok(vec![self.existing_book(book_id).await?]);
        }
        self.engine()
            .list_books()
            .await?
            .iter()
            .map(|b| BookId::parse(&b.book_id))
            .collect()
    }

    /// Base rows plus `user`'s own overlay rows of a book (never other users').
    pub(crate) async fn search_entries(
        &self,
        book: &BookId,
        user: Option<&UserId>,
    ) -> Result<Vec<JournalEntry>, PfsError> {
        let mut entries = self.engine().list(book, ListView::Base, None).await?;
        if let Some(u) = user {
            entries.extend(
                self.engine()
                    .list(book, ListView::Overlay(u.clone()), None)
                    .await?,
            );
        }
        Ok(entries)
    }

    pub(crate) async fn op_glob_search(
        &self,
        id: Identity,
        a: GlobSearchArgs,
    ) -> Result<GlobSearchOutput, PfsError> {
        let user = auth::search_user(&id, a.user_id.as_deref())?;
        let matcher = GlobMatcher::new(&a.pattern)?;
        let mut matches = Vec::new();
        let mut files = Vec::new();
        for book in self.search_books(&a.book_id, a.all_books).await? {
            for e in self.search_entries(&book, user.as_ref()).await? {
                let subject = if a.all_books {
                    format!("{}/{}", e.book_id, e.path)
                } else {
                    e.path.clone()
                };
                if matcher.is_match(&subject) {
                    let namespace = if e.is_overlay() { "overlay" } else { "base" };
                    files.push(GlobFile {
                        book_id: e.book_id,
                        path: e.path,
                        namespace: namespace.into(),
                    });
                    matches.push(subject);
                }
            }
        }
        matches.sort();
        matches.dedup();
        files.sort_by(|x, y| {
            (&x.book_id, &x.path, &x.namespace).cmp(&(&y.book_id, &y.path, &y.namespace))
        });
        Ok(GlobSearchOutput {
            pattern: a.pattern,
            count: matches.len(),
            matches,
            files,
        })
    }

    pub(crate) async fn op_get_book_archive(
        &self,
        id: Identity,
        a: GetBookArchiveArgs,
    ) -> Result<ArchiveOutput, PfsError> {
        let book = self.existing_book(&a.book_id).await?;
        let user = auth::overlay_user(&id, a.user_id.as_deref())?;
        let plan = crate::archive::plan(self.engine(), &book, a.scope, user.as_ref()).await?;
        let cfg = &self.state.config;
        let ttl = cfg.archive_url_ttl.as_secs().max(1);
        let expires = Utc::now().timestamp() + ttl as i64;
        let sig = crate::sign::sign(
            &cfg.archive_signing_key,
            book.as_str(),
            a.scope.as_str(),
            user.as_ref().map(UserId::as_str),
            expires,
        );
        let mut url = format!(
            "{}/books/{book}/archive?scope={}",
            cfg.public_base_url.trim_end_matches('/'),
            a.scope.as_str()
        );
        if let Some(u) = &user {
            url.push_str(&format!("&user_id={u}"));
        }
        let mut plan = plan;
        if let Some(after) = &a.start_after {
            let after = BookPath::parse(after)?;
            url.push_str(&format!("&start_after={after}"));
            plan.entries.retain(|e| e.path.as_str() > after.as_str());
            plan.total_bytes = plan.entries.iter().map(|e| e.size).sum();
        }
        url.push_str(&format!("&expires={expires}&sig={sig}"));
        let missing = self.engine().unreadable_blobs(&plan.entries).await;
        let status = if plan.entries.is_empty() {
            "empty"
        } else if missing.is_empty() {
            "success"
        } else {
            "partial"
        };
        Ok(ArchiveOutput {
            status: status.into(),
            archive_url: url,
            expires_at: DateTime::<Utc>::from_timestamp(expires, 0)
                .map(ts)
                .unwrap_or_default(),
            valid_for_seconds: ttl,
            file_count: plan.entries.len(),
            total_size_bytes: plan.total_bytes,
            scope: a.scope.as_str().into(),
            format: "zip".into(),
            manifest_hash: plan.manifest_hash,
            user_id: user.map(|u| u.as_str().to_string()),
            missing,
            time_budget_seconds: cfg.archive_time_budget.map(|d| d.as_secs()),
        })
    }

    pub(crate) async fn op_validate_book(
        &self,
        _id: Identity,
        a: ValidateBookArgs,
    ) -> Result<ValidateOutput, PfsError> {
        let book = BookId::parse(&a.book_id)?;
        let report = match self.engine().book(&book).await? {
            None => pfs::validate::ValidationReport::book_not_found(
                book.as_str(),
                self.engine().config().default_profile,
            ),
            Some(info) => {
                let paths: Vec<String> = self
                    .engine()
                    .list(&book, ListView::Base, None)
                    .await?
                    .into_iter()
                    .map(|e| e.path)
                    .collect();
                pfs::validate::validate_book(
                    book.as_str(),
                    info.profile,
                    &paths,
                    a.strict,
                    a.include_warnings,
                )
            }
        };
        mirror(&report)
    }

    pub(crate) async fn op_delta_build(
        &self,
        id: Identity,
        a: DeltaBuildArgs,
    ) -> Result<DeltaBuildOutput, PfsError> {
        let book = self.existing_book(&a.book_id).await?;
        let user = auth::overlay_user(&id, a.user_id.as_deref())?;
        let to_files = |v: Vec<JournalEntry>| -> Vec<pfs::manifest::JournalFile> {
            v.into_iter()
                .map(|e| pfs::manifest::JournalFile {
                    path: e.path,
                    sha256: e.sha256,
                    last_written_at: e.last_written_at,
                })
                .collect()
        };
        let base = to_files(self.engine().list(&book, ListView::Base, None).await?);
        let overlay = match &user {
            Some(u) => Some(to_files(
                self.engine()
                    .list(&book, ListView::Overlay(u.clone()), None)
                    .await?,
            )),
            None => None,
        };
        let report = pfs::manifest::delta_build(
            book.as_str(),
            &a.since,
            &base,
            user.as_ref().map(UserId::as_str).zip(overlay.as_deref()),
        )?;
        let mut out: DeltaBuildOutput = mirror(&report)?;
        crate::metrics::delta_files(out.changed_count);
        if a.include_content {
            for item in &mut out.changed_files {
                let path = BookPath::parse(&item.path)?;
                let ns = match &item.user_id {
                    Some(u) => Namespace::Overlay(UserId::parse(u)?),
                    None => Namespace::Base,
                };
                let text = match self.engine().stat(&book, &path, &ns).await? {
                    Some(e) => match self.engine().read_entry(&e).await {
                        Ok(b) => String::from_utf8(b.to_vec()).ok(),
                        Err(_) => None,
                    },
                    None => None,
                };
                match text {
                    Some(t) => item.content = Some(t),
                    None => {
                        item.error =
                            Some("Could not read content (deleted since, or not UTF-8 text)".into())
                    }
                }
            }
        }
        Ok(out)
    }

    pub(crate) async fn op_plan_build(
        &self,
        _id: Identity,
        a: PlanBuildArgs,
    ) -> Result<PlanBuildOutput, PfsError> {
        let book = self.existing_book(&a.book_id).await?;
        let target = a
            .target_manifest_hash
            .as_deref()
            .map(pfs::manifest::parse_manifest_hash)
            .transpose()?;
        // Cached per book while unchanged (validated against the book's change counters).
        let current = self.engine().base_manifest(&book).await?;
        self.engine()
            .save_base_manifest_snapshot(&book, &current)
            .await?;
        let target_entries = match &target {
            Some(t) if *t != current.manifest_hash => {
                self.engine().load_manifest_snapshot(&book, t).await?
            }
            _ => None,
        };
        let plan = pfs::manifest::plan_build(
            book.as_str(),
            &current.entries,
            target.as_deref(),
            target_entries.as_deref(),
        );
        crate::metrics::delta_files(plan.changed_count);
        // Moved field by field (not through a JSON value): a plan can list every file of a book.
        use pfs::manifest::{ChangeType, PlanStatus};
        Ok(PlanBuildOutput {
            status: match plan.status {
                PlanStatus::Changed => "changed",
                PlanStatus::Unchanged => "unchanged",
            }
            .to_string(),
            manifest_hash: plan.manifest_hash,
            files: plan
                .files
                .into_iter()
                .map(|f| PlanFileOut {
                    path: f.path,
                    current_hash: f.current_hash,
                    target_hash: f.target_hash,
                    change_type: match f.change_type {
                        ChangeType::Added => "added",
                        ChangeType::Modified => "modified",
                        ChangeType::Deleted => "deleted",
                    }
                    .to_string(),
                })
                .collect(),
            changed_count: plan.changed_count,
            total_files: plan.total_files,
            book_id: plan.book_id,
            target_manifest_hash: plan.target_manifest_hash,
            warning: plan.warning,
        })
    }

    pub(crate) async fn op_query_audit_log(
        &self,
        _id: Identity,
        a: QueryAuditLogArgs,
    ) -> Result<AuditPageOut, PfsError> {
        let since = a
            .since
            .as_deref()
            .map(pfs::manifest::parse_since)
            .transpose()?;
        let until = a
            .until
            .as_deref()
            .map(pfs::manifest::parse_since)
            .transpose()?;
        let limit = match a.limit {
            None => None,
            Some(n @ 1..=1000) => Some(n as u32),
            Some(n) => {
                return Err(PfsError::InvalidInput(format!(
                    "limit must be between 1 and 1000, got {n}"
                )));
            }
        };
        let q = pfs::audit::AuditQuery {
            agent_id: a.agent_id,
            operation: a.operation,
            book_id: a.book_id,
            path_pattern: a.path_pattern,
            since,
            until,
            status: a.status,
            user_id: None,
            limit,
            cursor: a.cursor,
        };
        let page = self.engine().audit().query(&q).await?;
        mirror(&page)
    }

    pub(crate) async fn op_verify_audit_chain(
        &self,
        _id: Identity,
        a: VerifyAuditChainArgs,
    ) -> Result<ChainReportOut, PfsError> {
        let report = match (&a.book_id, &a.path) {
            (None, None) if a.user_id.is_none() => self.engine().audit().verify(None).await?,
            (Some(b), Some(p)) => {
                let book = BookId::parse(b)?;
                let path = BookPath::parse(p)?;
                let ns = Namespace::from_user(a.user_id.as_deref().map(UserId::parse).transpose()?);
                self.engine()
                    .audit()
                    .verify(Some((book.as_str(), path.as_str(), ns.journal_user())))
                    .await?
            }
            _ => {
                return Err(PfsError::InvalidInput(
                    "give book_id and path (and optionally user_id) to check one file's chain, or nothing to check everything"
                        .into(),
                ));
            }
        };
        mirror(&report)
    }
}

/// Files directly in a part, and its chapters' files.
type PartFiles = (Vec<String>, BTreeMap<String, Vec<String>>);

/// Parts → chapters → files from base `content/` rows (sorted input).
fn content_tree(entries: &[JournalEntry]) -> ContentTree {
    let mut parts: BTreeMap<String, PartFiles> = BTreeMap::new();
    for e in entries {
        let Some(rest) = e.path.strip_prefix("content/") else {
            continue;
        };
        let segs: Vec<&str> = rest.splitn(3, '/').collect();
        match segs.as_slice() {
            [part, file] => parts
                .entry(part.to_string())
                .or_default()
                .0
                .push(file.to_string()),
            [part, chapter, rest] => parts
                .entry(part.to_string())
                .or_default()
                .1
                .entry(chapter.to_string())
                .or_default()
                .push(rest.to_string()),
            _ => {}
        }
    }
    ContentTree {
        parts: parts
            .into_iter()
            .map(|(id, (files, chapters))| PartTree {
                id,
                files,
                chapters: chapters
                    .into_iter()
                    .map(|(id, lessons)| ChapterTree { id, lessons })
                    .collect(),
            })
            .collect(),
    }
}

/// Asset lists by type from base `static/` rows.
fn asset_tree(entries: &[JournalEntry]) -> AssetTree {
    let mut t = AssetTree::default();
    for e in entries {
        let Some(rest) = e.path.strip_prefix("static/") else {
            continue;
        };
        let Some((ty, file)) = rest.split_once('/') else {
            continue;
        };
        let list = match ty {
            "images" => &mut t.images,
            "slides" => &mut t.slides,
            "videos" => &mut t.videos,
            "audio" => &mut t.audio,
            _ => continue,
        };
        list.push(file.to_string());
    }
    t
}

/// The file a `delete_content` call names.
pub(crate) fn delete_content_target(
    id: &Identity,
    a: &DeleteContentArgs,
) -> Result<(BookId, BookPath, Namespace), PfsError> {
    let book = BookId::parse(&a.book_id)?;
    let user = auth::overlay_user(id, a.user_id.as_deref())?;
    let path = BookPath::parse_content(&a.path)?;
    Ok((book, path, Namespace::from_user(user)))
}

pub(crate) fn missing_book(book: &BookId) -> PfsError {
    PfsError::not_found(format!(
        "book {book} (no such book; list_books shows the ids that exist)"
    ))
}
