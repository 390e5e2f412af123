//! `pv-bench`: measures the engineering targets (docs/BENCHMARKS.md) against the real release
//! server. Each server benchmark spawns `panaversity serve --dev` on a free loopback port with a
//! temporary data directory, drives it over HTTP (MCP JSON-RPC, archive download, ChatKit SSE),
//! reads its peak RSS from `/proc/<pid>/status`, and stops it. Every subcommand prints a human
//! summary, PASS/FAIL lines and, last, a one-line JSON result.
//!
//! Build: `cargo build --release -p panaversity -p bench`, then e.g.
//! `target/release/pv-bench write --db sqlite --clients 16 --seconds 10`.

mod chatkit;
mod fs;
mod inproc;
mod mcp;
mod server;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "pv-bench",
    about = "Load generator for the Panaversity server (loopback only)"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Clone, Args)]
struct Common {
    /// The server binary to spawn.
    #[arg(
        long,
        env = "PV_BENCH_SERVER_BIN",
        default_value = "target/release/panaversity",
        global = true
    )]
    server_bin: PathBuf,
    /// The server's --log-level (per-request logs are `info`; the default keeps them off so the
    /// numbers measure the service, not log writing).
    #[arg(long, default_value = "warn", global = true)]
    server_log_level: String,
    /// Where temporary data directories are created.
    #[arg(long, env = "PV_BENCH_WORK_DIR", global = true)]
    work_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// write_content over MCP HTTP: each client loops read_content → write_content(expected_hash)
    /// on its own file.
    Write {
        #[arg(long, value_enum, default_value = "sqlite")]
        db: fs::DbChoice,
        /// PostgreSQL server URL used to CREATE (and later DROP) a scratch database bench_<random>.
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        database_url: String,
        #[arg(long, default_value_t = 16)]
        clients: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Upper bound of iterations per client.
        #[arg(long, default_value_t = 1_000_000)]
        max_ops: u64,
        /// Read the file (read_content) before every write and send the hash it returned, as an
        /// agent that does not keep hashes would. By default each client sends the hash its
        /// previous write returned, so the run measures write_content alone.
        #[arg(long)]
        with_read: bool,
        /// Server database pool size (default: the server's default).
        #[arg(long)]
        pool_size: Option<u32>,
    },
    /// read_content of the sample book's lessons; with --overlay a second phase reads them
    /// through a user's overlay.
    Read {
        #[arg(long, default_value_t = 64)]
        clients: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long)]
        overlay: bool,
        #[arg(long, default_value_t = 1_000_000)]
        max_ops: u64,
        #[arg(long, default_value_t = 1.0)]
        warmup_seconds: f64,
    },
    /// A realistic 500-file / 200 MiB book (bookgen), then get_book_archive + full download +
    /// ZIP check: the cold archive, then --warm-runs more, with the server's peak RSS.
    Archive {
        #[arg(long, default_value_t = 490)]
        lessons: usize,
        #[arg(long, default_value_t = 396)]
        lesson_kib: usize,
        #[arg(long, default_value_t = 10)]
        assets: usize,
        #[arg(long, default_value_t = 1024)]
        asset_kib: usize,
        #[arg(long, default_value_t = 4)]
        warm_runs: usize,
        /// A real Docusaurus docs tree instead of the generated book (ingested with
        /// `panaversity fs ingest`), e.g. the sample book or the 724-lesson book.
        #[arg(long)]
        docs_dir: Option<std::path::PathBuf>,
    },
    /// plan_build over MCP on a book of --files journal rows, and in-process.
    PlanBuild {
        #[arg(long, default_value_t = 10_000)]
        files: usize,
        #[arg(long, default_value_t = 20)]
        runs: usize,
    },
    /// grep_search over a book of --mb megabytes.
    Grep {
        #[arg(long, default_value_t = 10)]
        mb: usize,
        #[arg(long, default_value_t = 20)]
        runs: usize,
    },
    /// Redis rate limiter: decision latency and exactness across replicas.
    Ratelimit {
        #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379/")]
        redis_url: String,
        #[arg(long, default_value_t = 3)]
        replicas: usize,
        #[arg(long, default_value_t = 48)]
        tasks: usize,
        #[arg(long, default_value_t = 8)]
        keys: usize,
        #[arg(long, default_value_t = 2_000)]
        limit: u64,
        #[arg(long, default_value_t = 3_000)]
        attempts_per_key: u64,
    },
    /// Cached lesson loads through study::lessons::LessonService (local docs source).
    LessonCache {
        /// Docs directory (default: the sample book's content in the source tree).
        #[arg(long, default_value = "crates/panaversity/sample-book/content")]
        docs_dir: PathBuf,
        /// Also measure the Redis cache.
        #[arg(long, env = "REDIS_URL")]
        redis_url: Option<String>,
        #[arg(long, default_value_t = 16)]
        tasks: usize,
        #[arg(long, default_value_t = 200_000)]
        loads: u64,
    },
    /// N concurrent ChatKit streams against a local fake LLM.
    Chatkit {
        #[arg(long, default_value_t = 1_000)]
        streams: usize,
        /// Use HTTP/1.1 (one connection per stream) instead of HTTP/2 cleartext.
        #[arg(long)]
        http1: bool,
        #[arg(long, default_value_t = 100)]
        streams_per_conn: usize,
        #[arg(long, default_value_t = 1_000)]
        ramp_per_sec: u64,
        #[arg(long, default_value_t = 6)]
        deltas: usize,
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
        #[arg(long, default_value_t = 300)]
        open_timeout_secs: u64,
        /// Override the server's database acquire timeout (seconds).
        #[arg(long)]
        db_acquire_timeout: Option<u64>,
    },
    /// Spawn → /health/ready 200, on fresh and on existing data directories.
    ColdStart {
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Internal: the fake OpenAI-compatible streaming server used by `chatkit`.
    #[command(hide = true)]
    FakeLlm {
        #[arg(long, default_value_t = 0)]
        port: u16,
        #[arg(long, default_value_t = 6)]
        deltas: usize,
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    platform::install_crypto_provider();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let c = cli.common;
    let env = fs::Env {
        bin: c.server_bin,
        log_level: c.server_log_level,
        work_dir: c.work_dir.unwrap_or_else(std::env::temp_dir),
    };
    match cli.cmd {
        Cmd::Write {
            db,
            database_url,
            clients,
            seconds,
            max_ops,
            with_read,
            pool_size,
        } => {
            fs::write(
                &env,
                &fs::WriteOpts {
                    db,
                    admin_url: database_url,
                    clients,
                    seconds,
                    max_ops_per_client: max_ops,
                    skip_read: !with_read,
                    pool_size,
                },
            )
            .await
        }
        Cmd::Read {
            clients,
            seconds,
            overlay,
            max_ops,
            warmup_seconds,
        } => {
            fs::read(
                &env,
                &fs::ReadOpts {
                    clients,
                    seconds,
                    overlay,
                    max_ops_per_client: max_ops,
                    warmup_seconds,
                },
            )
            .await
        }
        Cmd::Archive {
            lessons,
            lesson_kib,
            assets,
            asset_kib,
            warm_runs,
            docs_dir,
        } => {
            let book = bookgen::BookSpec {
                lessons,
                lesson_bytes: lesson_kib * 1024,
                assets,
                asset_bytes: asset_kib * 1024,
                ..bookgen::BookSpec::bench_200mib()
            };
            fs::archive(
                &env,
                &fs::ArchiveOpts {
                    book,
                    docs_dir,
                    warm_runs,
                },
            )
            .await
        }
        Cmd::PlanBuild { files, runs } => fs::plan_build(&env, files, runs).await,
        Cmd::Grep { mb, runs } => fs::grep(&env, mb, runs).await,
        Cmd::Ratelimit {
            redis_url,
            replicas,
            tasks,
            keys,
            limit,
            attempts_per_key,
        } => {
            inproc::ratelimit(&inproc::RateLimitOpts {
                redis_url,
                replicas,
                tasks,
                keys,
                limit,
                attempts_per_key,
            })
            .await
        }
        Cmd::LessonCache {
            docs_dir,
            redis_url,
            tasks,
            loads,
        } => {
            inproc::lesson_cache(&inproc::LessonCacheOpts {
                docs_dir,
                redis_url,
                tasks,
                loads,
            })
            .await
        }
        Cmd::Chatkit {
            streams,
            http1,
            streams_per_conn,
            ramp_per_sec,
            deltas,
            interval_ms,
            open_timeout_secs,
            db_acquire_timeout,
        } => {
            chatkit::chatkit(
                &env,
                &chatkit::ChatkitOpts {
                    streams,
                    h2c: !http1,
                    streams_per_conn,
                    ramp_per_sec,
                    deltas,
                    interval_ms,
                    open_timeout_secs,
                    db_acquire_timeout,
                },
            )
            .await
        }
        Cmd::ColdStart { runs } => fs::cold_start(&env, runs).await,
        Cmd::FakeLlm {
            port,
            deltas,
            interval_ms,
        } => {
            chatkit::fake_llm(chatkit::FakeLlmOpts {
                port,
                deltas,
                interval_ms,
            })
            .await
        }
    }
}
