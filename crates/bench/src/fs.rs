//! PanaversityFS benchmarks against the real server over MCP HTTP: write, read (base and
//! overlay), archive, plan_build, grep, and cold start.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::mcp::{CallError, Mcp, lesson_path};
use crate::server::{Server, ServerSpec};
use crate::stats::{Samples, check, median_ms, report, round1, round3};

/// Settings shared by every server benchmark.
#[derive(Debug, Clone)]
pub struct Env {
    /// The `panaversity` binary.
    pub bin: PathBuf,
    /// Server log level.
    pub log_level: String,
    /// Parent of the temporary data directories.
    pub work_dir: PathBuf,
}

impl Env {
    /// A fresh temporary data directory (removed when dropped).
    pub fn tempdir(&self, prefix: &str) -> anyhow::Result<tempfile::TempDir> {
        std::fs::create_dir_all(&self.work_dir)?;
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&self.work_dir)
            .context("creating a temporary data directory")
    }

    /// A dev-mode server spec on `dir`.
    pub fn spec(&self, dir: &Path) -> ServerSpec {
        ServerSpec::new(&self.bin, dir, &self.log_level)
    }
}

/// CPU used by the server and by this bench process over a measured interval (the two share the
/// machine's cores).
struct CpuMeter {
    t: Instant,
    server: f64,
    me: f64,
}

impl CpuMeter {
    fn start(server: &Server) -> CpuMeter {
        CpuMeter {
            t: Instant::now(),
            server: server.cpu_secs(),
            me: crate::server::proc_cpu_secs(std::process::id()).unwrap_or(0.0),
        }
    }

    /// Add `server_cpu_cores` / `bench_cpu_cores` (average cores busy) to the result.
    fn finish(self, server: &Server, result: &mut Value, human: &mut Vec<String>) {
        let wall = self.t.elapsed().as_secs_f64().max(1e-9);
        let s = (server.cpu_secs() - self.server) / wall;
        let me = (crate::server::proc_cpu_secs(std::process::id()).unwrap_or(0.0) - self.me) / wall;
        human.push(format!(
            "CPU over the run (incl. setup): server {s:.2} cores, bench client {me:.2} cores (machine: {} cores)",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
        ));
        result["server_cpu_cores"] = json!(round3(s));
        result["bench_cpu_cores"] = json!(round3(me));
    }
}

/// Run `n` futures made by `make(i)` with at most `concurrency` in flight; fail on the first error.
async fn bounded<F, Fut>(n: usize, concurrency: usize, make: F) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut s = futures::stream::iter((0..n).map(make)).buffer_unordered(concurrency.max(1));
    while let Some(r) = s.next().await {
        r?;
    }
    Ok(())
}

fn hash_of(v: &Value, field: &str) -> anyhow::Result<String> {
    v.get(field)
        .and_then(Value::as_str)
        .map(str::to_string)
        .with_context(|| format!("no {field} in {v}"))
}

/// Write `count` small lessons into `book` (`lesson_path(0..count)`), `concurrency` at a time.
async fn seed_lessons(
    mcp: &Mcp,
    book: &str,
    count: usize,
    concurrency: usize,
    body: impl Fn(usize) -> String,
) -> anyhow::Result<()> {
    let body = &body;
    bounded(count, concurrency, |i| async move {
        mcp.call(
            "write_content",
            json!({"book_id": book, "path": lesson_path(i), "content": body(i)}),
        )
        .await
        .with_context(|| format!("seeding {}", lesson_path(i)))?;
        Ok(())
    })
    .await
}

// ------------------------------------------------------------------------------------- write

/// Which database the write benchmark runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DbChoice {
    Sqlite,
    Postgres,
}

/// A PostgreSQL database created for one run and dropped afterwards.
struct PgScratch {
    admin_url: String,
    name: String,
    url: String,
}

impl PgScratch {
    async fn create(admin_url: &str) -> anyhow::Result<PgScratch> {
        platform::db::install_drivers();
        let name = format!("bench_{}", uuid::Uuid::new_v4().simple());
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(admin_url)
            .await
            .with_context(|| format!("connecting to {admin_url}"))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&pool)
            .await
            .context("CREATE DATABASE")?;
        pool.close().await;
        Ok(PgScratch {
            admin_url: admin_url.to_string(),
            url: platform::db::replace_db_name(admin_url, &name),
            name,
        })
    }

    async fn drop_db(self) -> anyhow::Result<()> {
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(&self.admin_url)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&pool)
        .await
        .context("DROP DATABASE")?;
        pool.close().await;
        Ok(())
    }
}

/// Settings of `write`.
#[derive(Debug, Clone)]
pub struct WriteOpts {
    pub db: DbChoice,
    pub admin_url: String,
    pub clients: usize,
    pub seconds: f64,
    pub max_ops_per_client: u64,
    /// Use the hash returned by the previous write instead of reading first.
    pub skip_read: bool,
    pub pool_size: Option<u32>,
}

/// `write`: each client owns one file and loops read → write_content(expected_hash).
pub async fn write(env: &Env, o: &WriteOpts) -> anyhow::Result<()> {
    let dir = env.tempdir("pv-bench-write-")?;
    let pg = match o.db {
        DbChoice::Postgres => Some(PgScratch::create(&o.admin_url).await?),
        DbChoice::Sqlite => None,
    };
    let mut spec = env.spec(dir.path());
    spec.database_url = pg.as_ref().map(|p| p.url.clone());
    spec.args.push("--no-sample".into());
    if let Some(n) = o.pool_size {
        spec.args.extend(["--db-pool-size".into(), n.to_string()]);
    }
    let result = async {
        let (server, _) = Server::start(&spec).await?;
        let cpu = CpuMeter::start(&server);
        let r = write_run(&server, o).await;
        let r = r.map(|(mut v, mut h, c)| {
            cpu.finish(&server, &mut v, &mut h);
            (v, h, c)
        });
        let metrics = server.metrics().await.unwrap_or_default();
        server.stop().await?;
        r.map(|v| (v, metrics))
    }
    .await;
    if let Some(pg) = pg {
        pg.drop_db().await?;
    }
    let ((result, human, checks), metrics) = result?;
    let mut human = human;
    if let Some(line) = tool_histogram_line(&metrics, "write_content") {
        human.push(line);
    }
    report("write", result, &human, checks);
    Ok(())
}

async fn write_run(
    server: &Server,
    o: &WriteOpts,
) -> anyhow::Result<(Value, Vec<String>, Vec<Value>)> {
    let mcp = Mcp::new(&server.base)?;
    let book = "bench-write";
    let base_text = "# Lesson\n\nThis lesson is rewritten by the write benchmark. ".repeat(24);
    let mut hashes = Vec::with_capacity(o.clients);
    for c in 0..o.clients {
        let v = mcp
            .call(
                "write_content",
                json!({"book_id": book, "path": lesson_path(c), "content": format!("{base_text}\nclient {c} rev 0\n")}),
            )
            .await
            .with_context(|| format!("creating the file of client {c}"))?;
        hashes.push(hash_of(&v, "file_hash")?);
    }
    let dur = Duration::from_secs_f64(o.seconds);
    let conflicts = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (c, first_hash) in hashes.into_iter().enumerate() {
        let mcp = mcp.clone();
        let text = base_text.clone();
        let conflicts = conflicts.clone();
        let (max_ops, skip_read) = (o.max_ops_per_client, o.skip_read);
        tasks.push(tokio::spawn(async move {
            let path = lesson_path(c);
            let mut writes = Samples::with_capacity(4096);
            let mut reads = Samples::with_capacity(4096);
            let mut iters = Samples::with_capacity(4096);
            let mut hash = first_hash;
            let mut errors = Vec::new();
            let mut n = 0u64;
            while started.elapsed() < dur && n < max_ops {
                n += 1;
                let t0 = Instant::now();
                if !skip_read {
                    match mcp
                        .call("read_content", json!({"book_id": book, "path": path}))
                        .await
                    {
                        Ok(v) => {
                            if let Some(h) = v.get("file_hash_sha256").and_then(Value::as_str) {
                                hash = h.to_string();
                            }
                        }
                        Err(e) => {
                            errors.push(e.to_string());
                            continue;
                        }
                    }
                    reads.push(t0.elapsed());
                }
                let t1 = Instant::now();
                let r = mcp
                    .call(
                        "write_content",
                        json!({"book_id": book, "path": path, "content": format!("{text}\nclient {c} rev {n}\n"), "expected_hash": hash}),
                    )
                    .await;
                match r {
                    Ok(v) => {
                        writes.push(t1.elapsed());
                        iters.push(t0.elapsed());
                        if let Some(h) = v.get("file_hash").and_then(Value::as_str) {
                            hash = h.to_string();
                        }
                    }
                    Err(CallError::Tool { code, .. }) if code == "CONFLICT" => {
                        conflicts.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => errors.push(e.to_string()),
                }
            }
            (writes, reads, iters, errors)
        }));
    }
    let (mut writes, mut reads, mut iters, mut errors) = (
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Vec::new(),
    );
    for t in tasks {
        let (w, r, i, e) = t.await.context("a client task panicked")?;
        writes.extend(w);
        reads.extend(r);
        iters.extend(i);
        errors.extend(e);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (w, r, i) = (writes.summary(), reads.summary(), iters.summary());
    let ops = w.count as f64 / elapsed;
    let calls = (w.count + r.count) as f64 / elapsed;
    let db = match o.db {
        DbChoice::Sqlite => "sqlite",
        DbChoice::Postgres => "postgres",
    };
    let target_ops = match o.db {
        DbChoice::Sqlite => 2000.0,
        DbChoice::Postgres => 1500.0,
    };
    let conflicts = conflicts.load(Ordering::Relaxed);
    let human = vec![
        format!(
            "{db}, {} clients, {elapsed:.1} s: {} writes = {ops:.0} write_content/s ({calls:.0} MCP calls/s incl. reads), {conflicts} conflicts, {} errors",
            o.clients,
            w.count,
            errors.len()
        ),
        format!("write_content latency: {}", w.human()),
        format!("read_content latency:  {}", r.human()),
        format!("read+write iteration:  {}", i.human()),
    ];
    let mut human = human;
    if let Some(e) = errors.first() {
        human.push(format!("first error: {e}"));
    }
    let result = json!({
        "db": db, "clients": o.clients, "seconds": round3(elapsed), "read_before_write": !o.skip_read,
        "writes": w.count, "ops_per_sec": round1(ops), "mcp_calls_per_sec": round1(calls),
        "conflicts": conflicts, "errors": errors.len(),
        "write_latency": w.json(), "read_latency": r.json(), "iteration_latency": i.json(),
    });
    let checks = vec![
        check("write_content ops/s", ops, ">=", target_ops),
        check("write_content p99 ms", w.p99_ms, "<=", 20.0),
        check("errors", errors.len() as f64, "<=", 0.0),
    ];
    Ok((result, human, checks))
}

/// Mean latency of one tool from the server's `pfs_tool_call_duration_seconds`-style histogram
/// in `/metrics`, as a human line (server-side time, without HTTP and client).
fn tool_histogram_line(metrics: &str, tool: &str) -> Option<String> {
    let (mut sum, mut count) = (None, None);
    for line in metrics.lines() {
        if line.starts_with('#') || !line.contains(&format!("tool=\"{tool}\"")) {
            continue;
        }
        let (name, value) = line.rsplit_once(' ')?;
        let metric = name.split('{').next()?;
        if metric.ends_with("_sum") && sum.is_none() {
            sum = value.parse::<f64>().ok().map(|v| (metric.to_string(), v));
        } else if metric.ends_with("_count") && count.is_none() {
            count = value.parse::<f64>().ok();
        }
    }
    let ((metric, sum), count) = (sum?, count?);
    (count > 0.0).then(|| {
        format!(
            "server-side {tool} mean {:.3} ms over {count} calls ({metric})",
            sum / count * 1000.0
        )
    })
}

// -------------------------------------------------------------------------------------- read

/// Settings of `read`.
#[derive(Debug, Clone)]
pub struct ReadOpts {
    pub clients: usize,
    pub seconds: f64,
    pub overlay: bool,
    pub max_ops_per_client: u64,
    pub warmup_seconds: f64,
}

/// The lessons of the embedded sample book (read back from the server).
async fn sample_lessons(mcp: &Mcp) -> anyhow::Result<Vec<String>> {
    let v = mcp
        .call(
            "glob_search",
            json!({"book_id": "sample-book", "pattern": "content/**/*.md"}),
        )
        .await
        .context("listing the sample book")?;
    let paths: Vec<String> = v["matches"]
        .as_array()
        .context("glob_search returned no matches array")?
        .iter()
        .filter_map(Value::as_str)
        // Matches are the book-relative paths the other tools take.
        .map(str::to_string)
        .filter(|p| p.starts_with("content/"))
        .collect();
    if paths.is_empty() {
        bail!("the sample book has no lessons");
    }
    Ok(paths)
}

/// One timed read phase: `clients` loops of read_content over `paths`.
async fn read_phase(
    mcp: &Mcp,
    paths: &Arc<Vec<String>>,
    user: Option<&str>,
    clients: usize,
    dur: Duration,
    max_ops: u64,
) -> anyhow::Result<(Samples, f64, Vec<String>)> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let base = mcp.base().to_string();
        // Request bodies are built once per path: the loop measures the server, not JSON
        // building in the load generator (which shares the machine's two cores with it).
        let bodies: Vec<bytes::Bytes> = paths
            .iter()
            .map(|p| {
                let mut args = json!({"book_id": "sample-book", "path": p});
                if let Some(u) = user {
                    args["user_id"] = json!(u);
                }
                crate::mcp::call_body("read_content", &args)
            })
            .collect();
        let want = if user.is_some() { "overlay" } else { "base" };
        tasks.push(tokio::spawn(async move {
            let mut s = Samples::with_capacity(16_384);
            let mut errors = Vec::new();
            let mut n = 0u64;
            let mut conn = match crate::mcp::RawConn::connect(&base).await {
                Ok(c) => c,
                Err(e) => return (s, vec![format!("{e:#}")]),
            };
            while started.elapsed() < dur && n < max_ops {
                let i = (c + n as usize) % bodies.len();
                n += 1;
                let t = Instant::now();
                match conn.read_content(bodies[i].clone()).await {
                    Ok(source) => {
                        s.push(t.elapsed());
                        if source != want {
                            errors
                                .push(format!("lesson {i}: expected source {want}, got {source}"));
                        }
                    }
                    Err(e) => errors.push(e.to_string()),
                }
            }
            (s, errors)
        }));
    }
    let (mut all, mut errors) = (Samples::default(), Vec::new());
    for t in tasks {
        let (s, e) = t.await.context("a client task panicked")?;
        all.extend(s);
        errors.extend(e);
    }
    Ok((all, started.elapsed().as_secs_f64(), errors))
}

/// `read`: read_content of the sample book's lessons; with `overlay`, a second phase reads the
/// same lessons through a user's overlay.
pub async fn read(env: &Env, o: &ReadOpts) -> anyhow::Result<()> {
    let dir = env.tempdir("pv-bench-read-")?;
    let (server, _) = Server::start(&env.spec(dir.path())).await?;
    let cpu = CpuMeter::start(&server);
    let r = read_run(&server, o).await.map(|(mut v, mut h, c)| {
        cpu.finish(&server, &mut v, &mut h);
        (v, h, c)
    });
    server.stop().await?;
    let (result, human, checks) = r?;
    report("read", result, &human, checks);
    Ok(())
}

async fn read_run(
    server: &Server,
    o: &ReadOpts,
) -> anyhow::Result<(Value, Vec<String>, Vec<Value>)> {
    let mcp = Mcp::new(&server.base)?;
    let paths = Arc::new(sample_lessons(&mcp).await?);
    let user = "bench-reader";
    if o.overlay {
        for p in paths.iter() {
            let v = mcp
                .call("read_content", json!({"book_id": "sample-book", "path": p}))
                .await?;
            let text = v["content"].as_str().unwrap_or("");
            mcp.call(
                "write_content",
                json!({"book_id": "sample-book", "path": p, "user_id": user, "content": format!("{text}\n\n> A note of {user}.\n")}),
            )
            .await
            .with_context(|| format!("writing the overlay of {p}"))?;
        }
    }
    let dur = Duration::from_secs_f64(o.seconds);
    let warm = Duration::from_secs_f64(o.warmup_seconds);
    // Warm-up: open the connections and fill the caches.
    read_phase(&mcp, &paths, None, o.clients, warm, o.max_ops_per_client).await?;
    let (mut base, base_secs, base_err) =
        read_phase(&mcp, &paths, None, o.clients, dur, o.max_ops_per_client).await?;
    let b = base.summary();
    let base_ops = b.count as f64 / base_secs;
    let mut human = vec![
        format!(
            "base: {} clients over {} sample lessons, {base_secs:.1} s: {} reads = {base_ops:.0} ops/s, {} errors",
            o.clients,
            paths.len(),
            b.count,
            base_err.len()
        ),
        format!("base read_content latency: {}", b.human()),
    ];
    let mut result = json!({
        "clients": o.clients, "lessons": paths.len(),
        "base": {"seconds": round3(base_secs), "reads": b.count, "ops_per_sec": round1(base_ops), "errors": base_err.len(), "latency": b.json()},
    });
    let mut checks = vec![
        check("base read ops/s", base_ops, ">=", 15_000.0),
        check("base read p99 ms", b.p99_ms, "<=", 10.0),
        check("base read errors", base_err.len() as f64, "<=", 0.0),
    ];
    if let Some(e) = base_err.first() {
        human.push(format!("first error: {e}"));
    }
    if o.overlay {
        let (mut ov, ov_secs, ov_err) = read_phase(
            &mcp,
            &paths,
            Some(user),
            o.clients,
            dur,
            o.max_ops_per_client,
        )
        .await?;
        let s = ov.summary();
        let ov_ops = s.count as f64 / ov_secs;
        let diff = s.p50_ms - b.p50_ms;
        human.push(format!(
            "overlay (user_id={user}, overlay present): {ov_secs:.1} s: {} reads = {ov_ops:.0} ops/s, {} errors",
            s.count,
            ov_err.len()
        ));
        human.push(format!("overlay read_content latency: {}", s.human()));
        human.push(format!(
            "overlay p50 - base p50 = {diff:+.3} ms (p99 difference {:+.3} ms)",
            s.p99_ms - b.p99_ms
        ));
        if let Some(e) = ov_err.first() {
            human.push(format!("first overlay error: {e}"));
        }
        result["overlay"] = json!({"seconds": round3(ov_secs), "reads": s.count, "ops_per_sec": round1(ov_ops), "errors": ov_err.len(), "latency": s.json(), "user_id": user});
        result["overlay_minus_base_p50_ms"] = json!(round3(diff));
        checks.push(check("overlay read p99 ms", s.p99_ms, "<=", 10.0));
        checks.push(check("overlay p50 - base p50 ms", diff, "<=", 0.5));
        checks.push(check("overlay read errors", ov_err.len() as f64, "<=", 0.0));
    }
    Ok((result, human, checks))
}

// ----------------------------------------------------------------------------------- archive

/// Settings of `archive`.
#[derive(Debug, Clone)]
pub struct ArchiveOpts {
    /// The book (realistic prose, see `bookgen`).
    pub book: bookgen::BookSpec,
    /// Instead of `book`: a real Docusaurus docs tree, ingested with `panaversity fs ingest`.
    pub docs_dir: Option<PathBuf>,
    /// Archives after the first (cold) one.
    pub warm_runs: usize,
}

/// `archive`: ingest a realistic book (default 500 files / 200 MiB of varied prose, lists, code
/// and a few incompressible images, deflating ~2.7:1), restart the server (same data dir) so the
/// peak belongs to the archive alone, then time get_book_archive + the full download: first the
/// cold archive (nothing precompressed yet), then warm ones. Every ZIP is checked entry by
/// entry: CRC, bytes hashing to what was written, and `unzip -t`.
pub async fn archive(env: &Env, o: &ArchiveOpts) -> anyhow::Result<()> {
    let dir = env.tempdir("pv-bench-archive-")?;
    let mut spec = env.spec(dir.path());
    spec.args.push("--no-sample".into());
    let book = "bench-archive";
    // Ingest; what each entry must hash to and the book's size.
    let (server, _) = Server::start(&spec).await?;
    let ingest_started = Instant::now();
    let ingest = match &o.docs_dir {
        None => ingest_book(&server, book, &o.book).await,
        Some(dir) => ingest_docs(env, &server, book, dir).await,
    };
    let ingest_secs = ingest_started.elapsed().as_secs_f64();
    let expected = match ingest {
        Ok(()) => book_hashes(&server, book).await,
        Err(e) => Err(e),
    };
    server.stop().await?;
    let expected = expected?;
    let total_bytes: u64 = match &o.docs_dir {
        None => o.book.files().map(|f| f.bytes.len() as u64).sum(),
        Some(_) => 0,
    };

    // A fresh process on the same data: the baseline and peak belong to the archive alone.
    let (server, _) = Server::start(&spec).await?;
    let r = archive_runs(&server, o, book, &expected, dir.path()).await;
    server.stop().await?;
    let r = r?;
    let cold_ms = r.cold.as_secs_f64() * 1000.0;
    let warm_ms = median_ms(&r.warm);
    let book_line = match &o.docs_dir {
        None => format!(
            "book: {} lessons (~{} KiB each) + {} images of {} KiB = {:.1} MiB; ingest over MCP {ingest_secs:.1} s",
            o.book.lessons,
            o.book.lesson_bytes / 1024,
            o.book.assets,
            o.book.asset_bytes / 1024,
            total_bytes as f64 / (1 << 20) as f64,
        ),
        Some(dir) => format!(
            "book: the docs tree {} ({} files) ingested with `fs ingest` in {ingest_secs:.1} s",
            dir.display(),
            expected.len()
        ),
    };
    let human = vec![
        book_line,
        format!(
            "ZIP {:.2} MiB{}; cold archive (nothing precompressed) {cold_ms:.0} ms; warm median {warm_ms:.0} ms over {} runs",
            r.zip_bytes as f64 / (1 << 20) as f64,
            if total_bytes > 0 {
                format!(
                    " ({:.2}:1 overall)",
                    total_bytes as f64 / r.zip_bytes.max(1) as f64
                )
            } else {
                String::new()
            },
            r.warm.len(),
        ),
        format!(
            "every ZIP verified: {} entries, CRCs, bytes hash to the written sha256, unzip -t: {}",
            r.entries, r.unzip
        ),
        format!(
            "server VmHWM after restart (baseline) {:.1} MB -> after archives {:.1} MB (whole process)",
            r.baseline_kib as f64 / 1024.0,
            r.peak_kib as f64 / 1024.0
        ),
    ];
    let result = json!({
        "lessons": o.book.lessons, "assets": o.book.assets, "book_bytes": total_bytes,
        "ingest_seconds": round3(ingest_secs),
        "cold_ms": round3(cold_ms),
        "warm_ms": r.warm.iter().map(|d| round3(d.as_secs_f64() * 1000.0)).collect::<Vec<_>>(),
        "warm_median_ms": round3(warm_ms),
        "zip_bytes": r.zip_bytes, "zip_entries": r.entries, "unzip_t": r.unzip,
        "baseline_vm_hwm_kib": r.baseline_kib, "peak_vm_hwm_kib": r.peak_kib,
    });
    let checks = vec![
        check("cold archive + download ms", cold_ms, "<=", 3000.0),
        check("warm archive + download ms (median)", warm_ms, "<=", 500.0),
        check(
            "server peak RSS MB (VmHWM)",
            r.peak_kib as f64 / 1024.0,
            "<=",
            48.0,
        ),
        check("ZIP entries", r.entries as f64, ">=", expected.len() as f64),
    ];
    report("archive", result, &human, checks);
    Ok(())
}

/// Ingest a docs tree with the server binary's own `fs ingest` (the real mapping of a
/// Docusaurus tree to book paths).
async fn ingest_docs(env: &Env, server: &Server, book: &str, dir: &Path) -> anyhow::Result<()> {
    let out = tokio::process::Command::new(&env.bin)
        .args([
            "fs",
            "ingest",
            "--url",
            &server.base,
            "--book-id",
            book,
            "--quiet",
            "--json",
            "--profile",
            "strict",
        ])
        .arg("--source-dir")
        .arg(dir)
        .output()
        .await
        .context("running panaversity fs ingest")?;
    if !out.status.success() {
        bail!(
            "fs ingest failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Every file of `book` and its sha256, from plan_build (no target: the whole book).
async fn book_hashes(
    server: &Server,
    book: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let mcp = Mcp::new(&server.base)?;
    let plan = mcp
        .call("plan_build", json!({"book_id": book}))
        .await
        .context("plan_build")?;
    let files = plan["files"]
        .as_array()
        .with_context(|| format!("plan_build without files: {plan}"))?;
    Ok(files
        .iter()
        .filter_map(|f| {
            Some((
                f["path"].as_str()?.to_string(),
                f["current_hash"].as_str()?.to_string(),
            ))
        })
        .collect())
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Write the generated book over MCP: lessons with write_content, images with upload_asset.
async fn ingest_book(server: &Server, book: &str, spec: &bookgen::BookSpec) -> anyhow::Result<()> {
    let mcp = Mcp::new(&server.base)?;
    let mcp = &mcp;
    bounded(spec.lessons, 4, |i| async move {
        let f = spec.lesson(i);
        let content = String::from_utf8(f.bytes).context("generated lessons are UTF-8")?;
        mcp.call(
            "write_content",
            json!({"book_id": book, "path": f.path, "content": content}),
        )
        .await
        .with_context(|| format!("writing {}", f.path))?;
        Ok(())
    })
    .await?;
    bounded(spec.assets, 2, |i| async move {
        let f = spec.asset(i);
        let filename = f.path.rsplit('/').next().unwrap_or_default().to_string();
        let data = base64::engine::general_purpose::STANDARD.encode(&f.bytes);
        mcp.call(
            "upload_asset",
            json!({"book_id": book, "asset_type": "images", "filename": filename, "binary_data": data}),
        )
        .await
        .with_context(|| format!("uploading {}", f.path))?;
        Ok(())
    })
    .await
}

struct ArchiveRuns {
    cold: Duration,
    warm: Vec<Duration>,
    baseline_kib: u64,
    peak_kib: u64,
    entries: usize,
    zip_bytes: u64,
    unzip: String,
}

async fn archive_runs(
    server: &Server,
    o: &ArchiveOpts,
    book: &str,
    expected: &std::collections::BTreeMap<String, String>,
    scratch: &Path,
) -> anyhow::Result<ArchiveRuns> {
    let mcp = Mcp::new(&server.base)?;
    let baseline_kib = server.vm_hwm_kib()?;
    let mut times = Vec::new();
    let (mut entries, mut zip_bytes, mut unzip) = (0, 0, String::new());
    for _ in 0..=o.warm_runs {
        let t = Instant::now();
        let v = mcp
            .call("get_book_archive", json!({"book_id": book, "scope": "all"}))
            .await
            .context("get_book_archive")?;
        let url = v["archive_url"]
            .as_str()
            .with_context(|| format!("no archive_url in {v}"))?
            .to_string();
        let resp = mcp
            .http()
            .get(&url)
            .send()
            .await
            .context("archive download")?;
        if !resp.status().is_success() {
            bail!("archive download: HTTP {}", resp.status());
        }
        let mut body = Vec::with_capacity(128 << 20);
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            body.extend_from_slice(&chunk.context("archive download interrupted")?);
        }
        times.push(t.elapsed());
        zip_bytes = body.len() as u64;
        let zip_path = scratch.join("bench.zip");
        std::fs::write(&zip_path, &body).context("saving the ZIP for unzip -t")?;
        unzip = unzip_test(&zip_path)?;
        entries = verify_zip(body, expected).await?;
    }
    let peak_kib = server.vm_hwm_kib()?;
    let cold = times.first().copied().unwrap_or_default();
    Ok(ArchiveRuns {
        cold,
        warm: times.split_off(1),
        baseline_kib,
        peak_kib,
        entries,
        zip_bytes,
        unzip,
    })
}

/// `unzip -t`: "ok", or "not installed" (the in-process check still runs).
fn unzip_test(zip: &Path) -> anyhow::Result<String> {
    match std::process::Command::new("unzip")
        .arg("-tqq")
        .arg(zip)
        .output()
    {
        Err(_) => Ok("not installed".into()),
        Ok(out) if out.status.success() => Ok("ok".into()),
        Ok(out) => bail!(
            "unzip -t failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Open the ZIP and read every entry with its CRC checked and its bytes hashed against the
/// expected sha256 (every expected path must be there); the number of entries.
// The in-memory reader is deprecated in favour of the experimental `read1` API; it still reads
// and CRC-checks every entry, which is all this needs.
#[allow(deprecated)]
async fn verify_zip(
    body: Vec<u8>,
    expected: &std::collections::BTreeMap<String, String>,
) -> anyhow::Result<usize> {
    let zip = async_zip::base::read::mem::ZipFileReader::new(body)
        .await
        .context("the archive is not a readable ZIP")?;
    let n = zip.file().entries().len();
    let mut seen = 0usize;
    for i in 0..n {
        let mut r = zip
            .reader_with_entry(i)
            .await
            .with_context(|| format!("opening ZIP entry {i}"))?;
        let name = r
            .entry()
            .filename()
            .as_str()
            .with_context(|| format!("ZIP entry {i} has no UTF-8 name"))?
            .to_string();
        let mut bytes = Vec::new();
        r.read_to_end_checked(&mut bytes)
            .await
            .with_context(|| format!("reading ZIP entry {name}"))?;
        match expected.get(&name) {
            Some(sha) if *sha == sha256_hex(&bytes) => seen += 1,
            Some(_) => bail!("ZIP entry {name}: bytes do not hash to what was written"),
            None => bail!("ZIP entry {name} was never written"),
        }
    }
    if seen != expected.len() {
        bail!("the ZIP holds {seen} of the {} files", expected.len());
    }
    Ok(n)
}

// -------------------------------------------------------------------------------- plan-build

/// `plan-build`: a book with `files` journal rows; plan_build over MCP (no target, the previous
/// manifest after 100 changes, the current manifest), plus pfs::manifest::plan_build in-process.
pub async fn plan_build(env: &Env, files: usize, runs: usize) -> anyhow::Result<()> {
    let dir = env.tempdir("pv-bench-plan-")?;
    let mut spec = env.spec(dir.path());
    spec.args.push("--no-sample".into());
    let (server, _) = Server::start(&spec).await?;
    let r = plan_run(&server, files, runs).await;
    server.stop().await?;
    let (mut result, mut human, mut checks) = r?;
    // In process: the pure planning function on the same number of entries.
    let cur: Vec<(String, String)> = (0..files)
        .map(|i| (lesson_path(i), format!("{i:064x}")))
        .collect();
    let mut target = cur.clone();
    for (i, t) in target.iter_mut().enumerate().filter(|(i, _)| i % 100 == 0) {
        t.1 = format!("{:064x}", i + 1_000_000);
    }
    let th = pfs::manifest::manifest_hash(&target);
    let mut times = Vec::new();
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let p = pfs::manifest::plan_build("bench", &cur, Some(&th), Some(&target));
        times.push(t.elapsed());
        std::hint::black_box(p);
    }
    let inproc = median_ms(&times);
    human.push(format!(
        "in-process pfs::manifest::plan_build over {files} entries (manifest hash + diff): median {inproc:.3} ms"
    ));
    result["in_process_median_ms"] = json!(round3(inproc));
    checks.push(check("in-process plan_build ms", inproc, "<=", 50.0));
    report("plan-build", result, &human, checks);
    Ok(())
}

async fn plan_run(
    server: &Server,
    files: usize,
    runs: usize,
) -> anyhow::Result<(Value, Vec<String>, Vec<Value>)> {
    let mcp = Mcp::new(&server.base)?;
    let book = "bench-plan";
    let t = Instant::now();
    seed_lessons(&mcp, book, files, 16, |i| {
        format!("# Lesson {i}\n\nBody of lesson {i}.\n")
    })
    .await?;
    let seed_secs = t.elapsed().as_secs_f64();
    let time = |args: Value| {
        let mcp = mcp.clone();
        async move {
            let mut s = Samples::default();
            let mut last = Value::Null;
            for _ in 0..runs.max(1) {
                let t = Instant::now();
                last = mcp.call("plan_build", args.clone()).await?;
                s.push(t.elapsed());
            }
            Ok::<_, CallError>((s, last))
        }
    };
    // 1. No target: every file listed (and a snapshot of this manifest is stored).
    let (mut full, v) = time(json!({"book_id": book})).await?;
    let h1 = hash_of(&v, "manifest_hash")?;
    let listed = v["files"].as_array().map(Vec::len).unwrap_or(0);
    // 2. Change 1% of the files, then plan from the previous manifest.
    let changes = (files / 100).max(1);
    for i in 0..changes {
        let path = lesson_path(i * 100 % files);
        let r = mcp
            .call("read_content", json!({"book_id": book, "path": path}))
            .await?;
        mcp.call(
            "write_content",
            json!({"book_id": book, "path": path, "content": format!("# Changed {i}\n"), "expected_hash": hash_of(&r, "file_hash_sha256")?}),
        )
        .await?;
    }
    let (mut diff, v2) = time(json!({"book_id": book, "target_manifest_hash": h1})).await?;
    let changed = v2["changed_count"].as_u64().unwrap_or(0);
    let h2 = hash_of(&v2, "manifest_hash")?;
    // 3. Up to date: the current manifest.
    let (mut same, v3) = time(json!({"book_id": book, "target_manifest_hash": h2})).await?;
    let status = v3["status"].as_str().unwrap_or("").to_string();
    let (f, d, s) = (full.summary(), diff.summary(), same.summary());
    let human = vec![
        format!("book: {files} files written over MCP in {seed_secs:.1} s"),
        format!(
            "plan_build, no target ({listed} files listed): {}",
            f.human()
        ),
        format!(
            "plan_build, target = previous manifest ({changed} of {files} changed): {}",
            d.human()
        ),
        format!(
            "plan_build, target = current manifest (status {status}): {}",
            s.human()
        ),
    ];
    let result = json!({
        "files": files, "seed_seconds": round3(seed_secs),
        "no_target": f.json(), "files_listed": listed,
        "previous_target": d.json(), "changed_count": changed,
        "current_target": s.json(), "current_status": status,
    });
    let checks = vec![
        check("plan_build p50 ms, 1% changed", d.p50_ms, "<=", 50.0),
        check(
            "plan_build p50 ms, no target (all listed)",
            f.p50_ms,
            "<=",
            50.0,
        ),
        check("plan_build p50 ms, unchanged", s.p50_ms, "<=", 50.0),
        check(
            "files listed without target",
            listed as f64,
            ">=",
            files as f64,
        ),
    ];
    Ok((result, human, checks))
}

// -------------------------------------------------------------------------------------- grep

/// `grep`: a book of `mb` MB (20 KB lessons), then grep_search for a rare pattern, a word on
/// every line and a pattern that never matches.
pub async fn grep(env: &Env, mb: usize, runs: usize) -> anyhow::Result<()> {
    let dir = env.tempdir("pv-bench-grep-")?;
    let mut spec = env.spec(dir.path());
    spec.args.push("--no-sample".into());
    let (server, _) = Server::start(&spec).await?;
    let r = grep_run(&server, mb, runs).await;
    server.stop().await?;
    let (result, human, checks) = r?;
    report("grep", result, &human, checks);
    Ok(())
}

async fn grep_run(
    server: &Server,
    mb: usize,
    runs: usize,
) -> anyhow::Result<(Value, Vec<String>, Vec<Value>)> {
    let mcp = Mcp::new(&server.base)?;
    let book = "bench-grep";
    let file_bytes = 20_000usize;
    let files = (mb * 1_000_000).div_ceil(file_bytes);
    let line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor\n";
    let body = |i: usize| {
        let mut s = String::with_capacity(file_bytes + 100);
        let mut n = 0usize;
        while s.len() < file_bytes {
            if n == 100 && i.is_multiple_of(5) {
                s.push_str(&format!("needle-{i} marks this line\n"));
            }
            s.push_str(line);
            n += 1;
        }
        s.truncate(file_bytes);
        s
    };
    let t = Instant::now();
    seed_lessons(&mcp, book, files, 16, body).await?;
    let seed_secs = t.elapsed().as_secs_f64();
    let mut human = vec![format!(
        "book: {files} files x {file_bytes} B = {:.1} MB written over MCP in {seed_secs:.1} s",
        (files * file_bytes) as f64 / 1e6
    )];
    let mut result = json!({"files": files, "book_bytes": files * file_bytes});
    let mut checks = Vec::new();
    for (name, pattern, max) in [
        ("rare", r"needle-\d+", 1000u64),
        ("none", r"zzz(a|b)+q", 1000),
        ("every line (capped)", r"\bconsectetur\s+adipiscing\b", 1000),
    ] {
        let mut s = Samples::default();
        let mut last = Value::Null;
        for _ in 0..runs.max(1) {
            let t = Instant::now();
            last = mcp
                .call(
                    "grep_search",
                    json!({"book_id": book, "pattern": pattern, "max_results": max}),
                )
                .await?;
            s.push(t.elapsed());
        }
        let sum = s.summary();
        let count = last["count"].as_u64().unwrap_or(0);
        let scanned = last["files_scanned"].as_u64().unwrap_or(0);
        human.push(format!(
            "grep_search {pattern:?} ({name}): {count} matches, {scanned} files scanned, truncated={}: {}",
            last["truncated"],
            sum.human()
        ));
        result[name] = json!({"pattern": pattern, "matches": count, "files_scanned": scanned, "latency": sum.json()});
        checks.push(check(
            &format!("grep {name} p50 ms"),
            sum.p50_ms,
            "<=",
            100.0,
        ));
    }
    Ok((result, human, checks))
}

// ------------------------------------------------------------------------------- cold start

/// `cold-start`: spawn → first `/health/ready` 200, `runs` times on a fresh data directory
/// (migrations + sample book) and `runs` times on an existing one.
pub async fn cold_start(env: &Env, runs: usize) -> anyhow::Result<()> {
    let mut fresh = Vec::new();
    let mut warm = Vec::new();
    let mut rss = Vec::new();
    let reused = env.tempdir("pv-bench-cold-reused-")?;
    for _ in 0..runs.max(1) {
        let dir = env.tempdir("pv-bench-cold-")?;
        let (server, t) = Server::start(&env.spec(dir.path())).await?;
        rss.push(server.vm_rss_kib().unwrap_or(0));
        server.stop().await?;
        fresh.push(t);
    }
    // Prime the reused directory (migrations, sample book) without timing it.
    let (server, _) = Server::start(&env.spec(reused.path())).await?;
    server.stop().await?;
    for _ in 0..runs.max(1) {
        let (server, t) = Server::start(&env.spec(reused.path())).await?;
        server.stop().await?;
        warm.push(t);
    }
    let fresh_med = median_ms(&fresh);
    let warm_med = median_ms(&warm);
    let list = |v: &[Duration]| -> Vec<f64> {
        v.iter().map(|d| round3(d.as_secs_f64() * 1000.0)).collect()
    };
    rss.sort_unstable();
    let idle_rss = rss.get(rss.len() / 2).copied().unwrap_or(0);
    let human = vec![
        format!(
            "fresh data dir (migrations + sample book seed), {} runs: median {fresh_med:.1} ms, runs {:?}",
            fresh.len(),
            list(&fresh)
        ),
        format!(
            "existing data dir (migrated and seeded by an untimed start), {} runs: median {warm_med:.1} ms, runs {:?}",
            warm.len(),
            list(&warm)
        ),
        format!(
            "idle server RSS right after ready: {:.1} MB",
            idle_rss as f64 / 1024.0
        ),
    ];
    let result = json!({
        "fresh_runs_ms": list(&fresh), "fresh_median_ms": round3(fresh_med),
        "existing_runs_ms": list(&warm), "existing_median_ms": round3(warm_med),
        "idle_rss_kib": idle_rss,
    });
    let checks = vec![
        check(
            "cold start to ready ms (fresh dir, median)",
            fresh_med,
            "<=",
            1000.0,
        ),
        check(
            "cold start to ready ms (existing dir, median)",
            warm_med,
            "<=",
            1000.0,
        ),
    ];
    report("cold-start", result, &human, checks);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tool_histogram() {
        let m = "# TYPE x histogram\npfs_tool_duration_seconds_sum{tool=\"write_content\",status=\"ok\"} 2\npfs_tool_duration_seconds_count{tool=\"write_content\",status=\"ok\"} 1000\n";
        let line = tool_histogram_line(m, "write_content").unwrap();
        assert!(line.contains("mean 2.000 ms"), "{line}");
        assert!(tool_histogram_line(m, "read_content").is_none());
    }
}
