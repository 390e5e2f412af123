//! Rate limiters: Redis (exact across replicas, fail-open, reconnect) and in-process.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use platform::db::test_redis_url;
use platform::ratelimit::{MemoryLimiter, RateLimiter, RedisLimiter};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::init;

fn unique_prefix() -> String {
    format!("test:rl:{}:", uuid::Uuid::new_v4().simple())
}

/// Fire `total` checks from `tasks` concurrent tasks spread over `limiters`; count outcomes.
async fn hammer(
    limiters: Vec<Arc<dyn RateLimiter>>,
    key: &str,
    tasks: usize,
    per_task: usize,
) -> (usize, usize, usize) {
    let mut handles = Vec::new();
    for t in 0..tasks {
        let l = limiters[t % limiters.len()].clone();
        let key = key.to_owned();
        handles.push(tokio::spawn(async move {
            let mut allowed = 0;
            let mut denied = 0;
            let mut open = 0;
            for _ in 0..per_task {
                let d = l.check(&key).await;
                if d.failed_open {
                    open += 1;
                }
                if d.allowed {
                    allowed += 1;
                } else {
                    denied += 1;
                    assert_eq!(d.remaining, 0);
                }
            }
            (allowed, denied, open)
        }));
    }
    let mut sum = (0, 0, 0);
    for h in handles {
        let (a, d, o) = h.await.unwrap();
        sum.0 += a;
        sum.1 += d;
        sum.2 += o;
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_limit_is_exact_across_three_replicas() {
    init();
    let Some(url) = test_redis_url() else {
        eprintln!("REDIS_URL not set: skipping");
        return;
    };
    let prefix = unique_prefix();
    let limit = 50;
    let replicas: Vec<Arc<dyn RateLimiter>> = (0..3)
        .map(|_| {
            Arc::new(RedisLimiter::new(&url, &prefix, limit, Duration::from_secs(60)).unwrap())
                as Arc<dyn RateLimiter>
        })
        .collect();
    assert_eq!(replicas[0].backend(), "redis");
    let one = RedisLimiter::new(&url, &prefix, limit, Duration::from_secs(60)).unwrap();
    one.ping().await.unwrap();
    let (allowed, denied, open) = hammer(replicas.clone(), "user:alice", 30, 10).await;
    assert_eq!(open, 0, "no request may fail open with Redis up");
    assert_eq!(allowed, limit as usize);
    assert_eq!(denied, 300 - limit as usize);

    // Another key has its own budget; headers data is sane.
    let d = replicas[1].check("user:bob").await;
    assert!(d.allowed && !d.failed_open);
    assert_eq!(d.limit, limit);
    assert_eq!(d.remaining, limit - 1);
    assert!(d.reset_after <= Duration::from_secs(60) && d.reset_after > Duration::from_secs(50));
}

#[tokio::test]
async fn redis_window_expires() {
    init();
    let Some(url) = test_redis_url() else {
        return;
    };
    let l = RedisLimiter::new(&url, &unique_prefix(), 2, Duration::from_millis(300)).unwrap();
    assert!(l.check("k").await.allowed);
    assert!(l.check("k").await.allowed);
    let d = l.check("k").await;
    assert!(!d.allowed);
    assert!(d.reset_after <= Duration::from_millis(300));
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(l.check("k").await.allowed);
}

#[tokio::test]
async fn redis_down_fails_open_fast() {
    init();
    let metrics = platform::telemetry::install_metrics().unwrap();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let limiter = RedisLimiter::new(
        &format!("redis://{addr}/"),
        "x:",
        1,
        Duration::from_secs(60),
    )
    .unwrap();
    for _ in 0..5 {
        let t = Instant::now();
        let d = limiter.check("k").await;
        assert!(d.allowed && d.failed_open, "{d:?}");
        assert!(
            t.elapsed() < Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
    }
    let m = metrics.render();
    assert!(
        m.lines()
            .any(|l| l.starts_with("ratelimit_failopen_total{backend=\"redis\"}")),
        "{m}"
    );
}

/// A TCP forwarder to Redis that can be taken down and brought back on the same port.
struct Proxy {
    addr: SocketAddr,
    target: String,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let p = Proxy {
            addr: listener.local_addr().unwrap(),
            target,
            tasks: Arc::new(Mutex::new(Vec::new())),
        };
        p.run(listener);
        p
    }

    fn run(&self, listener: TcpListener) {
        let tasks = self.tasks.clone();
        let target = self.target.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let target = target.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().unwrap().push(conn);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    fn down(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    async fn up(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => return self.run(l),
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("rebinding proxy port: {e}"),
            }
        }
    }
}

#[tokio::test]
async fn redis_limiter_reconnects_after_an_outage() {
    init();
    let Some(url) = test_redis_url() else {
        return;
    };
    let target = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let proxy = Proxy::start(target).await;
    let l = RedisLimiter::new(
        &format!("redis://{}/", proxy.addr),
        &unique_prefix(),
        1000,
        Duration::from_secs(60),
    )
    .unwrap();
    let d = l.check("k").await;
    assert!(d.allowed && !d.failed_open, "{d:?}");

    proxy.down();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = Instant::now();
    let d = l.check("k").await;
    assert!(d.allowed && d.failed_open, "{d:?}");
    assert!(t.elapsed() < Duration::from_millis(400));

    proxy.up().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let d = l.check("k").await;
        if !d.failed_open {
            // Counting resumed where it was (2 counted so far at most).
            assert!(d.remaining < 1000 - 1, "{d:?}");
            break;
        }
        assert!(Instant::now() < deadline, "limiter did not reconnect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.down();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_limit_is_exact_under_concurrency() {
    init();
    let limit = 1000;
    let l: Arc<dyn RateLimiter> = Arc::new(MemoryLimiter::new(limit, Duration::from_secs(60)));
    assert_eq!(l.backend(), "memory");
    let (allowed, denied, open) = hammer(vec![l.clone()], "same", 64, 50).await;
    assert_eq!(open, 0);
    assert_eq!(allowed, limit as usize);
    assert_eq!(denied, 64 * 50 - limit as usize);
}

/// Latency of one decision against the local Redis (sequential, then 3 replicas × 16 tasks).
/// Run with `cargo test -p platform --test it -- --ignored --nocapture redis_decision_latency`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run explicitly"]
async fn redis_decision_latency() {
    init();
    let url = test_redis_url().expect("REDIS_URL");
    let prefix = unique_prefix();
    let l =
        Arc::new(RedisLimiter::new(&url, &prefix, u64::MAX / 2, Duration::from_secs(60)).unwrap());
    let pct = |mut v: Vec<Duration>, p: f64| {
        v.sort();
        v[((v.len() as f64 - 1.0) * p) as usize]
    };
    for _ in 0..200 {
        l.check("warm").await;
    }
    let mut seq = Vec::with_capacity(10_000);
    for i in 0..10_000 {
        let t = Instant::now();
        let d = l.check(&format!("u{}", i % 100)).await;
        seq.push(t.elapsed());
        assert!(!d.failed_open);
    }
    println!(
        "redis limiter sequential: p50 {:?} p99 {:?} max {:?}",
        pct(seq.clone(), 0.5),
        pct(seq.clone(), 0.99),
        pct(seq, 1.0)
    );
    let replicas: Vec<Arc<RedisLimiter>> = (0..3)
        .map(|_| {
            Arc::new(
                RedisLimiter::new(&url, &prefix, u64::MAX / 2, Duration::from_secs(60)).unwrap(),
            )
        })
        .collect();
    let started = Instant::now();
    let mut hs = Vec::new();
    for t in 0..48 {
        let l = replicas[t % 3].clone();
        hs.push(tokio::spawn(async move {
            let mut v = Vec::with_capacity(1000);
            for i in 0..1000 {
                let s = Instant::now();
                let d = l.check(&format!("c{}", (t * 1000 + i) % 500)).await;
                v.push(s.elapsed());
                assert!(!d.failed_open);
            }
            v
        }));
    }
    let mut all = Vec::new();
    for h in hs {
        all.extend(h.await.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "redis limiter 3 replicas x 48 tasks: {:.0} decisions/s, p50 {:?} p99 {:?}",
        all.len() as f64 / secs,
        pct(all.clone(), 0.5),
        pct(all, 0.99)
    );
}
