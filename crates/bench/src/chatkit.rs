//! ChatKit streaming benchmark: a fake OpenAI-compatible streaming server (run as a separate
//! `pv-bench fake-llm` process so its sockets do not share the bench's descriptor limit), the
//! real server pointed at it, and N concurrent `threads.create` streams held open together.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::fs::Env;
use crate::server::Server;
use crate::stats::{Samples, check, report, round1};

// ------------------------------------------------------------------------------ fake LLM

/// Settings of the fake LLM.
#[derive(Debug, Clone)]
pub struct FakeLlmOpts {
    pub port: u16,
    /// Content deltas per streamed answer.
    pub deltas: usize,
    /// Pause between deltas.
    pub interval_ms: u64,
}

#[derive(Clone)]
struct LlmState {
    opts: FakeLlmOpts,
    /// `true` = streams may finish; `false` = streams pause after their first delta.
    gate: watch::Sender<bool>,
    requests: Arc<AtomicU64>,
    active: Arc<AtomicUsize>,
}

fn chunk(delta: Value, finish: Option<&str>) -> bytes::Bytes {
    let v = json!({
        "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": "bench",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    });
    bytes::Bytes::from(format!("data: {v}\n\n"))
}

async fn completions(State(st): State<LlmState>, body: axum::Json<Value>) -> Response {
    st.requests.fetch_add(1, Ordering::Relaxed);
    let words = [
        "A program ",
        "is a list ",
        "of instructions ",
        "that a computer ",
        "follows ",
        "in order. ",
    ];
    if body.get("stream").and_then(Value::as_bool) != Some(true) {
        let text: String = words.concat();
        return axum::Json(json!({
            "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        }))
        .into_response();
    }
    let (tx, rx) = mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let mut gate = st.gate.subscribe();
    let opts = st.opts.clone();
    let active = st.active.clone();
    tokio::spawn(async move {
        active.fetch_add(1, Ordering::Relaxed);
        let _ = tx
            .send(Ok(chunk(json!({"role": "assistant", "content": ""}), None)))
            .await;
        let _ = tx.send(Ok(chunk(json!({"content": words[0]}), None))).await;
        // Hold here while the bench keeps every stream open at once.
        let _ = gate.wait_for(|open| *open).await;
        for i in 1..opts.deltas.max(1) {
            tokio::time::sleep(Duration::from_millis(opts.interval_ms)).await;
            let w = words[i % words.len()];
            if tx
                .send(Ok(chunk(json!({"content": w}), None)))
                .await
                .is_err()
            {
                break;
            }
        }
        let _ = tx.send(Ok(chunk(json!({}), Some("stop")))).await;
        let _ = tx
            .send(Ok(bytes::Bytes::from_static(b"data: [DONE]\n\n")))
            .await;
        active.fetch_sub(1, Ordering::Relaxed);
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(ReceiverStream::new(rx)))
        .unwrap_or_else(|_| axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn hold(State(st): State<LlmState>) -> &'static str {
    st.gate.send_replace(false);
    "held"
}

async fn release(State(st): State<LlmState>) -> &'static str {
    st.gate.send_replace(true);
    "released"
}

async fn llm_stats(State(st): State<LlmState>) -> axum::Json<Value> {
    axum::Json(json!({
        "requests": st.requests.load(Ordering::Relaxed),
        "active": st.active.load(Ordering::Relaxed),
    }))
}

/// `fake-llm`: serve `POST /v1/chat/completions` (streamed and not) plus `/control/{hold,release,stats}`
/// on 127.0.0.1; prints `LISTENING <port>` once bound.
pub async fn fake_llm(opts: FakeLlmOpts) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", opts.port))
        .await
        .context("binding the fake LLM")?;
    let port = listener.local_addr()?.port();
    let (gate, _) = watch::channel(true);
    let st = LlmState {
        opts,
        gate,
        requests: Arc::new(AtomicU64::new(0)),
        active: Arc::new(AtomicUsize::new(0)),
    };
    let app = Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/control/hold", post(hold))
        .route("/control/release", post(release))
        .route("/control/stats", get(llm_stats))
        .with_state(st);
    println!("LISTENING {port}");
    axum::serve(listener, app)
        .await
        .context("fake LLM server")?;
    Ok(())
}

/// The fake LLM child process.
struct FakeLlm {
    /// Killed when dropped (`kill_on_drop`).
    _child: tokio::process::Child,
    base: String,
}

impl FakeLlm {
    async fn spawn(deltas: usize, interval_ms: u64) -> anyhow::Result<FakeLlm> {
        let exe = std::env::current_exe().context("locating pv-bench")?;
        let mut child = tokio::process::Command::new(exe)
            .args([
                "fake-llm",
                "--deltas",
                &deltas.to_string(),
                "--interval-ms",
                &interval_ms.to_string(),
            ])
            .stdout(std::process::Stdio::piped())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("spawning the fake LLM")?;
        let stdout = child.stdout.take().context("fake LLM stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .context("the fake LLM did not start in 10 s")??
            .context("the fake LLM exited before listening")?;
        let port: u16 = line
            .strip_prefix("LISTENING ")
            .and_then(|p| p.trim().parse().ok())
            .with_context(|| format!("unexpected fake LLM output {line:?}"))?;
        Ok(FakeLlm {
            _child: child,
            base: format!("http://127.0.0.1:{port}"),
        })
    }

    async fn control(&self, what: &str) -> anyhow::Result<()> {
        let r = reqwest::Client::new()
            .post(format!("{}/control/{what}", self.base))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("fake LLM {what}: HTTP {}", r.status());
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------- the bench

/// Settings of `chatkit`.
#[derive(Debug, Clone)]
pub struct ChatkitOpts {
    pub streams: usize,
    /// HTTP/2 cleartext (prior knowledge) from the clients, `streams_per_conn` streams per
    /// connection; HTTP/1.1 (one connection per stream) otherwise.
    pub h2c: bool,
    pub streams_per_conn: usize,
    /// New streams opened per second.
    pub ramp_per_sec: u64,
    pub deltas: usize,
    pub interval_ms: u64,
    /// Longest wait for every stream to be open at once.
    pub open_timeout_secs: u64,
    /// Server database acquire timeout override (seconds); the server default when `None`.
    pub db_acquire_timeout: Option<u64>,
}

#[derive(Default)]
struct Counters {
    open: AtomicUsize,
    done_ok: AtomicUsize,
    errors: AtomicUsize,
}

/// Raise the soft RLIMIT_NOFILE to the hard limit (children inherit it). Returns (soft, hard).
pub fn raise_nofile() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, initialised struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            let _ = libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    (lim.rlim_cur, lim.rlim_max)
}

const LESSON: &str = "01-Foundations/01-What-Is-A-Program/01-instructions";

/// One ChatKit `threads.create` stream read to its end. `Ok(())` when it ended normally with
/// assistant text and no error event.
async fn one_stream(
    http: reqwest::Client,
    url: String,
    user: String,
    counters: Arc<Counters>,
) -> Result<(), String> {
    let body = json!({"type": "threads.create", "params": {"input": {
        "content": [{"type": "input_text", "text": "What is a program, in one sentence?"}],
        "attachments": [], "inference_options": {"model": "ask"}}}});
    let resp = http
        .post(format!("{url}?lesson_path={LESSON}"))
        .header("x-user-id", &user)
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("request: {e}"))?;
    if !resp.status().is_success() {
        let s = resp.status();
        let t = resp.text().await.unwrap_or_default();
        return Err(format!("HTTP {s}: {}", &t[..t.len().min(200)]));
    }
    let mut stream = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    let (mut opened, mut text, mut done) = (false, false, false);
    while let Some(c) = stream.next().await {
        let c = c.map_err(|e| format!("stream: {e}"))?;
        buf.extend_from_slice(&c);
        while let Some(pos) = buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buf.drain(..pos + 2).collect();
            for line in event.split(|&b| b == b'\n') {
                let Some(data) = line.strip_prefix(b"data: ") else {
                    continue;
                };
                let v: Value =
                    serde_json::from_slice(data).map_err(|e| format!("bad event: {e}"))?;
                match v["type"].as_str().unwrap_or("") {
                    "error" => return Err(format!("error event: {v}")),
                    "thread.item.updated"
                        if v["update"]["type"] == "assistant_message.content_part.text_delta" =>
                    {
                        text = true;
                        if !opened {
                            opened = true;
                            counters.open.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    "thread.item.done" if v["item"]["type"] == "assistant_message" => done = true,
                    _ => {}
                }
            }
        }
    }
    if !text || !done {
        return Err(format!(
            "stream ended early (text={text}, assistant done={done})"
        ));
    }
    Ok(())
}

/// `chatkit`: N concurrent ChatKit streams against the real server and a fake LLM.
pub async fn chatkit(env: &Env, o: &ChatkitOpts) -> anyhow::Result<()> {
    let (soft, hard) = raise_nofile();
    let llm = FakeLlm::spawn(o.deltas, o.interval_ms).await?;
    let dir = env.tempdir("pv-bench-chatkit-")?;
    let spec = env
        .spec(dir.path())
        .env("OPENAI_BASE_URL", format!("{}/v1", llm.base))
        .env("OPENAI_API_KEY", "pv-bench")
        .env("STUDY_RATE_LIMIT", "100000000")
        .env("LLM_IDLE_TIMEOUT_SECS", "600")
        .env("LLM_FIRST_TOKEN_TIMEOUT_SECS", "600");
    let spec = match o.db_acquire_timeout {
        Some(secs) => spec.env("PANAVERSITY_DB_ACQUIRE_TIMEOUT", secs.to_string()),
        None => spec,
    };
    let (server, _) = Server::start(&spec).await?;
    let r = chatkit_run(&server, &llm, o).await;
    let tail = server.log_tail(5);
    server.stop().await?;
    drop(llm);
    let (mut result, mut human, checks) = r?;
    human.insert(
        0,
        format!("RLIMIT_NOFILE soft {soft} / hard {hard} (server inherits it)"),
    );
    result["rlimit_nofile"] = json!(soft);
    if result["errors"].as_u64() != Some(0) {
        human.push(format!("server log tail:\n{tail}"));
    }
    report("chatkit", result, &human, checks);
    Ok(())
}

async fn chatkit_run(
    server: &Server,
    llm: &FakeLlm,
    o: &ChatkitOpts,
) -> anyhow::Result<(Value, Vec<String>, Vec<Value>)> {
    let url = format!("{}/chatkit", server.base);
    let make_client = || -> anyhow::Result<reqwest::Client> {
        let b = reqwest::Client::builder()
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(900))
            .pool_max_idle_per_host(usize::MAX);
        let b = if o.h2c {
            b.http2_prior_knowledge()
        } else {
            b.http1_only()
        };
        b.build().context("building a ChatKit client")
    };
    // Warm-up stream (lesson cache, LLM connection pool, database).
    let warm = make_client()?;
    one_stream(
        warm.clone(),
        url.clone(),
        "bench-warmup".into(),
        Arc::new(Counters::default()),
    )
    .await
    .map_err(|e| anyhow::anyhow!("warm-up stream failed: {e}"))?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_rss = server.vm_rss_kib()?;
    let idle_fds = server.open_fds();

    llm.control("hold").await?;
    let conns = if o.h2c {
        o.streams.div_ceil(o.streams_per_conn.max(1))
    } else {
        1
    };
    let clients: Vec<reqwest::Client> = (0..conns)
        .map(|_| make_client())
        .collect::<anyhow::Result<_>>()?;
    let counters = Arc::new(Counters::default());
    let first_errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let started = Instant::now();
    let mut handles = Vec::with_capacity(o.streams);
    let gap = Duration::from_secs_f64(1.0 / o.ramp_per_sec.max(1) as f64);
    for i in 0..o.streams {
        let http = clients[i % clients.len()].clone();
        let (url, counters, errs) = (url.clone(), counters.clone(), first_errors.clone());
        handles.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = one_stream(http, url, format!("bench-u{i}"), counters.clone()).await;
            match r {
                Ok(()) => {
                    counters.done_ok.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut v) = errs.lock()
                        && v.len() < 5
                    {
                        v.push(e);
                    }
                }
            }
            t.elapsed()
        }));
        // Pace the ramp without a timer per stream.
        let due = gap.mul_f64((i + 1) as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    // Wait until every stream is open (or failed), sampling the server meanwhile.
    let deadline = Instant::now() + Duration::from_secs(o.open_timeout_secs);
    let (mut max_open, mut peak_rss, mut peak_fds) = (0usize, 0u64, 0usize);
    loop {
        let open = counters.open.load(Ordering::Relaxed);
        let errors = counters.errors.load(Ordering::Relaxed);
        max_open = max_open.max(open);
        peak_rss = peak_rss.max(server.vm_rss_kib().unwrap_or(0));
        peak_fds = peak_fds.max(server.open_fds());
        if open + errors >= o.streams || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ramp_secs = started.elapsed().as_secs_f64();
    // Everything open at once: measure, then let the answers finish.
    tokio::time::sleep(Duration::from_millis(500)).await;
    peak_rss = peak_rss.max(server.vm_rss_kib().unwrap_or(0));
    peak_fds = peak_fds.max(server.open_fds());
    let open_together = counters.open.load(Ordering::Relaxed);
    llm.control("release").await?;
    let mut durations = Samples::with_capacity(o.streams);
    for h in handles {
        durations.push(h.await.context("a stream task panicked")?);
    }
    let total_secs = started.elapsed().as_secs_f64();
    // Reply checkpoints written while the answers streamed (the first token's insert included).
    let checkpoints = server
        .metrics()
        .await
        .ok()
        .and_then(|m| metric_value(&m, "study_reply_checkpoints_total"))
        .unwrap_or(0.0);
    let hwm = server.vm_hwm_kib()?;
    let peak = peak_rss.max(hwm);
    let errors = counters.errors.load(Ordering::Relaxed);
    let ok = counters.done_ok.load(Ordering::Relaxed);
    let per_stream_kib = peak.saturating_sub(idle_rss) as f64 / o.streams.max(1) as f64;
    let d = durations.summary();
    let errs = first_errors.lock().map(|v| v.clone()).unwrap_or_default();
    let mut human = vec![
        format!(
            "{} streams over {}, ramp {}/s: {open_together} open at the same time after {ramp_secs:.1} s, {ok} completed, {errors} errors",
            o.streams,
            if o.h2c {
                format!("HTTP/2 cleartext ({conns} client connections)")
            } else {
                "HTTP/1.1 (one connection per stream)".to_string()
            },
            o.ramp_per_sec
        ),
        format!(
            "server RSS idle {:.1} MB -> peak {:.1} MB (VmHWM {:.1} MB): {per_stream_kib:.1} KiB per stream; server fds idle {idle_fds} -> peak {peak_fds}",
            idle_rss as f64 / 1024.0,
            peak_rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        ),
        format!("stream duration (incl. the hold): {}", d.human()),
        format!("all streams done {total_secs:.1} s after the first was opened"),
        format!(
            "reply checkpoints written while streaming: {checkpoints:.0} ({:.2} per stream, final writes not counted)",
            checkpoints / o.streams.max(1) as f64
        ),
    ];
    for e in &errs {
        human.push(format!("error: {e}"));
    }
    let result = json!({
        "streams": o.streams, "transport": if o.h2c { "h2c" } else { "http1" }, "client_connections": conns,
        "open_together": open_together, "max_open_seen": max_open, "completed": ok, "errors": errors,
        "idle_rss_kib": idle_rss, "peak_rss_kib": peak_rss, "vm_hwm_kib": hwm,
        "per_stream_kib": round1(per_stream_kib), "idle_fds": idle_fds, "peak_fds": peak_fds,
        "ramp_seconds": round1(ramp_secs), "total_seconds": round1(total_secs),
        "stream_duration": d.json(), "first_errors": errs,
        "reply_checkpoints": checkpoints,
    });
    let checks = vec![
        check(
            "streams open at the same time",
            open_together as f64,
            ">=",
            o.streams as f64,
        ),
        check("errors", errors as f64, "<=", 0.0),
        check("server RSS per stream KiB", per_stream_kib, "<=", 64.0),
    ];
    Ok((result, human, checks))
}

/// The value of an unlabelled Prometheus sample `name value`, summed over label sets.
fn metric_value(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let v: f64 = rest.rsplit(' ').next()?.parse().ok()?;
        found = Some(found.unwrap_or(0.0) + v);
    }
    found
}

#[cfg(test)]
mod metric_tests {
    #[test]
    fn metric_values_are_summed() {
        let text = "# TYPE x counter\nstudy_reply_checkpoints_total 12\nstudy_reply_checkpoints_total_other 5\nx{a=\"b\"} 1\n";
        assert_eq!(
            super::metric_value(text, "study_reply_checkpoints_total"),
            Some(12.0)
        );
        assert_eq!(super::metric_value(text, "missing"), None);
    }
}
