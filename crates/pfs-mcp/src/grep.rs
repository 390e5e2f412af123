//! `grep_search`, bounded: the pattern's compiled size is limited (`PATTERN_TOO_COMPLEX`), the
//! scan runs on the low-priority [`crate::scan_pool::ScanPool`] (never on the async workers, at
//! most one scan per pool thread), and a [`ScanBudget`] — deadline,
//! bytes scanned, cancellation — is checked before every chunk of every file. A scan past its
//! deadline answers `SEARCH_TIMEOUT` with the matches found so far; one over the byte cap answers
//! normally with `truncated: true`; a client that goes away (MCP cancel or a dropped
//! connection) stops the scan at its next check.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use pfs::PfsError;
use pfs::engine::{Engine, JournalEntry};
use pfs::search::{GrepQuery, GrepResult, PatternError, ScanBudget, ScanStop, is_grep_candidate};
use platform::Identity;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::args::GrepSearchArgs;
use crate::auth;
use crate::output::{GrepMatch, GrepSearchOutput};
use crate::tools::{PfsTools, ToolError};

/// File bytes handed to one blocking scan job.
const BATCH_BYTES: usize = 1 << 20;
/// How long past the deadline the async side waits for a blocking job to notice it.
const GRACE: Duration = Duration::from_millis(200);

/// How `grep_search` fails.
#[derive(Debug)]
pub enum GrepError {
    /// Any book-store error (bad arguments, missing book, storage, …).
    Pfs(PfsError),
    /// The pattern's compiled program is over the limits.
    TooComplex(String),
    /// The deadline passed; `partial` is the result so far.
    Timeout {
        limit: Duration,
        partial: Box<GrepSearchOutput>,
    },
}

impl From<PfsError> for GrepError {
    fn from(e: PfsError) -> Self {
        GrepError::Pfs(e)
    }
}

impl ToolError for GrepError {
    fn code_str(&self) -> &'static str {
        match self {
            GrepError::Pfs(e) => e.code().as_str(),
            GrepError::TooComplex(_) => "PATTERN_TOO_COMPLEX",
            GrepError::Timeout { .. } => "SEARCH_TIMEOUT",
        }
    }

    fn body(&self) -> Value {
        match self {
            GrepError::Pfs(e) => e.to_json(),
            GrepError::TooComplex(m) => {
                json!({"error": {"code": self.code_str(), "message": m}})
            }
            GrepError::Timeout { limit, partial } => json!({"error": {
                "code": self.code_str(),
                "message": format!(
                    "the search ran out of its {} ms budget; partial holds what was found; narrow the pattern or search one book",
                    limit.as_millis()
                ),
                "partial": serde_json::to_value(partial.as_ref()).unwrap_or(Value::Null),
            }}),
        }
    }

    fn log(&self, tool: &'static str) {
        match self {
            GrepError::Pfs(e) => e.log(tool),
            other => tracing::info!(tool, code = other.code_str(), "search stopped"),
        }
    }
}

/// Cancels the budget when the request future is dropped (the client went away).
struct CancelOnDrop(ScanBudget);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Where each scanned key came from: (book, path, namespace).
type Origins = HashMap<String, (String, String, &'static str)>;

impl PfsTools {
    pub(crate) async fn op_grep_search(
        &self,
        id: Identity,
        a: GrepSearchArgs,
        cancel: CancellationToken,
    ) -> Result<GrepSearchOutput, GrepError> {
        let started = Instant::now();
        let cfg = self.state.config.clone();
        let deadline = started + cfg.grep_timeout;
        let user = auth::search_user(&id, a.user_id.as_deref())?;
        let cap = cfg.grep_max_results.max(1);
        let max = a.max_results.unwrap_or(100);
        if max == 0 || max > cap as u64 {
            return Err(PfsError::InvalidInput(format!(
                "max_results must be between 1 and {cap}, got {max}"
            ))
            .into());
        }
        // Compiling a pattern near the size limit takes real CPU time: not on an async worker.
        let pattern = a.pattern.clone();
        let compiled =
            tokio::task::spawn_blocking(move || GrepQuery::compile(&pattern, false, max as usize))
                .await
                .map_err(|e| PfsError::Internal(format!("grep compile task failed: {e}")))?;
        let query = match compiled {
            Ok(q) => Arc::new(q),
            Err(PatternError::Invalid(e)) => return Err(e.into()),
            Err(PatternError::TooComplex(m)) => return Err(GrepError::TooComplex(m)),
        };
        let budget = ScanBudget::new(deadline, cfg.grep_max_scan_bytes);
        let _on_drop = CancelOnDrop(budget.clone());
        let mut scan = Scan {
            result: GrepResult::default(),
            origins: Origins::new(),
            skipped: 0,
            stop: None,
        };
        let work = self.scan_books(&a, user.as_ref(), &query, &budget, &mut scan);
        tokio::select! {
            r = work => r?,
            _ = cancel.cancelled() => {
                budget.cancel();
                scan.stop = Some(ScanStop::Cancelled);
            }
        }
        let out = scan.output(a.pattern);
        match scan.stop {
            Some(ScanStop::Deadline | ScanStop::Cancelled) => Err(GrepError::Timeout {
                limit: cfg.grep_timeout,
                partial: Box::new(out),
            }),
            Some(ScanStop::ByteCap) | None => Ok(out),
        }
    }

    /// Read the candidate files of every book in scope and scan them in batches on blocking
    /// threads. Stops at the first budget stop (recorded in `scan.stop`) or a full result.
    async fn scan_books(
        &self,
        a: &GrepSearchArgs,
        user: Option<&pfs::UserId>,
        query: &Arc<GrepQuery>,
        budget: &ScanBudget,
        scan: &mut Scan,
    ) -> Result<(), PfsError> {
        let max_file = self.state.config.grep_max_file_bytes;
        for book in self.search_books(&a.book_id, a.all_books).await? {
            let mut files: Vec<JournalEntry> = Vec::new();
            for e in self.search_entries(&book, user).await? {
                if !e.path.starts_with("content/") || !is_grep_candidate(&e.path) {
                    continue;
                }
                if e.size > max_file {
                    scan.skipped += 1;
                    continue;
                }
                files.push(e);
            }
            let mut blobs = crate::ops::read_stream(self.engine(), &files);
            let mut batch: Vec<(String, Bytes)> = Vec::new();
            let mut batch_bytes = 0usize;
            let mut i = 0;
            loop {
                let next = blobs.next().await.transpose()?;
                let done = next.is_none();
                if let Some(bytes) = next {
                    let e = &files[i];
                    i += 1;
                    let key = Engine::canonical_key(e);
                    let ns = if e.is_overlay() { "overlay" } else { "base" };
                    scan.origins
                        .insert(key.clone(), (e.book_id.clone(), e.path.clone(), ns));
                    batch_bytes += bytes.len();
                    batch.push((key, bytes));
                }
                let flush = done || batch_bytes >= BATCH_BYTES;
                if flush && !batch.is_empty() {
                    let jobs = std::mem::take(&mut batch);
                    batch_bytes = 0;
                    if !scan
                        .run_batch(&self.state.scan_pool, query, budget, jobs)
                        .await?
                    {
                        return Ok(());
                    }
                }
                if done {
                    break;
                }
            }
        }
        Ok(())
    }
}

/// The state of one search across batches.
struct Scan {
    result: GrepResult,
    origins: Origins,
    skipped: usize,
    stop: Option<ScanStop>,
}

impl Scan {
    /// Scan `jobs` on a blocking thread. `Ok(false)`: the search is over (full or stopped).
    async fn run_batch(
        &mut self,
        pool: &crate::scan_pool::ScanPool,
        query: &Arc<GrepQuery>,
        budget: &ScanBudget,
        jobs: Vec<(String, Bytes)>,
    ) -> Result<bool, PfsError> {
        let q = query.clone();
        let b = budget.clone();
        // A copy (at most max_results matches): if the job overruns, the answer keeps what the
        // earlier batches found.
        let mut result = self.result.clone();
        let Some(slot) = pool.slot(budget.deadline()).await else {
            self.stop = Some(ScanStop::Deadline);
            return Ok(false);
        };
        let done = pool.run(slot, move || {
            let mut go_on = Ok(true);
            for (key, bytes) in &jobs {
                go_on = q.scan_bounded(key, bytes, &mut result, &b);
                if !matches!(go_on, Ok(true)) {
                    break;
                }
            }
            (result, go_on)
        });
        let wait_until = budget.deadline() + GRACE;
        match tokio::time::timeout_at(wait_until.into(), done).await {
            Ok(Ok((result, go_on))) => {
                self.result = result;
                match go_on {
                    Ok(more) => Ok(more),
                    Err(stop) => {
                        self.stop = Some(stop);
                        Ok(false)
                    }
                }
            }
            Ok(Err(_)) => Err(PfsError::Internal("the grep scan thread went away".into())),
            Err(_) => {
                // The job is inside one costly chunk; it stops at its next check (holding its
                // pool slot until then). Answer now with the matches of the batches before it.
                budget.cancel();
                self.stop = Some(ScanStop::Deadline);
                Ok(false)
            }
        }
    }

    fn output(&self, pattern: String) -> GrepSearchOutput {
        let matches: Vec<GrepMatch> = self
            .result
            .matches
            .iter()
            .map(|m| {
                let (book_id, path, ns) = self.origins.get(&m.path).cloned().unwrap_or_default();
                GrepMatch {
                    file_path: m.path.clone(),
                    book_id,
                    path,
                    namespace: ns.to_string(),
                    line_number: m.line_number as u64,
                    matched_line: m.line.trim().to_string(),
                }
            })
            .collect();
        GrepSearchOutput {
            pattern,
            count: matches.len(),
            matches,
            truncated: self.result.truncated || self.stop == Some(ScanStop::ByteCap),
            files_scanned: self.result.files_scanned,
            files_skipped: self.skipped,
        }
    }
}
