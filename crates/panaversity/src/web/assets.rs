//! The study page's own static files (CSS, JavaScript, icon), embedded in the binary and served
//! under `/assets/{stem}-{hash}.{ext}`: the hash is of the file's bytes, so a URL never changes
//! meaning and the files are cached for a year (`immutable`), with an `ETag` for revalidation.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// One embedded file.
pub struct Asset {
    /// The URL path, `/assets/study-1a2b3c4d5e6f.js`.
    pub url: String,
    /// `"…"`, the strong ETag (the same hash).
    etag: String,
    content_type: &'static str,
    bytes: &'static [u8],
}

impl Asset {
    fn new(stem: &str, ext: &str, content_type: &'static str, bytes: &'static [u8]) -> Asset {
        let hash = hex::encode(&Sha256::digest(bytes)[..6]);
        Asset {
            url: format!("/assets/{stem}-{hash}.{ext}"),
            etag: format!("\"{hash}\""),
            content_type,
            bytes,
        }
    }
}

/// Every file the page loads.
pub struct Assets {
    pub css: Asset,
    /// The ChatKit protocol client (no DOM).
    pub chatkit_js: Asset,
    /// The page: navigation, lesson, tutor panel.
    pub study_js: Asset,
    pub icon: Asset,
}

/// The embedded files, hashed once.
pub static ASSETS: LazyLock<Assets> = LazyLock::new(|| Assets {
    css: Asset::new(
        "study",
        "css",
        "text/css; charset=utf-8",
        include_bytes!("static/study.css"),
    ),
    chatkit_js: Asset::new(
        "chatkit",
        "js",
        "text/javascript; charset=utf-8",
        include_bytes!("static/chatkit.js"),
    ),
    study_js: Asset::new(
        "study",
        "js",
        "text/javascript; charset=utf-8",
        include_bytes!("static/study.js"),
    ),
    icon: Asset::new(
        "icon",
        "svg",
        "image/svg+xml",
        include_bytes!("static/icon.svg"),
    ),
});

/// `GET /assets/{file}`.
pub async fn serve(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let a = &*ASSETS;
    let url = format!("/assets/{file}");
    let Some(asset) = [&a.css, &a.chatkit_js, &a.study_js, &a.icon]
        .into_iter()
        .find(|x| x.url == url)
    else {
        return super::pages::not_found_text();
    };
    let etag = HeaderValue::from_str(&asset.etag).unwrap_or(HeaderValue::from_static("\"\""));
    let cache = HeaderValue::from_static("public, max-age=31536000, immutable");
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == asset.etag));
    if fresh {
        return (
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag), (header::CACHE_CONTROL, cache)],
        )
            .into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (header::ETAG, etag),
            (header::CACHE_CONTROL, cache),
        ],
        asset.bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_carry_the_content_hash() {
        let a = &*ASSETS;
        assert!(a.study_js.url.starts_with("/assets/study-"));
        assert!(a.study_js.url.ends_with(".js"));
        assert_ne!(a.study_js.url, a.chatkit_js.url);
        assert_eq!(a.css.etag.len(), 14);
    }
}
