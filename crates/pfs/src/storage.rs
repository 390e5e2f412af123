//! Object storage over Apache OpenDAL (`fs`, `s3`, `memory`), with retries (jittered exponential
//! backoff) and timeouts on every call, plus an optional fault-injection plan for tests.
//!
//! Keys are plain strings relative to the storage root. The book layout lives under `books/`
//! (see [`crate::path::storage_key`]); the engine's immutable content-addressed blobs live under
//! `_pfs/blobs/sha256/{aa}/{sha}` ([`blob_key`]), outside `books/`, so listings, archives and the
//! CDN never see them.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Once};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use opendal::Operator;
use opendal::layers::{RetryLayer, TimeoutLayer};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{PfsError, Result};

/// Prefix of the engine's private objects (blobs, temp files, quarantine).
pub const PRIVATE_PREFIX: &str = "_pfs/";

/// The content-addressed key of a blob: `_pfs/blobs/sha256/{first two hex}/{sha}`.
pub fn blob_key(sha256: &str) -> String {
    let shard = sha256.get(..2).unwrap_or("xx");
    format!("_pfs/blobs/sha256/{shard}/{sha256}")
}

/// Whether `s` is a lowercase hex sha256 (64 characters).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

static PROCESS_INIT: Once = Once::new();

/// Process-wide setup the storage layer needs, idempotent: installs rustls' ring crypto provider
/// (ignoring "already installed") and the reqwest HTTP transport opendal's S3 service uses.
pub fn init_process() {
    PROCESS_INIT.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        match reqwest::Client::builder().build() {
            Ok(client) => opendal::HttpTransporter::install_default(
                opendal_http_transport_reqwest::ReqwestTransport::new(client),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "building the reqwest client for opendal failed; using its lazy default");
                opendal::HttpTransporter::install_default(
                    opendal_http_transport_reqwest::ReqwestTransport::default(),
                );
            }
        }
    });
}

/// Where objects are stored.
#[derive(Clone, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum StorageConfig {
    /// A directory on the local file system (the embedded default).
    Fs { root: PathBuf },
    /// In-process memory (tests).
    Memory,
    /// AWS S3 or an S3-compatible service (Cloudflare R2, MinIO, …) via `endpoint`.
    S3 {
        bucket: String,
        /// Region; `auto` when unset (what R2 expects).
        region: Option<String>,
        /// Endpoint URL without the bucket name; AWS default when unset.
        endpoint: Option<String>,
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
        /// Key prefix inside the bucket (`/` when unset).
        root: Option<String>,
    },
}

impl fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageConfig::Fs { root } => f.debug_struct("Fs").field("root", root).finish(),
            StorageConfig::Memory => f.write_str("Memory"),
            StorageConfig::S3 {
                bucket,
                region,
                endpoint,
                root,
                ..
            } => f
                .debug_struct("S3")
                .field("bucket", bucket)
                .field("region", region)
                .field("endpoint", endpoint)
                .field("root", root)
                .field("credentials", &"<redacted>")
                .finish(),
        }
    }
}

/// Retry and timeout settings applied to every storage call.
#[derive(Debug, Clone)]
pub struct StorageOptions {
    /// Timeout of non-I/O calls (stat, delete, list pages).
    pub timeout: Duration,
    /// Timeout of each I/O step (read/write of one chunk).
    pub io_timeout: Duration,
    /// Retries of transient errors, after the first attempt.
    pub retry_max_times: usize,
    pub retry_min_delay: Duration,
    pub retry_max_delay: Duration,
}

impl Default for StorageOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            io_timeout: Duration::from_secs(15),
            retry_max_times: 4,
            retry_min_delay: Duration::from_millis(20),
            retry_max_delay: Duration::from_secs(2),
        }
    }
}

/// Which storage call a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    Put,
    Get,
    Delete,
    Copy,
}

#[cfg(feature = "test-support")]
pub use fault_plan::FaultPlan;

#[cfg(not(feature = "test-support"))]
pub use no_fault_plan::FaultPlan;

/// Storage fault injection, only with the `test-support` feature (see `engine::Faults`).
#[cfg(feature = "test-support")]
mod fault_plan {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::FaultOp;

    /// A shared, adjustable plan of injected storage failures (tests). Faults are returned as
    /// transient `STORAGE_UNAVAILABLE` errors *after* opendal's retry layer, i.e. as the engine would
    /// see a storage outage. With `ambiguous`, half of the injected put/copy/delete faults happen
    /// after the real call succeeded (the caller can't tell whether the change landed).
    #[derive(Debug, Default)]
    pub struct FaultPlan {
        fail_next: AtomicU64,
        /// Failure probability in parts per million.
        rate_ppm: AtomicU64,
        ambiguous: std::sync::atomic::AtomicBool,
        injected: AtomicU64,
    }

    impl FaultPlan {
        /// A plan that injects nothing until told to.
        pub fn new() -> Arc<FaultPlan> {
            Arc::new(FaultPlan::default())
        }

        /// Make the next `n` put/get/delete/copy calls fail.
        pub fn fail_next(&self, n: u64) {
            self.fail_next.store(n, Ordering::SeqCst);
        }

        /// Make a random fraction (0.0–1.0) of calls fail.
        pub fn set_failure_rate(&self, fraction: f64) {
            let ppm = (fraction.clamp(0.0, 1.0) * 1_000_000.0) as u64;
            self.rate_ppm.store(ppm, Ordering::SeqCst);
        }

        /// Let half of the injected mutation faults happen after the real call succeeded.
        pub fn set_ambiguous(&self, on: bool) {
            self.ambiguous.store(on, Ordering::SeqCst);
        }

        /// Stop injecting.
        pub fn disable(&self) {
            self.fail_next.store(0, Ordering::SeqCst);
            self.rate_ppm.store(0, Ordering::SeqCst);
        }

        /// How many faults were injected so far.
        pub fn injected(&self) -> u64 {
            self.injected.load(Ordering::SeqCst)
        }

        /// Decide whether this call fails; `Some(after)` when it does (`after`: fail after the call).
        pub(super) fn decide(&self, op: FaultOp) -> Option<bool> {
            let take_next = self
                .fail_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            let fail = take_next || {
                let ppm = self.rate_ppm.load(Ordering::Relaxed);
                ppm > 0 && rand::random_range(0..1_000_000u64) < ppm
            };
            if !fail {
                return None;
            }
            self.injected.fetch_add(1, Ordering::SeqCst);
            let after = op != FaultOp::Get
                && self.ambiguous.load(Ordering::Relaxed)
                && rand::random_bool(0.5);
            Some(after)
        }
    }
}

#[cfg(not(feature = "test-support"))]
mod no_fault_plan {
    use super::FaultOp;

    /// Storage fault injection is compiled out (feature `test-support` off): no value of this
    /// type can be made.
    #[derive(Debug)]
    pub struct FaultPlan {
        _none: std::convert::Infallible,
    }

    impl FaultPlan {
        pub(super) fn decide(&self, _op: FaultOp) -> Option<bool> {
            match self._none {}
        }
    }
}

fn injected_error(op: FaultOp, key: &str) -> PfsError {
    PfsError::Storage(format!("injected {op:?} fault on {key} (test fault plan)"))
}

/// The object store: an opendal `Operator` with retry and timeout layers. Cheap to clone.
#[derive(Clone)]
pub struct Storage {
    op: Operator,
    backend: &'static str,
    faults: Option<Arc<FaultPlan>>,
    /// For the fs backend: the hot paths (blob put, copy, sized read) run as one blocking call
    /// each with `std::fs` instead of OpenDAL's one `spawn_blocking` per file operation
    /// (measured: ~10 thread hand-offs per write_content, the largest cost after the database).
    fs: Option<Arc<FsPaths>>,
}

/// Root and atomic-write directory of an fs store.
#[derive(Debug)]
struct FsPaths {
    root: std::path::PathBuf,
    tmp: std::path::PathBuf,
}

/// The error inside an `io::Error` when a path of the store runs through a symbolic link.
#[derive(Debug)]
struct SymlinkRefused;

impl fmt::Display for SymlinkRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("symbolic link refused")
    }
}

impl std::error::Error for SymlinkRefused {}

/// Open flags that refuse a symbolic link as the last component.
#[cfg(unix)]
fn no_follow(o: &mut std::fs::OpenOptions) -> &mut std::fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    o.custom_flags(libc::O_NOFOLLOW)
}

#[cfg(not(unix))]
fn no_follow(o: &mut std::fs::OpenOptions) -> &mut std::fs::OpenOptions {
    o
}

impl FsPaths {
    /// The file of `key` (keys are validated book paths or internal blob keys: relative, no
    /// `..`, no empty segments).
    fn file(&self, key: &str) -> std::path::PathBuf {
        self.root.join(key)
    }

    /// Refuse `key` when an existing component of it below the root is a symbolic link (a link
    /// planted in the store would send reads and writes outside it). Opens add `O_NOFOLLOW`.
    fn refuse_symlinks(&self, key: &str) -> std::io::Result<()> {
        let mut p = self.root.clone();
        for seg in key.split('/').filter(|s| !s.is_empty()) {
            p.push(seg);
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(std::io::Error::other(SymlinkRefused));
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Keys (relative to the root) of every symbolic link under `prefix`, without following any.
    fn find_symlinks(&self, prefix: &str) -> std::io::Result<Vec<String>> {
        let mut found = Vec::new();
        self.walk(prefix, &mut |key, ft, _| {
            if ft.is_symlink() {
                found.push(key);
            }
        })?;
        found.sort();
        Ok(found)
    }

    /// Every regular file under the directory `prefix` (`""` or ending in `/`) with its size,
    /// links skipped, never followed.
    fn list_files(&self, prefix: &str) -> std::io::Result<Vec<(String, u64)>> {
        let mut files = Vec::new();
        self.walk(prefix, &mut |key, ft, len| {
            if ft.is_file() {
                files.push((key, len));
            }
        })?;
        files.sort();
        Ok(files)
    }

    /// Visit every entry below the directory `prefix` (not following links): `(key, type, size)`.
    fn walk(
        &self,
        prefix: &str,
        visit: &mut dyn FnMut(String, std::fs::FileType, u64),
    ) -> std::io::Result<()> {
        let start = self.root.join(prefix);
        if let Ok(m) = std::fs::symlink_metadata(&start)
            && m.file_type().is_symlink()
        {
            visit(prefix.trim_end_matches('/').to_string(), m.file_type(), 0);
            return Ok(());
        }
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                let ft = entry.file_type()?;
                let path = entry.path();
                let Ok(rel) = path.strip_prefix(&self.root) else {
                    continue;
                };
                let key = rel.to_string_lossy().replace('\\', "/");
                if ft.is_dir() {
                    stack.push(path);
                    continue;
                }
                let len = if ft.is_file() {
                    entry.metadata().map(|m| m.len()).unwrap_or(0)
                } else {
                    0
                };
                visit(key, ft, len);
            }
        }
        Ok(())
    }

    /// Write `bytes` to `key` atomically: a new temp file, fsync (unless `!durable`), rename over
    /// the target. Skipped when `skip_if_size` matches the size of an existing target (blobs are
    /// content-addressed).
    fn write_atomic(
        &self,
        key: &str,
        bytes: &[u8],
        skip_if_size: bool,
        durable: bool,
    ) -> std::io::Result<()> {
        use std::io::Write;
        self.refuse_symlinks(key)?;
        let target = self.file(key);
        if skip_if_size
            && let Ok(m) = std::fs::symlink_metadata(&target)
            && m.len() == bytes.len() as u64
        {
            return Ok(());
        }
        let name = key.rsplit('/').next().unwrap_or("object");
        let tmp = self
            .tmp
            .join(format!("{name}.{}", uuid::Uuid::new_v4().simple()));
        let res = (|| {
            let mut f = with_parent_dir(&tmp, || {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&tmp)
            })?;
            f.write_all(bytes)?;
            if durable {
                f.sync_all()?;
            }
            with_parent_dir(&target, || std::fs::rename(&tmp, &target))?;
            if durable {
                // The rename (and any directory it needed) is durable only once the directories
                // naming it are.
                self.sync_dirs_of(&target)?;
            }
            Ok(())
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res
    }

    /// fsync every directory from `file`'s parent up to the store's root.
    fn sync_dirs_of(&self, file: &std::path::Path) -> std::io::Result<()> {
        let mut dir = file.parent();
        while let Some(d) = dir {
            std::fs::File::open(d)?.sync_all()?;
            if d == self.root {
                break;
            }
            dir = d.parent().filter(|p| p.starts_with(&self.root));
        }
        Ok(())
    }

    /// Copy `from` over `to` (creating `to`'s directory), rewriting `to` in place: its blocks are
    /// overwritten and the length set afterwards, instead of truncating it to zero first. On
    /// ext4 a truncate-to-zero followed by a rewrite makes `close` force the new blocks to disk
    /// (`auto_da_alloc`) and frees the old ones (a discard on `discard` mounts): measured at
    /// about a tenth of a write_content's server time. A reader of the canonical file may see a
    /// mix while it is rewritten, as it could see a short file before; the service's own reads
    /// use the blobs.
    fn copy(&self, from: &str, to: &str) -> std::io::Result<()> {
        self.refuse_symlinks(from)?;
        self.refuse_symlinks(to)?;
        let target = self.file(to);
        let mut src = no_follow(std::fs::OpenOptions::new().read(true)).open(self.file(from))?;
        let mut dst = with_parent_dir(&target, || {
            no_follow(&mut std::fs::OpenOptions::new())
                .write(true)
                .create(true)
                .truncate(false)
                .open(&target)
        })?;
        let n = std::io::copy(&mut src, &mut dst)?;
        dst.set_len(n)
    }

    /// Read the whole file into a buffer of its size.
    fn read_all(&self, key: &str) -> std::io::Result<Bytes> {
        use std::io::Read;
        self.refuse_symlinks(key)?;
        let mut f = no_follow(std::fs::OpenOptions::new().read(true)).open(self.file(key))?;
        let len = f.metadata()?.len();
        let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        f.read_to_end(&mut buf)?;
        Ok(Bytes::from(buf))
    }

    /// Read exactly the first `size` bytes of `key` (fewer if the file is shorter).
    fn read_sized(&self, key: &str, size: u64) -> std::io::Result<Bytes> {
        use std::io::Read;
        self.refuse_symlinks(key)?;
        let f = no_follow(std::fs::OpenOptions::new().read(true)).open(self.file(key))?;
        let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        f.take(size).read_to_end(&mut buf)?;
        Ok(Bytes::from(buf))
    }
}

/// `syncfs(2)` on the filesystem holding `f`.
#[cfg(target_os = "linux")]
fn sync_filesystem(f: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `f` is an open file for the duration of the call; syncfs only reads the descriptor.
    if unsafe { libc::syncfs(f.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Elsewhere there is no syncfs: callers fsync each blob instead (see
/// [`Storage::can_defer_blob_sync`]).
#[cfg(not(target_os = "linux"))]
fn sync_filesystem(_f: &std::fs::File) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// Run `op`, which creates `path`; when `path`'s directory does not exist yet, create it and run
/// `op` again (directories are created on first use instead of checked on every write).
fn with_parent_dir<T>(
    path: &std::path::Path,
    mut op: impl FnMut() -> std::io::Result<T>,
) -> std::io::Result<T> {
    match op() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            op()
        }
        other => other,
    }
}

/// Map a local-file error like an OpenDAL one (no paths in the message).
fn fs_error(e: std::io::Error) -> PfsError {
    let link = e.get_ref().is_some_and(|r| r.is::<SymlinkRefused>())
        || e.raw_os_error() == Some(libc::ELOOP);
    if link {
        tracing::warn!(error = %e, "storage: a symbolic link in the store was refused");
        return PfsError::Storage(
            "a symbolic link in the store was refused (the fs backend never follows links; \
             run `panaversity fs fsck`)"
                .into(),
        );
    }
    if e.kind() == std::io::ErrorKind::NotFound {
        PfsError::NotFound {
            what: "object".into(),
        }
    } else {
        tracing::warn!(error = %e, "storage error");
        PfsError::storage_failed(e.kind())
    }
}

/// Run a blocking local-file operation on the blocking pool.
async fn fs_blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(fs_error),
        Err(e) => Err(PfsError::Storage(format!("storage task failed: {e}"))),
    }
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Storage")
            .field("backend", &self.backend)
            .field("faults", &self.faults.is_some())
            .finish()
    }
}

fn config_error(e: opendal::Error) -> PfsError {
    PfsError::InvalidInput(format!("storage configuration: {}", e.kind()))
}

impl Storage {
    /// Build the store with default retry/timeout options.
    pub fn new(cfg: &StorageConfig) -> Result<Storage> {
        Storage::with_options(cfg, &StorageOptions::default())
    }

    /// Build the store with explicit retry/timeout options.
    pub fn with_options(cfg: &StorageConfig, opts: &StorageOptions) -> Result<Storage> {
        init_process();
        let mut fs = None;
        let (op, backend) = match cfg {
            StorageConfig::Fs { root } => {
                let root_s = root.to_string_lossy().to_string();
                let tmp = root.join("_pfs").join("tmp");
                fs = Some(Arc::new(FsPaths {
                    root: root.clone(),
                    tmp: tmp.clone(),
                }));
                let b = opendal::services::Fs::default()
                    .root(&root_s)
                    .atomic_write_dir(&tmp.to_string_lossy());
                (Operator::new(b).map_err(config_error)?, "fs")
            }
            StorageConfig::Memory => (
                Operator::new(opendal::services::Memory::default()).map_err(config_error)?,
                "memory",
            ),
            StorageConfig::S3 {
                bucket,
                region,
                endpoint,
                access_key_id,
                secret_access_key,
                root,
            } => {
                let mut b = opendal::services::S3::default()
                    .bucket(bucket)
                    .region(region.as_deref().unwrap_or("auto"))
                    .root(root.as_deref().unwrap_or("/"));
                if let Some(ep) = endpoint {
                    b = b.endpoint(ep);
                }
                if let (Some(ak), Some(sk)) = (access_key_id, secret_access_key) {
                    b = b
                        .access_key_id(ak)
                        .secret_access_key(sk)
                        .disable_config_load()
                        .disable_ec2_metadata();
                }
                (Operator::new(b).map_err(config_error)?, "s3")
            }
        };
        let op = op
            .layer(
                TimeoutLayer::new()
                    .with_timeout(opts.timeout)
                    .with_io_timeout(opts.io_timeout),
            )
            .layer(
                RetryLayer::new()
                    .with_jitter()
                    .with_max_times(opts.retry_max_times)
                    .with_min_delay(opts.retry_min_delay)
                    .with_max_delay(opts.retry_max_delay),
            );
        Ok(Storage {
            op,
            backend,
            faults: None,
            fs,
        })
    }

    /// The same store with a fault plan attached (tests). Clones share the plan.
    pub fn with_faults(mut self, plan: Arc<FaultPlan>) -> Storage {
        self.faults = Some(plan);
        self
    }

    /// The attached fault plan, if any.
    pub fn faults(&self) -> Option<&Arc<FaultPlan>> {
        self.faults.as_ref()
    }

    /// `fs`, `s3` or `memory` (recorded in the journal's `storage_backend`).
    pub fn backend_name(&self) -> &'static str {
        self.backend
    }

    /// The underlying operator (for streaming readers/writers and listings).
    pub fn operator(&self) -> &Operator {
        &self.op
    }

    #[inline]
    fn fault_before(&self, op: FaultOp, key: &str) -> Result<Option<bool>> {
        match &self.faults {
            None => Ok(None),
            Some(plan) => match plan.decide(op) {
                Some(false) => Err(injected_error(op, key)),
                other => Ok(other),
            },
        }
    }

    #[inline]
    fn fault_after(decision: Option<bool>, op: FaultOp, key: &str) -> Result<()> {
        if decision == Some(true) {
            Err(injected_error(op, key))
        } else {
            Ok(())
        }
    }

    /// On the fs backend, refuse a key that runs through a symbolic link.
    fn refuse_symlinks(&self, key: &str) -> Result<()> {
        match &self.fs {
            Some(fs) => fs.refuse_symlinks(key).map_err(fs_error),
            None => Ok(()),
        }
    }

    /// Keys of the symbolic links under `prefix` (fs backend; `None` elsewhere).
    pub async fn find_symlinks(&self, prefix: &str) -> Option<Result<Vec<String>>> {
        let fs = self.fs.clone()?;
        let prefix = prefix.to_string();
        Some(fs_blocking(move || fs.find_symlinks(&prefix)).await)
    }

    /// Remove the symbolic link at `key` itself (never its target; fs backend only).
    pub async fn remove_symlink(&self, key: &str) -> Result<()> {
        let Some(fs) = self.fs.clone() else {
            return Ok(());
        };
        let path = fs.file(key);
        fs_blocking(move || {
            if std::fs::symlink_metadata(&path)?.file_type().is_symlink() {
                std::fs::remove_file(&path)?;
            }
            Ok(())
        })
        .await
    }

    /// Write `bytes` at `key` (replacing any object there).
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<()> {
        self.refuse_symlinks(key)?;
        let d = self.fault_before(FaultOp::Put, key)?;
        self.op.write(key, bytes).await?;
        Self::fault_after(d, FaultOp::Put, key)
    }

    /// Write a derived object that can be recomputed (no fsync on local files: the caller makes
    /// it durable with [`Storage::sync_all_blocking`] before anything names it). Local files go
    /// through one blocking call (OpenDAL's fs writer copies the bytes through several buffers).
    pub async fn put_unsynced(&self, key: &str, bytes: Bytes) -> Result<()> {
        let Some(fs) = &self.fs else {
            return self.put(key, bytes).await;
        };
        let d = self.fault_before(FaultOp::Put, key)?;
        let (fs, owned) = (fs.clone(), key.to_string());
        fs_blocking(move || fs.write_atomic(&owned, &bytes, false, false)).await?;
        Self::fault_after(d, FaultOp::Put, key)
    }

    /// Read the whole object; `NOT_FOUND` when missing. On the fs backend the buffer is the
    /// file's size: OpenDAL's unsized fs read hands back a slice of a 2 MiB buffer, which pinned
    /// 2 MiB per small blob kept in the blob cache (a 200 MB import peaked at 411 MB instead of
    /// 92 MB).
    pub async fn get(&self, key: &str) -> Result<Bytes> {
        self.refuse_symlinks(key)?;
        self.fault_before(FaultOp::Get, key)?;
        if let Some(fs) = &self.fs {
            let (fs, key) = (fs.clone(), key.to_string());
            return fs_blocking(move || fs.read_all(&key)).await;
        }
        Ok(self.op.read(key).await?.to_bytes())
    }

    /// Read an object whose size is known (from the journal). Asking for exactly `size` bytes
    /// lets the backend allocate just that much: an unsized read makes OpenDAL's fs reader zero-fill
    /// a 2 MiB buffer per call, which dominated small-file reads.
    pub async fn get_sized(&self, key: &str, size: u64) -> Result<Bytes> {
        if size == 0 {
            return self.get(key).await;
        }
        self.fault_before(FaultOp::Get, key)?;
        if let Some(fs) = &self.fs {
            let (fs, key) = (fs.clone(), key.to_string());
            return fs_blocking(move || fs.read_sized(&key, size)).await;
        }
        Ok(self
            .op
            .read_with(key)
            .range(0..size)
            .content_length_hint(size)
            .await?
            .to_bytes())
    }

    /// Read the whole object, `None` when missing.
    pub async fn get_opt(&self, key: &str) -> Result<Option<Bytes>> {
        match self.get(key).await {
            Ok(b) => Ok(Some(b)),
            Err(PfsError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Size of the object, `None` when missing.
    pub async fn stat(&self, key: &str) -> Result<Option<u64>> {
        self.refuse_symlinks(key)?;
        match self.op.stat(key).await {
            Ok(m) => Ok(Some(m.content_length())),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Delete `key`; deleting a missing object succeeds.
    pub async fn delete(&self, key: &str) -> Result<()> {
        self.refuse_symlinks(key)?;
        let d = self.fault_before(FaultOp::Delete, key)?;
        match self.op.delete(key).await {
            Ok(()) => {}
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        Self::fault_after(d, FaultOp::Delete, key)
    }

    /// Copy `from` to `to`: server-side where the backend supports it (S3 `CopyObject`, a local
    /// file copy on fs: no fsync, since canonical objects can always be re-materialized from
    /// their durable blob), else a streamed read into a write (memory).
    pub async fn copy(&self, from: &str, to: &str) -> Result<()> {
        if self.fs.is_some() {
            let (from_k, to_k) = (from.to_string(), to.to_string());
            return self
                .on_blocking_thread(move |s| s.copy_blocking(&from_k, &to_k))
                .await;
        }
        let d = self.fault_before(FaultOp::Copy, to)?;
        if self.op.info().capability().copy {
            self.op.copy(from, to).await?;
        } else {
            let mut stream = self.op.reader(from).await?.into_stream(..).await?;
            let mut w = self.op.writer(to).await?;
            while let Some(chunk) = stream.next().await {
                let res = match chunk {
                    Ok(buf) => w.write(buf).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = res {
                    let _ = w.abort().await;
                    return Err(e.into());
                }
            }
            w.close().await?;
        }
        Self::fault_after(d, FaultOp::Copy, to)
    }

    /// A streaming reader over the whole object (bounded memory).
    pub async fn reader(&self, key: &str) -> Result<opendal::FuturesAsyncReader> {
        self.refuse_symlinks(key)?;
        self.fault_before(FaultOp::Get, key)?;
        let r = self.op.reader_with(key).chunk(256 * 1024).await?;
        Ok(r.into_futures_async_read(..).await?)
    }

    /// Stream the object through sha256: `(hex, size)`, or `None` when missing.
    pub async fn hash_object(&self, key: &str) -> Result<Option<(String, u64)>> {
        self.refuse_symlinks(key)?;
        let reader = match self.op.reader(key).await {
            Ok(r) => r,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut stream = match reader.into_stream(..).await {
            Ok(s) => s,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut h = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let buf = match chunk {
                Ok(b) => b,
                // Readers open lazily: a missing object shows up at the first read.
                Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            for b in buf {
                size += b.len() as u64;
                h.update(&b);
            }
        }
        Ok(Some((hex::encode(h.finalize()), size)))
    }

    /// All objects (not directories) under `prefix` (e.g. `books/`), recursively: `(key, size)`.
    pub async fn list_files(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        if let Some(fs) = self.fs.clone()
            && (prefix.is_empty() || prefix.ends_with('/'))
        {
            // Our own walk: links are skipped, never followed (fsck reports them).
            let prefix = prefix.to_string();
            return fs_blocking(move || fs.list_files(&prefix)).await;
        }
        let entries = match self.op.list_with(prefix).recursive(true).await {
            Ok(v) => v,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        Ok(entries
            .into_iter()
            .filter(|e| e.metadata().is_file() && !e.path().ends_with('/'))
            .map(|e| {
                let size = e.metadata().content_length();
                (e.path().to_string(), size)
            })
            .collect())
    }

    /// Store `bytes` as the immutable blob `sha256` unless an object of that size is already
    /// there. The caller computed `sha256` from `bytes`.
    pub async fn put_blob(&self, sha256: &str, bytes: Bytes) -> Result<()> {
        self.put_blob_with(sha256, bytes, true).await
    }

    /// [`Storage::put_blob`]; with `durable: false` a local file is not fsynced (see
    /// [`Storage::put_blob_blocking`]). Other backends ignore the flag.
    pub async fn put_blob_with(&self, sha256: &str, bytes: Bytes, durable: bool) -> Result<()> {
        if self.fs.is_some() {
            let sha = sha256.to_string();
            return self
                .on_blocking_thread(move |s| s.put_blob_blocking(&sha, &bytes, durable))
                .await;
        }
        let key = blob_key(sha256);
        if self.stat(&key).await? == Some(bytes.len() as u64) {
            return Ok(());
        }
        self.put(&key, bytes).await
    }

    /// Run one of the `*_blocking` methods on the blocking pool.
    async fn on_blocking_thread<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Storage) -> Option<Result<T>> + Send + 'static,
    ) -> Result<T> {
        let this = self.clone();
        match tokio::task::spawn_blocking(move || f(&this)).await {
            Ok(Some(r)) => r,
            Ok(None) => Err(PfsError::Internal(
                "a local-file operation on another backend".into(),
            )),
            Err(e) => Err(PfsError::Storage(format!("storage task failed: {e}"))),
        }
    }

    /// Whether blobs may be written without fsync and made durable later by
    /// [`Storage::sync_all_blocking`] (local files on Linux).
    pub fn can_defer_blob_sync(&self) -> bool {
        self.fs.is_some() && cfg!(target_os = "linux")
    }

    /// Whether this is the local-file backend, whose `*_blocking` methods work.
    pub fn is_local_fs(&self) -> bool {
        self.fs.is_some()
    }

    /// [`Storage::put_blob`] on the calling thread, for the local-file backend only (`None`
    /// otherwise). Call it from a blocking task, never from async code. With `durable: false`
    /// the file is not fsynced: the caller keeps the bytes durable elsewhere until
    /// [`Storage::sync_all_blocking`] has run (see `pfs::engine`'s unsynced blobs).
    pub fn put_blob_blocking(
        &self,
        sha256: &str,
        bytes: &[u8],
        durable: bool,
    ) -> Option<Result<()>> {
        let fs = self.fs.as_ref()?;
        let key = blob_key(sha256);
        Some((|| {
            let d = self.fault_before(FaultOp::Put, &key)?;
            fs.write_atomic(&key, bytes, true, durable)
                .map_err(fs_error)?;
            Self::fault_after(d, FaultOp::Put, &key)
        })())
    }

    /// [`Storage::stat`] on the calling thread (local-file backend; `None` otherwise).
    pub fn stat_blocking(&self, key: &str) -> Option<Result<Option<u64>>> {
        let fs = self.fs.as_ref()?;
        if let Err(e) = fs.refuse_symlinks(key) {
            return Some(Err(fs_error(e)));
        }
        Some(match std::fs::symlink_metadata(fs.file(key)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(fs_error(e)),
        })
    }

    /// [`Storage::get_sized`] on the calling thread (local-file backend; `None` otherwise).
    pub fn get_sized_blocking(&self, key: &str, size: u64) -> Option<Result<Bytes>> {
        let fs = self.fs.as_ref()?;
        Some(
            self.fault_before(FaultOp::Get, key)
                .and_then(|_| fs.read_sized(key, size).map_err(fs_error)),
        )
    }

    /// Make the blob `sha256` hold exactly `bytes` (local-file backend; `None` otherwise): keep
    /// it if its content hashes to `sha256`, else write it again durably. Whether it was
    /// rewritten. For the repair of blobs written without fsync before a crash.
    pub fn restore_blob_blocking(&self, sha256: &str, bytes: &[u8]) -> Option<Result<bool>> {
        let fs = self.fs.as_ref()?;
        let key = blob_key(sha256);
        Some((|| {
            if let Ok(have) = std::fs::read(fs.file(&key))
                && have.len() == bytes.len()
                && sha256_hex(&have) == sha256
            {
                return Ok(false);
            }
            fs.write_atomic(&key, bytes, false, true)
                .map_err(fs_error)?;
            Ok(true)
        })())
    }

    /// Flush everything written to the local-file store's filesystem to disk (`syncfs(2)`), for
    /// the local-file backend only (`None` otherwise). Call it from a blocking task.
    pub fn sync_all_blocking(&self) -> Option<Result<()>> {
        let fs = self.fs.as_ref()?;
        Some((|| {
            let dir = std::fs::File::open(&fs.root).map_err(fs_error)?;
            sync_filesystem(&dir).map_err(fs_error)
        })())
    }

    /// [`Storage::copy`] on the calling thread, for the local-file backend only (`None`
    /// otherwise). Call it from a blocking task, never from async code.
    pub fn copy_blocking(&self, from: &str, to: &str) -> Option<Result<()>> {
        let fs = self.fs.as_ref()?;
        Some((|| {
            let d = self.fault_before(FaultOp::Copy, to)?;
            fs.copy(from, to).map_err(fs_error)?;
            Self::fault_after(d, FaultOp::Copy, to)
        })())
    }

    /// Cheap reachability probe (for readiness checks).
    pub async fn check(&self) -> Result<()> {
        self.op.check().await.map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_keys_are_sharded() {
        let sha = sha256_hex(b"hello");
        assert!(is_sha256_hex(&sha));
        assert_eq!(
            blob_key(&sha),
            format!("_pfs/blobs/sha256/{}/{}", &sha[..2], sha)
        );
        assert!(!is_sha256_hex("ABC"));
        assert!(!is_sha256_hex(&"G".repeat(64)));
    }

    #[tokio::test]
    async fn memory_round_trip_and_faults() {
        let plan = FaultPlan::new();
        let s = Storage::new(&StorageConfig::Memory)
            .unwrap()
            .with_faults(plan.clone());
        s.put("a/b", Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(s.get("a/b").await.unwrap(), Bytes::from_static(b"x"));
        plan.fail_next(1);
        assert_eq!(
            s.get("a/b").await.unwrap_err().code(),
            crate::ErrorCode::StorageUnavailable
        );
        assert_eq!(plan.injected(), 1);
        assert!(s.get("a/b").await.is_ok());
        s.copy("a/b", "c/d").await.unwrap();
        assert_eq!(
            s.hash_object("c/d").await.unwrap().unwrap().0,
            sha256_hex(b"x")
        );
        s.delete("a/b").await.unwrap();
        s.delete("a/b").await.unwrap();
        assert!(s.get_opt("a/b").await.unwrap().is_none());
        assert_eq!(
            s.list_files("c/").await.unwrap(),
            vec![("c/d".to_string(), 1)]
        );
    }
}
