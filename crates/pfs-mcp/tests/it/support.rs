//! Test server: engine on a fresh database + memory storage, the MCP router behind a tiny
//! middleware that builds the caller identity from `x-test-subject` / `x-test-scopes` headers
//! (standing in for the platform auth middleware).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use pfs::{BookId, Engine, EngineConfig, Profile, Storage, StorageConfig};
use pfs_mcp::{PfsMcpConfig, PfsMcpState, mcp_router, mcp_router_with_auth};
use platform::auth::Authenticator;
use platform::db::{DbKind, TestDb};
use platform::{AuthMethod, Identity, Scopes};
use serde_json::{Value, json};

/// The book every test server starts with (strict profile).
pub const BOOK: &str = "test-book";

/// Asset size limit of the test servers (so PAYLOAD_TOO_LARGE is cheap to trigger).
pub const MAX_ASSET: u64 = 64 * 1024;

pub struct TestServer {
    pub base: String,
    pub engine: Engine,
    pub state: PfsMcpState,
    pub kind: DbKind,
    pub db: Arc<TestDb>,
    pub storage: Storage,
    _task: tokio::task::JoinHandle<()>,
}

/// An identity as the auth middleware would build it.
pub fn identity(subject: &str, scopes: &str) -> Identity {
    Identity {
        subject: subject.into(),
        scopes: Scopes::parse(scopes),
        name: None,
        email: None,
        organization: None,
        method: AuthMethod::Jwt,
        acting_user: None,
    }
}

async fn test_identity(mut req: Request, next: Next) -> Response {
    let h = req.headers();
    let subject = h
        .get("x-test-subject")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let scopes = h
        .get("x-test-scopes")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("read")
        .to_string();
    if let Some(s) = subject {
        req.extensions_mut().insert(identity(&s, &scopes));
    }
    next.run(req).await
}

/// Every database the tests run on: SQLite always, PostgreSQL when configured (mandatory with
/// REQUIRE_SERVICES=1).
pub async fn databases() -> Vec<TestDb> {
    TestDb::all().await
}

/// Start the router on 127.0.0.1:0 over `db`, with the header-based test identity.
pub async fn start(db: TestDb) -> TestServer {
    start_with(db, None).await
}

/// Start the router; with `auth`, through `mcp_router_with_auth` (the platform authenticator)
/// instead of the header-based test identity.
pub async fn start_with(db: TestDb, auth: Option<Arc<Authenticator>>) -> TestServer {
    let storage = Storage::new(&StorageConfig::Memory).expect("memory storage");
    start_on(Arc::new(db), storage, auth, EngineConfig::default()).await
}

/// A second server instance on the same database and storage as `of` (its own engine and
/// port), like a replica behind a load balancer.
pub async fn start_replica(of: &TestServer) -> TestServer {
    start_on(
        of.db.clone(),
        of.storage.clone(),
        None,
        EngineConfig::default(),
    )
    .await
}

/// Start the router over `db` with engine settings `cfg` (e.g. fault hooks).
pub async fn start_on(
    db: Arc<TestDb>,
    storage: Storage,
    auth: Option<Arc<Authenticator>>,
    cfg: EngineConfig,
) -> TestServer {
    start_configured(db, storage, auth, cfg, |_| {}).await
}

/// [`start_on`] with the MCP settings adjusted by `tweak` (e.g. an archive time budget).
pub async fn start_configured(
    db: Arc<TestDb>,
    storage: Storage,
    auth: Option<Arc<Authenticator>>,
    cfg: EngineConfig,
    tweak: impl FnOnce(&mut PfsMcpConfig),
) -> TestServer {
    let engine = Engine::open(db.connect().await, storage.clone(), cfg)
        .await
        .expect("engine");
    engine
        .ensure_book(&BookId::parse(BOOK).unwrap(), Some(Profile::Strict))
        .await
        .expect("book");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let base = format!("http://{addr}");
    let mut config = PfsMcpConfig {
        public_base_url: base.clone(),
        archive_signing_key: b"test-signing-key".to_vec(),
        max_asset_bytes: MAX_ASSET,
        ..PfsMcpConfig::default()
    };
    tweak(&mut config);
    let state = PfsMcpState::new(engine.clone(), config);
    let app = match auth {
        Some(auth) => mcp_router_with_auth(state.clone(), auth),
        None => mcp_router(state.clone()).layer(axum::middleware::from_fn(test_identity)),
    };
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    TestServer {
        base,
        engine,
        state,
        kind: db.kind,
        db,
        storage,
        _task: task,
    }
}

/// A JSON-RPC client for `/mcp` with a fixed identity.
pub struct Rpc {
    pub http: reqwest::Client,
    pub url: String,
    pub subject: Option<String>,
    pub scopes: String,
}

impl Rpc {
    pub fn new(server: &TestServer, subject: Option<&str>, scopes: &str) -> Rpc {
        Rpc {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            url: format!("{}/mcp", server.base),
            subject: subject.map(str::to_string),
            scopes: scopes.to_string(),
        }
    }

    /// POST one JSON-RPC request; returns (HTTP status, body JSON or Null).
    pub async fn raw(&self, body: Value) -> (u16, Value) {
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .json(&body);
        if let Some(s) = &self.subject {
            req = req
                .header("x-test-subject", s)
                .header("x-test-scopes", &self.scopes);
        }
        let resp = req.send().await.expect("POST /mcp");
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = resp.text().await.expect("body");
        let value = if ctype.starts_with("text/event-stream") {
            // Take the last `data:` line carrying a JSON-RPC response.
            text.lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
                .next_back()
                .unwrap_or(Value::Null)
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        };
        (status, value)
    }

    /// `tools/call`; returns the `result` object.
    pub async fn call(&self, tool: &str, arguments: Value) -> Value {
        let (status, v) = self
            .raw(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                         "params": {"name": tool, "arguments": arguments}}))
            .await;
        assert_eq!(status, 200, "tools/call {tool}: {v}");
        v.get("result")
            .cloned()
            .unwrap_or_else(|| panic!("no result for {tool}: {v}"))
    }

    /// A call that must succeed: returns structuredContent (and checks text == structuredContent).
    pub async fn ok(&self, tool: &str, arguments: Value) -> Value {
        let r = self.call(tool, arguments).await;
        assert_eq!(r["isError"], json!(false), "{tool} failed: {r}");
        let text: Value = serde_json::from_str(r["content"][0]["text"].as_str().expect("text"))
            .expect("json text");
        assert_eq!(
            text, r["structuredContent"],
            "{tool}: text and structuredContent differ"
        );
        r["structuredContent"].clone()
    }

    /// A call that must fail with `code`: returns the `error` object.
    pub async fn err(&self, tool: &str, arguments: Value, code: &str) -> Value {
        let r = self.call(tool, arguments).await;
        assert_eq!(
            r["isError"],
            json!(true),
            "{tool} should fail with {code}: {r}"
        );
        let body: Value = serde_json::from_str(r["content"][0]["text"].as_str().expect("text"))
            .expect("json error");
        assert_eq!(body["error"]["code"], json!(code), "{tool}: {body}");
        body["error"].clone()
    }
}

/// A correctly signed archive URL that expired a minute ago.
pub fn expired_url(server: &TestServer, scope: &str) -> String {
    let expires = chrono::Utc::now().timestamp() - 60;
    let sig = pfs_mcp::sign::sign(
        &server.state.config.archive_signing_key,
        BOOK,
        scope,
        None,
        expires,
    );
    format!(
        "{}/books/{BOOK}/archive?scope={scope}&expires={expires}&sig={sig}",
        server.base
    )
}
