//! `POST /admin/invalidate-cache`: drop cached lessons after the docs changed.
//!
//! Auth: `X-Admin-Secret` compared in constant time (SHA-256 of both sides, then `subtle`), 401
//! when missing or wrong; the route answers 404 when no secret is configured. The body is read only
//! after the secret matched, and only up to [`MAX_BODY_BYTES`] (413 beyond). Body: an optional
//! JSON array of lesson paths (all lessons when the body is empty or `null`).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::lessons::LessonService;

/// Most paths accepted in one request.
pub const MAX_PATHS: usize = 10_000;
/// Largest request body (a list of lesson paths).
pub const MAX_BODY_BYTES: usize = 8 * 1024;

#[derive(Clone)]
struct AdminState {
    lessons: Arc<LessonService>,
    secret: Option<Arc<[u8; 32]>>,
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

fn digest(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Constant-time check of a presented secret against the configured one's digest.
pub fn secret_matches(expected_digest: &[u8; 32], presented: &[u8]) -> bool {
    bool::from(expected_digest.ct_eq(&digest(presented)))
}

async fn invalidate(State(st): State<AdminState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let headers: HeaderMap = parts.headers;
    let Some(expected) = st.secret.as_ref() else {
        return error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "the admin endpoint is disabled (no ADMIN_SECRET configured)",
        );
    };
    let presented = headers
        .get("x-admin-secret")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if presented.is_empty() || !secret_matches(expected, presented) {
        return error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "missing or invalid X-Admin-Secret",
        );
    }
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("the body is over {MAX_BODY_BYTES} bytes; send fewer paths or none (all)"),
        );
    };
    let paths: Option<Vec<String>> = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Null) => None,
            Ok(Value::Array(items)) => {
                if items.len() > MAX_PATHS {
                    return error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "PAYLOAD_TOO_LARGE",
                        format!("at most {MAX_PATHS} paths per request"),
                    );
                }
                let mut v = Vec::with_capacity(items.len());
                for it in items {
                    match it {
                        Value::String(s) => v.push(s),
                        other => {
                            return error(
                                StatusCode::BAD_REQUEST,
                                "INVALID_INPUT",
                                format!("expected an array of strings, found {other}"),
                            );
                        }
                    }
                }
                Some(v)
            }
            Ok(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_INPUT",
                    "body must be a JSON array of lesson paths (or empty for all)",
                );
            }
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_INPUT",
                    format!("invalid JSON: {e}"),
                );
            }
        }
    };
    let shown: Option<Vec<String>> = paths.as_ref().map(|p| p.iter().take(20).cloned().collect());
    match st.lessons.invalidate(paths).await {
        Ok(n) => {
            tracing::info!(invalidated = n, "lesson cache invalidated");
            let mut body = json!({"status": "ok", "invalidated_count": n});
            match shown {
                Some(p) => body["paths"] = json!(p),
                None => body["scope"] = json!("all"),
            }
            Json(body).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "lesson cache invalidation failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "STORAGE_UNAVAILABLE",
                format!("cache invalidation failed: {e}"),
            )
        }
    }
}

/// `POST /admin/invalidate-cache`. `admin_secret: None` (or empty) disables it (404).
pub fn admin_routes(lessons: Arc<LessonService>, admin_secret: Option<String>) -> Router {
    let secret = admin_secret
        .filter(|s| !s.is_empty())
        .map(|s| Arc::new(digest(s.as_bytes())));
    Router::new()
        .route("/admin/invalidate-cache", post(invalidate))
        .with_state(AdminState { lessons, secret })
}
