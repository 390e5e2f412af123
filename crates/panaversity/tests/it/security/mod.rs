//! The security suite: each module reproduces one finding of the attack run on the release
//! binary (issue 12) against the real, spawned server and asserts the fix: the attacker gets a
//! clear 4xx/error code, `/health` keeps answering within [`HEALTH_BOUND`] while the attack runs,
//! and the server's memory stays under the bound each test states.
//!
//! | finding | module |
//! |---|---|
//! | 1 grep_search freezes the server | [`grep`] |
//! | 2 admin route buffers the body before the secret | [`admin`] |
//! | 3 idle / slow connections never closed | [`connections`] |
//! | 4 JWT aud/iss bypass via userinfo, 5 every bad credential forwarded | [`tokens`] |
//! | 6 get_asset include_binary buffers 2.67× | [`assets`] |
//! | 7 lesson path flips readiness, leaks paths | [`lessons`] |
//! | 8 dev-mode Host check only on /mcp | [`hosts`] |
//! | 9 fs backend follows symlinks, fsck blind | [`symlinks`] |
//! | 10 booleans accept only true/false | [`booleans`] |

mod admin;
mod assets;
mod booleans;
mod connections;
mod grep;
mod hosts;
mod lessons;
mod symlinks;
mod tokens;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How fast `/health` must answer during an attack.
pub const HEALTH_BOUND: Duration = Duration::from_millis(100);

/// Polls `GET /health` every 25 ms on its own connection until stopped; records the slowest
/// answer and any failure.
pub struct HealthProbe {
    stop: Arc<AtomicBool>,
    worst_us: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
    samples: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl HealthProbe {
    pub fn start(base: &str) -> HealthProbe {
        let stop = Arc::new(AtomicBool::new(false));
        let worst_us = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(AtomicU64::new(0));
        let url = format!("{base}/health");
        let (s, w, f, n) = (
            stop.clone(),
            worst_us.clone(),
            failures.clone(),
            samples.clone(),
        );
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("client");
            while !s.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = matches!(http.get(&url).send().await, Ok(r) if r.status() == 200);
                let us = t.elapsed().as_micros() as u64;
                n.fetch_add(1, Ordering::Relaxed);
                if ok {
                    w.fetch_max(us, Ordering::Relaxed);
                } else {
                    f.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        });
        HealthProbe {
            stop,
            worst_us,
            failures,
            samples,
            task,
        }
    }

    /// Stop and assert every answer came within [`HEALTH_BOUND`]; returns the slowest.
    pub async fn finish(self, what: &str) -> Duration {
        // At least a few probes, even when the attack was over quickly.
        while self.samples.load(Ordering::Relaxed) < 4 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        let worst = Duration::from_micros(self.worst_us.load(Ordering::Relaxed));
        let samples = self.samples.load(Ordering::Relaxed);
        let failures = self.failures.load(Ordering::Relaxed);
        println!("{what}: /health slowest {worst:?} over {samples} probes, {failures} failures");
        assert!(samples > 0, "{what}: no /health probe ran");
        assert_eq!(failures, 0, "{what}: /health failed {failures} times");
        assert!(worst < HEALTH_BOUND, "{what}: /health took {worst:?}");
        worst
    }
}

/// Resident memory of a process, MiB (Linux `/proc`).
pub fn rss_mib(pid: i32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb / 1024.0
}

/// The `{"error": {...}}` object of a failed tool call (`isError: true`).
pub fn tool_error(result: &serde_json::Value) -> serde_json::Value {
    assert_eq!(result["isError"], serde_json::json!(true), "{result}");
    let text: serde_json::Value = result["content"][0]["text"]
        .as_str()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_else(|| panic!("error text is not JSON: {result}"));
    text["error"].clone()
}
