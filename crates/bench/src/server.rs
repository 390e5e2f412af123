//! The server under test: `panaversity serve --dev` spawned as a child process on a free loopback
//! port, polled until `/health/ready` answers 200, measured through `/proc/<pid>/status` and
//! stopped with SIGTERM (SIGKILL after a grace period).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// How to start the server.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// The `panaversity` binary (release build).
    pub bin: PathBuf,
    /// `--data-dir` (SQLite file, fs storage, extracted sample docs).
    pub data_dir: PathBuf,
    /// `--database-url` (PostgreSQL); SQLite in the data dir when `None`.
    pub database_url: Option<String>,
    /// `--log-level` of the server.
    pub log_level: String,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Extra arguments after `serve`.
    pub args: Vec<String>,
}

impl ServerSpec {
    /// A dev-mode server on SQLite in `data_dir`.
    pub fn new(bin: &Path, data_dir: &Path, log_level: &str) -> ServerSpec {
        ServerSpec {
            bin: bin.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            database_url: None,
            log_level: log_level.to_string(),
            env: Vec::new(),
            args: Vec::new(),
        }
    }

    /// Add an environment variable.
    pub fn env(mut self, k: &str, v: impl Into<String>) -> ServerSpec {
        self.env.push((k.to_string(), v.into()));
        self
    }
}

/// A running server process.
pub struct Server {
    child: Child,
    pid: u32,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    log: PathBuf,
}

/// Environment variables of the bench's own environment that would change what the server does
/// (CI sets DATABASE_URL / REDIS_URL for tests); the child never inherits them.
const SCRUBBED_ENV: &[&str] = &[
    "DATABASE_URL",
    "PANAVERSITY_DATABASE_URL",
    "REDIS_URL",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "PANAVERSITY_CONFIG",
    "PANAVERSITY_DATA_DIR",
    "PANAVERSITY_BIND",
    "RUST_LOG",
    "RUST_BACKTRACE",
    "RUST_LIB_BACKTRACE",
    "STUDY_RATE_LIMIT",
];

/// A free TCP port on 127.0.0.1 (bound and released; the server binds it right after).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding a probe port")?;
    Ok(l.local_addr()?.port())
}

impl Server {
    /// Spawn the server and wait until `/health/ready` answers 200. Returns the server and the
    /// time from spawn to the first 200.
    pub async fn start(spec: &ServerSpec) -> anyhow::Result<(Server, Duration)> {
        if !spec.bin.exists() {
            bail!(
                "server binary {} not found: build it with `cargo build --release -p panaversity` or pass --server-bin",
                spec.bin.display()
            );
        }
        std::fs::create_dir_all(&spec.data_dir)
            .with_context(|| format!("creating {}", spec.data_dir.display()))?;
        let port = free_port()?;
        let log = spec.data_dir.join(format!("server-{port}.log"));
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("creating the server log {}", log.display()))?;
        let log_err = log_file.try_clone()?;
        let mut cmd = Command::new(&spec.bin);
        for k in SCRUBBED_ENV {
            cmd.env_remove(k);
        }
        cmd.arg("--data-dir")
            .arg(&spec.data_dir)
            .arg("--log-level")
            .arg(&spec.log_level);
        if let Some(url) = &spec.database_url {
            cmd.arg("--database-url").arg(url);
        }
        cmd.arg("serve")
            .arg("--dev")
            .arg("--bind")
            .arg(format!("127.0.0.1:{port}"))
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true);
        let started = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", spec.bin.display()))?;
        let pid = child
            .id()
            .context("the server exited before its pid was known")?;
        let mut server = Server {
            child,
            pid,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let elapsed = server.wait_ready(started, Duration::from_secs(60)).await?;
        Ok((server, elapsed))
    }

    async fn wait_ready(&mut self, started: Instant, limit: Duration) -> anyhow::Result<Duration> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .context("building the readiness client")?;
        let url = format!("{}/health/ready", self.base);
        loop {
            if let Ok(r) = http.get(&url).send().await
                && r.status().as_u16() == 200
            {
                return Ok(started.elapsed());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the server exited with {status} before it was ready; log tail:\n{}",
                    self.log_tail(30)
                );
            }
            if started.elapsed() > limit {
                bail!(
                    "the server was not ready after {limit:?}; log tail:\n{}",
                    self.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// `VmHWM` (peak resident set) of the server process in KiB.
    pub fn vm_hwm_kib(&self) -> anyhow::Result<u64> {
        proc_status_kib(self.pid, "VmHWM")
    }

    /// `VmRSS` (current resident set) of the server process in KiB.
    pub fn vm_rss_kib(&self) -> anyhow::Result<u64> {
        proc_status_kib(self.pid, "VmRSS")
    }

    /// CPU time (user + system) the server process has used so far, in seconds.
    pub fn cpu_secs(&self) -> f64 {
        proc_cpu_secs(self.pid).unwrap_or(0.0)
    }

    /// Open file descriptors of the server process.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// The last `n` lines of the server's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// GET `/metrics` (Prometheus text).
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let r = reqwest::get(format!("{}/metrics", self.base)).await?;
        Ok(r.text().await?)
    }

    /// SIGTERM, wait up to 10 s for a graceful exit, then SIGKILL.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let pid = libc::pid_t::try_from(self.pid).context("pid out of range")?;
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        if rc != 0 {
            self.child.kill().await.context("killing the server")?;
            return Ok(());
        }
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(status) => {
                status.context("waiting for the server")?;
            }
            Err(_) => {
                self.child.kill().await.context("killing the server")?;
            }
        }
        Ok(())
    }
}

/// A `Vm*` line of `/proc/<pid>/status`, in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    parse_status_kib(&text, field).with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// CPU time (user + system, all threads) of process `pid` in seconds, from `/proc/<pid>/stat`.
pub fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu_ticks(&text).map(|t| t as f64 / clock_ticks())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line; the command name (field 2)
/// may contain spaces, so fields are counted after its closing parenthesis.
fn parse_stat_cpu_ticks(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14 → index 11, stime index 12.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn parse_status_kib(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_status_fields() {
        let s = "Name:\tx\nVmPeak:\t  100 kB\nVmHWM:\t   4321 kB\nVmRSS:\t    1234 kB\n";
        assert_eq!(parse_status_kib(s, "VmHWM"), Some(4321));
        assert_eq!(parse_status_kib(s, "VmRSS"), Some(1234));
        assert_eq!(parse_status_kib(s, "VmSwap"), None);
    }

    #[test]
    fn parses_proc_stat_cpu() {
        let s = "123 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4 0 100";
        assert_eq!(parse_stat_cpu_ticks(s), Some(300));
        assert!(proc_cpu_secs(std::process::id()).is_some());
    }

    #[test]
    fn own_process_has_rss() {
        // RSS first: the high-water mark read afterwards can only be larger or equal.
        let rss = proc_status_kib(std::process::id(), "VmRSS").unwrap();
        let hwm = proc_status_kib(std::process::id(), "VmHWM").unwrap();
        assert!(hwm >= rss && rss > 0);
    }
}
