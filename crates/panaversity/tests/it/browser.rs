//! The built-in study page end to end in headless Chromium (tests/browser/study_page.mjs, driven
//! by npm `playwright-core` against Debian's `chromium`): two real servers, one in dev mode with a
//! fake OpenAI-compatible model that streams each answer slowly in pieces, one with auth on and no
//! model. The script reads, navigates, studies with the tutor (Teach streaming, answering,
//! feedback, retry, stop, a reload that re-attaches, a provider error, history rename and delete,
//! a question about selected text, the rate-limit message, personalized lessons), checks that no
//! request leaves the server's origin, scans the pages with axe-core and saves screenshots to
//! `target/browser-artifacts/` (set `UPDATE_SCREENSHOT=1` to copy the desktop one to
//! `docs/study-page.png` for the README).
//!
//! Needs `node`, Chromium (`$CHROMIUM`, default `/usr/bin/chromium`) and
//! `tests/browser/node_modules` (see the install command below). Without them the test skips
//! with a note, except under REQUIRE_SERVICES=1 (CI), where it fails.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use axum::routing::post;
use serde_json::{Value, json};

use crate::support::{BOOK, Server, ServerOpts, TempData, cli_ok, sample_bytes, spawn_router};

const INSTALL: &str = "npm ci --no-audit --no-fund --prefix crates/panaversity/tests/browser \
                       (and apt-get install -y chromium)";

/// What the fake model answers, piece by piece (the script checks the whole and the pieces).
const PIECES: &[&str] = &[
    "Good question! ",
    "A program ",
    "runs **in order**: ",
    "each line ",
    "finishes ",
    "before the next. ",
    "What happens ",
    "if you swap two lines?",
];
/// Between two pieces: slow enough to see each one painted.
const PIECE_DELAY: Duration = Duration::from_millis(250);
/// Between two pieces of the answers the script stops or reloads in the middle of (their messages
/// mention "ordering bugs" / "another example"): time for a click on a busy CI machine.
const SLOW_PIECE_DELAY: Duration = Duration::from_millis(800);
/// The lesson personalized for each student (an overlay) and its image.
const OVERLAY_LESSON: &str = "content/01-Foundations/01-What-Is-A-Program/02-values-and-names.md";
const IMAGE: &str = "static/images/program-flow.png";

fn required() -> bool {
    std::env::var("REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

fn script_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

fn node() -> String {
    std::env::var("NODE").unwrap_or_else(|_| "node".into())
}

/// `target/browser-artifacts` of this workspace.
fn artifacts_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(&tmp).join("browser-artifacts")
}

/// What is missing to run the browser test, if anything.
fn missing() -> Option<String> {
    let dir = script_dir();
    if !dir
        .join("node_modules/playwright-core/package.json")
        .is_file()
        || !dir.join("node_modules/axe-core/axe.min.js").is_file()
    {
        return Some(format!("{} has no playwright-core/axe-core", dir.display()));
    }
    if !chromium().is_file() {
        return Some(format!("no Chromium at {}", chromium().display()));
    }
    match std::process::Command::new(node()).arg("--version").output() {
        Ok(o) if o.status.success() => None,
        _ => Some(format!("`{} --version` does not run", node())),
    }
}

/// The last user message of a Chat Completions request.
fn last_user_text(body: &Value) -> String {
    body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// The tutor's non-streamed calls (Teach mode's knowledge check and its judge): a usable answer.
fn completion(body: &Value) -> Response {
    let user = last_user_text(body);
    let content = if user.starts_with("Write the knowledge check") {
        json!({"question": "Why does the order of the steps matter?",
               "answer_key": "sequence", "explanation": "Steps run one after another."})
        .to_string()
    } else if user.starts_with("Student's reply") {
        json!({"verdict": "correct", "hint": ""}).to_string()
    } else {
        "A short answer.".to_string()
    };
    let answer = json!({"id": "c0", "object": "chat.completion", "created": 0, "model": "fake",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}]});
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(answer.to_string()))
        .unwrap()
}

/// A fake OpenAI-compatible model: records every request; answers streamed calls with PIECES,
/// slowly, as Chat Completions chunks (counted in `streamed`) and the others with a small JSON
/// completion; the first call about a message asking it to "fail once" gets an HTTP 500.
async fn start_fake_llm(requests: Arc<Mutex<Vec<Value>>>, streamed: Arc<AtomicUsize>) -> String {
    let failed = Arc::new(Mutex::new(false));
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move |body: axum::Json<Value>| {
            let requests = requests.clone();
            let failed = failed.clone();
            let streamed = streamed.clone();
            async move {
                let fail = {
                    let mut f = failed.lock().unwrap();
                    let want = !*f && last_user_text(&body.0).contains("please fail once");
                    *f |= want;
                    want
                };
                let stream = body.0["stream"] == json!(true);
                requests.lock().unwrap().push(body.0.clone());
                if !fail && !stream {
                    return completion(&body.0);
                }
                if !fail {
                    streamed.fetch_add(1, Ordering::SeqCst);
                }
                let user = last_user_text(&body.0);
                let delay = if user.contains("ordering bugs") || user.contains("another example") {
                    SLOW_PIECE_DELAY
                } else {
                    PIECE_DELAY
                };
                if fail {
                    return Response::builder()
                        .status(500)
                        .header("content-type", "application/json")
                        .body(Body::from(
                            r#"{"error":{"message":"the fake model fails once","type":"server_error"}}"#,
                        ))
                        .unwrap();
                }
                crate::support::streamed_slowly(PIECES, delay)
            }
        }),
    );
    format!("http://{}/v1", spawn_router(app).await)
}

/// A personalized copy of a lesson for `user`, with the book's image, written over MCP.
async fn personalize(server: &Server, headers: &[(&str, &str)], user: &str, marker: &str) {
    server
        .mcp(headers)
        .ok(
            "write_content",
            json!({"book_id": BOOK, "path": OVERLAY_LESSON, "user_id": user,
                   "content": format!("---\ntitle: Values and Names\n---\n\n# Values and Names\n\nYour own version ({marker}).\n\n![How a program flows](/images/program-flow.png)\n")}),
        )
        .await;
}

#[tokio::test]
async fn study_page_in_headless_chromium() {
    if let Some(what) = missing() {
        assert!(
            !required(),
            "REQUIRE_SERVICES=1 but the browser test cannot run: {what}; run {INSTALL}"
        );
        eprintln!("SKIP: the study page browser test needs {INSTALL}: {what}");
        return;
    }
    assert!(
        !sample_bytes(IMAGE).is_empty(),
        "the sample book has the image"
    );

    let requests = Arc::new(Mutex::new(Vec::new()));
    let streamed = Arc::new(AtomicUsize::new(0));
    let llm = start_fake_llm(requests.clone(), streamed.clone()).await;
    let dev_tmp = TempData::new();
    let dev_opts = ServerOpts::dev()
        .env("OPENAI_BASE_URL", &llm)
        .env("OPENAI_API_KEY", "sk-test-not-real")
        .env("LLM_MAX_RETRIES", "0")
        .env("STUDY_RATE_LIMIT", "8")
        .env("STUDY_RATE_WINDOW_SECONDS", "600");
    let auth_tmp = TempData::new();
    let (dev_data, auth_data) = (dev_tmp.data(), auth_tmp.data());
    let (dev, auth) = tokio::join!(
        Server::start(&dev_data, dev_opts),
        Server::start(&auth_data, ServerOpts::default())
    );
    personalize(
        &dev,
        &[("x-agent-id", "browser-test")],
        "browser-student",
        "BROWSER-OVERLAY",
    )
    .await;
    let key = cli_ok(
        &auth_data,
        &[],
        &[
            "fs",
            "keys",
            "create",
            "--owner",
            "token-student",
            "--scopes",
            "read write",
            "--json",
        ],
    )
    .await
    .json()["key"]
        .as_str()
        .expect("key")
        .to_string();
    personalize(
        &auth,
        &[("authorization", &format!("Bearer {key}"))],
        "token-student",
        "TOKEN-OVERLAY",
    )
    .await;

    let artifacts = artifacts_dir();
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let run = tokio::process::Command::new(node())
        .current_dir(script_dir())
        .arg("study_page.mjs")
        .env("STUDY_DEV_URL", &dev.base)
        .env("STUDY_AUTH_URL", &auth.base)
        .env("STUDY_TOKEN", &key)
        .env("CHROMIUM", chromium())
        .env("ARTIFACTS", &artifacts)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("study_page.mjs finished within 5 minutes")
        .unwrap_or_else(|e| panic!("run {}: {e}", node()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    std::fs::write(
        artifacts.join("study_page.log"),
        format!("{stdout}\n{stderr}"),
    )
    .ok();
    assert!(
        out.status.success() && stdout.contains(" passed, 0 failed"),
        "study_page.mjs failed:\n{stdout}\n{stderr}\n--- dev server\n{}\n--- auth server\n{}",
        dev.log(),
        auth.log()
    );
    let report: Value = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("REPORT "))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_else(|| panic!("no REPORT line:\n{stdout}"));

    // The selected text reached the model as the highlighted passage, and the dev-mode name too.
    let selection = report["selection"].as_str().expect("selection reported");
    let prompts: Vec<String> = requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| r["messages"].to_string())
        .collect();
    let highlighted =
        format!("The student highlighted this text on the page:\n\"\"\"\n{selection}\n\"\"\"");
    assert!(
        prompts
            .iter()
            .any(|p| serde_json::from_str::<Value>(p).is_ok_and(|m| m
                .as_array()
                .into_iter()
                .flatten()
                .any(|x| x["content"]
                    .as_str()
                    .is_some_and(|c| c.contains(&highlighted))))),
        "no request to the model carries the selection {selection:?}:\n{}",
        prompts.join("\n")
    );
    assert!(
        prompts.iter().any(|p| p.contains("Ada")),
        "the student's name reaches the tutor"
    );
    // One streamed answer per message that got one: 7 in the dev flow (the failed call is not
    // counted) and the axe scan's question. Re-attaching after the reload made no second call.
    assert_eq!(
        streamed.load(Ordering::SeqCst),
        8,
        "streamed model answers (a reload must not ask the model again)"
    );

    for shot in [
        "study-page-desktop.png",
        "study-page-desktop-dark.png",
        "study-page-phone-light.png",
        "study-page-phone-tutor-light.png",
    ] {
        let p = artifacts.join(shot);
        let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(len > 10_000, "{} was not saved ({len} bytes)", p.display());
    }
    if std::env::var("UPDATE_SCREENSHOT").is_ok_and(|v| v == "1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
        std::fs::copy(
            artifacts.join("study-page-desktop.png"),
            docs.join("study-page.png"),
        )
        .expect("copy the screenshot to docs/");
        std::fs::copy(
            artifacts.join("study-page-phone-tutor-light.png"),
            docs.join("study-page-phone.png"),
        )
        .expect("copy the phone screenshot to docs/");
    }
    eprintln!(
        "study_page.mjs: {}; artifacts in {}",
        stdout.lines().last().unwrap_or(""),
        artifacts.display()
    );
    dev.stop().await;
    auth.stop().await;
}
