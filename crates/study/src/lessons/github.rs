//! Lessons from a GitHub repository through raw URLs, with token auth and ETag revalidation.

use std::time::Duration;

use reqwest::StatusCode;

use super::{Fetched, LessonError, LessonSource, RawLesson, candidates, validate_lesson_path};

/// Where the lessons live on GitHub.
#[derive(Clone)]
pub struct GitHubConfig {
    /// `owner/repo` (`GITHUB_REPO`, default `panaversity/agentfactory`).
    pub repo: String,
    /// Branch or tag (`GITHUB_BRANCH`, default `main`).
    pub branch: String,
    /// Docs directory inside the repository (default `apps/learn-app/docs`).
    pub docs_path: String,
    /// Token sent as `Authorization: token …` (`GITHUB_TOKEN`).
    pub token: Option<String>,
    /// Raw-content base URL (default `https://raw.githubusercontent.com`; tests point it at a
    /// local server).
    pub base_url: String,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for GitHubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubConfig")
            .field("repo", &self.repo)
            .field("branch", &self.branch)
            .field("docs_path", &self.docs_path)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("base_url", &self.base_url)
            .finish()
    }
}

impl Default for GitHubConfig {
    fn default() -> Self {
        GitHubConfig {
            repo: "panaversity/agentfactory".into(),
            branch: "main".into(),
            docs_path: "apps/learn-app/docs".into(),
            token: None,
            base_url: "https://raw.githubusercontent.com".into(),
            timeout: Duration::from_secs(10),
        }
    }
}

impl GitHubConfig {
    /// Defaults overridden by `GITHUB_REPO`, `GITHUB_BRANCH`, `GITHUB_DOCS_PATH`, `GITHUB_TOKEN`
    /// and `GITHUB_RAW_BASE_URL` (empty values are ignored).
    pub fn from_env() -> GitHubConfig {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let d = GitHubConfig::default();
        GitHubConfig {
            repo: var("GITHUB_REPO").unwrap_or(d.repo),
            branch: var("GITHUB_BRANCH").unwrap_or(d.branch),
            docs_path: var("GITHUB_DOCS_PATH").unwrap_or(d.docs_path),
            token: var("GITHUB_TOKEN"),
            base_url: var("GITHUB_RAW_BASE_URL").unwrap_or(d.base_url),
            timeout: d.timeout,
        }
    }
}

/// Fetches `{base_url}/{repo}/{branch}/{docs_path}/{lesson}{.md|.mdx|/index.md|/README.md}`.
///
/// The ETag handed back is `{resolved file}#{etag}` so a revalidation asks the same file with
/// `If-None-Match` (304 → not modified; 404 → resolved again from scratch).
#[derive(Debug, Clone)]
pub struct GitHubSource {
    cfg: GitHubConfig,
    http: reqwest::Client,
}

enum One {
    Found(RawLesson),
    NotModified,
    Missing,
}

impl GitHubSource {
    /// Build the source (and its HTTP client).
    pub fn new(cfg: GitHubConfig) -> Result<GitHubSource, LessonError> {
        crate::llm::ensure_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
            .user_agent("panaversity-study-mode")
            .build()
            .map_err(|e| LessonError::Unavailable(format!("cannot build HTTP client: {e}")))?;
        Ok(GitHubSource { cfg, http })
    }

    fn url(&self, rel: &str) -> String {
        let docs = self.cfg.docs_path.trim_matches('/');
        let base = self.cfg.base_url.trim_end_matches('/');
        if docs.is_empty() {
            format!("{base}/{}/{}/{rel}", self.cfg.repo, self.cfg.branch)
        } else {
            format!("{base}/{}/{}/{docs}/{rel}", self.cfg.repo, self.cfg.branch)
        }
    }

    async fn get_one(&self, rel: &str, if_none_match: Option<&str>) -> Result<One, LessonError> {
        let mut req = self.http.get(self.url(rel));
        if let Some(t) = &self.cfg.token {
            req = req.header("Authorization", format!("token {t}"));
        }
        if let Some(e) = if_none_match {
            req = req.header("If-None-Match", e);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| LessonError::Unavailable(format!("GitHub request failed: {e}")))?;
        match resp.status() {
            StatusCode::OK => {
                let etag = resp
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .map(|e| format!("{rel}#{e}"));
                let text = resp.text().await.map_err(|e| {
                    LessonError::Unavailable(format!("GitHub body read failed: {e}"))
                })?;
                Ok(One::Found(RawLesson { text, etag }))
            }
            StatusCode::NOT_MODIFIED => Ok(One::NotModified),
            StatusCode::NOT_FOUND => Ok(One::Missing),
            s => Err(LessonError::Unavailable(format!(
                "GitHub answered {s} for {rel}"
            ))),
        }
    }
}

#[async_trait::async_trait]
impl LessonSource for GitHubSource {
    async fn fetch(
        &self,
        lesson_path: &str,
        _user: Option<&str>,
    ) -> Result<Option<RawLesson>, LessonError> {
        let path = validate_lesson_path(lesson_path)?;
        for rel in candidates(&path) {
            match self.get_one(&rel, None).await? {
                One::Found(raw) => return Ok(Some(raw)),
                One::Missing | One::NotModified => continue,
            }
        }
        Ok(None)
    }

    async fn fetch_if_changed(
        &self,
        lesson_path: &str,
        user: Option<&str>,
        etag: Option<&str>,
    ) -> Result<Fetched, LessonError> {
        if let Some((rel, tag)) = etag.and_then(|e| e.split_once('#')) {
            let path = validate_lesson_path(lesson_path)?;
            if candidates(&path).iter().any(|c| c == rel) {
                match self.get_one(rel, Some(tag)).await? {
                    One::NotModified => return Ok(Fetched::NotModified),
                    One::Found(raw) => return Ok(Fetched::Modified(raw)),
                    One::Missing => {} // moved or deleted: resolve again
                }
            }
        }
        Ok(match self.fetch(lesson_path, user).await? {
            Some(raw) => Fetched::Modified(raw),
            None => Fetched::NotFound,
        })
    }

    fn name(&self) -> &'static str {
        "github"
    }
}
