//! The settings catalog: every argument with an environment name, its config-file key and
//! aliases, and the messages for names that are not settings.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::{Arg, Command};
use serde::Serialize;

/// The argument that names the config file (not itself a config-file key).
pub(super) const CONFIG_ARG: &str = "config";

/// Environment names accepted besides the settings' own, and the setting each one feeds.
pub const ENV_ALIASES: &[(&str, &str)] = &[("PANAVERSITY_DATABASE_URL", "DATABASE_URL")];

/// One setting: an argument with an environment name.
#[derive(Debug, Clone, Serialize)]
pub struct Setting {
    /// Config-file key.
    pub key: String,
    /// Environment variable.
    pub env: String,
    /// Command-line flag (`--bind`).
    pub flag: String,
    /// Other accepted config-file keys.
    pub aliases: Vec<String>,
    /// The commands that read it (`every command` for global settings).
    pub commands: Vec<String>,
    /// Default value, when there is one.
    pub default: Option<String>,
    /// Values the setting accepts, when it is a closed list.
    pub possible_values: Vec<String>,
    /// A path (relative values in a config file are relative to the file's directory).
    pub path: bool,
    /// A secret (never printed).
    pub secret: bool,
    /// The flag's help.
    pub help: String,
}

/// Every setting of `cmd` and its subcommands, by environment name.
pub fn catalog(cmd: &Command) -> Vec<Setting> {
    let mut by_env: BTreeMap<String, Setting> = BTreeMap::new();
    walk(cmd, "", &mut by_env);
    let mut all: Vec<Setting> = by_env.into_values().collect();
    // Aliases: the full environment name and the flag name, unless another setting uses it.
    let mut owners: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in &all {
        let long = s.flag.trim_start_matches('-').replace('-', "_");
        for a in [s.env.to_ascii_lowercase(), long] {
            owners.entry(a).or_default().insert(s.env.clone());
        }
    }
    for (alias, env) in ENV_ALIASES {
        owners
            .entry(alias.to_ascii_lowercase())
            .or_default()
            .insert((*env).to_string());
    }
    let keys: BTreeSet<String> = all.iter().map(|s| s.key.clone()).collect();
    for s in &mut all {
        s.aliases = owners
            .iter()
            .filter(|(a, envs)| {
                envs.len() == 1 && envs.contains(&s.env) && **a != s.key && !keys.contains(*a)
            })
            .map(|(a, _)| a.clone())
            .collect();
    }
    all.sort_by(|a, b| a.key.cmp(&b.key));
    all
}

pub(super) fn walk(cmd: &Command, path: &str, out: &mut BTreeMap<String, Setting>) {
    for arg in cmd.get_arguments() {
        let Some(env) = arg.get_env().and_then(|e| e.to_str()) else {
            continue;
        };
        if arg.get_id() == CONFIG_ARG {
            continue;
        }
        let command = if arg.is_global_set() || path.is_empty() {
            "every command".to_string()
        } else {
            path.to_string()
        };
        let s = out.entry(env.to_string()).or_insert_with(|| Setting {
            key: key_of(env),
            env: env.to_string(),
            flag: format!("--{}", arg.get_long().unwrap_or(arg.get_id().as_str())),
            aliases: Vec::new(),
            commands: Vec::new(),
            default: {
                let d: Vec<String> = arg
                    .get_default_values()
                    .iter()
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect();
                (!d.is_empty()).then(|| d.join(","))
            },
            possible_values: arg
                .get_possible_values()
                .iter()
                .filter(|p| !p.is_hide_set())
                .map(|p| p.get_name().to_string())
                .collect(),
            path: is_path(arg),
            secret: arg.is_hide_env_values_set(),
            help: arg
                .get_help()
                .map(|h| h.to_string())
                .unwrap_or_default()
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
        });
        if !s.commands.contains(&command) {
            s.commands.push(command);
        }
    }
    for sub in cmd.get_subcommands() {
        let p = if path.is_empty() {
            sub.get_name().to_string()
        } else {
            format!("{path} {}", sub.get_name())
        };
        walk(sub, &p, out);
    }
}

/// The config-file key of an environment name.
pub fn key_of(env: &str) -> String {
    let lower = env.to_ascii_lowercase();
    lower
        .strip_prefix("panaversity_")
        .map(str::to_string)
        .unwrap_or(lower)
}

pub(super) fn is_path(arg: &Arg) -> bool {
    arg.get_value_parser().type_id() == std::any::TypeId::of::<PathBuf>()
}

/// Normalise a config-file key for lookup (`Bind`, `PANAVERSITY_BIND`, `max-body-bytes`).
pub(super) fn normalise(key: &str) -> String {
    key.trim().to_ascii_lowercase().replace('-', "_")
}

/// The environment name a config-file key stands for.
pub(super) fn env_for_key(catalog: &[Setting], key: &str) -> Option<String> {
    let k = normalise(key);
    catalog
        .iter()
        .find(|s| s.key == k || s.aliases.contains(&k))
        .map(|s| s.env.clone())
}

/// The known name closest to `name`, when it is close enough to be a likely typo.
pub(super) fn nearest<'a>(
    name: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let name = name.to_ascii_lowercase();
    candidates
        .map(|c| (strsim::levenshtein(&name, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

pub(super) fn unknown_key_message(catalog: &[Setting], key: &str, file: &Path) -> String {
    let all = catalog
        .iter()
        .flat_map(|s| std::iter::once(s.key.as_str()).chain(s.aliases.iter().map(String::as_str)));
    let hint = match nearest(&normalise(key), all) {
        Some(n) => {
            let canonical = env_for_key(catalog, n)
                .map(|e| key_of(&e))
                .unwrap_or_else(|| n.to_string());
            format!("did you mean `{canonical}`? ")
        }
        None => String::new(),
    };
    format!(
        "unknown setting `{key}` in the config file {}: {hint}(`panaversity settings` lists every setting)",
        file.display()
    )
}

pub(super) fn unknown_env_message(catalog: &[Setting], name: &str, file: &Path) -> String {
    let hint = nearest(name, catalog.iter().map(|s| s.env.as_str()))
        .map(|n| format!("did you mean {n}? "))
        .unwrap_or_default();
    format!(
        "unknown setting {name} in {}: {hint}(`panaversity settings` lists every setting)",
        file.display()
    )
}

/// Names a `.env` file may carry without being a setting of ours: what a predecessor reads
/// (translated or accepted), the config file's own name and the aliases.
pub(super) fn known_env_name(catalog: &[Setting], name: &str) -> bool {
    name == "PANAVERSITY_CONFIG"
        || catalog.iter().any(|s| s.env == name)
        || ENV_ALIASES.iter().any(|(a, _)| *a == name)
        || crate::legacy_env::PREDECESSOR_VARS.contains(&name)
}

/// Names that claim to be ours (a typo among them is an error, not silence).
pub(super) fn claims_ours(name: &str) -> bool {
    (name.starts_with("PANAVERSITY_") || name.starts_with("STUDY_"))
        && !name.starts_with("STUDY_MODE_CHATKIT_")
}

/// `panaversity settings`: every setting, its key, variable, flag and default.
pub fn print_catalog(cmd: &Command, json: bool) -> anyhow::Result<()> {
    let all = catalog(cmd);
    if json {
        return super::out(&format!("{}\n", serde_json::to_string_pretty(&all)?));
    }
    let mut text = String::from(
        "Config-file keys (flat TOML, `key = value`), environment variables and flags.\n\
         Precedence: flag > environment > .env > config file > default.\n\n",
    );
    for s in &all {
        text.push_str(&format!(
            "{}  ({}, {}){}{}\n",
            s.key,
            s.env,
            s.flag,
            s.default
                .as_deref()
                .map(|d| format!(" default {d:?}"))
                .unwrap_or_default(),
            if s.commands.iter().any(|c| c == "every command") {
                String::new()
            } else {
                format!("  [{}]", s.commands.join(", "))
            }
        ));
        if !s.help.is_empty() {
            text.push_str(&format!("    {}\n", s.help));
        }
    }
    super::out(&text)
}
