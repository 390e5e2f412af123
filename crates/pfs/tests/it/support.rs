//! Shared helpers for the pfs integration tests: engines on every configured database, an
//! in-process S3 server (s3s-fs), and small constructors.

use std::net::SocketAddr;

use bytes::Bytes;
use pfs::engine::{Actor, Engine, EngineConfig};
use pfs::storage::{Storage, StorageConfig};
use pfs::{BookId, BookPath, Namespace, Profile, UserId};
use platform::db::{DbKind, TestDb};

/// Process setup (crypto provider, HTTP transport); idempotent.
pub fn init() {
    pfs::storage::init_process();
}

/// An engine plus what keeps its resources alive.
pub struct TestEngine {
    pub engine: Engine,
    pub kind: DbKind,
    pub test_db: TestDb,
    pub _dir: Option<tempfile::TempDir>,
}

/// Open an engine over `test_db` with `storage` and `cfg`.
pub async fn open(test_db: &TestDb, storage: Storage, cfg: EngineConfig) -> Engine {
    Engine::open(test_db.connect().await, storage, cfg)
        .await
        .expect("open engine")
}

/// One engine per configured database (SQLite always, PostgreSQL when configured or required),
/// each with memory storage.
pub async fn engines_memory(cfg: EngineConfig) -> Vec<TestEngine> {
    init();
    let mut out = Vec::new();
    for t in TestDb::all().await {
        let storage = Storage::new(&StorageConfig::Memory).expect("memory storage");
        let engine = open(&t, storage, cfg.clone()).await;
        out.push(TestEngine {
            engine,
            kind: t.kind,
            test_db: t,
            _dir: None,
        });
    }
    out
}

/// One engine per configured database, each with fs storage in a fresh temp dir.
pub async fn engines_fs(cfg: EngineConfig) -> Vec<TestEngine> {
    init();
    let mut out = Vec::new();
    for t in TestDb::all().await {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::new(&StorageConfig::Fs {
            root: dir.path().to_path_buf(),
        })
        .expect("fs storage");
        let engine = open(&t, storage, cfg.clone()).await;
        out.push(TestEngine {
            engine,
            kind: t.kind,
            test_db: t,
            _dir: Some(dir),
        });
    }
    out
}

/// A running in-process S3 server (s3s-fs); the bucket is a directory under its root.
pub struct S3Server {
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    pub addr: SocketAddr,
    pub _root: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl S3Server {
    /// The `StorageConfig` that reaches this server.
    pub fn config(&self) -> StorageConfig {
        self.config_with_root("/")
    }

    /// The `StorageConfig` for a key prefix (`root`) inside the bucket, so tests can share one
    /// server without seeing each other's objects.
    pub fn config_with_root(&self, root: &str) -> StorageConfig {
        StorageConfig::S3 {
            bucket: self.bucket.clone(),
            region: Some("us-east-1".into()),
            endpoint: Some(self.endpoint.clone()),
            access_key_id: Some(self.access_key.clone()),
            secret_access_key: Some(self.secret_key.clone()),
            root: Some(root.into()),
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Start s3s-fs on 127.0.0.1:0 with one bucket `bucket`, on the current tokio runtime.
pub async fn start_s3(bucket: &str) -> S3Server {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder as ConnBuilder;
    use s3s::auth::SimpleAuth;
    use s3s::service::S3ServiceBuilder;

    init();
    let root = tempfile::tempdir().expect("s3 root");
    std::fs::create_dir_all(root.path().join(bucket)).expect("create bucket dir");
    let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs");
    let (ak, sk) = (
        "pfs-test-ak".to_string(),
        "pfs-test-sk-0123456789".to_string(),
    );
    let mut b = S3ServiceBuilder::new(fs);
    b.set_auth(SimpleAuth::from_single(ak.clone(), sk.clone()));
    let service = b.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                break;
            };
            let service = service.clone();
            tokio::spawn(async move {
                let _ = ConnBuilder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    S3Server {
        endpoint: format!("http://{addr}"),
        bucket: bucket.to_string(),
        access_key: ak,
        secret_key: sk,
        addr,
        _root: root,
        task,
    }
}

pub fn actor(id: &str) -> Actor {
    Actor::new(id).expect("actor")
}

pub fn book(id: &str) -> BookId {
    BookId::parse(id).expect("book id")
}

pub fn path(p: &str) -> BookPath {
    BookPath::parse(p).expect("book path")
}

pub fn user(u: &str) -> UserId {
    UserId::parse(u).expect("user id")
}

pub fn overlay(u: &str) -> Namespace {
    Namespace::Overlay(user(u))
}

pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub fn sha(bytes: &[u8]) -> String {
    pfs::storage::sha256_hex(bytes)
}

/// Engine config with a given default profile.
pub fn cfg(profile: Profile) -> EngineConfig {
    EngineConfig {
        default_profile: profile,
        ..Default::default()
    }
}

/// For every journal row the canonical object and the blob hash to its sha256, and no object
/// under `books/` lacks a journal row (spec R2).
pub async fn assert_journal_equals_storage(engine: &Engine) {
    let report = engine.fsck(false).await.expect("fsck");
    assert!(
        report.issues.is_empty(),
        "journal and storage differ: {:#?}",
        report.issues
    );
}
