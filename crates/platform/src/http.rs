//! HTTP server assembly shared by both services: request ids, structured request logs, request
//! metrics, body limits, timeouts, panic-to-500, CORS, health/readiness/metrics routes, and
//! serving with graceful shutdown.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

/// The request-id header, honoured when the client sends a sane one and echoed on every response.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the current request (in request extensions, set by [`common_layers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// Options for [`common_layers`].
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Largest accepted request body; bigger ones get 413.
    pub max_body_bytes: usize,
    /// Time allowed until the response head is ready (streamed bodies may run longer); 503 after.
    pub request_timeout: Duration,
    /// Browser origins allowed by CORS (exact `scheme://host[:port]`); empty = no CORS.
    pub allowed_origins: Vec<String>,
    /// When set, every route answers only requests whose `Host` (port ignored) is listed
    /// (DNS-rebinding protection, on in dev mode); others get 403 `FORBIDDEN_HOST`.
    pub allowed_hosts: Option<Vec<String>>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024 * 1024,
            request_timeout: Duration::from_secs(60),
            allowed_origins: Vec::new(),
            allowed_hosts: None,
        }
    }
}

/// A CORS layer for an explicit origin allow-list. A `*` entry is ignored (with a warning): the
/// services authenticate requests, so a wildcard is never used. Credentials are allowed for the
/// listed origins.
pub fn cors_layer(allowed_origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = allowed_origins
        .iter()
        .map(|o| o.trim().trim_end_matches('/'))
        .filter(|o| !o.is_empty())
        .filter_map(|o| {
            if o == "*" {
                tracing::warn!("ignoring wildcard CORS origin: list explicit origins instead");
                return None;
            }
            match HeaderValue::from_str(o) {
                Ok(v) => Some(v),
                Err(_) => {
                    tracing::warn!(origin = o, "ignoring invalid CORS origin");
                    None
                }
            }
        })
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            header::IF_NONE_MATCH,
            X_REQUEST_ID,
            HeaderName::from_static("mcp-session-id"),
            HeaderName::from_static("mcp-protocol-version"),
            HeaderName::from_static("last-event-id"),
            HeaderName::from_static("x-user-id"),
            HeaderName::from_static("x-user-name"),
            HeaderName::from_static("x-agent-id"),
            HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([
            X_REQUEST_ID,
            header::WWW_AUTHENTICATE,
            header::RETRY_AFTER,
            header::ETAG,
            header::CONTENT_DISPOSITION,
            HeaderName::from_static("mcp-session-id"),
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderName::from_static("x-ratelimit-reset"),
            HeaderName::from_static("x-study-turn-id"),
        ])
        .allow_credentials(true)
        .max_age(Duration::from_secs(600))
}

fn valid_request_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

async fn request_id_mw(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| valid_request_id(s))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let hv = HeaderValue::from_str(&id).ok();
    if let Some(hv) = &hv {
        req.headers_mut().insert(X_REQUEST_ID, hv.clone());
    }
    req.extensions_mut().insert(RequestId(id));
    let mut res = next.run(req).await;
    if let Some(hv) = hv {
        res.headers_mut().insert(X_REQUEST_ID, hv);
    }
    res
}

/// The host of a `Host` header value or authority, lower-cased, without port or IPv6 brackets.
pub fn host_of(authority: &str) -> String {
    let a = authority.trim();
    let host = if let Some(rest) = a.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else if a.matches(':').count() > 1 {
        a // a bare IPv6 address
    } else {
        a.split(':').next().unwrap_or("")
    };
    host.to_ascii_lowercase()
}

/// The stable error code of a request whose `Host` is not allowed.
pub const FORBIDDEN_HOST: &str = "FORBIDDEN_HOST";

/// Host-check middleware (DNS-rebinding protection): a request whose `Host` (or `:authority`)
/// names none of `allowed` (host names; any port) gets [`forbidden_host_response`].
pub async fn host_check(
    State(allowed): State<Arc<Vec<String>>>,
    req: Request,
    next: Next,
) -> Response {
    let presented = req
        .headers()
        .get(header::HOST)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let ok = presented
        .as_deref()
        .map(host_of)
        .is_some_and(|h| allowed.iter().any(|a| host_of(a) == h));
    if !ok {
        metrics::counter!("http_forbidden_host_total").increment(1);
        tracing::warn!(
            host = presented.as_deref().unwrap_or("-"),
            allowed = %allowed.join(","),
            "refused a request for a Host that is not allowed (PANAVERSITY_ALLOWED_HOSTS)"
        );
        return forbidden_host_response(presented.as_deref());
    }
    next.run(req).await
}

/// 403 `{"error":{"code":"FORBIDDEN_HOST","message":…,"host":…}}`: the message names the
/// rejected host and the settings that allow it (`PANAVERSITY_ALLOWED_HOSTS`, `--public-url`).
pub fn forbidden_host_response(presented: Option<&str>) -> Response {
    let host: Option<String> = presented.map(|h| h.chars().take(255).collect());
    let what = match &host {
        Some(h) => format!("the Host {h:?} is not served here"),
        None => "a request without a Host header is not served here".to_string(),
    };
    let message = format!(
        "{what} (DNS-rebinding protection): add its name to PANAVERSITY_ALLOWED_HOSTS \
         (--allowed-hosts, comma-separated; default localhost, 127.0.0.1, ::1 and the public \
         URL's host), or set PANAVERSITY_PUBLIC_URL (--public-url) to the URL clients use"
    );
    (
        StatusCode::FORBIDDEN,
        Json(serde_json::json!({
            "error": { "code": FORBIDDEN_HOST, "message": message, "host": host }
        })),
    )
        .into_response()
}

async fn timeout_mw(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "TIMEOUT",
            &format!("the request took longer than {} s", limit.as_secs_f64()),
        ),
    }
}

async fn http_metrics_mw(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    metrics::counter!(
        "http_requests_total",
        "method" => method.clone(),
        "route" => route.clone(),
        "status" => status
    )
    .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    res
}

fn panic_response(err: Box<dyn Any + Send + 'static>) -> Response {
    let detail = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = detail, "request handler panicked");
    metrics::counter!("http_panics_total").increment(1);
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL",
        "internal error; the request was not completed",
    )
}

/// A JSON error response `{"error":{"code":…,"message":…}}`.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

/// Wrap every route of `router` with the common layers, outermost first: request id, trace span
/// (method, path, request_id; status and latency on completion), request metrics
/// (`http_requests_total{method,route,status}`, `http_request_duration_seconds{method,route}`),
/// CORS, panic → 500 JSON, timeout → 503 JSON, body limit → 413.
pub fn common_layers<S>(router: Router<S>, opts: &HttpOptions) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let trace = TraceLayer::new_for_http()
        .make_span_with(|req: &http::Request<Body>| {
            let rid = req
                .extensions()
                .get::<RequestId>()
                .map(|r| r.0.as_str())
                .unwrap_or("-");
            tracing::info_span!(
                "http",
                method = %req.method(),
                path = %req.uri().path(),
                request_id = %rid,
                status = tracing::field::Empty,
                latency_ms = tracing::field::Empty,
            )
        })
        .on_request(())
        .on_response(
            |res: &http::Response<Body>, latency: Duration, span: &Span| {
                let status = res.status().as_u16();
                let ms = latency.as_secs_f64() * 1000.0;
                span.record("status", status);
                span.record("latency_ms", ms);
                tracing::info!(status, latency_ms = ms, "request completed");
            },
        )
        .on_failure(());
    let router = match &opts.allowed_hosts {
        Some(hosts) => router.layer(middleware::from_fn_with_state(
            Arc::new(hosts.clone()),
            host_check,
        )),
        None => router,
    };
    router
        .layer(RequestBodyLimitLayer::new(opts.max_body_bytes))
        .layer(DefaultBodyLimit::max(opts.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            opts.request_timeout,
            timeout_mw,
        ))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(cors_layer(&opts.allowed_origins))
        .layer(middleware::from_fn(http_metrics_mw))
        .layer(trace)
        .layer(middleware::from_fn(request_id_mw))
}

/// One readiness check result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// e.g. `database`, `redis`, `storage`.
    pub name: String,
    pub ok: bool,
    /// A failed critical check makes `/health/ready` answer 503; a non-critical one only
    /// "degraded".
    pub critical: bool,
    /// Error text or other detail (never secrets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl CheckResult {
    /// A passing check.
    pub fn pass(name: impl Into<String>, critical: bool) -> Self {
        Self {
            name: name.into(),
            ok: true,
            critical,
            detail: None,
        }
    }

    /// A failing check with a reason.
    pub fn fail(name: impl Into<String>, critical: bool, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ok: false,
            critical,
            detail: Some(detail.into()),
        }
    }
}

/// Something `/health/ready` asks (database, storage, Redis, …).
#[async_trait::async_trait]
pub trait ReadyCheck: Send + Sync {
    /// Run the checks and report each one.
    async fn check(&self) -> Vec<CheckResult>;
}

/// Several checks run concurrently as one.
pub struct ReadyChecks(pub Vec<Arc<dyn ReadyCheck>>);

#[async_trait::async_trait]
impl ReadyCheck for ReadyChecks {
    async fn check(&self) -> Vec<CheckResult> {
        futures::future::join_all(self.0.iter().map(|c| c.check()))
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}

/// A `SELECT 1` on a database pool.
pub struct DbReadyCheck {
    pub db: crate::db::Db,
    pub name: String,
    pub critical: bool,
}

#[async_trait::async_trait]
impl ReadyCheck for DbReadyCheck {
    async fn check(&self) -> Vec<CheckResult> {
        vec![match self.db.ping().await {
            Ok(()) => CheckResult::pass(&self.name, self.critical),
            Err(e) => CheckResult::fail(&self.name, self.critical, format!("{e:#}")),
        }]
    }
}

/// How long `/health/ready` waits for all checks.
pub const READY_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone)]
struct HealthState {
    ready: Arc<dyn ReadyCheck>,
    metrics: PrometheusHandle,
}

async fn health() -> Response {
    Json(serde_json::json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
        .into_response()
}

async fn ready(State(st): State<HealthState>) -> Response {
    let checks = match tokio::time::timeout(READY_TIMEOUT, st.ready.check()).await {
        Ok(c) => c,
        Err(_) => vec![CheckResult::fail(
            "readiness",
            true,
            format!("checks did not finish within {} s", READY_TIMEOUT.as_secs()),
        )],
    };
    let critical_down = checks.iter().any(|c| c.critical && !c.ok);
    let degraded = checks.iter().any(|c| !c.ok);
    let (status, label) = if critical_down {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    } else if degraded {
        (StatusCode::OK, "degraded")
    } else {
        (StatusCode::OK, "ok")
    };
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({ "status": label, "checks": checks })),
    )
        .into_response()
}

async fn metrics_text(State(st): State<HealthState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render(),
    )
        .into_response()
}

/// `/health` (liveness, no I/O), `/health/ready` (runs `ready` with a timeout: 503 when a
/// critical check fails, 200 `degraded` when only non-critical ones do) and `/metrics`.
pub fn health_router(ready_check: Arc<dyn ReadyCheck>, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .with_state(HealthState {
            ready: ready_check,
            metrics,
        })
}

/// Serve `router` on `listener` until `shutdown` resolves, then stop accepting and wait for
/// in-flight requests (including streams) to finish, with the default connection limits
/// ([`crate::conn::ConnLimits`]). Handlers can read `ConnectInfo<SocketAddr>`.
pub async fn serve(
    router: Router,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with(
        router,
        listener,
        crate::conn::ConnLimits::default(),
        shutdown,
    )
    .await
}

/// [`serve`] with explicit connection limits.
pub async fn serve_with(
    router: Router,
    listener: tokio::net::TcpListener,
    limits: crate::conn::ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().ok();
    tracing::info!(?addr, ?limits, "HTTP server listening");
    crate::conn::serve_with_limits(router, listener, limits, shutdown).await?;
    tracing::info!(?addr, "HTTP server stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C received; shutting down"),
        _ = term => tracing::info!("SIGTERM received; shutting down"),
    }
}
