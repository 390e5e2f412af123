//! In-process benchmarks of library pieces the HTTP benches cannot isolate: the Redis rate
//! limiter across three replicas, and the cached lesson load.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use platform::ratelimit::{RateLimiter, RedisLimiter};
use serde_json::json;
use study::lessons::{CacheConfig, LessonService, LocalDocsSource};

use crate::stats::{Samples, check, report, round1, round3};

/// Settings of `ratelimit`.
#[derive(Debug, Clone)]
pub struct RateLimitOpts {
    pub redis_url: String,
    pub replicas: usize,
    pub tasks: usize,
    pub keys: usize,
    pub limit: u64,
    /// Checks per key (over all tasks); more than `limit` so the limit is reached.
    pub attempts_per_key: u64,
}

struct RlPhase {
    samples: Samples,
    allowed: Vec<u64>,
    failed_open: u64,
    secs: f64,
}

/// `tasks` tasks spread over `limiters`, `attempts_per_key` checks on each of `keys` keys named
/// `{tag}{k}`.
async fn rl_phase(
    limiters: &[Arc<RedisLimiter>],
    tasks: usize,
    keys: usize,
    attempts_per_key: u64,
    tag: &str,
) -> anyhow::Result<RlPhase> {
    let total = attempts_per_key * keys as u64;
    let per_task = total.div_ceil(tasks.max(1) as u64);
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks.max(1) {
        let l = limiters[t % limiters.len()].clone();
        let first = t as u64 * per_task;
        let last = (first + per_task).min(total);
        let tag = tag.to_string();
        handles.push(tokio::spawn(async move {
            let mut s = Samples::with_capacity(last.saturating_sub(first) as usize);
            let mut allowed = vec![0u64; keys];
            let mut failed_open = 0u64;
            for i in first..last {
                let k = (i % keys as u64) as usize;
                let key = format!("{tag}{k}");
                let t = Instant::now();
                let d = l.check(&key).await;
                s.push(t.elapsed());
                if d.failed_open {
                    failed_open += 1;
                } else if d.allowed {
                    allowed[k] += 1;
                }
            }
            (s, allowed, failed_open)
        }));
    }
    let mut out = RlPhase {
        samples: Samples::default(),
        allowed: vec![0u64; keys],
        failed_open: 0,
        secs: 0.0,
    };
    for h in handles {
        let (s, a, f) = h.await.context("a limiter task panicked")?;
        out.samples.extend(s);
        for (acc, v) in out.allowed.iter_mut().zip(a) {
            *acc += v;
        }
        out.failed_open += f;
    }
    out.secs = started.elapsed().as_secs_f64();
    Ok(out)
}

/// `ratelimit`: `replicas` RedisLimiter instances (separate connections, one Redis). Phase 1:
/// one task per replica (decision latency without client-side queueing); phase 2: `tasks` tasks
/// (latency under load). In both, every key must allow exactly `limit` requests.
pub async fn ratelimit(o: &RateLimitOpts) -> anyhow::Result<()> {
    if o.attempts_per_key <= o.limit {
        bail!("--attempts-per-key must exceed --limit so the limit is reached");
    }
    let prefix = format!("pv-bench:rl:{}:", uuid::Uuid::new_v4().simple());
    let window = Duration::from_secs(120);
    let mut limiters = Vec::new();
    for _ in 0..o.replicas.max(1) {
        let l = RedisLimiter::new(&o.redis_url, &prefix, o.limit, window)
            .context("creating a Redis limiter")?;
        l.ping()
            .await
            .with_context(|| format!("Redis at {} is not answering", o.redis_url))?;
        limiters.push(Arc::new(l));
    }
    // Warm the script cache and connections on a throw-away key.
    for l in &limiters {
        for _ in 0..50 {
            l.check("warmup").await;
        }
    }
    let mut human = vec![format!(
        "{} limiters (one connection each) on one Redis, {} keys x {} attempts per phase, limit {} per key",
        limiters.len(),
        o.keys,
        o.attempts_per_key,
        o.limit
    )];
    let mut result = json!({
        "replicas": limiters.len(), "keys": o.keys, "limit": o.limit,
        "attempts_per_key": o.attempts_per_key,
    });
    let mut checks = Vec::new();
    for (name, tasks) in [("light", limiters.len()), ("loaded", o.tasks)] {
        let mut p = rl_phase(
            &limiters,
            tasks,
            o.keys,
            o.attempts_per_key,
            &format!("{name}:"),
        )
        .await?;
        let sum = p.samples.summary();
        let exact = p.allowed.iter().filter(|&&a| a == o.limit).count();
        let rate = sum.count as f64 / p.secs;
        human.push(format!(
            "{name}: {tasks} tasks, {} decisions in {:.2} s = {rate:.0}/s; latency {}",
            sum.count,
            p.secs,
            sum.human()
        ));
        human.push(format!(
            "{name}: allowed per key {:?} (exact on {exact}/{} keys), failed open {}",
            p.allowed, o.keys, p.failed_open
        ));
        result[name] = json!({
            "tasks": tasks, "decisions": sum.count, "decisions_per_sec": round1(rate),
            "latency": sum.json(), "allowed_per_key": p.allowed, "exact_keys": exact,
            "failed_open": p.failed_open,
        });
        checks.push(check(
            &format!("{name}: decision p99 ms"),
            sum.p99_ms,
            "<=",
            1.0,
        ));
        checks.push(check(
            &format!("{name}: keys with allowed == limit"),
            exact as f64,
            ">=",
            o.keys as f64,
        ));
        checks.push(check(
            &format!("{name}: failed-open decisions"),
            p.failed_open as f64,
            "<=",
            0.0,
        ));
    }
    report("ratelimit", result, &human, checks);
    Ok(())
}

/// Settings of `lesson-cache`.
#[derive(Debug, Clone)]
pub struct LessonCacheOpts {
    pub docs_dir: std::path::PathBuf,
    pub redis_url: Option<String>,
    pub tasks: usize,
    pub loads: u64,
}

/// Every lesson path (without `.md`/`.summary.md`) under `docs`.
fn lesson_paths(docs: &Path) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![docs.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(rel) = p
                .strip_prefix(docs)
                .ok()
                .and_then(|r| r.to_str())
                .and_then(|r| r.strip_suffix(".md"))
                .filter(|r| !r.ends_with(".summary"))
            {
                out.push(rel.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

async fn cache_phase(
    service: &LessonService,
    paths: &Arc<Vec<String>>,
    o: &LessonCacheOpts,
) -> anyhow::Result<(Samples, f64)> {
    for p in paths.iter() {
        match service.get(p, None).await {
            Ok(Some(_)) => {}
            Ok(None) => bail!("lesson {p} not found by the service"),
            Err(e) => bail!("loading {p}: {e}"),
        }
    }
    let started = Instant::now();
    let per_task = o.loads.div_ceil(o.tasks as u64);
    let mut handles = Vec::new();
    for t in 0..o.tasks {
        let (service, paths) = (service.clone(), paths.clone());
        handles.push(tokio::spawn(async move {
            let mut s = Samples::with_capacity(per_task as usize);
            let mut misses = 0u64;
            for i in 0..per_task {
                let p = &paths[(t + i as usize) % paths.len()];
                let t0 = Instant::now();
                let r = service.get(p, None).await;
                s.push(t0.elapsed());
                if !matches!(r, Ok(Some(_))) {
                    misses += 1;
                }
            }
            (s, misses)
        }));
    }
    let mut all = Samples::default();
    let mut misses = 0;
    for h in handles {
        let (s, m) = h.await.context("a cache task panicked")?;
        all.extend(s);
        misses += m;
    }
    if misses > 0 {
        bail!("{misses} cached loads failed");
    }
    Ok((all, started.elapsed().as_secs_f64()))
}

/// `lesson-cache`: study::lessons::LessonService over the local docs source; cached loads
/// (in-process cache, and Redis when a URL is given).
pub async fn lesson_cache(o: &LessonCacheOpts) -> anyhow::Result<()> {
    let paths = Arc::new(lesson_paths(&o.docs_dir)?);
    if paths.is_empty() {
        bail!("no lessons under {}", o.docs_dir.display());
    }
    let source = Arc::new(
        LocalDocsSource::new(&o.docs_dir)
            .with_context(|| format!("opening {}", o.docs_dir.display()))?,
    );
    let mut human = vec![format!(
        "{} lessons from {}, {} tasks, {} loads per cache backend",
        paths.len(),
        o.docs_dir.display(),
        o.tasks,
        o.loads
    )];
    let mut result = json!({"lessons": paths.len(), "tasks": o.tasks, "loads": o.loads});
    let mut checks = Vec::new();
    let mut backends = vec![("memory", CacheConfig::memory())];
    if let Some(url) = &o.redis_url {
        let prefix = format!("pv-bench:lesson:{}:", uuid::Uuid::new_v4().simple());
        let cfg = CacheConfig::redis(url, &prefix)
            .await
            .map_err(|e| anyhow::anyhow!("Redis lesson cache at {url}: {e}"))?;
        // Default: an in-process L1 (30 s) in front of Redis; and Redis alone (every load
        // reads Redis), the worst case of a replica that has not seen the lesson recently.
        backends.push(("redis-only", cfg.clone().with_l1_ttl(Duration::ZERO)));
        backends.push(("redis+l1", cfg));
    }
    for (name, cfg) in backends {
        let service = LessonService::new(source.clone(), cfg);
        let (mut s, secs) = cache_phase(&service, &paths, o).await?;
        let sum = s.summary();
        human.push(format!(
            "{name} cache: {:.0} loads/s, {}",
            sum.count as f64 / secs,
            sum.human()
        ));
        result[name] = json!({"loads_per_sec": round1(sum.count as f64 / secs), "seconds": round3(secs), "latency": sum.json()});
        checks.push(check(
            &format!("{name} cached load p99 ms"),
            sum.p99_ms,
            "<=",
            2.0,
        ));
        if name.starts_with("redis") {
            let _ = service.invalidate(None).await;
        }
    }
    report("lesson-cache", result, &human, checks);
    Ok(())
}
