//! Logging (tracing-subscriber, text or JSON) and the Prometheus metrics recorder.
//!
//! Both initialisers are idempotent: tests start many servers in one process, and the binary may
//! call them from several subcommands.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// How to log.
#[derive(Debug, Clone)]
pub struct TracingConfig {
    /// One JSON object per line (for log shippers) instead of human-readable text.
    pub json: bool,
    /// An `EnvFilter` directive such as `info` or `info,platform=debug`. `RUST_LOG`, when set,
    /// takes precedence.
    pub filter: String,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            json: false,
            filter: "info".to_owned(),
        }
    }
}

static TRACING: OnceLock<()> = OnceLock::new();

/// Install the global tracing subscriber once. Later calls (or a subscriber installed by someone
/// else, e.g. a test harness) are ignored.
pub fn init_tracing(cfg: TracingConfig) {
    TRACING.get_or_init(|| {
        let filter = EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(&cfg.filter))
            .unwrap_or_else(|_| EnvFilter::new("info"));
        // Logs go to stderr: stdout belongs to command output (`--json`) and to the JSON-RPC
        // stream of `panaversity fs stdio`. Colours only on a terminal.
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_target(true)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
        let res = if cfg.json {
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .try_init()
        } else {
            builder.try_init()
        };
        if res.is_err() {
            // A subscriber is already installed (tests, embedding): keep it.
            tracing::debug!("tracing subscriber already installed");
        }
    });
}

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();
static METRICS_INIT: Mutex<()> = Mutex::new(());

/// Histogram buckets for every metric whose name ends in `_seconds`: from 0.5 ms (rate-limit and
/// cached reads) to 2 min (archives).
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0,
];

/// Install the process-wide Prometheus recorder for the `metrics` facade and return its handle
/// (render it at `/metrics`). Idempotent: repeated calls return the same handle. A background
/// thread runs the recorder's upkeep (histogram draining) every 5 s.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    if let Some(h) = METRICS.get() {
        return Ok(h.clone());
    }
    let _guard = METRICS_INIT
        .lock()
        .map_err(|_| anyhow::anyhow!("metrics initialisation lock poisoned"))?;
    if let Some(h) = METRICS.get() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)
        .context("configuring histogram buckets")?
        .install_recorder()
        .context("installing the Prometheus metrics recorder (is another recorder installed?)")?;
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            }
        })
        .context("spawning the metrics upkeep thread")?;
    let _ = METRICS.set(handle.clone());
    Ok(handle)
}
