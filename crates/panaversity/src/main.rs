//! `panaversity`: one binary for PanaversityFS (the book store over MCP) and the Study Mode API
//! (the ChatKit tutor). See `panaversity --help` and the README for every setting.

mod cli_fs;
mod cli_sync;
mod config;
mod sample;
mod serve;

use clap::{Parser, Subcommand};

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
    /// Apply or revert the database migrations of every component.
    Migrate {
        #[command(subcommand)]
        direction: cli_fs::MigrateDir,
    },
}

fn main() -> std::process::ExitCode {
    // A config file given by flag or env fills in unset environment variables before parsing.
    if let Some(path) = config_path_from_args()
        && let Err(e) = config::apply_config_file_to_env(&path)
    {
        eprintln!("error: {e:#}");
        return std::process::ExitCode::from(2);
    }
    let cli = Cli::parse();
    platform::telemetry::init_tracing(platform::telemetry::TracingConfig {
        json: cli.common.log_format == config::LogFormat::Json,
        filter: cli.common.log_level.clone(),
    });
    platform::install_crypto_provider();
    pfs::storage::init_process();
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
            Cmd::Migrate { direction } => cli_fs::migrate(&cli.common, direction).await,
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

/// `--config PATH` / `--config=PATH` / `PANAVERSITY_CONFIG`, read before clap parses.
fn config_path_from_args() -> Option<std::path::PathBuf> {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--config" {
            return args.next().map(Into::into);
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(v.into());
        }
    }
    std::env::var_os("PANAVERSITY_CONFIG").map(Into::into)
}
