//! Lesson sources (local docs, GitHub raw) and parsing.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use study::lessons::{
    Fetched, GitHubConfig, GitHubSource, Lesson, LessonError, LessonSource, LocalDocsSource,
};

fn write(root: &std::path::Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

#[tokio::test]
async fn local_docs_resolution_order() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    write(r, "01-Part/a.md", "md wins");
    write(r, "01-Part/a.mdx", "mdx");
    write(r, "01-Part/b.mdx", "mdx only");
    write(r, "01-Part/b/index.md", "index");
    write(r, "01-Part/c/index.md", "index of c");
    write(r, "01-Part/c/README.md", "readme of c");
    write(r, "01-Part/d/README.md", "readme of d");
    let src = LocalDocsSource::new(r).unwrap();
    let text = |p: &'static str| {
        let src = src.clone();
        async move { src.fetch(p, None).await.unwrap().map(|l| l.text) }
    };
    assert_eq!(text("01-Part/a").await.as_deref(), Some("md wins"));
    assert_eq!(text("01-Part/b").await.as_deref(), Some("mdx only"));
    assert_eq!(text("01-Part/c").await.as_deref(), Some("index of c"));
    assert_eq!(text("01-Part/d/").await.as_deref(), Some("readme of d"));
    assert_eq!(text("01-Part/a.mdx").await.as_deref(), Some("mdx"));
    assert_eq!(text("01-Part/missing").await, None);
    // A directory itself is not a lesson.
    assert_eq!(text("01-Part").await, None);
}

#[tokio::test]
async fn local_docs_reject_traversal_and_symlink_escape() {
    let outer = tempfile::tempdir().unwrap();
    write(outer.path(), "secret.md", "top secret");
    let docs = outer.path().join("docs");
    write(&docs, "ok.md", "fine");
    let src = LocalDocsSource::new(&docs).unwrap();
    for bad in [
        "../secret",
        "/etc/passwd",
        "..%2fsecret",
        "%2e%2e/secret",
        "a\\..\\secret",
        "./ok",
        "a/../../secret",
        "",
    ] {
        let err = src.fetch(bad, None).await.unwrap_err();
        assert!(matches!(err, LessonError::InvalidPath(_)), "{bad}: {err:?}");
    }
    // A symlink inside the root that points outside is refused after canonicalization.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(outer.path().join("secret.md"), docs.join("link.md")).unwrap();
        let err = src.fetch("link", None).await.unwrap_err();
        assert!(matches!(err, LessonError::InvalidPath(_)), "{err:?}");
    }
    assert_eq!(src.fetch("ok", None).await.unwrap().unwrap().text, "fine");
}

#[test]
fn front_matter_mdx_and_title() {
    let raw = r#"---
sidebar_label: "Short label"
description: 'x'
---
import Tabs from '@theme/Tabs';
import {
  Foo,
  Bar,
} from '../components';
export const meta = { a: 1 };

# The Real Heading

{/* a JSX comment */}
<!-- an html comment -->

:::tip Remember this
Variables hold **values**.
:::

<Tabs>
  <TabItem value="py" label="Python">
Python text stays.
  </TabItem>
</Tabs>

<Quiz questions={[1, 2]} />

```tsx
import React from 'react';
<Tabs>keep code</Tabs>
```

Inline `<Tag>` stays.
"#;
    let l = Lesson::parse("01-Part/02-variables", raw);
    assert_eq!(l.title, "Short label");
    for gone in [
        "sidebar_label",
        "import Tabs",
        "Foo,",
        "export const",
        "JSX comment",
        "html comment",
        "<TabItem",
        "</Tabs>\n\n<Quiz",
        "<Quiz",
        ":::",
    ] {
        assert!(
            !l.body.contains(gone),
            "{gone:?} still in body:\n{}",
            l.body
        );
    }
    for kept in [
        "# The Real Heading",
        "**Tip: Remember this**",
        "Variables hold **values**.",
        "Python text stays.",
        "import React from 'react';\n<Tabs>keep code</Tabs>",
        "Inline `<Tag>` stays.",
    ] {
        assert!(
            l.body.contains(kept),
            "{kept:?} missing from body:\n{}",
            l.body
        );
    }

    // Title fallbacks: front matter title > sidebar_label > first H1 > path.
    assert_eq!(
        Lesson::parse("x", "---\ntitle: T\nsidebar_label: S\n---\n# H").title,
        "T"
    );
    assert_eq!(Lesson::parse("x", "text\n\n# From H1\n").title, "From H1");
    assert_eq!(
        Lesson::parse("01-Part/03-digital-fte", "no heading").title,
        "Digital Fte"
    );
    // `title:` later in the document is not front matter (the predecessor matched it anywhere).
    assert_eq!(
        Lesson::parse("a/04-x", "# Real\n\n```yaml\ntitle: fake\n```\n").title,
        "Real"
    );
}

#[test]
fn chunking_never_splits_a_fence() {
    let filler = "This paragraph explains an idea in enough words to stand on its own as a section of the lesson. ".repeat(3);
    let raw = format!(
        "# Lesson\n\nIntro. {filler}\n\n## First\n\n{filler}\n\n```markdown\n## Not a heading\n---\n# Also not\n```\n\n~~~\n## tilde fence heading\n~~~\n\n## Second\n\n{filler}\n\n### Sub of second\n\n{filler}\n"
    );
    let l = Lesson::parse("p/l", &raw);
    let headings: Vec<_> = l.chunks.iter().map(|c| c.heading.as_str()).collect();
    assert_eq!(headings, ["Lesson", "First", "Second"], "{:#?}", l.chunks);
    for c in &l.chunks {
        // Fences are balanced inside every chunk.
        assert_eq!(c.text.matches("```").count() % 2, 0, "{c:#?}");
        assert_eq!(c.text.matches("~~~").count() % 2, 0, "{c:#?}");
    }
    assert!(
        l.chunks[1]
            .text
            .contains("## Not a heading\n---\n# Also not")
    );
    assert!(l.chunks[2].text.contains("### Sub of second"));

    // Oversized sections are split at paragraph boundaries, a big fence stays whole.
    let big_code = format!("```\n{}```\n", "let x = 1;\n\nlet y = 2;\n".repeat(150));
    let para = "Word ".repeat(100);
    let raw = format!("## Big\n\n{para}\n\n{para}\n\n{big_code}\n{para}\n\n{para}\n");
    let l = Lesson::parse("p/big", &raw);
    assert!(l.chunks.len() >= 2, "{}", l.chunks.len());
    let fence_chunks: Vec<_> = l.chunks.iter().filter(|c| c.text.contains("```")).collect();
    assert_eq!(fence_chunks.len(), 1);
    assert_eq!(fence_chunks[0].text.matches("```").count(), 2);
    assert!(l.chunks[1].heading.starts_with("Big (part"));

    // Small sections merge; empty body → no chunks.
    let l = Lesson::parse("p/s", "## A\n\nshort\n\n## B\n\nalso short\n");
    assert_eq!(l.chunks.len(), 1);
    assert!(l.chunks[0].text.contains("## B"));
    assert!(
        Lesson::parse("p/e", "---\ntitle: x\n---\n")
            .chunks
            .is_empty()
    );
}

/// (path, Authorization, If-None-Match) of one request.
type Hit = (String, Option<String>, Option<String>);

#[derive(Default)]
struct Gh {
    hits: Mutex<Vec<Hit>>,
}

async fn gh_file(
    State(gh): State<Arc<Gh>>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    gh.hits
        .lock()
        .unwrap()
        .push((path.clone(), h("authorization"), h("if-none-match")));
    match path.as_str() {
        "org/book/main/apps/learn-app/docs/01-Part/intro/index.md" => {
            if h("if-none-match").as_deref() == Some("\"v1\"") {
                return StatusCode::NOT_MODIFIED.into_response();
            }
            ([("etag", "\"v1\"")], "# Intro\n\nHello.").into_response()
        }
        "org/book/main/apps/learn-app/docs/01-Part/broken.md" => {
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

#[tokio::test]
async fn github_source_token_resolution_and_etag() {
    let gh = Arc::new(Gh::default());
    let app = Router::new()
        .route("/{*path}", get(gh_file))
        .with_state(gh.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let src = GitHubSource::new(GitHubConfig {
        repo: "org/book".into(),
        token: Some("ghp_secret".into()),
        base_url: format!("http://{addr}"),
        ..GitHubConfig::default()
    })
    .unwrap();

    let raw = src.fetch("01-Part/intro", None).await.unwrap().unwrap();
    assert_eq!(raw.text, "# Intro\n\nHello.");
    let tried: Vec<String> = gh
        .hits
        .lock()
        .unwrap()
        .iter()
        .map(|h| h.0.clone())
        .collect();
    assert_eq!(
        tried,
        [
            "org/book/main/apps/learn-app/docs/01-Part/intro.md",
            "org/book/main/apps/learn-app/docs/01-Part/intro.mdx",
            "org/book/main/apps/learn-app/docs/01-Part/intro/index.md",
        ]
    );
    assert!(
        gh.hits
            .lock()
            .unwrap()
            .iter()
            .all(|h| h.1.as_deref() == Some("token ghp_secret"))
    );

    // Revalidation asks the resolved file only, with If-None-Match, and gets 304.
    gh.hits.lock().unwrap().clear();
    let etag = raw.etag.clone().unwrap();
    let r = src
        .fetch_if_changed("01-Part/intro", None, Some(&etag))
        .await
        .unwrap();
    assert_eq!(r, Fetched::NotModified);
    let hits = gh.hits.lock().unwrap().clone();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].2.as_deref(), Some("\"v1\""));

    // A stale validator gets the content again.
    let r = src
        .fetch_if_changed("01-Part/intro", None, Some("01-Part/intro/index.md#\"v0\""))
        .await
        .unwrap();
    assert!(matches!(r, Fetched::Modified(_)));

    // Missing → None; server error → Unavailable (not "missing"); traversal → InvalidPath.
    assert_eq!(src.fetch("01-Part/nope", None).await.unwrap(), None);
    assert!(matches!(
        src.fetch("01-Part/broken", None).await,
        Err(LessonError::Unavailable(_))
    ));
    gh.hits.lock().unwrap().clear();
    assert!(matches!(
        src.fetch("../../etc/passwd", None).await,
        Err(LessonError::InvalidPath(_))
    ));
    assert!(gh.hits.lock().unwrap().is_empty());
}

/// The sample book shipped with the binary (what `serve` teaches by default) parses cleanly.
#[tokio::test]
async fn the_sample_book_parses_into_lessons() {
    let root =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../panaversity/sample-book/content");
    let src = LocalDocsSource::new(&root).unwrap();
    let mut lessons = 0;
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p.strip_prefix(&root).unwrap().to_str().unwrap().to_string();
            let Some(lesson_path) = rel.strip_suffix(".md") else {
                continue;
            };
            let raw = src.fetch(lesson_path, None).await.unwrap().unwrap();
            let l = Lesson::parse(lesson_path, &raw.text);
            assert!(!l.title.is_empty(), "{rel}");
            assert!(!l.body.starts_with("---"), "{rel}: front matter left");
            assert!(!l.chunks.is_empty(), "{rel}: no chunks");
            for c in &l.chunks {
                assert_eq!(c.text.matches("```").count() % 2, 0, "{rel}: {c:#?}");
            }
            lessons += 1;
        }
    }
    assert!(
        lessons >= 10,
        "only {lessons} lessons found under {}",
        root.display()
    );
}
