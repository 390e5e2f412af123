//! `panaversity fs …` and `panaversity migrate …`: operator commands.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use pfs::audit::AuditQuery;
use platform::Scopes;
use platform::auth::apikey::ApiKeyStore;
use platform::db::{Db, PoolSettings};

use crate::config::{self, Common, StorageArgs};
use crate::serve::open_engine;

#[derive(Debug, Subcommand)]
pub enum FsCmd {
    /// Serve the MCP tools over stdio (for local agent clients such as Claude Code).
    Stdio {
        #[command(flatten)]
        storage: StorageArgs,
        /// Agent id recorded in the audit log for this session.
        #[arg(
            long,
            env = "PANAVERSITY_STDIO_AGENT_ID",
            default_value = "stdio-agent"
        )]
        agent_id: String,
        /// Do not load the sample book into an empty store.
        #[arg(long, env = "PANAVERSITY_NO_SAMPLE", num_args = 0..=1, default_missing_value = "true", default_value = "false", action = clap::ArgAction::Set, value_parser = crate::config::bool_value)]
        no_sample: bool,
    },
    /// Compare the journal with storage; report (and with --repair, fix) desyncs.
    Fsck {
        #[command(flatten)]
        storage: StorageArgs,
        /// Re-materialize canonical objects from blobs and quarantine orphans (at most 10
        /// orphans without --force: more usually means a bucket written by another tool, which
        /// `fs adopt-storage` adopts instead).
        #[arg(long)]
        repair: bool,
        /// With --repair: quarantine every orphan, however many.
        #[arg(long, requires = "repair")]
        force: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Query or verify the audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Manage API keys (stored hashed in the database).
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Load the embedded sample book into the store (if the store has no books).
    Seed {
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Adopt a Python PanaversityFS deployment: its journal, audit log and bucket (or, without
    /// --from-database, every object under books/ in --from-storage). Idempotent; --dry-run.
    Import(Box<crate::cli_import::ImportArgs>),
    /// Adopt the objects of this store's own storage that have no journal row (a bucket written
    /// by another tool), instead of letting fsck --repair quarantine them. Idempotent; --dry-run.
    AdoptStorage(Box<crate::cli_import::AdoptArgs>),
    /// Upload a Docusaurus docs tree into a book over MCP (changed files only).
    Ingest(Box<crate::cli_sync::IngestArgs>),
    /// Bring a local docs tree up to date with a book over MCP (plan_build deltas).
    Hydrate(Box<crate::cli_sync::HydrateArgs>),
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Rows newest first, filtered.
    Query(AuditQueryArgs),
    /// Verify the per-file hash chains and the tamper-evident row chain.
    Verify {
        #[command(flatten)]
        storage: StorageArgs,
        /// Verify only one (book, path, user) chain.
        #[arg(long, requires = "path")]
        book_id: Option<String>,
        #[arg(long, requires = "book_id")]
        path: Option<String>,
        #[arg(long, default_value = pfs::BASE_USER)]
        user_id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct AuditQueryArgs {
    #[command(flatten)]
    storage: StorageArgs,
    #[arg(long)]
    agent_id: Option<String>,
    #[arg(long)]
    operation: Option<String>,
    #[arg(long)]
    book_id: Option<String>,
    /// Glob over book-relative paths (`*`, `?`).
    #[arg(long)]
    path_pattern: Option<String>,
    /// RFC 3339 lower bound (inclusive).
    #[arg(long)]
    since: Option<String>,
    /// RFC 3339 upper bound (exclusive).
    #[arg(long)]
    until: Option<String>,
    #[arg(long)]
    status: Option<String>,
    #[arg(long)]
    user_id: Option<String>,
    #[arg(long, default_value_t = 100)]
    limit: u32,
    #[arg(long)]
    cursor: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Create a key; the plaintext is printed once.
    Create {
        /// Subject recorded as the agent id of this key's calls.
        #[arg(long)]
        owner: String,
        /// Space- or comma-separated: read, write, admin (an unknown name is an error).
        #[arg(long, default_value = "read write")]
        scopes: String,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// List keys (never the secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id.
    Revoke { id: String },
}

#[derive(Debug, Clone, Copy, Subcommand)]
pub enum MigrateDir {
    /// Apply every pending migration (creates the store if there is none).
    Up,
    /// Revert every migration: drops every table of ours with its rows. Without --yes it prints
    /// what would be dropped and asks on a terminal; otherwise it changes nothing and exits 2.
    Down {
        /// Drop without asking.
        #[arg(long)]
        yes: bool,
    },
}

fn parse_time(s: &Option<String>) -> anyhow::Result<Option<chrono::DateTime<chrono::Utc>>> {
    s.as_deref()
        .map(|v| {
            chrono::DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&chrono::Utc))
                .with_context(|| format!("{v:?} is not an RFC 3339 timestamp"))
        })
        .transpose()
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

async fn db_only(common: &Common) -> anyhow::Result<Db> {
    let url = config::database_url(common)?;
    let settings = PoolSettings {
        pg_schema: Some(common.db_schema.clone()),
        ..PoolSettings::default()
    };
    Db::connect(&url, &settings).await
}

/// The server's existing store: its database must exist and hold the book store's tables
/// (operator commands never create a new one; see [`config::StoreUse`]).
async fn existing_db(common: &Common) -> anyhow::Result<Db> {
    config::store_url(common, config::StoreUse::Existing)?;
    let db = db_only(common).await?;
    if !table_exists(&db, pfs::db::MIGRATIONS_TABLE).await? {
        let what = match db.kind() {
            platform::db::DbKind::Sqlite => format!(
                "no PanaversityFS store in the data dir {}: its database has no PanaversityFS tables",
                common.data_dir.display()
            ),
            platform::db::DbKind::Postgres => {
                "no PanaversityFS store in the database of DATABASE_URL: it has no PanaversityFS tables"
                    .to_string()
            }
        };
        anyhow::bail!(config::no_store(&what));
    }
    Ok(db)
}

/// Open the engine on the server's existing store.
pub(crate) async fn existing_engine(
    common: &Common,
    storage: &StorageArgs,
) -> anyhow::Result<(Db, pfs::Engine)> {
    existing_db(common).await?.pool().close().await;
    open_engine(common, storage, PoolSettings::default()).await
}

async fn table_exists(db: &Db, name: &str) -> anyhow::Result<bool> {
    let sql = match db.kind() {
        platform::db::DbKind::Sqlite => {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1"
        }
        platform::db::DbKind::Postgres => {
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = $1"
        }
    };
    let n: i64 = sqlx::query_scalar(sql)
        .bind(name.to_string())
        .fetch_one(db.pool())
        .await
        .with_context(|| format!("looking for table {name}"))?;
    Ok(n > 0)
}

fn spinner(msg: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new_spinner();
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

pub async fn run(common: &Common, cmd: FsCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        FsCmd::Stdio {
            storage,
            agent_id,
            no_sample,
        } => {
            let (_db, engine) = open_engine(common, &storage, PoolSettings::default()).await?;
            if !no_sample {
                crate::serve::seed_sample(&engine).await?;
            }
            let identity = platform::Identity {
                subject: agent_id,
                scopes: Scopes::ALL,
                name: None,
                email: None,
                organization: None,
                method: platform::AuthMethod::Dev,
                acting_user: None,
            };
            let cfg = pfs_mcp::PfsMcpConfig {
                max_asset_bytes: storage.max_asset_size_mb * 1024 * 1024,
                stdio_identity: Some(identity.clone()),
                ..Default::default()
            };
            pfs_mcp::serve_stdio(pfs_mcp::PfsMcpState::new(engine, cfg), identity).await?;
            Ok(ExitCode::SUCCESS)
        }
        FsCmd::Import(a) => crate::cli_import::import(common, *a).await,
        FsCmd::AdoptStorage(a) => crate::cli_import::adopt(common, *a).await,
        FsCmd::Fsck {
            storage,
            repair,
            force,
            json,
        } => {
            let (_db, engine) = existing_engine(common, &storage).await?;
            let pb = spinner(if repair {
                "checking and repairing journal vs storage…"
            } else {
                "checking journal vs storage…"
            });
            let limit = (!force).then_some(pfs::fsck::QUARANTINE_LIMIT);
            let report = engine.fsck_with(repair, limit).await?;
            pb.finish_and_clear();
            if json {
                print_json(&report)?;
            } else {
                println!(
                    "journal rows: {}  objects scanned: {}  blobs missing: {}  blobs corrupt: {}  canonical missing: {}  canonical mismatch: {}  orphans: {}  symlinks: {}  repaired: {}  unrepairable: {}",
                    report.journal_rows,
                    report.objects_scanned,
                    report.blobs_missing,
                    report.blobs_corrupt,
                    report.canonical_missing,
                    report.canonical_mismatch,
                    report.orphans,
                    report.symlinks,
                    report.repaired,
                    report.unrepairable
                );
                for i in &report.issues {
                    println!("- {}", serde_json::to_string(i)?);
                }
                if let Some(why) = &report.quarantine_refused {
                    println!("orphans left in place: {why}");
                }
                println!(
                    "{}",
                    if report.clean() {
                        "consistent"
                    } else {
                        "NOT consistent"
                    }
                );
            }
            Ok(if report.clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        FsCmd::Audit(AuditCmd::Query(a)) => {
            let (_db, engine) = existing_engine(common, &a.storage).await?;
            let q = AuditQuery {
                agent_id: a.agent_id,
                operation: a.operation,
                book_id: a.book_id,
                path_pattern: a.path_pattern,
                since: parse_time(&a.since)?,
                until: parse_time(&a.until)?,
                status: a.status,
                user_id: a.user_id,
                limit: Some(a.limit),
                cursor: a.cursor,
            };
            let page = engine.audit().query(&q).await?;
            if a.json {
                print_json(&page)?;
            } else {
                for r in &page.rows {
                    println!("{}", serde_json::to_string(r)?);
                }
                if let Some(c) = &page.next_cursor {
                    println!("next page: --cursor {c}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        FsCmd::Audit(AuditCmd::Verify {
            storage,
            book_id,
            path,
            user_id,
            json,
        }) => {
            let (_db, engine) = existing_engine(common, &storage).await?;
            let pb = spinner("verifying the audit chains…");
            let report = match (&book_id, &path) {
                (Some(b), Some(p)) => engine.audit().verify(Some((b, p, &user_id))).await?,
                _ => engine.audit().verify(None).await?,
            };
            pb.finish_and_clear();
            if json {
                print_json(&report)?;
            } else {
                println!(
                    "{}: {} rows checked, {} breaks",
                    if report.valid { "valid" } else { "BROKEN" },
                    report.rows_checked,
                    report.breaks.len()
                );
                for b in &report.breaks {
                    println!("- {}", serde_json::to_string(b)?);
                }
            }
            Ok(if report.valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        FsCmd::Keys(k) => {
            // A key made in a store the server does not use would be rejected by it.
            let db = existing_db(common).await?;
            platform::auth::apikey::migrate_up(&db).await?;
            let store = ApiKeyStore::new(db);
            match k {
                KeysCmd::Create {
                    owner,
                    scopes,
                    name,
                    json,
                } => {
                    let scopes = Scopes::parse_strict(&scopes).map_err(anyhow::Error::msg)?;
                    let (info, key) = store.create(&owner, scopes, &name).await?;
                    if json {
                        print_json(&serde_json::json!({ "key": key, "info": info }))?;
                    } else {
                        println!("{key}");
                        eprintln!(
                            "created key {} for {} with scopes {:?}; the key above is shown only once",
                            info.id,
                            info.owner,
                            scopes.as_list()
                        );
                    }
                }
                KeysCmd::List { json } => {
                    let keys = store.list().await?;
                    if json {
                        print_json(&keys)?;
                    } else {
                        for k in keys {
                            println!("{}", serde_json::to_string(&k)?);
                        }
                    }
                }
                KeysCmd::Revoke { id } => {
                    if store.revoke(&id).await? {
                        println!("revoked {id}");
                    } else {
                        eprintln!("no active key with id {id}");
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        FsCmd::Seed { storage } => {
            let (_db, engine) = open_engine(common, &storage, PoolSettings::default()).await?;
            if crate::serve::seed_sample(&engine).await? {
                println!("loaded the sample book");
            } else {
                println!("the store already has books; nothing loaded");
            }
            Ok(ExitCode::SUCCESS)
        }
        FsCmd::Ingest(args) => crate::cli_sync::ingest(common, *args).await,
        FsCmd::Hydrate(args) => crate::cli_sync::hydrate(common, *args).await,
    }
}

pub async fn migrate(common: &Common, dir: MigrateDir) -> anyhow::Result<ExitCode> {
    match dir {
        MigrateDir::Up => {
            let db = db_only(common).await?;
            let study = study::store::ThreadStore::new(db.clone());
            pfs::db::migrate_up(&db).await?;
            platform::auth::apikey::migrate_up(&db).await?;
            study.migrate_up().await?;
            println!("migrations applied ({})", db.kind().as_str());
        }
        MigrateDir::Down { yes } => {
            let db = existing_db(common).await?;
            let plan = down_plan(&db).await?;
            let target = match &common.database_url {
                Some(_) => format!("the {} database of DATABASE_URL", db.kind().as_str()),
                None => format!("{}", common.data_dir.join("panaversity.db").display()),
            };
            if !yes {
                print_down_plan(&plan, &target);
                if !(std::io::stdin().is_terminal() && confirm()?) {
                    eprintln!(
                        "nothing was changed: run `panaversity migrate down --yes` to drop them \
                         (there is no undo: back the database up first)"
                    );
                    return Ok(ExitCode::from(2));
                }
            }
            let study = study::store::ThreadStore::new(db.clone());
            study.migrate_down().await?;
            platform::auth::apikey::migrate_down(&db).await?;
            pfs::db::migrate_down(&db).await?;
            println!(
                "migrations reverted ({}): dropped {} tables in {target}",
                db.kind().as_str(),
                plan.iter().map(|c| c.tables.len()).sum::<usize>()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `migrate down` reverts in one component.
struct DownPlan {
    component: &'static str,
    /// Applied migrations.
    migrations: usize,
    /// Existing tables its down migrations drop, with their row counts.
    tables: Vec<(String, i64)>,
}

/// The components' migrations, in the order `migrate down` reverts them, with their tracking
/// tables (the same sets the components embed: `crates/*/migrations`).
fn migrators(
    kind: platform::db::DbKind,
) -> [(&'static str, &'static str, sqlx::migrate::Migrator); 3] {
    use platform::db::DbKind;
    match kind {
        DbKind::Sqlite => [
            (
                "study",
                "_study_migrations",
                sqlx::migrate!("../study/migrations/sqlite"),
            ),
            (
                "platform",
                "_platform_migrations",
                sqlx::migrate!("../platform/migrations/sqlite"),
            ),
            (
                "pfs",
                pfs::db::MIGRATIONS_TABLE,
                sqlx::migrate!("../pfs/migrations/sqlite"),
            ),
        ],
        DbKind::Postgres => [
            (
                "study",
                "_study_migrations",
                sqlx::migrate!("../study/migrations/postgres"),
            ),
            (
                "platform",
                "_platform_migrations",
                sqlx::migrate!("../platform/migrations/postgres"),
            ),
            (
                "pfs",
                pfs::db::MIGRATIONS_TABLE,
                sqlx::migrate!("../pfs/migrations/postgres"),
            ),
        ],
    }
}

/// The tables `DROP TABLE` statements of `sql` name.
fn dropped_tables(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    for stmt in sql.split(';') {
        let words: Vec<String> = stmt
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .map(|w| w.to_ascii_lowercase())
            .collect();
        for i in 0..words.len() {
            if words[i] == "drop" && words.get(i + 1).map(String::as_str) == Some("table") {
                let mut j = i + 2;
                if words.get(j).map(String::as_str) == Some("if")
                    && words.get(j + 1).map(String::as_str) == Some("exists")
                {
                    j += 2;
                }
                if let Some(name) = words.get(j) {
                    let name = name.trim_matches(|c: char| c == '"' || c == ',');
                    if !name.is_empty() {
                        out.push(name.to_string());
                    }
                }
            }
        }
    }
    out
}

async fn down_plan(db: &Db) -> anyhow::Result<Vec<DownPlan>> {
    let mut plan = Vec::new();
    for (component, tracking, migrator) in migrators(db.kind()) {
        let applied: Vec<i64> = if table_exists(db, tracking).await? {
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                // A constant table name of ours.
                "SELECT version FROM {tracking} ORDER BY version"
            )))
            .fetch_all(db.pool())
            .await
            .with_context(|| format!("reading {tracking}"))?
        } else {
            Vec::new()
        };
        let mut tables: Vec<String> = Vec::new();
        for m in migrator.iter().filter(|m| {
            m.migration_type == sqlx::migrate::MigrationType::ReversibleDown
                && applied.contains(&m.version)
        }) {
            for t in dropped_tables(m.sql.as_str()) {
                if !tables.contains(&t) {
                    tables.push(t);
                }
            }
        }
        let mut counted = Vec::new();
        for t in tables {
            if table_exists(db, &t).await? {
                let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    // A name read from our own migrations and found in the catalog.
                    "SELECT COUNT(*) FROM {t}"
                )))
                .fetch_one(db.pool())
                .await
                .with_context(|| format!("counting the rows of {t}"))?;
                counted.push((t, n));
            }
        }
        counted.sort();
        plan.push(DownPlan {
            component,
            migrations: applied.len(),
            tables: counted,
        });
    }
    Ok(plan)
}

fn print_down_plan(plan: &[DownPlan], target: &str) {
    let migrations: usize = plan.iter().map(|c| c.migrations).sum();
    let tables: usize = plan.iter().map(|c| c.tables.len()).sum();
    println!(
        "migrate down would revert {migrations} migrations and drop {tables} tables with all their rows in {target}:"
    );
    for c in plan {
        let list = if c.tables.is_empty() {
            "nothing".to_string()
        } else {
            c.tables
                .iter()
                .map(|(t, n)| format!("{t} ({n} row{})", if *n == 1 { "" } else { "s" }))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!("  {}: {list}", c.component);
    }
}

/// Ask on the terminal; true only for `yes`.
fn confirm() -> anyhow::Result<bool> {
    use std::io::Write;
    print!("Type `yes` to drop them: ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim() == "yes")
}
