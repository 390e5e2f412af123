//! `panaversity`: one binary for PanaversityFS (the book store over MCP) and the Study Mode API
//! (the ChatKit tutor). See `panaversity --help` and the README for every setting.

/// mimalloc (see ARCHITECTURE, "mimalloc with lazily committed arenas").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `arena_eager_commit` option (index 4 in the pinned mimalloc 2.x).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Commit arena memory on demand instead of up front: with eager commit, memory freed after a
/// burst (a 200 MB archive streams ~2 MB blobs) stays in the process's RSS. It must be set before
/// the first allocation reserves the first arena, which happens before `main` (the Rust runtime
/// allocates), so it runs as an ELF constructor (`.init_array`, before the runtime's own).
/// `MIMALLOC_ARENA_EAGER_COMMIT` in the environment still wins.
extern "C" fn tune_allocator() {
    // SAFETY: runs once at load, single-threaded, before any Rust allocation; getenv reads a
    // NUL-terminated literal; mi_option_set only stores the value.
    unsafe {
        if libc::getenv(c"MIMALLOC_ARENA_EAGER_COMMIT".as_ptr()).is_null() {
            libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        }
    }
}

#[used]
#[unsafe(link_section = ".init_array.00090")]
static TUNE_ALLOCATOR: extern "C" fn() = tune_allocator;

/// Return the calling thread's freed memory now (mimalloc otherwise keeps it ~10 ms, and the
/// archive's compression threads allocate buffers that other threads free; see
/// docs/BENCHMARKS.md, "Archives on a realistic book").
fn collect_this_thread() {
    // SAFETY: mi_collect only walks and releases the calling thread's own heap.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

mod cli_fs;
mod cli_import;
mod cli_study;
mod cli_study_import;
mod cli_sync;
mod config;
mod legacy_env;
mod sample;
mod serve;
mod settings;
mod study_args;
mod web;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::Common;

#[derive(Debug, Parser)]
#[command(
    name = "panaversity",
    version,
    about = "PanaversityFS book store and Study Mode API"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the HTTP server: MCP at /mcp, archives at /books/{book}/archive, ChatKit at /chatkit,
    /// /health, /health/ready and /metrics.
    Serve(Box<serve::ServeArgs>),
    /// PanaversityFS operator commands.
    #[command(subcommand)]
    Fs(Box<cli_fs::FsCmd>),
    /// Study Mode operator commands (`study check-llm`).
    #[command(subcommand)]
    Study(cli_study::StudyCmd),
    /// Apply or revert the database migrations of every component.
    Migrate {
        #[command(subcommand)]
        direction: cli_fs::MigrateDir,
    },
    /// List every setting: its config-file key, environment variable, flag, default and the
    /// commands that read it (`--show-settings` on a command prints the values it would use).
    Settings {
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> std::process::ExitCode {
    let cwd = match std::env::current_dir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: cannot read the current directory: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    // Flags, the environment, `.env` files, the predecessor's variables and the config file,
    // through the one clap definition (the process environment is never changed).
    let resolved = match settings::resolve(
        Cli::command(),
        std::env::args_os().collect(),
        &|k| std::env::var(k).ok(),
        &cwd,
    ) {
        Ok(r) => r,
        Err(settings::ResolveError::Clap(e)) => e.exit(),
        Err(settings::ResolveError::Settings(msg)) => {
            eprintln!("error: {msg}");
            return std::process::ExitCode::from(2);
        }
    };
    let mut cli = match Cli::from_arg_matches(&resolved.matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    // One store, wherever the command runs from: the data dir is absolute from here on.
    cli.common.data_dir = std::path::absolute(cwd.join(&cli.common.data_dir))
        .unwrap_or_else(|_| cwd.join(&cli.common.data_dir));
    if let Some(format) = cli.common.show_settings {
        return match settings::print_report(&resolved.report, format == config::ShowFormat::Json) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    platform::telemetry::init_tracing(platform::telemetry::TracingConfig {
        json: cli.common.log_format == config::LogFormat::Json,
        filter: cli.common.log_level.clone(),
    });
    for note in &resolved.notes {
        tracing::info!("{note}");
    }
    for warning in settings::unknown_env_vars(&Cli::command(), std::env::vars_os()) {
        tracing::warn!("{warning}");
    }
    platform::install_crypto_provider();
    pfs::storage::init_process();
    pfs::archive::set_tidy_hook(collect_this_thread);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.cmd {
            Cmd::Serve(args) => serve::run(&cli.common, *args).await,
            Cmd::Fs(cmd) => cli_fs::run(&cli.common, *cmd).await,
            Cmd::Study(cmd) => cli_study::run(&cli.common, cmd).await,
            Cmd::Migrate { direction } => cli_fs::migrate(&cli.common, direction).await,
            Cmd::Settings { json } => settings::print_catalog(&Cli::command(), json)
                .map(|()| std::process::ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
