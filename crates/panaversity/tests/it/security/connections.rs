//! Finding 3: idle and slow connections were never closed (1,500 idle sockets and a slow-header
//! client still open after 75 s; 1,100 idle connections exhausted the fd limit and `/health`
//! stopped answering). Now a request head must arrive within the header-read timeout, idle
//! connections are closed, the fd soft limit is raised at start, and beyond the connection cap a
//! client gets a clean `503 TOO_MANY_CONNECTIONS` instead of a hang.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{HealthProbe, rss_mib};
use crate::support::{Server, ServerOpts, TempData};

const IDLE_SOCKETS: usize = 1_500;
/// RSS growth allowed while 1,500 sockets are held open.
const MEMORY_BOUND_MIB: f64 = 64.0;

/// Let this test process open a few thousand sockets.
fn raise_own_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

/// Whether the server has closed `s` (EOF or reset) within `wait`.
async fn closed_by_server(s: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout(wait, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // e.g. a 408 before the close
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_are_closed() {
    raise_own_fd_limit();
    let tmp = TempData::new();
    let opts = ServerOpts::dev()
        .env("PANAVERSITY_NO_SAMPLE", "yes")
        .env("PANAVERSITY_HEADER_READ_TIMEOUT_SECS", "2")
        .env("PANAVERSITY_IDLE_TIMEOUT_SECS", "3");
    let server = Server::start(&tmp.data(), opts).await;
    // The fd soft limit was raised to the hard limit at start.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let nums: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(nums[0], nums[1], "soft limit not raised: {line}");

    let rss_before = rss_mib(server.pid());
    let probe = HealthProbe::start(&server.base);
    let mut idle = Vec::with_capacity(IDLE_SOCKETS);
    for _ in 0..IDLE_SOCKETS {
        idle.push(TcpStream::connect(server.addr).await.expect("connect"));
    }
    // A slow-header client: one byte every 500 ms, never finishing the head.
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    let slow_started = Instant::now();
    let slow_task = tokio::spawn(async move {
        for b in b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
            .iter()
            .cycle()
        {
            if slow.write_all(&[*b]).await.is_err() {
                return (true, slow_started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            if slow_started.elapsed() > Duration::from_secs(20) {
                return (false, slow_started.elapsed());
            }
        }
        (false, slow_started.elapsed())
    });
    let grown = rss_mib(server.pid()) - rss_before;
    println!("{IDLE_SOCKETS} idle sockets: RSS grew {grown:.1} MiB");
    assert!(grown < MEMORY_BOUND_MIB, "RSS grew {grown:.1} MiB");
    tokio::time::sleep(Duration::from_secs(1)).await;
    probe.finish("idle-socket attack").await;

    // Every idle socket is closed by the server within header timeout + slack.
    let mut still_open = 0;
    for s in &mut idle {
        if !closed_by_server(s, Duration::from_secs(6)).await {
            still_open += 1;
        }
    }
    assert_eq!(still_open, 0, "{still_open} idle sockets still open");
    let (cut, after) = slow_task.await.unwrap();
    assert!(cut, "the slow-header client was never cut off");
    println!("slow-header client cut after {after:?}");
    assert!(after < Duration::from_secs(8), "{after:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_get_a_clean_503() {
    raise_own_fd_limit();
    let tmp = TempData::new();
    let opts = ServerOpts::dev()
        .env("PANAVERSITY_NO_SAMPLE", "true")
        .env("PANAVERSITY_MAX_CONNECTIONS", "32")
        .env("PANAVERSITY_HEADER_READ_TIMEOUT_SECS", "2");
    let server = Server::start(&tmp.data(), opts).await;
    // 40 connections against a cap of 32: the ones over the cap are answered 503 at once (one
    // more may be, while the start-up probe's connection is still being closed).
    let mut held = Vec::new();
    for _ in 0..40 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let t = Instant::now();
    let mut refused = 0;
    for s in &mut held {
        let mut answer = vec![0u8; 1024];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(300), s.read(&mut answer)).await
        {
            let answer = String::from_utf8_lossy(&answer[..n]);
            assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
            assert!(answer.contains("TOO_MANY_CONNECTIONS"), "{answer:?}");
            refused += 1;
        }
    }
    println!(
        "40 connections, cap 32: {refused} refused in {:?}",
        t.elapsed()
    );
    assert!((8..=9).contains(&refused), "{refused} refused");
    // Once the idle ones are gone, service resumes.
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = crate::support::client()
        .get(format!("{}/health", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.stop().await;
}
