//! Reading the lower layers: `.env` files and the config file (flat TOML or `NAME=value`).

use std::ffi::OsString;
use std::path::Path;

use anyhow::{Context, bail};

/// The config file's contents.
pub(super) enum ConfigFile {
    Toml(toml::Table),
    DotEnv(Vec<(String, String)>),
}

/// Is `path` named like a `.env` file (`.env`, `.env.example`, `prod.env`)?
pub(super) fn dotenv_name(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    name == ".env" || name.starts_with(".env.") || name.ends_with(".env")
}

/// Does `text` read as `NAME=value` lines (comments and blank lines aside)?
pub(super) fn looks_like_dotenv(text: &str) -> bool {
    let mut any = false;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((name, _)) = line.split_once('=') else {
            return false;
        };
        if name.is_empty()
            || name.trim_end() != name
            || !name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            return false;
        }
        any = true;
    }
    any
}

pub(super) fn read_dotenv(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let iter =
        dotenvy::from_path_iter(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for item in iter {
        out.push(item.with_context(|| format!("parsing {} (NAME=value lines)", path.display()))?);
    }
    Ok(out)
}

pub(super) fn read_config(path: &Path) -> anyhow::Result<ConfigFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    let toml_ext = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    if !toml_ext && dotenv_name(path) {
        return Ok(ConfigFile::DotEnv(read_dotenv(path)?));
    }
    match text.parse::<toml::Table>() {
        Ok(t) => Ok(ConfigFile::Toml(t)),
        Err(_) if !toml_ext && looks_like_dotenv(&text) => {
            Ok(ConfigFile::DotEnv(read_dotenv(path)?))
        }
        Err(e) => bail!(
            "parsing config file {} as TOML (`key = value` lines; a `.env`-style file of NAME=value \
             lines is read as such when it is named `.env`, `.env.*` or `*.env`): {e}",
            path.display()
        ),
    }
}

/// A TOML value as the text a flag would carry.
pub(super) fn toml_text(key: &str, v: &toml::Value, file: &Path) -> anyhow::Result<String> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(items) => {
            let mut parts = Vec::new();
            for i in items {
                match i {
                    toml::Value::Table(_) | toml::Value::Array(_) => bail!(
                        "`{key}` in {}: a list may hold only plain values",
                        file.display()
                    ),
                    other => parts.push(toml_text(key, other, file)?),
                }
            }
            parts.join(",")
        }
        toml::Value::Table(_) => bail!(
            "`{key}` in {} is a table: the config file is flat (`key = value`, no [sections])",
            file.display()
        ),
    })
}

/// `value` made absolute against `dir` when it is a relative path.
pub(super) fn anchor(value: String, dir: &Path) -> String {
    let p = Path::new(&value);
    if value.is_empty() || p.is_absolute() {
        value
    } else {
        dir.join(p).to_string_lossy().into_owned()
    }
}

/// The `--config` value of `argv` (before a `--`), if any.
pub(super) fn config_from_argv(argv: &[OsString]) -> Option<OsString> {
    let mut it = argv.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "--" {
            return None;
        }
        if a == "--config" {
            return it.next().cloned();
        }
        if let Some(v) = a.to_str().and_then(|s| s.strip_prefix("--config=")) {
            return Some(v.into());
        }
    }
    None
}
