//! The study page's server side, without a browser (tests/it/browser.rs drives it in Chromium):
//! security headers and the Host check on its routes, content-hashed assets, lesson text that
//! cannot inject script, the files route, the dev-mode CORS default, the auth-on shell, and the
//! README's ChatKit web-component snippet checked against the real server.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::post;
use serde_json::{Value, json};

use crate::support::{
    BOOK, LESSON_DOC, Server, ServerOpts, TempData, cli_ok, client, spawn_router, sse_events,
};

const LESSON_PAGE: &str = "/learn/sample-book/01-Foundations/01-What-Is-A-Program/01-instructions";

/// A model answering "ok" (streamed) or a small JSON completion, recording every request.
async fn start_llm(requests: Arc<Mutex<Vec<Value>>>) -> String {
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move |body: axum::Json<Value>| {
            let requests = requests.clone();
            async move {
                let stream = body.0["stream"] == json!(true);
                requests.lock().unwrap().push(body.0);
                if !stream {
                    let answer = json!({"id": "c", "object": "chat.completion", "created": 0,
                        "model": "fake", "choices": [{"index": 0, "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "{}"}}]});
                    return axum::response::Response::builder()
                        .header("content-type", "application/json")
                        .body(axum::body::Body::from(answer.to_string()))
                        .unwrap();
                }
                crate::support::streamed_ok()
            }
        }),
    );
    format!("http://{}/v1", spawn_router(app).await)
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// `src="/assets/…"` / `href="/assets/…"` URLs of a page.
fn asset_urls(html: &str) -> Vec<String> {
    html.split("\"/assets/")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|f| format!("/assets/{f}"))
        .collect()
}

#[tokio::test]
async fn pages_assets_files_and_headers_in_dev_mode() {
    let tmp = TempData::new();
    let server = Server::start(&tmp.data(), ServerOpts::dev()).await;
    let http = client();
    let base = &server.base;

    // The home page and a lesson: HTML with a strict policy and the other security headers.
    for path in ["/", LESSON_PAGE, "/learn/sample-book"] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            header(&r, "content-type").starts_with("text/html"),
            "{path}"
        );
        let csp = header(&r, "content-security-policy").to_string();
        for d in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "object-src 'none'",
        ] {
            assert!(csp.contains(d), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(header(&r, "x-content-type-options"), "nosniff");
        assert_eq!(header(&r, "x-frame-options"), "DENY");
        assert_eq!(header(&r, "referrer-policy"), "no-referrer");
        let html = r.text().await.unwrap();
        assert!(!html.contains("<script>"), "{path}: no inline script");
        assert!(!html.contains("style=\""), "{path}: no inline style");
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "{path}: nothing from elsewhere"
        );
        let assets = asset_urls(&html);
        assert_eq!(
            assets.len(),
            5,
            "{path}: icon (twice), css, two scripts: {assets:?}"
        );
    }
    let html = http
        .get(format!("{base}{LESSON_PAGE}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("<h1 id=\"instructions-and-order\">Instructions and Order</h1>"),
        "{html}"
    );
    assert!(html.contains("<code class=\"language-python\">"), "{html}");
    assert!(
        !html.contains("sidebar_position"),
        "front matter is stripped"
    );
    assert!(
        html.contains("aria-current=\"page\""),
        "the tree marks the lesson"
    );
    assert!(
        html.contains(&format!("data-tutor-lesson=\"{LESSON_DOC}\"")),
        "the tutor gets the lesson path"
    );
    assert!(html.contains("id=\"pv-tutor\""), "the tutor panel is there");

    // Assets: long-lived, hashed, revalidated by ETag; unknown names are 404.
    for url in asset_urls(&html) {
        let r = http.get(format!("{base}{url}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        assert_eq!(
            header(&r, "cache-control"),
            "public, max-age=31536000, immutable",
            "{url}"
        );
        let etag = header(&r, "etag").to_string();
        let hash = url.rsplit('-').next().unwrap().split('.').next().unwrap();
        assert_eq!(etag, format!("\"{hash}\""), "{url}");
        let r = http
            .get(format!("{base}{url}"))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 304, "{url}");
    }
    let r = http
        .get(format!("{base}/assets/study-000000000000.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Unknown pages are 404 pages; so are paths the lesson rules refuse.
    for path in [
        "/learn/no-such-book",
        "/learn/sample-book/01-Foundations/nope",
        "/learn/sample-book/..%2F..%2Fetc%2Fpasswd",
        "/learn/sample-book/01-Foundations/01-What-Is-A-Program/01-instructions.summary",
    ] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }

    // The Host check covers the page routes too (dev mode: DNS-rebinding protection).
    for path in ["/", LESSON_PAGE, "/learn-api/me", "/assets/x.js"] {
        let r = http
            .get(format!("{base}{path}"))
            .header("host", "rebind.attacker.example")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
    }

    // Who is studying; a student's personalized lesson, with a script that must not survive.
    let r = http
        .get(format!("{base}/learn-api/me"))
        .header("x-user-id", "student-7")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["user_id"],
        json!("student-7")
    );
    server
        .mcp(&[("x-agent-id", "page-test")])
        .ok(
            "write_content",
            json!({"book_id": BOOK, "path": "content/01-Foundations/01-What-Is-A-Program/01-instructions.md",
                   "user_id": "student-7",
                   "content": "# Mine\n\n<script>alert('x')</script>\n\n<img src=x onerror=alert(1)>[click](javascript:alert(1)) ![flow](/images/program-flow.png)\n"}),
        )
        .await;
    let page = |user: &'static str| {
        let http = http.clone();
        let url = format!("{base}/learn-api/page?path={LESSON_PAGE}");
        async move {
            let r = http
                .get(url)
                .header("x-user-id", user)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(header(&r, "cache-control"), "no-store");
            r.json::<Value>().await.unwrap()
        }
    };
    let mine = page("student-7").await;
    let main = mine["main"].as_str().unwrap();
    assert_eq!(mine["overlay"], json!(true));
    assert!(main.contains("id=\"pv-overlay-marker\""), "{main}");
    assert!(!main.to_ascii_lowercase().contains("<script"), "{main}");
    assert!(
        !main.contains("onerror") && !main.contains("javascript:"),
        "{main}"
    );
    assert!(
        main.contains("<img src=\"/learn-files/sample-book/static/images/program-flow.png\""),
        "{main}"
    );
    let nav = mine["nav"].as_str().unwrap();
    assert!(nav.contains("overlay-dot"), "{nav}");
    // The copy has no sidebar_position: it keeps the shared lesson's place in the chapter.
    let (at_mine, at_next) = (
        nav.find(">Mine<").unwrap(),
        nav.find(">Values and Names<").unwrap(),
    );
    assert!(at_mine < at_next, "{nav}");
    let theirs = page("student-8").await;
    assert_eq!(theirs["overlay"], json!(false));
    assert!(
        theirs["main"]
            .as_str()
            .unwrap()
            .contains("Instructions and Order")
    );
    assert_ne!(mine["fingerprint"], theirs["fingerprint"]);

    // Book files: images with a sandboxing policy and an ETag; text and traversal refused.
    let png = http
        .get(format!(
            "{base}/learn-files/sample-book/static/images/program-flow.png"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(png.status(), 200);
    assert_eq!(header(&png, "content-type"), "image/png");
    assert!(header(&png, "content-security-policy").contains("sandbox"));
    let etag = header(&png, "etag").to_string();
    assert_eq!(
        png.bytes().await.unwrap().as_ref(),
        crate::support::sample_bytes("static/images/program-flow.png")
    );
    let r = http
        .get(format!(
            "{base}/learn-files/sample-book/static/images/program-flow.png"
        ))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    for path in [
        "/learn-files/sample-book/content/01-Foundations/01-What-Is-A-Program/01-instructions.md",
        "/learn-files/sample-book/static/../content/x.png",
        "/learn-files/sample-book/static/images/none.png",
        "/learn-files/Bad%20Book/static/images/program-flow.png",
    ] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }

    // Dev mode: a local Docusaurus dev server may call the API (CORS), another origin may not.
    let preflight = |origin: &'static str| {
        let http = http.clone();
        let url = format!("{base}/chatkit");
        async move {
            http.request(reqwest::Method::OPTIONS, url)
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "authorization,content-type",
                )
                .send()
                .await
                .unwrap()
        }
    };
    let r = preflight("http://localhost:3000").await;
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        "http://localhost:3000"
    );
    let r = preflight("http://evil.example:3000").await;
    assert_eq!(header(&r, "access-control-allow-origin"), "");
    server.stop().await;
}

#[tokio::test]
async fn with_auth_on_the_page_is_a_shell_until_a_token_is_sent() {
    let tmp = TempData::new();
    let server = Server::start(&tmp.data(), ServerOpts::default()).await;
    let http = client();
    let base = &server.base;
    let key = cli_ok(
        &tmp.data(),
        &[],
        &[
            "fs", "keys", "create", "--owner", "reader-1", "--scopes", "read", "--json",
        ],
    )
    .await
    .json()["key"]
        .as_str()
        .unwrap()
        .to_string();

    // A navigation has no token: the page says to sign in and shows no book content.
    let r = http
        .get(format!("{base}{LESSON_PAGE}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-security-policy").contains("default-src 'self'"));
    let html = r.text().await.unwrap();
    assert!(html.contains("id=\"pv-signin-needed\""), "{html}");
    assert!(html.contains("data-auth=\"token\""));
    assert!(html.contains("id=\"pv-token\""), "the token field");
    assert!(
        !html.contains("Instructions and Order"),
        "no lesson text without a token"
    );
    assert!(
        !html.contains("Values and Names"),
        "no chapter tree without a token"
    );

    // The page's API and files need the token, like /chatkit.
    for path in [
        format!("/learn-api/page?path={LESSON_PAGE}"),
        "/learn-api/me".to_string(),
        "/learn-files/sample-book/static/images/program-flow.png".to_string(),
    ] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = http
            .get(format!("{base}{path}"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let me: Value = http
        .get(format!("{base}/learn-api/me"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user_id"], json!("reader-1"));
    assert_eq!(me["dev_mode"], json!(false));
    let parts: Value = http
        .get(format!("{base}/learn-api/page?path={LESSON_PAGE}"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        parts["main"]
            .as_str()
            .unwrap()
            .contains("Instructions and Order")
    );
    assert!(parts["nav"].as_str().unwrap().contains("Values and Names"));
    assert_eq!(parts["lesson"], json!(LESSON_DOC));

    // Outside dev mode no origin is allowed unless ALLOWED_ORIGINS names it.
    let r = http
        .request(reqwest::Method::OPTIONS, format!("{base}/chatkit"))
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "access-control-allow-origin"), "");
    server.stop().await;
}

/// The README's ChatKit web-component snippet (after `<!-- chatkit-embed-snippet -->`).
fn readme_snippet() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let at = readme
        .find("<!-- chatkit-embed-snippet -->")
        .expect("the README marks the ChatKit snippet");
    let rest = &readme[at..];
    let start = rest.find("```html\n").expect("an html block") + "```html\n".len();
    let end = rest[start..].find("\n```").expect("the block ends") + start;
    rest[start..end].to_string()
}

/// Every `{ id: "…"` inside the snippet's `models: [ … ]`.
fn model_ids(snippet: &str) -> Vec<String> {
    let models = &snippet[snippet.find("models: [").expect("composer.models")..];
    let models = &models[..models.find(']').expect("models end")];
    models
        .split("id: \"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn the_readme_chatkit_snippet_matches_the_server() {
    let snippet = readme_snippet();
    assert!(snippet.contains("domainKey:"), "{snippet}");
    assert!(snippet.contains("url: `${API}/chatkit`"), "{snippet}");
    assert!(snippet.contains("Authorization: `Bearer "), "{snippet}");
    assert!(
        snippet.contains("prompts: suggestions.map((s) => ({ label: s, prompt: s }))"),
        "{snippet}"
    );
    let ids = model_ids(&snippet);
    assert_eq!(ids, ["teach", "ask"], "{snippet}");
    let suggest = snippet
        .split('`')
        .find(|s| s.starts_with("${API}/chatkit/suggestions?"))
        .expect("the suggestions request")
        .replace("${API}", "")
        .replace("${encodeURIComponent(lessonPath)}", LESSON_DOC);
    let query_params: Vec<&str> = ["lesson_path", "selected_text"]
        .into_iter()
        .filter(|p| snippet.contains(&format!("searchParams.set(\"{p}\"")))
        .collect();
    assert_eq!(
        query_params,
        ["lesson_path", "selected_text"],
        "the snippet's fetch sets them"
    );

    let requests = Arc::new(Mutex::new(Vec::new()));
    let llm = start_llm(requests.clone()).await;
    let tmp = TempData::new();
    let opts = ServerOpts::dev()
        .env("OPENAI_BASE_URL", &llm)
        .env("OPENAI_API_KEY", "sk-test-not-real");
    let server = Server::start(&tmp.data(), opts).await;
    let http = client();
    let base = &server.base;

    // The start prompts: three for each mode, for this lesson.
    for mode in &ids {
        let url = format!(
            "{base}{}",
            suggest.replace("mode=teach", &format!("mode={mode}"))
        );
        let r = http
            .get(&url)
            .header("x-user-id", "snippet-user")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{url}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            v["suggestions"].as_array().map(Vec::len),
            Some(3),
            "{url}: {v}"
        );
    }

    // Each model id is a mode of the tutor: Ask gets the direct-answer prompt, Teach does not; the
    // selected text arrives as the highlighted passage.
    for mode in &ids {
        let before = requests.lock().unwrap().len();
        let r = http
            .post(format!(
                "{base}/chatkit?lesson_path={LESSON_DOC}&selected_text=Each%20line%20finishes"
            ))
            .header("x-user-id", "snippet-user")
            .json(&crate::support::threads_create(
                &format!("Help me with this ({mode})"),
                mode,
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{mode}");
        let events = sse_events(&r.text().await.unwrap());
        let user = events
            .iter()
            .find(|e| e["type"] == "thread.item.done" && e["item"]["type"] == "user_message")
            .expect("the user message");
        assert_eq!(user["item"]["inference_options"]["model"], json!(mode));
        assert!(
            events.iter().any(
                |e| e["type"] == "thread.item.done" && e["item"]["type"] == "assistant_message"
            ),
            "{mode}: {events:?}"
        );
        let calls = requests.lock().unwrap()[before..].to_vec();
        let system: String = calls
            .iter()
            .filter(|c| c["stream"] == json!(true))
            .map(|c| {
                c["messages"][0]["content"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        let direct = system.contains("Give a direct explanation");
        assert_eq!(direct, mode == "ask", "{mode}: {system}");
        if mode == "ask" {
            assert!(system.contains("The student highlighted this text on the page:\n\"\"\"\nEach line finishes\n\"\"\""), "{system}");
        }
    }

    // A site on another origin (here the dev-mode default, a Docusaurus dev server) may send the
    // snippet's requests with its headers.
    for path in ["/chatkit", "/chatkit/suggestions"] {
        let r = http
            .request(reqwest::Method::OPTIONS, format!("{base}{path}"))
            .header("origin", "http://localhost:3000")
            .header(
                "access-control-request-method",
                if path == "/chatkit" { "POST" } else { "GET" },
            )
            .header(
                "access-control-request-headers",
                "authorization,content-type,idempotency-key",
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            header(&r, "access-control-allow-origin"),
            "http://localhost:3000",
            "{path}"
        );
        let allowed = header(&r, "access-control-allow-headers").to_ascii_lowercase();
        assert!(
            allowed.contains("authorization") && allowed.contains("content-type"),
            "{allowed}"
        );
    }
    server.stop().await;
}
