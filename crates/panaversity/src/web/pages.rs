//! The study page's HTML: the parts of a page (title, chapter navigation, main content) for a
//! route and a reader, and the document around them (header, account form, tutor panel).
//!
//! The same parts are served inside the document (`GET /`, `/learn/…`) and as JSON for the
//! page's script (`GET /learn-api/page`), which re-renders them for the signed-in student: a
//! browser navigation carries no token or dev-mode `X-User-ID`, so the first render shows what
//! every reader sees, and the script swaps in the student's view (their personalized lessons).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pfs::{BookId, BookPath, ErrorCode, Source, UserId};
use serde::Serialize;
use sha2::{Digest, Sha256};
use study::lessons::{candidates, parse::title_from_path, validate_lesson_path};

use super::assets::ASSETS;
use super::lesson::{self, LessonRef, lesson_url};
use super::tree;
use super::{Web, esc};

/// Which page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/`: every book.
    Home,
    /// `/learn/{book}`: one book's chapters.
    Book(String),
    /// `/learn/{book}/{lesson}`.
    Lesson(String, String),
}

impl Route {
    /// The route of a page URL path (`location.pathname`, percent-encoded).
    pub fn from_path(path: &str) -> Option<Route> {
        let decoded = percent_encoding::percent_decode_str(path)
            .decode_utf8()
            .ok()?;
        let p = decoded.trim_end_matches('/');
        if p.is_empty() {
            return Some(Route::Home);
        }
        let rest = p.strip_prefix("/learn/")?;
        Some(match rest.split_once('/') {
            None => Route::Book(rest.to_string()),
            Some((book, lesson)) => Route::Lesson(book.to_string(), lesson.to_string()),
        })
    }
}

/// A rendered page, before it is put into the document or sent as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Parts {
    /// The `<title>` (without the site name).
    pub title: String,
    /// The chapter navigation.
    pub nav: String,
    /// The main content.
    pub main: String,
    /// Changes whenever `nav` or `main` does.
    pub fingerprint: String,
    /// The book shown, if any.
    pub book: Option<String>,
    /// The lesson shown (its lesson path, as the tutor names it), if any.
    pub lesson: Option<String>,
    /// The lesson is the reader's personalized copy.
    pub overlay: bool,
    #[serde(skip)]
    pub status: StatusCode,
}

impl Parts {
    fn new(title: String, nav: String, main: String, status: StatusCode) -> Parts {
        let mut h = Sha256::new();
        h.update(nav.as_bytes());
        h.update([0]);
        h.update(main.as_bytes());
        Parts {
            title,
            fingerprint: hex::encode(&h.finalize()[..8]),
            nav,
            main,
            book: None,
            lesson: None,
            overlay: false,
            status,
        }
    }
}

/// A book's display name: `sample-book` → `Sample Book`.
fn book_title(book: &str) -> String {
    title_from_path(book)
}

fn not_found(what: &str) -> Parts {
    Parts::new(
        "Not found".into(),
        String::new(),
        format!(
            "<div class=\"empty\"><h1>Not found</h1><p>{}</p><p><a href=\"/\">Back to all books</a></p></div>",
            esc(what)
        ),
        StatusCode::NOT_FOUND,
    )
}

fn unavailable(err: &pfs::PfsError) -> Parts {
    tracing::warn!(error = %err, "study page: book store unavailable");
    Parts::new(
        "Unavailable".into(),
        String::new(),
        "<div class=\"empty\"><h1>The books are unavailable</h1><p>The book store did not answer. Reload the page in a moment.</p></div>".into(),
        StatusCode::SERVICE_UNAVAILABLE,
    )
}

/// The parts of `route` as `user` sees it (`None`: the shared text only).
pub async fn render(web: &Web, route: &Route, user: Option<&UserId>) -> Parts {
    match route {
        Route::Home => home(web, user).await,
        Route::Book(book) => book_page(web, book, user).await,
        Route::Lesson(book, lesson) => lesson_page(web, book, lesson, user).await,
    }
}

async fn home(web: &Web, user: Option<&UserId>) -> Parts {
    let books = match web.engine.list_books().await {
        Ok(b) => b,
        Err(e) => return unavailable(&e),
    };
    let mut main = String::from(
        "<div class=\"home\"><h1>Study</h1><p class=\"lead\">Pick a lesson to read. The tutor on each lesson page teaches it step by step (<strong>Teach</strong>) or answers your questions about it (<strong>Ask</strong>); select text in a lesson to ask about that passage.</p>",
    );
    let mut nav = String::new();
    if books.is_empty() {
        main.push_str("<p>There are no books yet. Load one with <code>panaversity fs ingest</code> or <code>panaversity fs seed</code>.</p>");
    }
    for b in &books {
        let Ok(id) = BookId::parse(&b.book_id) else {
            continue;
        };
        let t = match tree::build(&web.engine, &web.meta, &id, user).await {
            Ok(t) => t,
            Err(e) => return unavailable(&e),
        };
        let title = book_title(&b.book_id);
        let first = t.lessons().first().map(|l| {
            format!(
                " <a class=\"button\" href=\"{}\">Start with “{}”</a>",
                esc(&lesson_url(&b.book_id, &l.route)),
                esc(&l.title)
            )
        });
        main.push_str(&format!(
            "<section class=\"book-card\" aria-labelledby=\"book-{id}\"><h2 id=\"book-{id}\"><a href=\"/learn/{id}\">{title}</a></h2><p>{n} lessons.{first}</p></section>",
            id = esc(&b.book_id),
            title = esc(&title),
            n = t.lessons().len(),
            first = first.unwrap_or_default(),
        ));
        nav.push_str(&format!(
            "<h2 class=\"nav-book\"><a href=\"/learn/{}\">{}</a></h2>{}",
            esc(&b.book_id),
            esc(&title),
            tree::render(&b.book_id, &t, None)
        ));
    }
    main.push_str("</div>");
    Parts::new("All books".into(), nav, main, StatusCode::OK)
}

async fn book_page(web: &Web, book: &str, user: Option<&UserId>) -> Parts {
    let Ok(id) = BookId::parse(book) else {
        return not_found("There is no book with this name.");
    };
    match web.engine.book(&id).await {
        Ok(Some(_)) => {}
        Ok(None) => return not_found("There is no book with this name."),
        Err(e) => return unavailable(&e),
    }
    let t = match tree::build(&web.engine, &web.meta, &id, user).await {
        Ok(t) => t,
        Err(e) => return unavailable(&e),
    };
    let title = book_title(book);
    let tree_html = tree::render(book, &t, None);
    let first = t.lessons().first().map(|l| {
        format!(
            "<p><a class=\"button\" href=\"{}\">Start with “{}”</a></p>",
            esc(&lesson_url(book, &l.route)),
            esc(&l.title)
        )
    });
    let main = format!(
        "<div class=\"book\"><h1>{}</h1>{}<div class=\"contents\"><h2>Contents</h2>{}</div></div>",
        esc(&title),
        first.unwrap_or_default(),
        tree_html
    );
    let nav = nav_for(book, &title, &tree_html);
    let mut p = Parts::new(title, nav, main, StatusCode::OK);
    p.book = Some(book.to_string());
    p
}

fn nav_for(book: &str, title: &str, tree_html: &str) -> String {
    format!(
        "<h2 class=\"nav-book\"><a href=\"/learn/{}\">{}</a></h2>{}",
        esc(book),
        esc(title),
        tree_html
    )
}

async fn lesson_page(web: &Web, book: &str, lesson: &str, user: Option<&UserId>) -> Parts {
    let Ok(id) = BookId::parse(book) else {
        return not_found("There is no book with this name.");
    };
    let Ok(path) = validate_lesson_path(lesson) else {
        return not_found("This is not a lesson address.");
    };
    // The lesson file: the same candidates the tutor tries, in the same order.
    let mut found = None;
    for rel in candidates(&path) {
        let Ok(bp) = BookPath::parse_content(&format!("content/{rel}")) else {
            continue;
        };
        if !tree::is_lesson_file(bp.as_str()) {
            continue;
        }
        match web.engine.read(&id, &bp, user).await {
            Ok(out) => {
                found = Some((bp, out));
                break;
            }
            Err(e) if matches!(e.code(), ErrorCode::NotFound | ErrorCode::InvalidPath) => {}
            Err(e) => return unavailable(&e),
        }
    }
    let Some((bp, out)) = found else {
        return not_found("This lesson does not exist (or no longer does).");
    };
    let raw = String::from_utf8_lossy(&out.bytes);
    let route = lesson::lesson_route(bp.as_str());
    let rendered = lesson::render(
        LessonRef {
            book,
            file: bp.as_str(),
        },
        &raw,
    );
    let t = match tree::build(&web.engine, &web.meta, &id, user).await {
        Ok(t) => t,
        Err(e) => return unavailable(&e),
    };
    let overlay = out.source == Source::Overlay;
    let mut main = String::new();
    if overlay {
        let stale = out.base_sha256.is_some() && out.entry.base_sha256 != out.base_sha256;
        main.push_str(&format!(
            "<p class=\"overlay-marker\" id=\"pv-overlay-marker\"><span aria-hidden=\"true\">✦</span> <strong>Personalized for you.</strong> This is your own version of the lesson.{}</p>",
            if stale {
                " The shared lesson has changed since it was made."
            } else {
                ""
            }
        ));
    }
    main.push_str(&format!(
        "<article class=\"lesson\" id=\"pv-lesson\" data-lesson-path=\"{}\">{}</article>",
        esc(&route),
        rendered.html
    ));
    let order = t.lessons();
    if let Some(i) = order.iter().position(|l| l.route == route) {
        let prev = i.checked_sub(1).and_then(|j| order.get(j));
        let next = order.get(i + 1);
        main.push_str("<nav class=\"pager\" aria-label=\"Previous and next lesson\">");
        if let Some(p) = prev {
            main.push_str(&format!(
                "<a class=\"prev\" href=\"{}\" rel=\"prev\"><span class=\"pager-label\">Previous</span> {}</a>",
                esc(&lesson_url(book, &p.route)),
                esc(&p.title)
            ));
        }
        if let Some(n) = next {
            main.push_str(&format!(
                "<a class=\"next\" href=\"{}\" rel=\"next\"><span class=\"pager-label\">Next</span> {}</a>",
                esc(&lesson_url(book, &n.route)),
                esc(&n.title)
            ));
        }
        main.push_str("</nav>");
    }
    let nav = nav_for(
        book,
        &book_title(book),
        &tree::render(book, &t, Some(&route)),
    );
    let mut p = Parts::new(rendered.title, nav, main, StatusCode::OK);
    p.book = Some(book.to_string());
    p.lesson = Some(route);
    p.overlay = overlay;
    p
}

/// The page shown before the reader is known (auth on, no token sent with a navigation): the
/// script signs in and fills it.
pub fn shell(route: &Route) -> Parts {
    let (book, lesson) = match route {
        Route::Home => (None, None),
        Route::Book(b) => (Some(b.clone()), None),
        Route::Lesson(b, l) => (Some(b.clone()), Some(l.clone())),
    };
    let mut p = Parts::new(
        "Sign in".into(),
        String::new(),
        "<div class=\"empty\" id=\"pv-signin-needed\"><h1>Sign in to study</h1><p>This server asks who you are before it shows its books. Use <strong>Sign in</strong> at the top of the page and paste your access token.</p></div>".into(),
        StatusCode::OK,
    );
    p.book = book;
    p.lesson = lesson.and_then(|l| validate_lesson_path(&l).ok());
    p
}

/// The whole document around `parts`.
pub fn document(web: &Web, parts: &Parts) -> Response {
    let a = &*ASSETS;
    let tutor_on = parts.lesson.is_some() && web.tutor_book.is_some();
    // The tutor reads lessons from one book; elsewhere it answers without the lesson text.
    let tutor_lesson = match (&web.tutor_book, &parts.book, &parts.lesson) {
        (Some(tb), Some(b), Some(l)) if tb == b => l.clone(),
        _ => String::new(),
    };
    let html = format!(
        r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>{title} · Panaversity Study</title>
<link rel="icon" href="{icon}" type="image/svg+xml">
<link rel="stylesheet" href="{css}">
<script src="{chatkit_js}" defer></script>
<script src="{study_js}" defer></script>
</head>
<body data-auth="{auth}" data-book="{book}" data-lesson="{lesson}" data-tutor-lesson="{tutor_lesson}" data-tutor-book="{tutor_book}" data-tutor="{tutor}" data-fingerprint="{fingerprint}">
<a class="skip-link" href="#pv-main">Skip to content</a>
<header class="topbar">
<button type="button" class="nav-toggle" id="pv-nav-toggle" aria-controls="pv-sidebar" aria-expanded="false">Chapters</button>
<a class="brand" href="/"><img src="{icon}" alt="" width="28" height="28"><span>Panaversity <em>Study</em></span></a>
<div class="who"><span id="pv-who-text">{who}</span> <button type="button" id="pv-account-btn" aria-controls="pv-account" aria-expanded="false">{account_label}</button></div>
{tutor_toggle}
</header>
{account}
<div class="layout{layout_class}">
<nav id="pv-sidebar" class="sidebar" aria-label="Books and lessons">{nav}</nav>
<main id="pv-main" tabindex="-1">{main}</main>
{tutor_panel}
</div>
</body>
</html>
"##,
        title = esc(&parts.title),
        icon = a.icon.url,
        css = a.css.url,
        chatkit_js = a.chatkit_js.url,
        study_js = a.study_js.url,
        auth = if web.dev { "dev" } else { "token" },
        book = esc(parts.book.as_deref().unwrap_or("")),
        lesson = esc(parts.lesson.as_deref().unwrap_or("")),
        tutor_lesson = esc(&tutor_lesson),
        tutor_book = esc(web.tutor_book.as_deref().unwrap_or("")),
        tutor = if tutor_on { "on" } else { "off" },
        fingerprint = parts.fingerprint,
        who = if web.dev { "Dev mode" } else { "Not signed in" },
        account_label = if web.dev { "Change student" } else { "Sign in" },
        account = account_form(web.dev),
        layout_class = if tutor_on { " with-tutor" } else { "" },
        tutor_toggle = if tutor_on {
            r#"<button type="button" class="tutor-toggle" id="pv-tutor-toggle" aria-controls="pv-tutor" aria-expanded="false">Tutor</button>"#
        } else {
            ""
        },
        tutor_panel = if tutor_on { TUTOR_PANEL } else { "" },
        nav = parts.nav,
        main = parts.main,
    );
    let mut resp = (parts.status, html).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn account_form(dev: bool) -> String {
    let fields = if dev {
        r#"<p class="hint">Dev mode: no sign-in. Pick who you are studying as; the tutor keeps each student's conversations and personalized lessons apart (sent as <code>X-User-ID</code>).</p>
<div class="field"><label for="pv-dev-user">Student ID</label><input id="pv-dev-user" name="user" autocomplete="username" maxlength="128" pattern="[A-Za-z0-9_.@:\-]{1,128}" placeholder="student-1" aria-describedby="pv-dev-user-hint"><span class="hint" id="pv-dev-user-hint">Letters, digits and <code>_ . @ : -</code>; empty: the server's dev user.</span></div>
<div class="field"><label for="pv-dev-name">Your name (optional)</label><input id="pv-dev-name" name="name" autocomplete="name" maxlength="200"></div>"#
    } else {
        r#"<p class="hint">Paste an access token from your Panaversity sign-in (a JWT or an API key). It is kept in this browser only (<code>localStorage</code>) and sent as <code>Authorization: Bearer</code> to this server.</p>
<div class="field"><label for="pv-token">Access token</label><input id="pv-token" name="token" type="password" autocomplete="off" spellcheck="false"></div>"#
    };
    format!(
        r#"<section id="pv-account" class="account" aria-labelledby="pv-account-title" hidden>
<form id="pv-account-form">
<h2 id="pv-account-title">{title}</h2>
<p class="hint" id="pv-account-current"></p>
{fields}
<p class="form-error" id="pv-account-error" role="alert"></p>
<div class="actions"><button type="submit" class="primary">Save</button> <button type="button" id="pv-signout">{signout}</button> <button type="button" id="pv-account-cancel">Cancel</button></div>
</form>
</section>"#,
        title = if dev { "Study as" } else { "Sign in" },
        signout = if dev { "Use the default" } else { "Sign out" },
    )
}

const TUTOR_PANEL: &str = r#"<aside id="pv-tutor" class="tutor" aria-labelledby="pv-tutor-title">
<div class="tutor-head">
<h2 id="pv-tutor-title">Tutor</h2>
<div class="tutor-tools">
<button type="button" id="pv-history-btn" aria-controls="pv-history" aria-expanded="false">History</button>
<button type="button" id="pv-new-chat">New chat</button>
<button type="button" id="pv-tutor-close" class="sheet-close" aria-label="Close the tutor">Close</button>
</div>
</div>
<fieldset class="modes">
<legend class="visually-hidden">Tutor mode</legend>
<input type="radio" name="pv-mode" id="pv-mode-teach" value="teach" checked><label for="pv-mode-teach">Teach</label>
<input type="radio" name="pv-mode" id="pv-mode-ask" value="ask"><label for="pv-mode-ask">Ask</label>
</fieldset>
<p class="mode-hint" id="pv-mode-hint">Teach: the tutor walks you through this lesson and checks your understanding.</p>
<section id="pv-history" class="history" aria-labelledby="pv-history-title" hidden>
<h3 id="pv-history-title">Your conversations</h3>
<p id="pv-history-empty" class="hint" hidden>No conversations yet.</p>
<ul id="pv-thread-list" class="thread-list"></ul>
</section>
<p id="pv-thread-title" class="thread-title" hidden></p>
<div id="pv-messages" class="messages" role="log" aria-label="Conversation" aria-live="off" tabindex="0"></div>
<div id="pv-suggestions" class="suggestions" role="group" aria-label="Suggested questions"></div>
<div id="pv-selection" class="selection" hidden>
<p class="selection-text">About: <q id="pv-selection-text"></q></p>
<button type="button" id="pv-clear-selection" aria-label="Don't ask about the selected text">Remove</button>
</div>
<form id="pv-composer" class="composer">
<label for="pv-prompt" class="visually-hidden">Message to the tutor</label>
<textarea id="pv-prompt" name="prompt" rows="2" placeholder="Ask a question or answer the tutor" aria-describedby="pv-composer-hint"></textarea>
<div class="composer-actions">
<span id="pv-composer-hint" class="hint">Enter sends, Shift+Enter adds a line.</span>
<button type="button" id="pv-stop" hidden>Stop</button>
<button type="submit" id="pv-send" class="primary">Send</button>
</div>
</form>
<p id="pv-status" class="visually-hidden" role="status" aria-live="polite"></p>
</aside>"#;

/// A plain-text 404 (unknown asset).
pub fn not_found_text() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "not found\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(Route::from_path("/"), Some(Route::Home));
        assert_eq!(Route::from_path(""), Some(Route::Home));
        assert_eq!(
            Route::from_path("/learn/sample-book/"),
            Some(Route::Book("sample-book".into()))
        );
        assert_eq!(
            Route::from_path("/learn/b/01-a/02-b%2Dc"),
            Some(Route::Lesson("b".into(), "01-a/02-b-c".into()))
        );
        assert_eq!(Route::from_path("/other"), None);
    }
}
