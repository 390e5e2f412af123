//! `fs hydrate --from-archive`: a full hydrate from the book's ZIP instead of one read per file.
//!
//! The archive is downloaded from the signed URL of `get_book_archive` into an anonymous temp
//! file, then every entry the plan names is checked against the plan's sha256 and written like a
//! per-file download. A time-budgeted server ends the ZIP early with `_archive_partial.json`; the
//! client asks again with `start_after = resume_after` until the ZIP is complete, so every entry
//! arrives exactly once. Files the server could not read (`_archive_errors.json`) and files the
//! plan names but no archive held are reported as failed, which keeps the manifest unsaved.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::io::{AsyncSeekExt as _, AsyncWriteExt as _};

use super::*;

/// Entries the server adds to a ZIP that are not book files.
const PARTIAL_ENTRY: &str = "_archive_partial.json";
const ERRORS_ENTRY: &str = "_archive_errors.json";

/// Longest pause between two body chunks of an archive download.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Fetch `files` (no deletions) from the book's archive; one outcome per file, and how many
/// archive downloads it took.
pub(super) async fn fetch_from_archive(
    mcp: &McpClient,
    book: &str,
    files: Vec<PlanFile>,
    out: &Path,
    static_dir: Option<&Path>,
    verify_local: bool,
    pb: &indicatif::ProgressBar,
) -> anyhow::Result<(Vec<(String, Fetch)>, usize)> {
    let mut wanted: HashMap<String, String> = HashMap::with_capacity(files.len());
    let mut results = Vec::with_capacity(files.len());
    for f in files {
        match f.current_hash {
            Some(h) => {
                wanted.insert(f.path, h.to_ascii_lowercase());
            }
            None => results.push((f.path, Fetch::Failed("plan entry without a hash".into()))),
        }
    }
    // Assets travel only when they have somewhere to go (co-located images always do).
    let scope = if static_dir.is_some() || wanted.keys().any(|p| p.starts_with(COLOCATED_PREFIX)) {
        "all"
    } else {
        "content"
    };
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(READ_TIMEOUT)
        .build()
        .context("building the archive HTTP client")?;
    let mut start_after: Option<String> = None;
    let mut parts = 0usize;
    loop {
        parts += 1;
        let mut args = json!({"book_id": book, "scope": scope});
        if let Some(a) = &start_after {
            args["start_after"] = json!(a);
        }
        let reply = mcp
            .call("get_book_archive", args)
            .await
            .map_err(|e| anyhow::anyhow!("get_book_archive for book {book}: {e}"))?;
        let url = reply["archive_url"]
            .as_str()
            .with_context(|| format!("get_book_archive answered without archive_url: {reply}"))?;
        let zip = download_to_temp(&http, url).await?;
        let mut resume = None;
        let mut reader =
            async_zip::tokio::read::seek::ZipFileReader::with_tokio(tokio::io::BufReader::new(zip))
                .await
                .context("the archive is not a readable ZIP")?;
        for i in 0..reader.file().entries().len() {
            let mut entry = reader
                .reader_with_entry(i)
                .await
                .with_context(|| format!("opening ZIP entry {i}"))?;
            let name = entry
                .entry()
                .filename()
                .as_str()
                .with_context(|| format!("ZIP entry {i} has a name that is not UTF-8"))?
                .to_string();
            let mut bytes = Vec::new();
            let read = entry.read_to_end_checked(&mut bytes).await;
            match name.as_str() {
                PARTIAL_ENTRY => {
                    read.context("reading the partial-archive manifest")?;
                    let v: Value = serde_json::from_slice(&bytes)
                        .context("the partial-archive manifest is not JSON")?;
                    resume = v["resume_after"].as_str().map(str::to_string);
                }
                ERRORS_ENTRY => {
                    read.context("reading the archive's error manifest")?;
                    let v: Value = serde_json::from_slice(&bytes)
                        .context("the archive's error manifest is not JSON")?;
                    for e in v.as_array().into_iter().flatten() {
                        if let Some(path) = e["path"].as_str()
                            && wanted.remove(path).is_some()
                        {
                            let why = e["error"].to_string();
                            results.push((
                                path.to_string(),
                                Fetch::Failed(format!("the server could not read it: {why}")),
                            ));
                            pb.inc(1);
                        }
                    }
                }
                _ => {
                    let Some(expected) = wanted.remove(&name) else {
                        continue; // not in this plan (e.g. an asset without --static-dir)
                    };
                    let outcome = match read {
                        Ok(_) => {
                            place(&name, &bytes, &expected, out, static_dir, verify_local).await
                        }
                        Err(e) => Fetch::Failed(format!("corrupt ZIP entry: {e}")),
                    };
                    results.push((name, outcome));
                    pb.inc(1);
                }
            }
        }
        match resume {
            Some(r) if Some(&r) != start_after.as_ref() => start_after = Some(r),
            Some(r) => anyhow::bail!("the archive made no progress after {r}"),
            None => break,
        }
    }
    for (path, _) in wanted.drain() {
        let outcome = match local_target(&path, out, static_dir) {
            Ok(None) => Fetch::Skipped,
            _ => Fetch::Failed(
                "not in the archive (changed on the server while hydrating? run hydrate again)"
                    .into(),
            ),
        };
        results.push((path, outcome));
        pb.inc(1);
    }
    Ok((results, parts))
}

/// Check one entry against the plan and write it where the per-file hydrate would.
async fn place(
    path: &str,
    bytes: &[u8],
    expected: &str,
    out: &Path,
    static_dir: Option<&Path>,
    verify_local: bool,
) -> Fetch {
    let target = match local_target(path, out, static_dir) {
        Ok(Some(t)) => t,
        Ok(None) => return Fetch::Skipped,
        Err(e) => return Fetch::Failed(e),
    };
    let got = sha256_hex(bytes);
    if got != expected {
        return Fetch::Failed(format!(
            "changed on the server while hydrating (plan sha256 {expected}, archive {got}); run hydrate again"
        ));
    }
    if verify_local
        && let Ok(local) = tokio::fs::read(&target).await
        && sha256_hex(&local) == expected
    {
        return Fetch::Kept;
    }
    match write_atomic(&target, bytes, false).await {
        Ok(()) => Fetch::Downloaded,
        Err(e) => Fetch::Failed(format!("writing {}: {e}", target.display())),
    }
}

/// Stream the ZIP at `url` into an anonymous temp file (removed when dropped), rewound.
async fn download_to_temp(http: &reqwest::Client, url: &str) -> anyhow::Result<tokio::fs::File> {
    let resp = http
        .get(url)
        .send()
        .await
        .context("requesting the archive")?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        anyhow::bail!("archive download: HTTP {status}: {body}");
    }
    let file = tempfile::tempfile().context("creating a temp file for the archive")?;
    let mut file = tokio::fs::File::from_std(file);
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("archive download interrupted")?;
        file.write_all(&chunk)
            .await
            .context("writing the archive to a temp file")?;
    }
    file.flush().await.context("writing the archive")?;
    file.rewind().await.context("rewinding the archive")?;
    Ok(file)
}
