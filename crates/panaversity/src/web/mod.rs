//! The built-in study page: read a book's lessons and learn them with the tutor, in a browser.
//!
//! Routes (all same-origin; nothing is loaded from anywhere else):
//!
//! | route | what | auth |
//! |---|---|---|
//! | `GET /`, `/learn/{book}`, `/learn/{book}/{lesson…}` | the page (server-rendered HTML) | optional: dev mode renders at once; with auth on, a navigation carries no token, so the page's script fills it through `/learn-api/page` |
//! | `GET /assets/{file}` | CSS, JavaScript, icon (content-hashed, cached a year) | none |
//! | `GET /learn-api/page?path=…` | a page's parts as JSON, for the signed-in reader (their personalized lessons) | required |
//! | `GET /learn-api/me` | who the page is signed in as | required |
//! | `GET /learn-files/{book}/{path…}` | a book's images and other files | required |
//!
//! The tutor panel speaks `POST /chatkit` (see `static/chatkit.js`). Every response carries a
//! strict Content-Security-Policy (`default-src 'self'`, no inline script or style).
//!
//! Files: `pages.rs` (HTML of a page), `lesson.rs` (markdown → safe HTML), `tree.rs` (chapter
//! tree), `assets.rs` (embedded static files), `static/` (the CSS and JavaScript).

mod assets;
mod lesson;
mod pages;
mod tree;

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use pfs::{BookId, BookPath, Engine, ErrorCode, UserId};
use platform::auth::Authenticator;
use platform::identity::{AuthMethod, Identity};
use serde::Deserialize;
use serde_json::json;

use pages::Route;

/// Origins of a local Docusaurus dev server, allowed by CORS in dev mode when `ALLOWED_ORIGINS`
/// is not set.
pub const DEV_ORIGINS: &[&str] = &["http://localhost:3000", "http://127.0.0.1:3000"];

/// The CORS allow-list: `ALLOWED_ORIGINS`, or in dev mode without it [`DEV_ORIGINS`].
pub fn cors_origins(configured: Vec<String>, dev: bool) -> Vec<String> {
    if dev && configured.is_empty() {
        DEV_ORIGINS.iter().map(|o| o.to_string()).collect()
    } else {
        configured
    }
}

/// What the study page needs from the server.
pub struct WebConfig {
    pub engine: Engine,
    pub auth: Arc<Authenticator>,
    /// Dev mode: the page picks the student (`X-User-ID`) instead of asking for a token.
    pub dev: bool,
    /// The book the tutor teaches from (`STUDY_LESSON_BOOK`); `None` when `/chatkit` is not served.
    pub tutor_book: Option<String>,
}

/// Shared state of the page's handlers.
pub struct Web {
    engine: Engine,
    auth: Arc<Authenticator>,
    dev: bool,
    tutor_book: Option<String>,
    meta: tree::MetaCache,
}

/// The study page's routes (see the module docs), with their security headers.
pub fn router(cfg: WebConfig) -> Router {
    let web = Arc::new(Web {
        engine: cfg.engine,
        auth: cfg.auth.clone(),
        dev: cfg.dev,
        tutor_book: cfg.tutor_book,
        meta: tree::MetaCache::default(),
    });
    let api = Router::new()
        .route("/learn-api/page", get(api_page))
        .route("/learn-api/me", get(api_me))
        .route("/learn-files/{book}/{*path}", get(book_file))
        .layer(middleware::from_fn_with_state(
            cfg.auth,
            platform::auth::require_auth,
        ));
    Router::new()
        .route("/", get(page))
        .route("/learn/{book}", get(page))
        .route("/learn/{book}/", get(page))
        .route("/learn/{book}/{*lesson}", get(page))
        .route("/assets/{file}", get(assets::serve))
        .merge(api)
        .with_state(web)
        .layer(middleware::from_fn(security_headers))
}

/// HTML-escape text for element content and quoted attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page's policy: only this origin's scripts, styles, images (and `blob:` images the script
/// fetched with a token), connections; no plugins, framing, or `<base>`.
const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; font-src 'self'; media-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Security headers on every study-page response (a handler's own CSP wins).
async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    let set = [
        (header::CONTENT_SECURITY_POLICY, PAGE_CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            HeaderName::from_static("permissions-policy"),
            "camera=(), microphone=(), geolocation=(), payment=()",
        ),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ];
    for (name, value) in set {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    }
    res
}

/// The student an identity reads as: dev mode's `X-User-ID`, else the subject (the same rule as
/// the tutor's thread owner). `None` when pfs cannot name it (then only the shared text is read).
fn reader(identity: &Identity) -> Option<UserId> {
    let user = match (&identity.method, &identity.acting_user) {
        (AuthMethod::Dev, Some(acting)) if !acting.is_empty() => acting.as_str(),
        _ => identity.subject.as_str(),
    };
    UserId::parse(user).ok()
}

/// `GET /`, `/learn/{book}`, `/learn/{book}/{lesson…}`.
async fn page(State(web): State<Arc<Web>>, req: Request) -> Response {
    let Some(route) = Route::from_path(req.uri().path()) else {
        return pages::not_found_text();
    };
    // A navigation carries no token; in dev mode it still authenticates (as the default user).
    let identity = if web.dev || req.headers().contains_key(header::AUTHORIZATION) {
        web.auth
            .authenticate_from(req.headers(), platform::auth::peer_ip(&req))
            .await
            .ok()
    } else {
        None
    };
    let parts = match &identity {
        Some(id) => pages::render(&web, &route, reader(id).as_ref()).await,
        None => pages::shell(&route),
    };
    pages::document(&web, &parts)
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    path: String,
}

/// `GET /learn-api/page?path=/learn/…`: the page's parts for the signed-in reader.
async fn api_page(
    State(web): State<Arc<Web>>,
    Extension(identity): Extension<Identity>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return platform::http::error_response(
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
            "path is required (a page path such as /learn/sample-book)",
        );
    };
    let Some(route) = Route::from_path(&q.path) else {
        return platform::http::error_response(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "not a study page path",
        );
    };
    let parts = pages::render(&web, &route, reader(&identity).as_ref()).await;
    let mut res = (parts.status, Json(&parts)).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// `GET /learn-api/me`: who the page is signed in as.
async fn api_me(State(web): State<Arc<Web>>, Extension(identity): Extension<Identity>) -> Response {
    let user = match (&identity.method, &identity.acting_user) {
        (AuthMethod::Dev, Some(acting)) if !acting.is_empty() => acting.clone(),
        _ => identity.subject.clone(),
    };
    let mut res = Json(json!({
        "user_id": user,
        "name": identity.name.as_deref().or(identity.email.as_deref()),
        "dev_mode": web.dev,
        "method": identity.method,
    }))
    .into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// `GET /learn-files/{book}/{path…}`: a book's binary file (`static/…`, or a file next to the
/// lessons under `content/`, which `fs ingest` keeps at `static/images/content/…`). Served with
/// a sandboxing policy, so an SVG opened on its own runs no script in this origin.
async fn book_file(
    State(web): State<Arc<Web>>,
    Extension(identity): Extension<Identity>,
    Path((book, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Ok(book) = BookId::parse(&book) else {
        return pages::not_found_text();
    };
    let Ok(bp) = BookPath::parse(&path) else {
        return pages::not_found_text();
    };
    if !pfs::engine::is_binary_file(&bp) {
        return pages::not_found_text();
    }
    let user = reader(&identity);
    let mut tries = vec![bp.clone()];
    if let Some(rest) = bp.as_str().strip_prefix("content/")
        && let Ok(alt) = BookPath::parse(&format!("static/images/content/{rest}"))
    {
        tries.push(alt);
    }
    for p in tries {
        match web.engine.read(&book, &p, user.as_ref()).await {
            Ok(out) => {
                let etag = format!("\"{}\"", out.entry.sha256);
                let fresh = headers
                    .get(header::IF_NONE_MATCH)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
                let mut res = if fresh {
                    StatusCode::NOT_MODIFIED.into_response()
                } else {
                    out.bytes.into_response()
                };
                let h = res.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(pfs_mcp::mime_type(p.as_str())),
                );
                if let Ok(v) = HeaderValue::from_str(&etag) {
                    h.insert(header::ETAG, v);
                }
                h.insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("private, max-age=300"),
                );
                h.insert(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(
                        "default-src 'none'; style-src 'unsafe-inline'; sandbox",
                    ),
                );
                return res;
            }
            Err(e) if e.code() == ErrorCode::NotFound => continue,
            Err(e) => {
                tracing::warn!(error = %e, "study page: book file unreadable");
                return platform::http::error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "STORAGE_UNAVAILABLE",
                    "the book store did not answer; retry shortly",
                );
            }
        }
    }
    pages::not_found_text()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
