//! Settings: one definition (the clap arguments: flag, environment name, default, value parser),
//! fed by four layers without rewriting the process environment:
//!
//! 1. command-line flags;
//! 2. the environment: the real one (read by clap), then `.env` in the current directory, then
//!    `.env` next to the config file (a variable already set wins), then the predecessor's
//!    variables translated into ours ([`crate::legacy_env`]);
//! 3. the config file (`--config FILE` / `PANAVERSITY_CONFIG`): flat TOML, or a `.env`-style file
//!    (`NAME=value` lines, recognised by its name or its content);
//! 4. the defaults.
//!
//! How: the command line is parsed once leniently to learn the subcommand and where each of its
//! settings came from; every setting that only has its default (or nothing) and has a value in a
//! lower layer is then appended as `--flag=value`, and the command line is parsed again, so each
//! value goes through the same value parser as a flag would.
//!
//! A setting is an argument with an environment name. Its config-file key is that name in lower
//! case without the `PANAVERSITY_` prefix (`bind`, `database_url`, `admin_secret`,
//! `study_rate_limit`, `openai_api_key`); the full environment name (any case) and the flag name
//! (`-` or `_`) are accepted too. An unknown key is an error naming the nearest valid one.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command};
use serde::Serialize;

mod catalog;
mod files;

use catalog::*;
pub use catalog::{ENV_ALIASES, catalog, key_of, print_catalog};
use files::*;

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    Flag,
    Env,
    DotEnv { file: PathBuf },
    Predecessor { from: String },
    ConfigFile { file: PathBuf },
    Default,
    Unset,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Flag => f.write_str("flag"),
            Origin::Env => f.write_str("environment"),
            Origin::DotEnv { file } => write!(f, "{}", file.display()),
            Origin::Predecessor { from } => write!(f, "predecessor {from}"),
            Origin::ConfigFile { file } => write!(f, "config {}", file.display()),
            Origin::Default => f.write_str("default"),
            Origin::Unset => f.write_str("unset"),
        }
    }
}

/// One setting of the command being run, as resolved.
#[derive(Debug, Clone, Serialize)]
pub struct Resolution {
    pub key: String,
    pub env: String,
    /// The value (`***` for a set secret); `None` when unset.
    pub value: Option<String>,
    pub origin: Origin,
}

/// The parsed command line and what each setting resolved to.
#[derive(Debug)]
pub struct Resolved {
    pub matches: ArgMatches,
    /// The settings of the command being run (global ones first).
    pub report: Vec<Resolution>,
    /// Lines for the log (files read, predecessor translations).
    pub notes: Vec<String>,
}

/// Why resolving failed.
#[derive(Debug)]
pub enum ResolveError {
    /// A command-line error (clap prints it, with usage, and picks the exit code).
    Clap(clap::Error),
    /// A settings error (a file, a key, a value): exit 2.
    Settings(String),
}

impl From<anyhow::Error> for ResolveError {
    fn from(e: anyhow::Error) -> Self {
        ResolveError::Settings(format!("{e:#}"))
    }
}

/// A value of a lower layer for one environment name.
#[derive(Debug, Clone)]
struct Layered {
    value: String,
    origin: Origin,
    /// Replaces even a value from the environment (a predecessor translation that amends one,
    /// e.g. `REDIS_PASSWORD` put into `REDIS_URL`).
    amend: bool,
}

/// Resolve the command line `argv` of `cmd` (built from this process's environment) with the
/// `.env` files, the predecessor's variables and the config file. `env` reads the real
/// environment; `cwd` is where `.env` and relative paths are looked up.
pub fn resolve(
    cmd: Command,
    argv: Vec<OsString>,
    env: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
) -> Result<Resolved, ResolveError> {
    let catalog = catalog(&cmd);
    let mut notes = Vec::new();

    // 1. `.env` in the current directory.
    let mut dotenv_files: Vec<(PathBuf, Vec<(String, String)>)> = Vec::new();
    let cwd_env = cwd.join(".env");
    if cwd_env.is_file() {
        dotenv_files.push((cwd_env.clone(), read_dotenv(&cwd_env)?));
    }

    // 2. The config file: flag, environment, or `.env`.
    let config_path = config_from_argv(&argv)
        .map(PathBuf::from)
        .or_else(|| {
            env("PANAVERSITY_CONFIG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .or_else(|| {
            dotenv_files.first().and_then(|(_, vars)| {
                vars.iter()
                    .find(|(k, v)| k == "PANAVERSITY_CONFIG" && !v.is_empty())
                    .map(|(_, v)| PathBuf::from(v))
            })
        })
        .map(|p| if p.is_absolute() { p } else { cwd.join(p) });
    let config = match &config_path {
        Some(p) => Some(read_config(p)?),
        None => None,
    };
    let config_dir = config_path
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf);
    if let Some(dir) = &config_dir {
        let beside = dir.join(".env");
        if beside.is_file() && beside != cwd_env && config_path.as_deref() != Some(beside.as_path())
        {
            dotenv_files.push((beside.clone(), read_dotenv(&beside)?));
        }
    }

    // 3. The environment layers below the real environment.
    let mut lower_env: BTreeMap<String, Layered> = BTreeMap::new();
    for (file, vars) in &dotenv_files {
        notes.push(format!("read {}", file.display()));
        let dir = file.parent().unwrap_or(cwd);
        for (k, v) in vars {
            if !known_env_name(&catalog, k) {
                if claims_ours(k) {
                    return Err(ResolveError::Settings(unknown_env_message(
                        &catalog, k, file,
                    )));
                }
                notes.push(format!(
                    "{}: {k} is not a setting of ours; ignored",
                    file.display()
                ));
                continue;
            }
            if env(k).is_some() || lower_env.contains_key(k) {
                continue;
            }
            let is_path = catalog.iter().any(|s| &s.env == k && s.path);
            let value = if is_path {
                anchor(v.clone(), dir)
            } else {
                v.clone()
            };
            lower_env.insert(
                k.clone(),
                Layered {
                    value,
                    origin: Origin::DotEnv { file: file.clone() },
                    amend: false,
                },
            );
        }
    }

    // 4. The config file's values, by environment name.
    let mut file_values: BTreeMap<String, String> = BTreeMap::new();
    let mut file_predecessor: BTreeMap<String, String> = BTreeMap::new();
    if let (Some(path), Some(config)) = (&config_path, &config) {
        let dir = config_dir.as_deref().unwrap_or(cwd);
        let mut put = |env_name: String, value: String, key: &str| -> Result<(), ResolveError> {
            if let Some(prev) = file_values.get(&env_name)
                && *prev != value
            {
                return Err(ResolveError::Settings(format!(
                    "the config file {} sets {env_name} twice (`{key}` and another name for it)",
                    path.display()
                )));
            }
            let is_path = catalog.iter().any(|s| s.env == env_name && s.path);
            let value = if is_path { anchor(value, dir) } else { value };
            file_values.insert(env_name, value);
            Ok(())
        };
        match config {
            ConfigFile::Toml(table) => {
                for (k, v) in table {
                    if v.is_table() {
                        return Err(ResolveError::Settings(format!(
                            "`{k}` in the config file {} is a table: the config file is flat \
                             (`key = value`, no [sections])",
                            path.display()
                        )));
                    }
                    let Some(env_name) = env_for_key(&catalog, k) else {
                        return Err(ResolveError::Settings(unknown_key_message(
                            &catalog, k, path,
                        )));
                    };
                    let value = toml_text(k, v, path)?;
                    put(env_name, value, k)?;
                }
            }
            ConfigFile::DotEnv(vars) => {
                notes.push(format!(
                    "read the config file {} as a .env file",
                    path.display()
                ));
                for (k, v) in vars {
                    let name = ENV_ALIASES
                        .iter()
                        .find(|(a, _)| a == k)
                        .map(|(_, e)| (*e).to_string())
                        .unwrap_or_else(|| k.clone());
                    if catalog.iter().any(|s| s.env == name) {
                        put(name, v.clone(), k)?;
                    } else if crate::legacy_env::PREDECESSOR_VARS.contains(&k.as_str()) {
                        file_predecessor.insert(k.clone(), v.clone());
                    } else if k == "PANAVERSITY_CONFIG" {
                        // Names this file; nothing to do.
                    } else if claims_ours(k) {
                        return Err(ResolveError::Settings(unknown_env_message(
                            &catalog, k, path,
                        )));
                    } else {
                        notes.push(format!(
                            "{}: {k} is not a setting of ours; ignored",
                            path.display()
                        ));
                    }
                }
            }
        }
    }

    // 5. Aliases and the predecessor's variables, read from the environment layers (and a
    //    `.env`-style config file).
    let lookup = |k: &str| -> Option<String> {
        env(k)
            .or_else(|| lower_env.get(k).map(|l| l.value.clone()))
            .or_else(|| file_predecessor.get(k).cloned())
    };
    let mut derived: Vec<(String, Layered)> = Vec::new();
    for (alias, ours) in ENV_ALIASES {
        if lookup(ours).is_none()
            && let Some(v) = lookup(alias)
        {
            derived.push((
                (*ours).to_string(),
                Layered {
                    value: v,
                    origin: Origin::Predecessor {
                        from: (*alias).to_string(),
                    },
                    amend: false,
                },
            ));
        }
    }
    match crate::legacy_env::translate(lookup) {
        Ok(t) => {
            notes.extend(t.notes.iter().map(|n| format!("predecessor setting: {n}")));
            for (k, v, from) in t.set {
                derived.push((
                    k,
                    Layered {
                        value: v,
                        origin: Origin::Predecessor { from },
                        amend: true,
                    },
                ));
            }
        }
        Err(errors) => {
            return Err(ResolveError::Settings(format!(
                "predecessor settings that cannot be honoured:\n  {}",
                errors.join("\n  ")
            )));
        }
    }
    for (k, l) in derived {
        lower_env.insert(k, l);
    }

    // 6. Parse leniently to learn the subcommand and the origin of each of its settings.
    let probe = match cmd.clone().ignore_errors(true).try_get_matches_from(&argv) {
        Ok(m) => m,
        // --help, --version: the real parse prints them.
        Err(e) => return Err(ResolveError::Clap(e)),
    };
    let applicable = applicable_args(&cmd, &probe);
    let mut injected: Vec<(String, String, Origin)> = Vec::new(); // (long, value, origin)
    let mut origins: BTreeMap<String, Origin> = BTreeMap::new(); // by env name
    for (arg, leaf) in &applicable {
        let Some(env_name) = arg.get_env().and_then(|e| e.to_str()) else {
            continue;
        };
        if arg.get_id() == CONFIG_ARG {
            continue;
        }
        let id = arg.get_id().as_str();
        let source = leaf.value_source(id);
        let long = arg.get_long().unwrap_or(id).to_string();
        let lower = lower_env.get(env_name).filter(|l| !l.value.is_empty());
        let origin = match (source, lower) {
            (Some(ValueSource::CommandLine), _) => Origin::Flag,
            (Some(ValueSource::EnvVariable), Some(l)) if l.amend => {
                injected.push((long, l.value.clone(), l.origin.clone()));
                l.origin.clone()
            }
            (Some(ValueSource::EnvVariable), _) => Origin::Env,
            (_, Some(l)) => {
                injected.push((long, l.value.clone(), l.origin.clone()));
                l.origin.clone()
            }
            (s, None) => match file_values.get(env_name).filter(|v| !v.is_empty()) {
                Some(v) => {
                    let origin = Origin::ConfigFile {
                        file: config_path.clone().unwrap_or_default(),
                    };
                    injected.push((long, v.clone(), origin.clone()));
                    origin
                }
                None if s == Some(ValueSource::DefaultValue) => Origin::Default,
                None => Origin::Unset,
            },
        };
        origins.insert(env_name.to_string(), origin);
    }

    // 7. Parse again with the lower layers' values as flags.
    let mut full = argv.clone();
    let at = full.iter().position(|a| a == "--").unwrap_or(full.len());
    let extra: Vec<OsString> = injected
        .iter()
        .map(|(long, value, _)| OsString::from(format!("--{long}={value}")))
        .collect();
    full.splice(at..at, extra);
    let matches = match cmd.clone().try_get_matches_from(&full) {
        Ok(m) => m,
        Err(e) => {
            // A bad value from a file or the environment layers: say where it came from.
            if let Some(clap::error::ContextValue::String(flag)) =
                e.get(clap::error::ContextKind::InvalidArg)
            {
                let name = flag
                    .trim_start_matches("--")
                    .split([' ', '='])
                    .next()
                    .unwrap_or("");
                if let Some((_, value, origin)) = injected.iter().find(|(l, _, _)| l == name) {
                    let env_name = applicable
                        .iter()
                        .find(|(a, _)| a.get_long() == Some(name))
                        .and_then(|(a, _)| a.get_env())
                        .map(|e| e.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let why = match e.get(clap::error::ContextKind::ValidValue) {
                        Some(clap::error::ContextValue::Strings(valid)) => {
                            format!("valid values: {}", valid.join(", "))
                        }
                        _ => std::error::Error::source(&e)
                            .map(|s| s.to_string())
                            .unwrap_or_else(|| first_line(&e.to_string())),
                    };
                    return Err(ResolveError::Settings(format!(
                        "invalid value for `{}` ({env_name}) from {origin}: {value:?}: {why}",
                        key_of(&env_name),
                    )));
                }
            }
            return Err(ResolveError::Clap(e));
        }
    };

    // 8. The report: global settings first, then the command's, each with its final value.
    let leaf_final = leaf_matches(&matches);
    let mut report = Vec::new();
    let mut seen = BTreeSet::new();
    for (arg, _) in &applicable {
        let Some(env_name) = arg.get_env().and_then(|e| e.to_str()) else {
            continue;
        };
        if arg.get_id() == CONFIG_ARG || !seen.insert(env_name.to_string()) {
            continue;
        }
        let raw: Option<String> = leaf_final
            .try_get_raw(arg.get_id().as_str())
            .ok()
            .flatten()
            .map(|vals| {
                vals.map(|v| v.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(",")
            });
        let value = match raw {
            Some(_) if arg.is_hide_env_values_set() => Some("***".to_string()),
            Some(v) if v.contains("://") => Some(mask_url_password(&v)),
            Some(v) if is_path(arg) && !v.is_empty() => Some(
                std::path::absolute(cwd.join(&v))
                    .unwrap_or(PathBuf::from(&v))
                    .to_string_lossy()
                    .into_owned(),
            ),
            other => other,
        };
        report.push(Resolution {
            key: key_of(env_name),
            env: env_name.to_string(),
            value,
            origin: origins.get(env_name).cloned().unwrap_or(Origin::Unset),
        });
    }
    if let Some(p) = &config_path {
        notes.push(format!("config file {}", p.display()));
    }
    Ok(Resolved {
        matches,
        report,
        notes,
    })
}

/// `scheme://user:***@host/…`: a URL's password is never printed.
fn mask_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        _ => url.to_string(),
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .next()
        .unwrap_or("")
        .trim_start_matches("error: ")
        .to_string()
}

/// The deepest subcommand's matches.
fn leaf_matches(m: &ArgMatches) -> &ArgMatches {
    let mut cur = m;
    while let Some((_, sub)) = cur.subcommand() {
        cur = sub;
    }
    cur
}

/// The arguments of the command line's subcommand path (the root's global ones first), each with
/// the deepest matches (where global values are propagated).
fn applicable_args<'a>(cmd: &'a Command, m: &'a ArgMatches) -> Vec<(&'a Arg, &'a ArgMatches)> {
    let leaf = leaf_matches(m);
    let mut out: Vec<(&Arg, &ArgMatches)> = cmd.get_arguments().map(|a| (a, leaf)).collect();
    let mut c = cmd;
    let mut cur = m;
    while let Some((name, sub_m)) = cur.subcommand() {
        let Some(sub) = c.find_subcommand(name) else {
            break;
        };
        out.extend(sub.get_arguments().map(|a| (a, leaf)));
        c = sub;
        cur = sub_m;
    }
    out
}

/// Warnings for environment variables named like ours (`PANAVERSITY_*`, `STUDY_*`) that are no
/// setting: most likely a typo, which would otherwise be silently ignored.
pub fn unknown_env_vars(
    cmd: &Command,
    vars: impl Iterator<Item = (OsString, OsString)>,
) -> Vec<String> {
    let catalog = catalog(cmd);
    let mut out: Vec<String> = vars
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| claims_ours(k) && !known_env_name(&catalog, k))
        .map(|k| {
            let hint = nearest(&k, catalog.iter().map(|s| s.env.as_str()))
                .map(|n| format!("; did you mean {n}?"))
                .unwrap_or_default();
            format!("the environment variable {k} is not a setting and is ignored{hint}")
        })
        .collect();
    out.sort();
    out
}

/// `panaversity … --show-settings`: the resolved settings of the command, one per line (or JSON).
pub fn print_report(report: &[Resolution], json: bool) -> anyhow::Result<()> {
    if json {
        return out(&format!("{}\n", serde_json::to_string_pretty(report)?));
    }
    let width = report.iter().map(|r| r.key.len()).max().unwrap_or(0);
    let mut text = String::new();
    for r in report {
        text.push_str(&format!(
            "{:<width$}  {}  ({})\n",
            r.key,
            r.value.as_deref().unwrap_or("-"),
            r.origin
        ));
    }
    out(&text)
}

/// Write to stdout; a closed pipe (`| head`) is not an error.
fn out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_detection() {
        assert!(dotenv_name(Path::new("/x/.env")));
        assert!(dotenv_name(Path::new(".env.example")));
        assert!(dotenv_name(Path::new("prod.env")));
        assert!(!dotenv_name(Path::new("panaversity.toml")));
        assert!(looks_like_dotenv(
            "# c\nPANAVERSITY_BIND=127.0.0.1:1\n\nexport X=1\n"
        ));
        assert!(!looks_like_dotenv("bind = \"x\"\n"));
        assert!(!looks_like_dotenv("BIND = 1\n"));
        assert!(!looks_like_dotenv("# only comments\n"));
    }

    #[test]
    fn url_passwords_are_masked() {
        assert_eq!(
            mask_url_password("postgres://u:secret@db:5432/x?sslmode=require"),
            "postgres://u:***@db:5432/x?sslmode=require"
        );
        assert_eq!(
            mask_url_password("redis://:pw@cache/"),
            "redis://:***@cache/"
        );
        assert_eq!(
            mask_url_password("https://api.example/v1"),
            "https://api.example/v1"
        );
    }

    #[test]
    fn nearest_names() {
        let c = ["bind", "data_dir", "admin_secret"];
        assert_eq!(nearest("bnd", c.iter().copied()), Some("bind"));
        assert_eq!(
            nearest("admin_secert", c.iter().copied()),
            Some("admin_secret")
        );
        assert_eq!(nearest("zzzzzzzz", c.iter().copied()), None);
    }

    /// Every setting takes a value (so a file's `key = false` means false), has a unique key,
    /// and its aliases name no other setting.
    #[test]
    fn every_setting_takes_a_value_and_has_its_own_key() {
        use clap::CommandFactory;
        fn visit(cmd: &Command) {
            for a in cmd.get_arguments() {
                if a.get_env().is_some() {
                    assert!(
                        a.get_action().takes_values(),
                        "--{} has an environment variable but takes no value",
                        a.get_id()
                    );
                }
            }
            cmd.get_subcommands().for_each(visit);
        }
        let cmd = crate::Cli::command();
        visit(&cmd);
        let all = catalog(&cmd);
        let mut seen = BTreeSet::new();
        for s in &all {
            assert!(seen.insert(s.key.clone()), "duplicate key {}", s.key);
        }
        for s in &all {
            for a in &s.aliases {
                assert!(!seen.contains(a), "alias {a} of {} is another key", s.key);
                assert_eq!(env_for_key(&all, a).as_deref(), Some(s.env.as_str()));
            }
        }
        assert!(all.iter().any(|s| s.key == "admin_secret"));
        assert!(all.iter().any(|s| s.key == "llm_max_retries"));
        assert!(!all.iter().any(|s| s.key == "config"));
    }

    #[test]
    fn keys() {
        assert_eq!(key_of("PANAVERSITY_BIND"), "bind");
        assert_eq!(key_of("ADMIN_SECRET"), "admin_secret");
        assert_eq!(key_of("STUDY_RATE_LIMIT"), "study_rate_limit");
    }
}
