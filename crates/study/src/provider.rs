//! What an LLM provider failure means, for the student and for the operator, and the one-call
//! provider check behind `panaversity study check-llm`.
//!
//! Every failure maps to a stable code: `auth` (401/403: the key is wrong), `model_not_found`
//! (404 or a provider message saying the model does not exist), `rate_limited` (429),
//! `unreachable` (connect errors), `timeout`, `provider_error` (5xx, errors inside the stream),
//! `bad_response` (an answer we cannot parse), `config`. The student sees a readable sentence
//! (`allow_retry` only where a retry can help); the operator gets one log line saying what to fix.

use crate::llm::{ChatMessage, LlmClient, LlmError};

/// A classified provider failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// Stable code (see the module docs).
    pub code: &'static str,
    /// What the student reads.
    pub student: String,
    /// Whether retrying the same message can help.
    pub allow_retry: bool,
    /// What the operator should do.
    pub operator: String,
}

fn model_missing(status: u16, message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    status == 404
        || m.contains("model_not_found")
        || (m.contains("model")
            && (m.contains("not found") || m.contains("does not exist") || m.contains("unknown")))
}

/// Classify `e`, raised while calling `model` at `base_url`.
pub fn diagnose(e: &LlmError, base_url: &str, model: &str) -> Diagnosis {
    let d = |code, student: &str, allow_retry, operator: String| Diagnosis {
        code,
        student: student.to_string(),
        allow_retry,
        operator,
    };
    match e {
        LlmError::Status { status, message } if *status == 401 || *status == 403 => d(
            "auth",
            "The tutor can't answer right now: its AI provider refused this site's credentials. The site's operators need to fix this; retrying won't help.",
            false,
            format!(
                "the LLM provider at {base_url} rejected the API key (HTTP {status}: {message}): check OPENAI_API_KEY"
            ),
        ),
        LlmError::Status { status, message } if model_missing(*status, message) => d(
            "model_not_found",
            "The tutor can't answer right now: the AI model it is set up to use is not available. The site's operators need to fix this; retrying won't help.",
            false,
            format!(
                "model {model:?} not found at {base_url} (HTTP {status}: {message}): set STUDY_TEACH_MODEL / STUDY_ASK_MODEL to a model this provider serves"
            ),
        ),
        LlmError::Api(message) if model_missing(0, message) => d(
            "model_not_found",
            "The tutor can't answer right now: the AI model it is set up to use is not available. The site's operators need to fix this; retrying won't help.",
            false,
            format!(
                "model {model:?} not found at {base_url} ({message}): set STUDY_TEACH_MODEL / STUDY_ASK_MODEL"
            ),
        ),
        LlmError::Status {
            status: 429,
            message,
        } => d(
            "rate_limited",
            "The tutor is busy right now (the AI provider is overloaded). Please try again in a moment.",
            true,
            format!(
                "the LLM provider at {base_url} is rate limiting this server (HTTP 429: {message})"
            ),
        ),
        LlmError::Status { status, message } if *status >= 500 || *status == 408 => d(
            "provider_error",
            "The tutor could not answer because the AI provider had a problem. Please try again.",
            true,
            format!("the LLM provider at {base_url} failed (HTTP {status}: {message})"),
        ),
        LlmError::Status { status, message } => d(
            "provider_error",
            "The tutor could not answer because the AI provider refused the request. The site's operators have been told.",
            false,
            format!(
                "the LLM provider at {base_url} refused a call to {model:?} (HTTP {status}: {message})"
            ),
        ),
        LlmError::Connect(msg) => d(
            "unreachable",
            "The tutor's AI provider can't be reached right now. Please try again in a moment.",
            true,
            format!(
                "cannot connect to the LLM provider at {base_url} ({msg}): check OPENAI_BASE_URL and the network"
            ),
        ),
        LlmError::Timeout(kind) => d(
            "timeout",
            "The tutor took too long to answer. Please try again.",
            true,
            format!("the LLM provider at {base_url} timed out ({kind:?}) for model {model:?}"),
        ),
        LlmError::Transport(msg) | LlmError::Api(msg) => d(
            "provider_error",
            "The tutor could not answer because the AI provider had a problem. Please try again.",
            true,
            format!("the LLM stream from {base_url} failed: {msg}"),
        ),
        LlmError::Protocol(msg) => d(
            "bad_response",
            "The tutor could not understand its AI provider's answer. Please try again.",
            true,
            format!(
                "the LLM provider at {base_url} answered something that is not an OpenAI Chat Completions response ({msg}): check OPENAI_BASE_URL (it must end in the API version, e.g. /v1)"
            ),
        ),
        LlmError::Config(msg) => d(
            "config",
            "The tutor is not set up correctly on this server. The site's operators need to fix this.",
            false,
            format!("LLM client configuration error: {msg}"),
        ),
    }
}

/// One line of a provider check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckLine {
    pub mode: &'static str,
    pub model: String,
    /// `None` when the call worked.
    pub failure: Option<Diagnosis>,
}

/// Make one tiny call per configured model (teach and ask; once when they are the same).
pub async fn check(client: &LlmClient) -> Vec<CheckLine> {
    let cfg = client.config();
    let mut lines: Vec<CheckLine> = Vec::new();
    for (mode, model) in [("teach", &cfg.teach_model), ("ask", &cfg.ask_model)] {
        if let Some(prev) = lines.iter().find(|l| &l.model == model) {
            let failure = prev.failure.clone();
            lines.push(CheckLine {
                mode,
                model: model.clone(),
                failure,
            });
            continue;
        }
        let messages = [ChatMessage::user("Reply with the single word: ok")];
        let failure = match client.complete(model, &messages).await {
            Ok(_) => None,
            Err(e) => Some(diagnose(&e, &cfg.base_url, model)),
        };
        lines.push(CheckLine {
            mode,
            model: model.clone(),
            failure,
        });
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::TimeoutKind;

    fn status(status: u16, message: &str) -> LlmError {
        LlmError::Status {
            status,
            message: message.into(),
        }
    }

    #[test]
    fn every_failure_has_a_code_a_sentence_and_a_fix() {
        let cases = [
            (
                status(401, "Incorrect API key"),
                "auth",
                false,
                "OPENAI_API_KEY",
            ),
            (status(403, "forbidden"), "auth", false, "OPENAI_API_KEY"),
            (
                status(404, "404 page not found"),
                "model_not_found",
                false,
                "STUDY_TEACH_MODEL",
            ),
            (
                status(400, "The model `gpt-9` does not exist"),
                "model_not_found",
                false,
                "STUDY_ASK_MODEL",
            ),
            (
                LlmError::Api("model 'llama9' not found, try pulling it first".into()),
                "model_not_found",
                false,
                "STUDY_TEACH_MODEL",
            ),
            (status(429, "slow down"), "rate_limited", true, "429"),
            (status(503, "overloaded"), "provider_error", true, "503"),
            (status(400, "bad request"), "provider_error", false, "400"),
            (
                LlmError::Connect("refused".into()),
                "unreachable",
                true,
                "OPENAI_BASE_URL",
            ),
            (
                LlmError::Timeout(TimeoutKind::FirstToken),
                "timeout",
                true,
                "timed out",
            ),
            (
                LlmError::Protocol("no choices".into()),
                "bad_response",
                true,
                "/v1",
            ),
        ];
        for (e, code, retry, fix) in cases {
            let d = diagnose(&e, "http://llm.local/v1", "gpt-5-mini");
            assert_eq!((d.code, d.allow_retry), (code, retry), "{e}");
            assert!(d.operator.contains(fix), "{e}: {}", d.operator);
            assert!(!d.student.is_empty() && !d.student.contains("HTTP"), "{e}");
        }
    }
}
