//! `panaversity fs ingest` / `fs hydrate` against a real server: a Docusaurus docs tree survives
//! ingest → hydrate byte for byte, incremental runs move only what changed, concurrent edits are
//! reported instead of overwritten, and a hydrate whose server dies keeps the old manifest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::support::{
    CliOutput, Server, ServerOpts, TempData, backends, cli, cli_ok, client, spawn_router,
};

const BOOK: &str = "docs-book";

/// A dev server for the pipeline: book store only, no sample book, new books are docusaurus.
async fn pipeline_server(data: &Path, db_url: Option<&str>) -> Server {
    let mut opts = pipeline_opts();
    if let Some(u) = db_url {
        opts = opts.env("DATABASE_URL", u);
    }
    Server::start(data, opts).await
}

/// The settings of [`pipeline_server`].
fn pipeline_opts() -> ServerOpts {
    let mut opts = ServerOpts::dev();
    opts.serve_args.extend(
        [
            "--only",
            "fs",
            "--no-sample",
            "--default-profile",
            "docusaurus",
        ]
        .map(String::from),
    );
    opts
}

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

/// Bytes that are not UTF-8 (a PNG header, NUL, 0xff, …).
fn png(seed: u8) -> Vec<u8> {
    let mut v = vec![
        0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0xff, 0xfe,
    ];
    v.extend((0..2000u32).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    v
}

/// A docs tree with every kind of file a real book has, plus files the profile rejects.
/// Returns (docs dir, static dir).
fn make_tree(root: &Path) -> (PathBuf, PathBuf) {
    let docs = root.join("docs");
    let st = root.join("static");
    write(
        &docs,
        "README.md",
        b"# The Book\r\n\r\nWelcome, reader.\r\n",
    );
    write(
        &docs,
        "index.md",
        b"\n\n   # Index   \n\ntrailing spaces   \n\n\n",
    );
    write(
        &docs,
        "01-Part/_category_.json",
        b"{\n  \"label\": \"Part 1\",\n  \"position\": 1\n}\n",
    );
    write(&docs, "01-Part/README.md", b"# Part 1\n");
    write(
        &docs,
        "01-Part/01-Chapter/01-lesson.md",
        "---\ntitle: Ünïcödé\n---\n# Grüße — 学习 🚀\n\nCafé naïve façade.\n".as_bytes(),
    );
    write(
        &docs,
        "01-Part/01-Chapter/02-lesson.mdx",
        b"import Tabs from '@theme/Tabs';\n\n<Tabs>\n  <p>hi</p>\n</Tabs>\n",
    );
    write(
        &docs,
        "01-Part/01-Chapter/01_chapter_01_quiz.md",
        b"# Quiz\r\n\r\n1. Why?\r\n",
    );
    write(&docs, "01-Part/01-Chapter/img/diagram.png", &png(1));
    write(
        &docs,
        "01-Part/01-Chapter/img/figure.svg",
        b"<svg xmlns=\"http://www.w3.org/2000/svg\"><rect/></svg>",
    );
    write(
        &docs,
        "01-Part/02-Chapter/03-Section/deep/01-deep.md",
        b"# Deep\n\n\tindented with a tab\n",
    );
    write(&docs, "02-Part/index.md", b"# Part 2");
    // Not admitted: an unknown file type, a non-ASCII file name; ignored: hidden directories.
    write(&docs, "01-Part/tool.exe", &[0x4d, 0x5a, 0x00]);
    write(&docs, "01-Part/ünï.md", b"# nope\n");
    write(&docs, ".docusaurus/cache.md", b"# cache\n");
    write(&st, "images/logo.png", &png(7));
    write(&st, "slides/deck.pdf", b"%PDF-1.4\n\xff\xfe\x00binary");
    (docs, st)
}

/// Files the docusaurus profile admits in a tree made by `make_tree` (and edits of it).
fn admitted(rel: &str) -> bool {
    !(rel.ends_with(".exe") || rel.contains('ü') || rel.starts_with('.'))
}

/// Every file below `root` (hidden ones included) → bytes.
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn go(dir: &Path, rel: &str, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().to_string();
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if e.file_type().unwrap().is_dir() {
                go(&e.path(), &r, out);
            } else {
                out.insert(r, std::fs::read(e.path()).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    go(root, "", &mut out);
    out
}

fn assert_same_tree(src: &Path, hydrated: &Path) {
    let want: BTreeMap<String, Vec<u8>> =
        tree(src).into_iter().filter(|(k, _)| admitted(k)).collect();
    let got = tree(hydrated);
    let want_keys: Vec<&String> = want.keys().collect();
    let got_keys: Vec<&String> = got.keys().collect();
    assert_eq!(got_keys, want_keys, "file sets differ");
    for (k, v) in &want {
        assert!(got[k] == *v, "{k} differs after the round trip");
    }
}

/// Directories below `root` (to check that emptied ones are removed).
fn dirs(root: &Path) -> Vec<String> {
    let mut v = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                let name = e.file_name().to_string_lossy().to_string();
                let r = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                v.push(r.clone());
                stack.push((e.path(), r));
            }
        }
    }
    v.sort();
    v
}

struct Paths {
    data: PathBuf,
    docs: PathBuf,
    st: PathBuf,
    out: PathBuf,
    out_static: PathBuf,
    manifest: PathBuf,
}

impl Paths {
    fn new(t: &TempData) -> Paths {
        let (docs, st) = make_tree(t.dir.path());
        Paths {
            data: t.data(),
            docs,
            st,
            out: t.dir.path().join("site/docs"),
            out_static: t.dir.path().join("site/static"),
            manifest: t.dir.path().join("site/.panaversity/manifest.json"),
        }
    }

    async fn ingest(&self, url: &str, extra: &[&str]) -> CliOutput {
        self.ingest_env(url, &[], extra).await
    }

    async fn ingest_env(&self, url: &str, env: &[(&str, &str)], extra: &[&str]) -> CliOutput {
        let mut args = vec![
            "fs",
            "ingest",
            "--url",
            url,
            "--book-id",
            BOOK,
            "--source-dir",
            self.docs.to_str().unwrap(),
            "--static-dir",
            self.st.to_str().unwrap(),
            "--json",
            "--quiet",
        ];
        args.extend_from_slice(extra);
        cli(&self.data, env, &args).await
    }

    async fn hydrate(&self, url: &str, extra: &[&str]) -> CliOutput {
        self.hydrate_env(url, &[], extra).await
    }

    async fn hydrate_env(&self, url: &str, env: &[(&str, &str)], extra: &[&str]) -> CliOutput {
        let mut args = vec![
            "fs",
            "hydrate",
            "--url",
            url,
            "--book-id",
            BOOK,
            "--output-dir",
            self.out.to_str().unwrap(),
            "--static-dir",
            self.out_static.to_str().unwrap(),
            "--manifest-file",
            self.manifest.to_str().unwrap(),
            "--json",
            "--quiet",
        ];
        args.extend_from_slice(extra);
        cli(&self.data, env, &args).await
    }

    fn assert_round_trip(&self) {
        assert_same_tree(&self.docs, &self.out);
        assert_same_tree(&self.st, &self.out_static);
    }
}

fn ok_json(o: &CliOutput) -> Value {
    assert_eq!(o.code(), 0, "command failed: {o:?}");
    o.json()
}

fn counts(v: &Value, keys: &[&str]) -> Vec<u64> {
    keys.iter()
        .map(|k| v[*k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}")))
        .collect()
}

#[tokio::test]
async fn ingest_then_hydrate_round_trips_byte_for_byte_and_incrementally() {
    for (label, db_url, _guard) in backends().await {
        let t = TempData::new();
        let p = Paths::new(&t);
        let server = pipeline_server(&p.data, db_url.as_deref()).await;
        let url = server.base.as_str();

        // Dry run: the plan, nothing written.
        let dry = ok_json(&p.ingest(url, &["--dry-run"]).await);
        assert_eq!(dry["dry_run"], json!(true));
        assert_eq!(
            counts(&dry, &["added", "failed"]),
            [13, 0],
            "{label}: {dry}"
        );
        let books = server.mcp(&[]).ok("list_books", json!({})).await;
        assert_eq!(
            books["count"],
            json!(0),
            "{label}: dry run created the book"
        );

        // First ingest: 11 docs files + 2 static assets; 2 rejected by the profile.
        let first = ok_json(&p.ingest(url, &[]).await);
        assert_eq!(
            counts(
                &first,
                &[
                    "added",
                    "updated",
                    "unchanged",
                    "deleted",
                    "failed",
                    "skipped"
                ]
            ),
            [13, 0, 0, 0, 0, 2],
            "{label}: {first}"
        );
        assert_eq!(first["profile"], json!("docusaurus"));
        // The co-located image is an asset under the reserved prefix, bytes exact.
        let asset = server
            .mcp(&[])
            .ok(
                "get_asset",
                json!({"book_id": BOOK, "asset_type": "images",
                       "filename": "content/01-Part/01-Chapter/img/diagram.png"}),
            )
            .await;
        assert_eq!(asset["file_size"], json!(png(1).len()), "{label}");

        // Nothing changed: nothing is sent.
        let again = ok_json(&p.ingest(url, &[]).await);
        assert_eq!(
            counts(&again, &["added", "updated", "unchanged", "deleted"]),
            [0, 0, 13, 0],
            "{label}: {again}"
        );

        // Full hydrate into an empty directory reproduces the tree.
        let h = ok_json(&p.hydrate(url, &[]).await);
        assert_eq!(h["mode"], json!("full"), "{label}: {h}");
        assert_eq!(
            counts(&h, &["downloaded", "failed"]),
            [13, 0],
            "{label}: {h}"
        );
        p.assert_round_trip();
        let manifest: Value = serde_json::from_slice(&std::fs::read(&p.manifest).unwrap()).unwrap();
        assert_eq!(manifest["book_id"], json!(BOOK));
        assert_eq!(manifest["file_count"], json!(13));
        assert_eq!(manifest["manifest_hash"], h["manifest_hash"]);
        assert!(manifest["timestamp"].as_str().unwrap().ends_with('Z'));

        // Up to date: nothing touched, manifest bytes unchanged.
        let before = std::fs::read(&p.manifest).unwrap();
        let h = ok_json(&p.hydrate(url, &[]).await);
        assert_eq!(h["status"], json!("unchanged"), "{label}: {h}");
        assert_eq!(std::fs::read(&p.manifest).unwrap(), before);

        // Edit: two updates (text + image), one added file in a new section, one deleted page
        // (the only file of its part), one deleted static asset, and an SVG that is no longer
        // UTF-8 (Latin-1), so it moves from content/ to the co-located asset prefix.
        write(&p.docs, "README.md", b"# The Book\r\n\r\nWelcome back.\r\n");
        write(&p.docs, "01-Part/01-Chapter/img/diagram.png", &png(2));
        write(&p.docs, "03-Part/01-Chapter/01-new.md", b"  # New  \n");
        write(
            &p.docs,
            "01-Part/01-Chapter/img/figure.svg",
            b"<svg><title>caf\xe9</title></svg>",
        );
        std::fs::remove_file(p.docs.join("02-Part/index.md")).unwrap();
        std::fs::remove_dir(p.docs.join("02-Part")).unwrap();
        std::fs::remove_file(p.st.join("slides/deck.pdf")).unwrap();
        std::fs::remove_dir(p.st.join("slides")).unwrap();

        // Without --delete the removed files are only reported (the SVG's stale text copy is
        // removed anyway: it moved, it was not removed from the tree).
        let i = ok_json(&p.ingest(url, &[]).await);
        assert_eq!(
            counts(&i, &["added", "updated", "unchanged", "deleted", "extra"]),
            [2, 2, 8, 1, 2],
            "{label}: {i}"
        );
        assert_eq!(
            i["extra_files"],
            json!(["content/02-Part/index.md", "static/slides/deck.pdf"])
        );
        let i = ok_json(&p.ingest(url, &["--delete"]).await);
        assert_eq!(
            counts(&i, &["added", "updated", "unchanged", "deleted", "extra"]),
            [0, 0, 12, 2, 0],
            "{label}: {i}"
        );

        // Incremental hydrate: only the 4 changed files are downloaded, 3 are removed (the old
        // text SVG is removed before the new bytes land on the same local file).
        let h = ok_json(&p.hydrate(url, &[]).await);
        assert_eq!(h["mode"], json!("incremental"), "{label}: {h}");
        assert_eq!(
            counts(&h, &["downloaded", "deleted", "failed", "total_files"]),
            [4, 3, 0, 12],
            "{label}: {h}"
        );
        p.assert_round_trip();
        assert!(
            !dirs(&p.out).contains(&"02-Part".to_string()),
            "emptied dir kept"
        );
        assert!(!dirs(&p.out_static).contains(&"slides".to_string()));

        // Lost manifest but intact directory: a full plan, but nothing is downloaded again.
        std::fs::remove_file(&p.manifest).unwrap();
        let h = ok_json(&p.hydrate(url, &[]).await);
        assert_eq!(h["mode"], json!("full"));
        assert_eq!(counts(&h, &["downloaded", "kept"]), [0, 12], "{label}: {h}");
        // --full-rebuild downloads everything.
        let h = ok_json(&p.hydrate(url, &["--full-rebuild"]).await);
        assert_eq!(counts(&h, &["downloaded", "kept"]), [12, 0], "{label}: {h}");
        p.assert_round_trip();
        server.stop().await;
    }
}

/// Forwards `/mcp` to a real server, with a hook that sees each JSON-RPC request first.
struct Proxy {
    upstream: String,
    http: reqwest::Client,
    calls: AtomicUsize,
    hook: HookFn,
}

/// Decides, per JSON-RPC request, what happens before it is forwarded.
type HookFn = Box<dyn Fn(&Proxy, &Value) -> Option<Hook> + Send + Sync>;

enum Hook {
    /// SIGKILL the upstream server (its pid) before forwarding.
    Kill(i32),
    /// Make a concurrent write of this path before forwarding.
    ConcurrentWrite { path: String, expected: String },
    /// Answer HTTP 503 without forwarding.
    Unavailable,
    /// Answer a STORAGE_UNAVAILABLE tool error without forwarding.
    StorageUnavailable,
    /// Forward, let the server do the work, then answer HTTP 503 (the reply is lost).
    LoseReply,
}

async fn proxy_handler(State(p): State<Arc<Proxy>>, headers: HeaderMap, body: Bytes) -> Response {
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let hook = (p.hook)(&p, &req);
    match &hook {
        Some(Hook::Kill(pid)) => {
            // SAFETY: kill(2) on the pid of a server this test spawned.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        Some(Hook::ConcurrentWrite { path, expected }) => {
            let r = p
                .http
                .post(&p.upstream)
                .header("accept", "application/json, text/event-stream")
                .json(
                    &json!({"jsonrpc": "2.0", "id": 99, "method": "tools/call", "params": {
                    "name": "write_content", "arguments": {"book_id": BOOK, "path": path,
                    "content": "# edited by an agent meanwhile\n", "expected_hash": expected}}}),
                )
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap();
            assert_eq!(
                v["result"]["isError"],
                json!(false),
                "concurrent write: {v}"
            );
        }
        Some(Hook::Unavailable) => {
            return (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response();
        }
        Some(Hook::StorageUnavailable) => {
            let text = json!({"error": {"code": "STORAGE_UNAVAILABLE",
                                        "message": "storage timed out; retry"}});
            return axum::Json(json!({"jsonrpc": "2.0", "id": req["id"], "result": {
                "isError": true, "content": [{"type": "text", "text": text.to_string()}]}}))
            .into_response();
        }
        Some(Hook::LoseReply) | None => {}
    }
    let mut fwd = p.http.post(&p.upstream).body(body);
    for (k, v) in &headers {
        if matches!(k.as_str(), "content-type" | "accept" | "authorization") {
            fwd = fwd.header(k, v);
        }
    }
    match fwd.send().await {
        Ok(r) if matches!(hook, Some(Hook::LoseReply)) => {
            // The server finished the call; the client never hears of it.
            let _ = r.bytes().await;
            (StatusCode::SERVICE_UNAVAILABLE, "reply lost").into_response()
        }
        Ok(r) => {
            let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
            let ctype = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .to_string();
            let b = r.bytes().await.unwrap_or_default();
            (status, [("content-type", ctype)], b).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, format!("upstream: {e}")).into_response(),
    }
}

async fn start_proxy(
    upstream: &str,
    hook: impl Fn(&Proxy, &Value) -> Option<Hook> + Send + Sync + 'static,
) -> String {
    let p = Arc::new(Proxy {
        upstream: format!("{upstream}/mcp"),
        http: client(),
        calls: AtomicUsize::new(0),
        hook: Box::new(hook),
    });
    let router = Router::new()
        .route("/mcp", post(proxy_handler))
        .with_state(p);
    format!("http://{}", spawn_router(router).await)
}

fn tool_call<'a>(req: &'a Value, tool: &str) -> Option<&'a Value> {
    (req["method"] == json!("tools/call") && req["params"]["name"] == json!(tool))
        .then(|| &req["params"]["arguments"])
}

#[tokio::test]
async fn hydrate_whose_server_dies_fails_and_keeps_the_old_manifest() {
    let t = TempData::new();
    let p = Paths::new(&t);
    for i in 0..30 {
        write(
            &p.docs,
            &format!("05-Part/01-Chapter/{i:02}-lesson.md"),
            format!("# Lesson {i}\n").as_bytes(),
        );
    }
    let server = pipeline_server(&p.data, None).await;
    ok_json(&p.ingest(&server.base, &[]).await);
    ok_json(&p.hydrate(&server.base, &[]).await);
    let old_manifest = std::fs::read(&p.manifest).unwrap();

    for i in 0..30 {
        write(
            &p.docs,
            &format!("05-Part/01-Chapter/{i:02}-lesson.md"),
            format!("# Lesson {i}, revised\n").as_bytes(),
        );
    }
    let i = ok_json(&p.ingest(&server.base, &[]).await);
    assert_eq!(i["updated"], json!(30));

    // The server is killed after the 5th file download.
    let pid = server.pid();
    let proxy = start_proxy(&server.base, move |p, req| {
        tool_call(req, "read_content")?;
        (p.calls.fetch_add(1, Ordering::SeqCst) == 5).then_some(Hook::Kill(pid))
    })
    .await;
    let o = p
        .hydrate(&proxy, &["--concurrency", "2", "--retries", "1"])
        .await;
    assert_ne!(o.code(), 0, "hydrate succeeded without a server: {o:?}");
    let summary = o.json();
    assert_eq!(summary["manifest_saved"], json!(false), "{summary}");
    assert!(summary["failed"].as_u64().unwrap() > 0, "{summary}");
    // Some files made it before the kill (one in flight at the kill may not have).
    let downloaded = summary["downloaded"].as_u64().unwrap();
    assert!((4..30).contains(&downloaded), "{summary}");
    // Once the server is clearly gone, the remaining files are not attempted one by one.
    assert!(
        summary["failed_files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["error"].as_str().unwrap().contains("not attempted")),
        "{summary}"
    );
    assert_eq!(std::fs::read(&p.manifest).unwrap(), old_manifest);
    // No temp files are left behind.
    assert!(tree(&p.out).keys().all(|k| !k.contains(".pv-tmp")));

    // Nothing answers at all: plan_build fails, exit non-zero, manifest untouched.
    let o = p
        .hydrate(&server.base, &["--retries", "0", "--timeout", "5"])
        .await;
    assert_ne!(o.code(), 0, "{o:?}");
    assert!(o.stderr.contains("plan_build"), "{o:?}");
    assert_eq!(std::fs::read(&p.manifest).unwrap(), old_manifest);

    // A new server on the same data: the retried incremental hydrate completes from the old
    // manifest (all 30 revised lessons again) and the tree is right.
    drop(server);
    let server = pipeline_server(&p.data, None).await;
    let h = ok_json(&p.hydrate(&server.base, &[]).await);
    assert_eq!(h["mode"], json!("incremental"), "{h}");
    assert_eq!(h["downloaded"], json!(30), "{h}");
    assert_ne!(std::fs::read(&p.manifest).unwrap(), old_manifest);
    p.assert_round_trip();
    server.stop().await;
}

#[tokio::test]
async fn concurrent_edit_is_reported_as_conflict_not_overwritten() {
    let t = TempData::new();
    let p = Paths::new(&t);
    let server = pipeline_server(&p.data, None).await;
    ok_json(&p.ingest(&server.base, &[]).await);
    write(&p.docs, "index.md", b"# Index, edited locally\n");
    write(&p.docs, "README.md", b"# README, edited locally\n");

    // Between the plan and the write of index.md, an agent edits it on the server.
    let proxy = start_proxy(&server.base, |_, req| {
        let a = tool_call(req, "write_content")?;
        (a["path"] == json!("content/index.md")).then(|| Hook::ConcurrentWrite {
            path: "content/index.md".into(),
            expected: a["expected_hash"].as_str().unwrap().to_string(),
        })
    })
    .await;
    let o = p.ingest(&proxy, &[]).await;
    assert_ne!(o.code(), 0, "a conflict must fail the run: {o:?}");
    let s = o.json();
    assert_eq!(counts(&s, &["updated", "conflicts"]), [1, 1], "{s}");
    assert_eq!(s["conflict_files"][0]["path"], json!("content/index.md"));
    // The agent's edit survived.
    let r = server
        .mcp(&[])
        .ok(
            "read_content",
            json!({"book_id": BOOK, "path": "content/index.md"}),
        )
        .await;
    assert_eq!(r["content"], json!("# edited by an agent meanwhile\n"));
    server.stop().await;
}

#[tokio::test]
async fn profiles_are_respected() {
    let t = TempData::new();
    let p = Paths::new(&t);
    // A server whose new books are strict: ingesting a docs tree as docusaurus is refused
    // up front with what to do, and nothing is written.
    let server = Server::start(&p.data, {
        let mut o = ServerOpts::dev();
        o.serve_args
            .extend(["--only", "fs", "--no-sample"].map(String::from));
        o
    })
    .await;
    let o = p.ingest(&server.base, &[]).await;
    assert_ne!(o.code(), 0, "{o:?}");
    assert!(o.stderr.contains("--default-profile docusaurus"), "{o:?}");
    let books = server.mcp(&[]).ok("list_books", json!({})).await;
    assert_eq!(books["count"], json!(0));

    // --profile strict: only the strict lesson paths go in (the rest is reported as skipped).
    write(&p.docs, "07-Part/01-Chapter/01-intro.md", b"# Intro\n");
    write(
        &p.docs,
        "07-Part/01-Chapter/01-intro.summary.md",
        b"Summary\n",
    );
    let s = ok_json(&p.ingest(&server.base, &["--profile", "strict"]).await);
    assert_eq!(s["profile"], json!("strict"));
    // 3 lessons (01-Part/01-Chapter/01-lesson.md fits too) + 2 static assets.
    assert_eq!(counts(&s, &["added", "failed"]), [5, 0], "{s}");
    // The book is strict now: asking for docusaurus is an error.
    let o = p.ingest(&server.base, &["--profile", "docusaurus"]).await;
    assert_ne!(o.code(), 0);
    assert!(o.stderr.contains("has profile strict"), "{o:?}");
    server.stop().await;
}

#[tokio::test]
async fn api_key_is_sent_as_bearer_and_names_the_agent() {
    let t = TempData::new();
    let p = Paths::new(&t);
    // Keys are made in an existing store (operator commands never create one).
    cli_ok(&p.data, &[], &["migrate", "up"]).await;
    let key = cli_ok(
        &p.data,
        &[],
        &[
            "fs",
            "keys",
            "create",
            "--owner",
            "ci-pipeline",
            "--scopes",
            "read write",
            "--json",
        ],
    )
    .await
    .json()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let mut opts = ServerOpts::default();
    opts.serve_args.extend(
        [
            "--only",
            "fs",
            "--no-sample",
            "--default-profile",
            "docusaurus",
        ]
        .map(String::from),
    );
    let server = Server::start(&p.data, opts).await;

    // No key: 401, not retried, with a hint.
    let o = p.ingest(&server.base, &[]).await;
    assert_ne!(o.code(), 0, "{o:?}");
    assert!(
        o.stderr.contains("401") && o.stderr.contains("--api-key"),
        "{o:?}"
    );
    // Key from the environment (ingest) and from the flag (hydrate); the URL may end in /mcp.
    let mcp_url = format!("{}/mcp/", server.base);
    let i = ok_json(
        &p.ingest_env(&mcp_url, &[("PANAVERSITY_API_KEY", &key)], &[])
            .await,
    );
    assert_eq!(i["added"], json!(13), "{i}");
    let h = ok_json(&p.hydrate(&server.base, &["--api-key", &key]).await);
    assert_eq!(h["downloaded"], json!(13), "{h}");
    p.assert_round_trip();
    // Every write is audited under the key's owner.
    let log = cli_ok(
        &p.data,
        &[],
        &["fs", "audit", "query", "--book-id", BOOK, "--json"],
    )
    .await
    .json();
    let rows = log["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 13, "{log}");
    assert!(
        rows.iter().all(|r| r["agent_id"] == json!("ci-pipeline")),
        "{log}"
    );
    server.stop().await;
}

#[tokio::test]
async fn transient_failures_are_retried() {
    let t = TempData::new();
    let p = Paths::new(&t);
    let server = pipeline_server(&p.data, None).await;
    // Every other tool call first fails: HTTP 503 or a STORAGE_UNAVAILABLE tool error.
    let proxy = start_proxy(&server.base, |p, req| {
        (req["method"] == json!("tools/call")).then_some(())?;
        match p.calls.fetch_add(1, Ordering::SeqCst) % 4 {
            0 => Some(Hook::Unavailable),
            2 => Some(Hook::StorageUnavailable),
            _ => None,
        }
    })
    .await;
    let i = ok_json(&p.ingest(&proxy, &["--concurrency", "1"]).await);
    assert_eq!(counts(&i, &["added", "failed"]), [13, 0], "{i}");
    let h = ok_json(&p.hydrate(&proxy, &["--concurrency", "1"]).await);
    assert_eq!(counts(&h, &["downloaded", "failed"]), [13, 0], "{h}");
    p.assert_round_trip();
    // Without retries the same faults fail the run.
    let o = p
        .hydrate(
            &proxy,
            &["--concurrency", "1", "--retries", "0", "--full-rebuild"],
        )
        .await;
    assert_ne!(o.code(), 0, "{o:?}");
    server.stop().await;
}

/// Every change of an ingest carries a request id shared by its retries, so a change whose reply
/// was lost after it committed is retried without a second write and without a CONFLICT with
/// itself (without request ids the retries met a CONFLICT naming their own hash and the run
/// reported the four updates as "unchanged").
#[tokio::test]
async fn ingest_retries_of_changes_whose_reply_was_lost_do_not_write_twice() {
    let t = TempData::new();
    let p = Paths::new(&t);
    for i in 1..=4 {
        write(
            &p.docs,
            &format!("01-Part/01-Chapter/0{i}-lesson.md"),
            format!("# Lesson {i}\n").as_bytes(),
        );
    }
    let server = pipeline_server(&p.data, None).await;
    ok_json(&p.ingest(&server.base, &[]).await);
    for i in 1..=4 {
        write(
            &p.docs,
            &format!("01-Part/01-Chapter/0{i}-lesson.md"),
            format!("# Lesson {i}, revised\n").as_bytes(),
        );
    }
    // The first attempt of every write is carried out, but its reply is lost.
    let proxy = start_proxy(&server.base, |_, req| {
        let args = &req["params"]["arguments"];
        let first = |seen: &std::sync::Mutex<std::collections::HashSet<String>>| {
            seen.lock()
                .is_ok_and(|mut s| s.insert(args["path"].to_string()))
        };
        static SEEN: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<String>>> =
            std::sync::OnceLock::new();
        (req["params"]["name"] == json!("write_content")
            && first(SEEN.get_or_init(Default::default)))
        .then_some(Hook::LoseReply)
    })
    .await;
    let i = ok_json(&p.ingest(&proxy, &["--concurrency", "2"]).await);
    assert_eq!(
        counts(&i, &["updated", "failed", "conflicts"]),
        [4, 0, 0],
        "{i}"
    );
    // One update per file: one audit row each, every row tagged with its call's request id.
    let log = cli_ok(
        &p.data,
        &[],
        &["fs", "audit", "query", "--book-id", BOOK, "--json"],
    )
    .await
    .json();
    let rows = log["rows"].as_array().unwrap();
    let updates = rows.iter().filter(|r| r["prev_hash"].is_string()).count();
    assert_eq!(updates, 4, "{log}");
    assert!(rows.iter().all(|r| r["request_id"].is_string()), "{log}");
    server.stop().await;
}

/// A misspelled book id fails the build instead of hydrating an empty site: hydrate exits
/// non-zero naming the book, and neither the manifest nor the output tree is touched.
#[tokio::test]
async fn hydrate_of_a_book_that_does_not_exist_fails_and_names_it() {
    let t = TempData::new();
    let p = Paths::new(&t);
    write(&p.docs, "01-Part/01-Chapter/01-lesson.md", b"# One\n");
    let server = pipeline_server(&p.data, None).await;
    ok_json(&p.ingest(&server.base, &[]).await);
    ok_json(&p.hydrate(&server.base, &[]).await);
    let manifest = std::fs::read(&p.manifest).expect("manifest");
    let out = cli(
        &p.data,
        &[],
        &[
            "fs",
            "hydrate",
            "--url",
            &server.base,
            "--book-id",
            "docs-bok",
            "--output-dir",
            p.out.to_str().unwrap_or_default(),
            "--manifest-file",
            p.manifest.to_str().unwrap_or_default(),
            "--quiet",
        ],
    )
    .await;
    assert_ne!(out.code(), 0, "{out:?}");
    assert!(
        out.stderr.contains("docs-bok") && out.stderr.contains("NOT_FOUND"),
        "{out:?}"
    );
    assert_eq!(std::fs::read(&p.manifest).expect("manifest"), manifest);
    assert!(p.out.join("01-Part/01-Chapter/01-lesson.md").is_file());
}

#[tokio::test]
async fn hydrate_from_archive_resumes_time_budgeted_zips_and_round_trips() {
    let t = TempData::new();
    let p = Paths::new(&t);
    // A budget so small that every archive stops after one entry: the ZIP says partial and
    // the client resumes it until every file has arrived exactly once.
    let opts = pipeline_opts().env("PANAVERSITY_ARCHIVE_TIME_BUDGET_SECS", "0.000001");
    let server = Server::start(&p.data, opts).await;
    let url = server.base.as_str();
    ok_json(&p.ingest(url, &[]).await);
    let h = ok_json(&p.hydrate(url, &["--from-archive"]).await);
    assert_eq!(h["mode"], json!("full"), "{h}");
    assert_eq!(counts(&h, &["downloaded", "failed"]), [13, 0], "{h}");
    assert!(h["archive_parts"].as_u64().unwrap() > 1, "{h}");
    assert!(h["manifest_saved"].as_bool().unwrap(), "{h}");
    p.assert_round_trip();
    // Already there: a full rebuild from the archive keeps what matches.
    std::fs::remove_file(&p.manifest).unwrap();
    let again = ok_json(&p.hydrate(url, &["--from-archive"]).await);
    assert_eq!(
        counts(&again, &["downloaded", "kept", "failed"]),
        [0, 13, 0],
        "{again}"
    );
}
