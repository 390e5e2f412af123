//! Consistency check between the journal and object storage (spec R2, "a consistency check
//! command").
//!
//! For every journal row: the blob it names exists and hashes to its sha256, and the canonical
//! object (`books/{book}/…`) holds exactly those bytes. Every object under `books/` without a
//! journal row is an *orphan*. With `repair`:
//! * pending materializations are completed first;
//! * a missing or wrong canonical object is re-materialized from a good blob;
//! * a missing or corrupt blob is restored from the canonical object when that one hashes right;
//! * orphans are **quarantined**, not deleted: moved to `_pfs/quarantine/{run}/{original key}`
//!   (outside `books/`, so they vanish from listings, archives and the CDN but an operator can
//!   still recover them; e.g. files an older tool wrote without a journal row). More than
//!   [`QUARANTINE_LIMIT`] orphans are not moved unless the caller lifts the limit: so many objects
//!   without rows usually mean a bucket written by another tool (the predecessor), which
//!   `panaversity fs adopt-storage` adopts instead.
//!
//! Rows whose blob and canonical object are both missing or wrong cannot be repaired; they are
//! reported as `unrepairable`.
//!
//! On the fs backend every symbolic link inside the store is a `symlink` issue (the backend never
//! follows links, so whatever it points to is not part of the store); `repair` removes the link
//! itself, never its target, and the next run re-materializes what the journal says belongs there.

use std::collections::HashSet;

use serde::Serialize;

use crate::engine::{Engine, JournalEntry};
use crate::error::Result;
use crate::storage::blob_key;

/// One problem found by fsck.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FsckIssue {
    /// `blob_missing`, `blob_corrupt`, `canonical_missing`, `canonical_mismatch`, `orphan`,
    /// `unrepairable`, `storage_error`, `symlink`.
    pub kind: String,
    /// The storage key concerned.
    pub key: String,
    pub book_id: Option<String>,
    pub path: Option<String>,
    pub user_id: Option<String>,
    pub detail: String,
    /// Whether this run repaired it.
    pub repaired: bool,
}

/// Result of [`Engine::fsck`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct FsckReport {
    pub repair: bool,
    pub journal_rows: u64,
    pub objects_scanned: u64,
    pub pending_before: i64,
    pub pending_completed: u64,
    pub blobs_missing: u64,
    pub blobs_corrupt: u64,
    pub canonical_missing: u64,
    pub canonical_mismatch: u64,
    pub orphans: u64,
    /// Symbolic links found inside the store (fs backend).
    pub symlinks: u64,
    pub repaired: u64,
    pub unrepairable: u64,
    /// Where orphans were moved (when any were quarantined).
    pub quarantine_prefix: Option<String>,
    /// Why orphans were left in place although `repair` was asked (too many of them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantine_refused: Option<String>,
    pub issues: Vec<FsckIssue>,
}

impl FsckReport {
    /// No problems left after this run (everything consistent or repaired).
    pub fn clean(&self) -> bool {
        self.issues.iter().all(|i| i.repaired)
    }
}

fn issue(kind: &str, key: &str, e: Option<&JournalEntry>, detail: String) -> FsckIssue {
    FsckIssue {
        kind: kind.into(),
        key: key.into(),
        book_id: e.map(|e| e.book_id.clone()),
        path: e.map(|e| e.path.clone()),
        user_id: e.map(|e| e.user_id.clone()),
        detail,
        repaired: false,
    }
}

/// Most orphans a repair quarantines without being told to (see the module docs).
pub const QUARANTINE_LIMIT: u64 = 10;

impl Engine {
    /// Compare journal and storage; with `repair`, fix what can be fixed (see [`crate::fsck`]),
    /// quarantining at most [`QUARANTINE_LIMIT`] orphans.
    pub async fn fsck(&self, repair: bool) -> Result<FsckReport> {
        self.fsck_with(repair, Some(QUARANTINE_LIMIT)).await
    }

    /// [`Engine::fsck`] with another quarantine limit (`None`: no limit). Over the limit, no
    /// orphan is moved and [`FsckReport::quarantine_refused`] says why.
    pub async fn fsck_with(&self, repair: bool, max_quarantine: Option<u64>) -> Result<FsckReport> {
        let storage = self.storage();
        let mut rep = FsckReport {
            repair,
            pending_before: self.pending_count().await?,
            ..Default::default()
        };
        if repair && rep.pending_before > 0 {
            rep.pending_completed = self.reconcile_pending().await.unwrap_or(0) as u64;
        }
        if let Some(links) = storage.find_symlinks("").await {
            for key in links? {
                rep.symlinks += 1;
                let mut is = issue(
                    "symlink",
                    &key,
                    None,
                    "symbolic link inside the store (never followed)".into(),
                );
                if repair {
                    match storage.remove_symlink(&key).await {
                        Ok(()) => {
                            is.repaired = true;
                            is.detail = "link removed (its target untouched); run fsck --repair again to re-materialize".into();
                            rep.repaired += 1;
                        }
                        Err(err) => is.detail.push_str(&format!("; removal failed: {err}")),
                    }
                }
                rep.issues.push(is);
            }
        }
        let rows = self.all_journal_rows().await?;
        rep.journal_rows = rows.len() as u64;
        let mut known: HashSet<String> = HashSet::with_capacity(rows.len());
        for e in &rows {
            let ckey = Engine::canonical_key(e);
            known.insert(ckey.clone());
            let bkey = blob_key(&e.sha256);
            let blob = match storage.hash_object(&bkey).await {
                Ok(b) => b,
                Err(err) => {
                    rep.issues
                        .push(issue("storage_error", &bkey, Some(e), err.to_string()));
                    continue;
                }
            };
            let blob_ok = matches!(&blob, Some((h, _)) if *h == e.sha256);
            if !blob_ok {
                let kind = if blob.is_none() {
                    "blob_missing"
                } else {
                    "blob_corrupt"
                };
                if blob.is_none() {
                    rep.blobs_missing += 1;
                } else {
                    rep.blobs_corrupt += 1;
                }
                rep.issues.push(issue(
                    kind,
                    &bkey,
                    Some(e),
                    format!("blob of {} v{}", e.path, e.version),
                ));
            }
            let canon = match storage.hash_object(&ckey).await {
                Ok(c) => c,
                Err(err) => {
                    rep.issues
                        .push(issue("storage_error", &ckey, Some(e), err.to_string()));
                    continue;
                }
            };
            let canon_ok = matches!(&canon, Some((h, _)) if *h == e.sha256);
            if !blob_ok {
                // Restore the blob from a correct canonical object.
                let last = rep.issues.len() - 1;
                if canon_ok {
                    if repair {
                        match storage.copy(&ckey, &bkey).await {
                            Ok(()) => {
                                rep.issues[last].repaired = true;
                                rep.repaired += 1;
                            }
                            Err(err) => rep.issues[last]
                                .detail
                                .push_str(&format!("; restore failed: {err}")),
                        }
                    }
                } else {
                    rep.unrepairable += 1;
                    rep.issues.push(issue(
                        "unrepairable",
                        &ckey,
                        Some(e),
                        "neither the blob nor the canonical object holds the journal's bytes"
                            .into(),
                    ));
                    continue;
                }
            }
            if !canon_ok {
                let kind = if canon.is_none() {
                    "canonical_missing"
                } else {
                    "canonical_mismatch"
                };
                if canon.is_none() {
                    rep.canonical_missing += 1;
                } else {
                    rep.canonical_mismatch += 1;
                }
                let mut is = issue(
                    kind,
                    &ckey,
                    Some(e),
                    format!("expected sha256 {}", e.sha256),
                );
                if repair {
                    match self.materialize(&e.book_id, &e.path, &e.user_id).await {
                        Ok(()) => {
                            is.repaired = true;
                            rep.repaired += 1;
                        }
                        Err(err) => is
                            .detail
                            .push_str(&format!("; re-materialize failed: {err}")),
                    }
                }
                rep.issues.push(is);
            }
        }
        let objects = storage.list_files("books/").await?;
        rep.objects_scanned = objects.len() as u64;
        let run = format!(
            "_pfs/quarantine/{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ")
        );
        let mut orphans = Vec::new();
        for (key, _size) in objects {
            // A row may have been created since we read the journal: re-check before acting.
            if !known.contains(&key) && !self.journal_has_key(&key, &rows).await {
                orphans.push(key);
            }
        }
        rep.orphans = orphans.len() as u64;
        let quarantine = repair
            && match max_quarantine {
                Some(limit) if rep.orphans > limit => {
                    rep.quarantine_refused = Some(format!(
                        "{} objects under books/ have no journal row, more than the {limit} a \
                         repair moves without --force: this looks like a bucket written by another \
                         tool (e.g. the Python PanaversityFS). Adopt them into the journal with \
                         `panaversity fs adopt-storage` (or `fs import`), or pass --force to \
                         quarantine them all to _pfs/quarantine/",
                        rep.orphans
                    ));
                    false
                }
                _ => true,
            };
        for key in orphans {
            let mut is = issue("orphan", &key, None, "object without a journal row".into());
            if quarantine {
                let dest = format!("{run}/{key}");
                let moved = async {
                    storage.copy(&key, &dest).await?;
                    storage.delete(&key).await
                }
                .await;
                match moved {
                    Ok(()) => {
                        is.repaired = true;
                        is.detail = format!("quarantined to {dest}");
                        rep.repaired += 1;
                        rep.quarantine_prefix = Some(run.clone());
                    }
                    Err(err) => is.detail.push_str(&format!("; quarantine failed: {err}")),
                }
            }
            rep.issues.push(is);
        }
        Ok(rep)
    }

    /// Whether the journal (re-read now) has a row whose canonical key is `key`.
    async fn journal_has_key(&self, key: &str, _snapshot: &[JournalEntry]) -> bool {
        let Some(rest) = key.strip_prefix("books/") else {
            return false;
        };
        let Some((book, rel)) = rest.split_once('/') else {
            return false;
        };
        let (user, path) = match rel.strip_prefix("users/") {
            Some(r) => match r.split_once('/') {
                Some((u, p)) => (u, p),
                None => return false,
            },
            None => (crate::ids::BASE_USER, rel),
        };
        let found: std::result::Result<Option<i64>, _> = sqlx::query_scalar(
            "SELECT version FROM file_journal WHERE book_id = $1 AND path = $2 AND user_id = $3",
        )
        .bind(book)
        .bind(path)
        .bind(user)
        .fetch_optional(self.db().pool())
        .await;
        matches!(found, Ok(Some(_)))
    }
}
