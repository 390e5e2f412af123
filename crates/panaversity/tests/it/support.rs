//! Test support: spawn the real `panaversity` binary (server, CLI, stdio) with a clean
//! environment and a temp data dir, talk to it over HTTP (MCP JSON-RPC, ChatKit SSE), and stand up
//! the small local servers that replace external services (JWKS, an OpenAI-compatible LLM).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_panaversity");

/// A lesson of the embedded sample book.
pub const LESSON: &str = "content/01-Foundations/01-What-Is-A-Program/01-instructions.md";

/// The same lesson as the tutor names it (docs-relative, no extension).
pub const LESSON_DOC: &str = "01-Foundations/01-What-Is-A-Program/01-instructions";

/// The sample book's id.
pub const BOOK: &str = "sample-book";

/// How long a debug build may take to open the database, seed and listen.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// Bytes of a sample-book file as embedded in the binary (read from the source tree).
pub fn sample_bytes(book_path: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sample-book")
        .join(book_path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// A `Command` for the binary with a clean environment: only PATH/HOME survive, so a
/// `DATABASE_URL`, `REDIS_URL`, `OPENAI_API_KEY` or `RUST_LOG` of the test runner never leaks in.
pub fn command(cwd: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear();
    for k in ["PATH", "HOME", "TMPDIR"] {
        if let Some(v) = std::env::var_os(k) {
            c.env(k, v);
        }
    }
    c.env("RUST_BACKTRACE", "1");
    c.current_dir(cwd);
    c.kill_on_drop(true);
    c
}

/// Output of a finished CLI run.
#[derive(Debug)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// Exit code (panics on a signal).
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal: {self:?}"))
    }

    /// stdout parsed as one JSON document (the whole of stdout: nothing else may be printed).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}):\n--- stdout\n{}\n--- stderr\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// Run `panaversity --data-dir DATA ARGS…` with extra environment; waits up to 2 minutes.
pub async fn cli(data: &Path, env: &[(&str, &str)], args: &[&str]) -> CliOutput {
    let cwd = data.parent().unwrap_or(data);
    let mut c = command(cwd);
    c.arg("--data-dir").arg(data).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdin(Stdio::null());
    let out = tokio::time::timeout(Duration::from_secs(120), c.output())
        .await
        .unwrap_or_else(|_| panic!("panaversity {args:?} did not finish in 120 s"))
        .expect("run panaversity");
    CliOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Like [`cli`], asserting exit 0.
pub async fn cli_ok(data: &Path, env: &[(&str, &str)], args: &[&str]) -> CliOutput {
    let out = cli(data, env, args).await;
    assert_eq!(out.code(), 0, "panaversity {args:?} failed: {out:?}");
    out
}

/// A running `panaversity serve`.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub addr: SocketAddr,
    child: Child,
    log: PathBuf,
}

/// How to start a server.
#[derive(Clone, Debug, Default)]
pub struct ServerOpts {
    /// Extra arguments after `serve`.
    pub serve_args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Arguments before `serve` (after `--data-dir`), e.g. `--config f.toml`.
    pub global_args: Vec<String>,
    /// Omit `--data-dir` (the config file or environment gives it).
    pub no_data_dir: bool,
    /// Omit `--bind 127.0.0.1:0`.
    pub no_bind: bool,
}

impl ServerOpts {
    /// Dev mode (`--dev`).
    pub fn dev() -> ServerOpts {
        ServerOpts {
            serve_args: vec!["--dev".into()],
            ..Default::default()
        }
    }

    /// Add an environment variable.
    pub fn env(mut self, k: &str, v: &str) -> ServerOpts {
        self.env.push((k.into(), v.into()));
        self
    }
}

/// The address from the `panaversity ready: MCP at http://ADDR/mcp` log line, if logged yet.
fn ready_addr(log: &str) -> Option<SocketAddr> {
    let i = log.find("MCP at http://")? + "MCP at http://".len();
    let rest = &log[i..];
    let end = rest.find("/mcp")?;
    rest[..end].parse().ok()
}

impl Server {
    /// Start `panaversity --data-dir DATA serve --bind 127.0.0.1:0 …` and wait until
    /// `/health/ready` answers 200.
    pub async fn start(data: &Path, opts: ServerOpts) -> Server {
        Self::try_start(data, opts)
            .await
            .unwrap_or_else(|e| panic!("server did not start: {e}"))
    }

    /// Start; `Err(log)` when the process exits before it is ready.
    pub async fn try_start(data: &Path, opts: ServerOpts) -> Result<Server, String> {
        std::fs::create_dir_all(data).expect("data dir");
        let cwd = data.parent().unwrap_or(data);
        let log = cwd.join(format!(
            "server-{}.log",
            uuid_like(data.to_string_lossy().as_ref())
        ));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let mut c = command(cwd);
        if !opts.no_data_dir {
            c.arg("--data-dir").arg(data);
        }
        c.args(&opts.global_args).arg("serve");
        if !opts.no_bind {
            c.args(["--bind", "127.0.0.1:0"]);
        }
        c.args(&opts.serve_args);
        for (k, v) in &opts.env {
            c.env(k, v);
        }
        c.stdin(Stdio::null()).stdout(out).stderr(err);
        let mut child = c.spawn().expect("spawn panaversity serve");
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(a) = ready_addr(&text) {
                break a;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("exited with {status} before listening:\n{text}"));
            }
            if Instant::now() > deadline {
                return Err(format!("not listening after {START_TIMEOUT:?}:\n{text}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // A wildcard bind is reached through loopback.
        let addr = if addr.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], addr.port()))
        } else {
            addr
        };
        let base = format!("http://{addr}");
        let http = client();
        loop {
            if let Ok(r) = http.get(format!("{base}/health/ready")).send().await
                && r.status() == 200
            {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("exited with {status} before ready:\n{text}"));
            }
            if Instant::now() > deadline {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("not ready after {START_TIMEOUT:?}:\n{text}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Server {
            base,
            addr,
            child,
            log,
        })
    }

    /// Everything the server logged so far (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .expect("server pid")
    }

    /// Send SIGTERM.
    pub fn sigterm(&self) {
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM) failed");
    }

    /// Wait for the process to exit (up to `timeout`).
    pub async fn wait(&mut self, timeout: Duration) -> ExitStatus {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(s) => s.expect("wait for server"),
            Err(_) => panic!("server did not exit within {timeout:?}:\n{}", self.log()),
        }
    }

    /// SIGTERM and wait; asserts exit 0.
    pub async fn stop(mut self) {
        self.sigterm();
        let status = self.wait(Duration::from_secs(30)).await;
        assert!(
            status.success(),
            "server exited with {status}:\n{}",
            self.log()
        );
    }

    /// A JSON-RPC client for this server's `/mcp` with extra headers.
    pub fn mcp(&self, headers: &[(&str, &str)]) -> Mcp {
        Mcp {
            http: client(),
            url: format!("{}/mcp", self.base),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// A client bearing `token`.
    pub fn mcp_bearer(&self, token: &str) -> Mcp {
        self.mcp(&[("authorization", &format!("Bearer {token}"))])
    }
}

fn uuid_like(seed: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    seed.hash(&mut h);
    Instant::now().hash(&mut h);
    std::process::id().hash(&mut h);
    format!("{:016x}", h.finish())
}

/// An HTTP client (installs the rustls provider reqwest needs).
/// A ChatKit `threads.create` request body: one text message in `model`'s mode (`ask`/`teach`).
pub fn threads_create(text: &str, model: &str) -> serde_json::Value {
    serde_json::json!({"type": "threads.create", "params": {"input": {
        "content": [{"type": "input_text", "text": text}],
        "attachments": [], "inference_options": {"model": model}}}})
}

pub fn client() -> reqwest::Client {
    platform::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("reqwest client")
}

/// A raw HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

/// JSON-RPC over MCP Streamable HTTP (`POST /mcp`).
pub struct Mcp {
    pub http: reqwest::Client,
    pub url: String,
    pub headers: Vec<(String, String)>,
}

impl Mcp {
    /// POST one JSON-RPC message; the body is the JSON answer (or the last JSON `data:` event of
    /// an SSE answer), `Null` when empty.
    pub async fn raw(&self, body: Value) -> Answer {
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .json(&body);
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = req.send().await.expect("POST /mcp");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let ctype = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = resp.text().await.expect("body");
        let body = if ctype.starts_with("text/event-stream") {
            text.lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
                .next_back()
                .unwrap_or(Value::Null)
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    /// `tools/list` names.
    pub async fn tool_names(&self) -> Vec<String> {
        let a = self
            .raw(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}))
            .await;
        assert_eq!(a.status, 200, "tools/list: {a:?}");
        a.body["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("no tools: {a:?}"))
            .iter()
            .filter_map(|t| t["name"].as_str().map(str::to_string))
            .collect()
    }

    /// `tools/call`; the HTTP answer.
    pub async fn call_raw(&self, tool: &str, arguments: Value) -> Answer {
        self.raw(json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                        "params": {"name": tool, "arguments": arguments}}))
            .await
    }

    /// `tools/call` that must reach the tool; the `result` object.
    pub async fn call(&self, tool: &str, arguments: Value) -> Value {
        let a = self.call_raw(tool, arguments).await;
        assert_eq!(a.status, 200, "tools/call {tool}: {a:?}");
        a.body
            .get("result")
            .cloned()
            .unwrap_or_else(|| panic!("no result for {tool}: {a:?}"))
    }

    /// A call that must succeed: its structuredContent.
    pub async fn ok(&self, tool: &str, arguments: Value) -> Value {
        let r = self.call(tool, arguments).await;
        assert_eq!(r["isError"], json!(false), "{tool} failed: {r}");
        r["structuredContent"].clone()
    }

    /// A call that must fail with `code`: the `error` object.
    pub async fn err(&self, tool: &str, arguments: Value, code: &str) -> Value {
        let r = self.call(tool, arguments).await;
        assert_eq!(
            r["isError"],
            json!(true),
            "{tool} should fail with {code}: {r}"
        );
        let text: Value = r["content"][0]["text"]
            .as_str()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_else(|| panic!("{tool}: error text is not JSON: {r}"));
        let e = text["error"].clone();
        assert_eq!(e["code"], json!(code), "{tool}: {r}");
        e
    }
}

/// One ChatKit SSE event stream, parsed: the JSON of every `data:` line, in order.
pub fn sse_events(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|ev| {
            let data: Vec<&str> = ev
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if data.is_empty() {
                None
            } else {
                Some(serde_json::from_str(&data.join("\n")).expect("SSE data is JSON"))
            }
        })
        .collect()
}

/// A fake OpenAI-compatible chat completion that streams the one word `ok` (what the tests' fake
/// LLM servers answer when only the request matters).
pub fn streamed_ok() -> axum::response::Response {
    let chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 0,
        "model": "fake", "choices": [{"index": 0, "delta": {"content": "ok"},
        "finish_reason": "stop"}]});
    axum::response::Response::builder()
        .header("content-type", "text/event-stream")
        .body(axum::body::Body::from(format!(
            "data: {chunk}\n\ndata: [DONE]\n\n"
        )))
        .unwrap_or_default()
}

/// A fake OpenAI-compatible chat completion that streams `pieces`, one every `delay` (the first
/// at once), then the stop chunk and `[DONE]`.
pub fn streamed_slowly(
    pieces: &'static [&'static str],
    delay: Duration,
) -> axum::response::Response {
    use futures::StreamExt;
    let chunks = futures::stream::iter(0..=pieces.len()).then(move |i| async move {
        if i > 0 {
            tokio::time::sleep(delay).await;
        }
        let data = if i < pieces.len() {
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 0,
                   "model": "fake", "choices": [{"index": 0,
                   "delta": {"role": "assistant", "content": pieces[i]},
                   "finish_reason": null}]})
            .to_string()
        } else {
            let stop = json!({"id": "c1", "object": "chat.completion.chunk",
                "created": 0, "model": "fake",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
            format!("{stop}\n\ndata: [DONE]")
        };
        Ok::<_, std::convert::Infallible>(bytes::Bytes::from(format!("data: {data}\n\n")))
    });
    axum::response::Response::builder()
        .header("content-type", "text/event-stream")
        .body(axum::body::Body::from_stream(chunks))
        .unwrap_or_default()
}

/// Serve `router` on 127.0.0.1:0 inside this test's runtime.
pub async fn spawn_router(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A temp directory holding one test's data dir (`<tmp>/data`).
pub struct TempData {
    pub dir: tempfile::TempDir,
}

impl TempData {
    pub fn new() -> TempData {
        TempData {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    /// `<tmp>/data`.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

/// SQLite (always) and PostgreSQL (when `DATABASE_URL` is set; mandatory with
/// `REQUIRE_SERVICES=1`): `(label, DATABASE_URL for the binary or None for the data-dir SQLite file,
/// the TestDb guard keeping a PG database alive)`.
pub async fn backends() -> Vec<(&'static str, Option<String>, Option<platform::db::TestDb>)> {
    let mut v: Vec<(&'static str, Option<String>, Option<platform::db::TestDb>)> =
        vec![("sqlite", None, None)];
    if let Some(pg) = platform::db::TestDb::postgres().await {
        v.push(("postgres", Some(pg.url.clone()), Some(pg)));
    }
    v
}
