//! `GET /chatkit/suggestions?mode=teach|ask&lesson_path=…`: three starter prompts drawn from the
//! lesson's headings and key terms (deterministic, no LLM), rate limited per user.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use platform::identity::{AuthMethod, Identity};
use platform::ratelimit::RateLimiter;
use serde::Deserialize;
use serde_json::json;

use crate::lessons::{Lesson, LessonError, LessonService, parse::key_terms};
use crate::turn::Mode;

/// Longest suggestion, in characters.
pub const MAX_SUGGESTION_CHARS: usize = 80;

fn clip(s: String) -> String {
    if s.chars().count() <= MAX_SUGGESTION_CHARS {
        return s;
    }
    let mut t: String = s.chars().take(MAX_SUGGESTION_CHARS - 3).collect();
    t.truncate(t.trim_end().len());
    t.push_str("...");
    t
}

/// `Heading (part 2)` → `Heading` (the chunker's continuation suffix).
fn strip_part_suffix(h: &str) -> &str {
    if let Some(i) = h.rfind(" (part ")
        && h.ends_with(')')
        && h[i + 7..h.len() - 1].chars().all(|c| c.is_ascii_digit())
    {
        return &h[..i];
    }
    h
}

/// Three suggestions for `mode`, from the lesson when there is one.
pub fn suggestions_for(lesson: Option<&Lesson>, mode: Mode) -> Vec<String> {
    let Some(lesson) = lesson else {
        return match mode {
            Mode::Teach => vec![
                "What topics are covered here?".into(),
                "Explain the main idea".into(),
                "How does this work?".into(),
            ],
            Mode::Ask => vec![
                "Quick summary".into(),
                "Key takeaways".into(),
                "Main concepts".into(),
            ],
        };
    };
    // Section headings other than the lesson title, in order, deduplicated.
    let mut headings: Vec<String> = Vec::new();
    for c in &lesson.chunks {
        let h = strip_part_suffix(&c.heading).trim().to_string();
        if !h.is_empty()
            && !h.eq_ignore_ascii_case(&lesson.title)
            && !headings.iter().any(|x| x.eq_ignore_ascii_case(&h))
        {
            headings.push(h);
        }
    }
    let terms = key_terms(&lesson.body);
    let title = &lesson.title;
    let mut out: Vec<String> = Vec::new();
    let mut push = |s: String| {
        let s = clip(s);
        if !out.iter().any(|x| x.eq_ignore_ascii_case(&s)) {
            out.push(s);
        }
    };
    match mode {
        Mode::Teach => {
            push(format!("Teach me \"{title}\" step by step"));
            if let Some(t) = terms.first() {
                push(format!("What is {t}, and why does it matter?"));
            }
            if let Some(h) = headings.get(1).or(headings.first()) {
                push(format!("Quiz me on \"{h}\""));
            }
            if let Some(h) = headings.first() {
                push(format!("Explain \"{h}\" with an example"));
            }
            if let Some(t) = terms.get(1) {
                push(format!("How is {t} used in practice?"));
            }
        }
        Mode::Ask => {
            push(format!("Summarize \"{title}\" in three points"));
            if let Some(t) = terms.first() {
                push(format!("What does {t} mean?"));
            }
            if let Some(h) = headings.first() {
                push(format!("Give me an example of \"{h}\""));
            }
            if let Some(t) = terms.get(1) {
                push(format!(
                    "What is the difference between {} and {t}?",
                    terms[0]
                ));
            }
            if let Some(h) = headings.get(1) {
                push(format!("What is the key takeaway of \"{h}\"?"));
            }
        }
    }
    let generic = suggestions_for(None, mode);
    for g in generic {
        if out.len() >= 3 {
            break;
        }
        if !out.contains(&g) {
            out.push(g);
        }
    }
    out.truncate(3);
    out
}

#[derive(Debug, Deserialize)]
struct SuggestQuery {
    mode: Option<String>,
    lesson_path: Option<String>,
}

#[derive(Clone)]
struct SuggestState {
    lessons: Arc<LessonService>,
    limiter: Arc<dyn RateLimiter>,
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

/// The user an identity acts as (dev mode may act as `X-User-ID`).
fn user_of(identity: &Identity) -> String {
    match (&identity.method, &identity.acting_user) {
        (AuthMethod::Dev, Some(acting)) if !acting.is_empty() => acting.clone(),
        _ => identity.subject.clone(),
    }
}

async fn suggestions(
    State(st): State<SuggestState>,
    identity: Option<Extension<Identity>>,
    query: Result<Query<SuggestQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(Extension(identity)) = identity else {
        return error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "authentication required",
        );
    };
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_INPUT",
                format!("invalid query: {e}"),
            );
        }
    };
    let mode = match q.mode.as_deref() {
        None | Some("") | Some("teach") => Mode::Teach,
        Some("ask") => Mode::Ask,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_INPUT",
                format!("mode must be teach or ask, not {other:?}"),
            );
        }
    };
    let user = user_of(&identity);
    let headers = match platform::ratelimit::enforce(
        st.limiter.as_ref(),
        &format!("study:suggestions:{user}"),
    )
    .await
    {
        Ok(h) => h,
        Err(resp) => return resp,
    };
    let lesson = match q.lesson_path.as_deref().filter(|p| !p.trim().is_empty()) {
        None => None,
        Some(p) => match st.lessons.get(p, Some(&user)).await {
            Ok(l) => l,
            Err(LessonError::InvalidPath(m)) => {
                return error(StatusCode::BAD_REQUEST, "INVALID_PATH", m);
            }
            Err(LessonError::Unavailable(m)) => {
                tracing::warn!(error = %m, "suggestions without lesson: source unavailable");
                None
            }
        },
    };
    let list = suggestions_for(lesson.as_deref(), mode);
    let mut resp = Json(json!({ "suggestions": list })).into_response();
    resp.headers_mut().extend(headers);
    resp
}

/// `GET /chatkit/suggestions` (needs an `Extension<Identity>` from the auth middleware).
pub fn suggestion_routes(lessons: Arc<LessonService>, limiter: Arc<dyn RateLimiter>) -> Router {
    Router::new()
        .route("/chatkit/suggestions", get(suggestions))
        .with_state(SuggestState { lessons, limiter })
}

/// Both lesson routes: `GET /chatkit/suggestions` and `POST /admin/invalidate-cache`.
/// The admin route authenticates with `X-Admin-Secret` only; mount [`crate::admin::admin_routes`]
/// separately if the user-auth middleware must not cover it.
pub fn lesson_routes(
    lessons: Arc<LessonService>,
    limiter: Arc<dyn RateLimiter>,
    admin_secret: Option<String>,
) -> Router {
    suggestion_routes(lessons.clone(), limiter)
        .merge(crate::admin::admin_routes(lessons, admin_secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_suffix() {
        assert_eq!(strip_part_suffix("Python 3"), "Python 3");
        assert_eq!(strip_part_suffix("Loops (part 2)"), "Loops");
        assert_eq!(strip_part_suffix("f(x) (part x)"), "f(x) (part x)");
    }
}
