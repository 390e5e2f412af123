//! Drop-in settings: the environment of the Python Study Mode API (reference §8) is honoured with
//! its meaning by translating it into values of this server's settings (a layer just below the
//! environment, see [`crate::settings`]; the process environment is never changed); the ones
//! that cannot be honoured stop the start with a message naming what to use instead. A variable
//! of ours that is already set always wins over the predecessor's.
//!
//! | predecessor | becomes |
//! |---|---|
//! | `SSO_URL` | `PANAVERSITY_JWKS_URL={SSO_URL}/api/auth/jwks`, `PANAVERSITY_USERINFO_URL={SSO_URL}/api/auth/oauth2/userinfo` (no issuer check, as before) |
//! | `DEV_MODE` | `PANAVERSITY_DEV_MODE` |
//! | `DEV_USER_ID` | `PANAVERSITY_DEV_AGENT_ID` (the user of dev requests without `X-User-ID`) |
//! | `DEV_USER_NAME` | `STUDY_DEV_USER_NAME` (the name the tutor uses in dev mode without `X-User-Name`) |
//! | `REDIS_PASSWORD` | put into `REDIS_URL` when the URL has none |
//! | `CONTENT_CACHE_TTL` | `STUDY_LESSON_CACHE_TTL_SECS` |
//! | `STUDY_MODE_CHATKIT_DATABASE_URL` | `DATABASE_URL` (`postgresql+asyncpg://` → `postgres://`, `ssl=` → `sslmode=`) |
//! | `STUDY_MODE_CHATKIT_POOL_SIZE` + `_MAX_OVERFLOW` | `PANAVERSITY_DB_POOL_SIZE` (their sum: the predecessor's most connections) |
//! | `STUDY_MODE_CHATKIT_POOL_TIMEOUT` (s) | `PANAVERSITY_DB_ACQUIRE_TIMEOUT` |
//! | `STUDY_MODE_CHATKIT_STATEMENT_TIMEOUT` (ms) | `PANAVERSITY_DB_STATEMENT_TIMEOUT` (s, rounded up) |
//! | `PORT` | `PANAVERSITY_BIND=0.0.0.0:{PORT}` |
//! | `LOG_LEVEL` | `PANAVERSITY_LOG_LEVEL` (lower case) |
//!
//! Accepted with nothing to do: `DEV_USER_EMAIL`, `DEBUG` (unused by the predecessor too),
//! `REDIS_MAX_CONNECTIONS` and `STUDY_MODE_CHATKIT_POOL_RECYCLE` (one multiplexed Redis connection;
//! the pool recycles connections itself), `DEEPSEEK_*` (unused by the predecessor; DeepSeek is
//! `OPENAI_BASE_URL`), `METERING_API_URL`/`METERING_DEFAULT_ESTIMATE` while metering is off,
//! `STUDY_MODE_CHATKIT_SCHEMA_NAME=study_mode_chat` (the default). Already read under the same
//! name: `DATABASE_URL`, `REDIS_URL`, `OPENAI_API_KEY`, `ALLOWED_ORIGINS`, `ADMIN_SECRET`,
//! `GITHUB_TOKEN`, `GITHUB_REPO`.
//!
//! Refused at start: `METERING_ENABLED=true` (no metering here), another
//! `STUDY_MODE_CHATKIT_SCHEMA_NAME`, `REDIS_PASSWORD` without `REDIS_URL`, unparsable numbers.

/// The predecessor's variables that are not settings of ours under the same name: translated,
/// accepted with nothing to do, or refused with a reason. A `.env` file may carry them.
pub const PREDECESSOR_VARS: &[&str] = &[
    "SSO_URL",
    "DEV_MODE",
    "DEV_USER_ID",
    "DEV_USER_NAME",
    "DEV_USER_EMAIL",
    "DEBUG",
    "REDIS_PASSWORD",
    "REDIS_MAX_CONNECTIONS",
    "CONTENT_CACHE_TTL",
    "STUDY_MODE_CHATKIT_DATABASE_URL",
    "STUDY_MODE_CHATKIT_POOL_SIZE",
    "STUDY_MODE_CHATKIT_MAX_OVERFLOW",
    "STUDY_MODE_CHATKIT_POOL_TIMEOUT",
    "STUDY_MODE_CHATKIT_POOL_RECYCLE",
    "STUDY_MODE_CHATKIT_STATEMENT_TIMEOUT",
    "STUDY_MODE_CHATKIT_SCHEMA_NAME",
    "PORT",
    "LOG_LEVEL",
    "METERING_ENABLED",
    "METERING_API_URL",
    "METERING_DEFAULT_ESTIMATE",
    "DEEPSEEK_API_KEY",
    "DEEPSEEK_BASE_URL",
    "DEEPSEEK_MODEL",
];

/// Values for our variables (name, value, the predecessor variable it came from), and notes for
/// the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Translation {
    pub set: Vec<(String, String, String)>,
    pub notes: Vec<String>,
}

/// Translate the predecessor's variables read through `get` (`None` or empty = unset).
pub fn translate(get: impl Fn(&str) -> Option<String>) -> Result<Translation, Vec<String>> {
    let var = |k: &str| {
        get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let mut t = Translation::default();
    let mut errors = Vec::new();
    let set = |t: &mut Translation, ours: &str, value: String, from: &str| {
        if var(ours).is_none() {
            t.notes.push(format!("{from} → {ours}"));
            t.set.push((ours.to_string(), value, from.to_string()));
        } else {
            t.notes.push(format!("{from} ignored: {ours} is set"));
        }
    };

    if let Some(sso) = var("SSO_URL") {
        if var("PANAVERSITY_AUTH_SERVER_URL").is_some() {
            t.notes
                .push("SSO_URL ignored: PANAVERSITY_AUTH_SERVER_URL is set".into());
        } else {
            let base = sso.trim_end_matches('/');
            set(
                &mut t,
                "PANAVERSITY_JWKS_URL",
                format!("{base}/api/auth/jwks"),
                "SSO_URL",
            );
            set(
                &mut t,
                "PANAVERSITY_USERINFO_URL",
                format!("{base}/api/auth/oauth2/userinfo"),
                "SSO_URL",
            );
        }
    }
    if let Some(v) = var("DEV_MODE") {
        set(&mut t, "PANAVERSITY_DEV_MODE", v, "DEV_MODE");
    }
    if let Some(v) = var("DEV_USER_ID") {
        set(&mut t, "PANAVERSITY_DEV_AGENT_ID", v, "DEV_USER_ID");
    }
    if let Some(v) = var("DEV_USER_NAME") {
        set(&mut t, "STUDY_DEV_USER_NAME", v, "DEV_USER_NAME");
    }
    if let Some(v) = var("CONTENT_CACHE_TTL") {
        match v.parse::<u64>() {
            Ok(n) => set(&mut t, "STUDY_LESSON_CACHE_TTL_SECS", n.to_string(), "CONTENT_CACHE_TTL"),
            Err(_) => errors.push(format!(
                "CONTENT_CACHE_TTL={v:?} is not a number of seconds (use STUDY_LESSON_CACHE_TTL_SECS)"
            )),
        }
    }
    if let Some(pw) = var("REDIS_PASSWORD") {
        match var("REDIS_URL") {
            None => errors.push(
                "REDIS_PASSWORD is set but REDIS_URL is not: set REDIS_URL (redis://:PASSWORD@host:6379/)"
                    .into(),
            ),
            Some(url) => match with_password(&url, &pw) {
                Some(u) => {
                    t.notes.push("REDIS_PASSWORD → REDIS_URL".into());
                    t.set.push(("REDIS_URL".into(), u, "REDIS_PASSWORD".into()));
                }
                None => t
                    .notes
                    .push("REDIS_PASSWORD ignored: REDIS_URL already has a password".into()),
            },
        }
    }
    if let Some(url) = var("STUDY_MODE_CHATKIT_DATABASE_URL") {
        set(
            &mut t,
            "DATABASE_URL",
            pg_url(&url),
            "STUDY_MODE_CHATKIT_DATABASE_URL",
        );
    }
    let num = |k: &str, errors: &mut Vec<String>, ours: &str| -> Option<f64> {
        let v = var(k)?;
        match v.parse::<f64>() {
            Ok(n) if n.is_finite() && n >= 0.0 => Some(n),
            _ => {
                errors.push(format!("{k}={v:?} is not a number (use {ours})"));
                None
            }
        }
    };
    let size = num(
        "STUDY_MODE_CHATKIT_POOL_SIZE",
        &mut errors,
        "PANAVERSITY_DB_POOL_SIZE",
    );
    let overflow = num(
        "STUDY_MODE_CHATKIT_MAX_OVERFLOW",
        &mut errors,
        "PANAVERSITY_DB_POOL_SIZE",
    );
    if size.is_some() || overflow.is_some() {
        let total = size.unwrap_or(20.0) + overflow.unwrap_or(10.0);
        set(
            &mut t,
            "PANAVERSITY_DB_POOL_SIZE",
            format!("{}", total.max(1.0) as u32),
            "STUDY_MODE_CHATKIT_POOL_SIZE/_MAX_OVERFLOW",
        );
    }
    if let Some(s) = num(
        "STUDY_MODE_CHATKIT_POOL_TIMEOUT",
        &mut errors,
        "PANAVERSITY_DB_ACQUIRE_TIMEOUT",
    ) {
        set(
            &mut t,
            "PANAVERSITY_DB_ACQUIRE_TIMEOUT",
            format!("{}", s.ceil().max(1.0) as u64),
            "STUDY_MODE_CHATKIT_POOL_TIMEOUT",
        );
    }
    if let Some(ms) = num(
        "STUDY_MODE_CHATKIT_STATEMENT_TIMEOUT",
        &mut errors,
        "PANAVERSITY_DB_STATEMENT_TIMEOUT",
    ) {
        set(
            &mut t,
            "PANAVERSITY_DB_STATEMENT_TIMEOUT",
            format!("{}", (ms / 1000.0).ceil().max(1.0) as u64),
            "STUDY_MODE_CHATKIT_STATEMENT_TIMEOUT",
        );
    }
    if let Some(schema) = var("STUDY_MODE_CHATKIT_SCHEMA_NAME")
        && schema != "study_mode_chat"
    {
        errors.push(format!(
            "STUDY_MODE_CHATKIT_SCHEMA_NAME={schema:?} is not supported: the study tables live in the \
             database's search_path; put them in a schema with DATABASE_URL=postgres://…?options=-csearch_path%3D{schema}"
        ));
    }
    if let Some(port) = var("PORT") {
        match port.parse::<u16>() {
            Ok(p) => set(&mut t, "PANAVERSITY_BIND", format!("0.0.0.0:{p}"), "PORT"),
            Err(_) => errors.push(format!(
                "PORT={port:?} is not a port (use PANAVERSITY_BIND)"
            )),
        }
    }
    if let Some(level) = var("LOG_LEVEL") {
        set(
            &mut t,
            "PANAVERSITY_LOG_LEVEL",
            level.to_ascii_lowercase(),
            "LOG_LEVEL",
        );
    }
    if var("METERING_ENABLED")
        .is_some_and(|v| matches!(platform::boolean::parse_bool(&v), Ok(true)))
    {
        errors.push(
            "METERING_ENABLED=true is not supported: this server does not meter tokens \
             (the predecessor failed open on every metering error); unset METERING_ENABLED"
                .into(),
        );
    }
    if errors.is_empty() {
        Ok(t)
    } else {
        Err(errors)
    }
}

/// `url` with `password` inserted (percent-encoded) when it has none; `None` when it has one.
fn with_password(url: &str, password: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let pw = percent_encoding::utf8_percent_encode(password, percent_encoding::NON_ALPHANUMERIC);
    match authority.rsplit_once('@') {
        Some((user, _)) if user.contains(':') => None,
        Some((user, host)) => Some(format!("{scheme}://{user}:{pw}@{host}{path}")),
        None => Some(format!("{scheme}://:{pw}@{authority}{path}")),
    }
}

/// The predecessor's SQLAlchemy URL as a plain PostgreSQL URL.
fn pg_url(url: &str) -> String {
    let url = url
        .replacen("postgresql+asyncpg://", "postgres://", 1)
        .replacen("postgresql://", "postgres://", 1);
    match url.split_once('?') {
        None => url,
        Some((base, query)) => {
            let q: Vec<String> = query
                .split('&')
                .map(|kv| match kv.strip_prefix("ssl=") {
                    Some(v) => format!("sslmode={v}"),
                    None => kv.to_string(),
                })
                .collect();
            format!("{base}?{}", q.join("&"))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn run(vars: &[(&str, &str)]) -> Result<HashMap<String, String>, Vec<String>> {
        let env: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        translate(|k| env.get(k).cloned())
            .map(|t| t.set.into_iter().map(|(k, v, _)| (k, v)).collect())
    }

    #[test]
    fn the_predecessor_environment_is_translated() {
        let set = run(&[
            ("SSO_URL", "https://sso.example/"),
            ("DEV_USER_ID", "dev-user-123"),
            ("DEV_USER_NAME", "Dev User"),
            ("DEV_USER_EMAIL", "dev@localhost"),
            ("REDIS_URL", "rediss://cache.example:6380/0"),
            ("REDIS_PASSWORD", "p@ss word"),
            ("REDIS_MAX_CONNECTIONS", "10"),
            ("CONTENT_CACHE_TTL", "86400"),
            (
                "STUDY_MODE_CHATKIT_DATABASE_URL",
                "postgresql+asyncpg://u:p@db/x?ssl=require",
            ),
            ("STUDY_MODE_CHATKIT_POOL_SIZE", "20"),
            ("STUDY_MODE_CHATKIT_MAX_OVERFLOW", "10"),
            ("STUDY_MODE_CHATKIT_POOL_TIMEOUT", "2.5"),
            ("STUDY_MODE_CHATKIT_POOL_RECYCLE", "3600"),
            ("STUDY_MODE_CHATKIT_STATEMENT_TIMEOUT", "30000"),
            ("STUDY_MODE_CHATKIT_SCHEMA_NAME", "study_mode_chat"),
            ("PORT", "8000"),
            ("LOG_LEVEL", "INFO"),
            ("DEBUG", "false"),
            ("DEV_MODE", "true"),
            ("METERING_ENABLED", "false"),
        ])
        .unwrap();
        let want = [
            ("PANAVERSITY_JWKS_URL", "https://sso.example/api/auth/jwks"),
            (
                "PANAVERSITY_USERINFO_URL",
                "https://sso.example/api/auth/oauth2/userinfo",
            ),
            ("PANAVERSITY_DEV_AGENT_ID", "dev-user-123"),
            ("STUDY_DEV_USER_NAME", "Dev User"),
            ("REDIS_URL", "rediss://:p%40ss%20word@cache.example:6380/0"),
            ("STUDY_LESSON_CACHE_TTL_SECS", "86400"),
            ("DATABASE_URL", "postgres://u:p@db/x?sslmode=require"),
            ("PANAVERSITY_DB_POOL_SIZE", "30"),
            ("PANAVERSITY_DB_ACQUIRE_TIMEOUT", "3"),
            ("PANAVERSITY_DB_STATEMENT_TIMEOUT", "30"),
            ("PANAVERSITY_BIND", "0.0.0.0:8000"),
            ("PANAVERSITY_LOG_LEVEL", "info"),
            ("PANAVERSITY_DEV_MODE", "true"),
        ];
        for (k, v) in want {
            assert_eq!(set.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert_eq!(set.len(), want.len(), "{set:?}");
    }

    #[test]
    fn our_settings_win() {
        let set = run(&[
            ("SSO_URL", "https://sso.example"),
            ("PANAVERSITY_USERINFO_URL", "https://other/userinfo"),
            ("DATABASE_URL", "sqlite://x.db"),
            ("STUDY_MODE_CHATKIT_DATABASE_URL", "postgresql://db/x"),
            ("REDIS_URL", "redis://:own@h/"),
            ("REDIS_PASSWORD", "theirs"),
        ])
        .unwrap();
        assert!(!set.contains_key("PANAVERSITY_USERINFO_URL"));
        assert!(!set.contains_key("DATABASE_URL"));
        assert!(!set.contains_key("REDIS_URL"));
        assert!(set.contains_key("PANAVERSITY_JWKS_URL"));
        let set = run(&[
            ("SSO_URL", "https://sso.example"),
            ("PANAVERSITY_AUTH_SERVER_URL", "https://auth.example"),
        ])
        .unwrap();
        assert!(set.is_empty(), "{set:?}");
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_naming_the_replacement() {
        let errs = run(&[
            ("METERING_ENABLED", "true"),
            ("STUDY_MODE_CHATKIT_SCHEMA_NAME", "tenant_a"),
            ("REDIS_PASSWORD", "x"),
            ("CONTENT_CACHE_TTL", "a day"),
            ("PORT", "http"),
        ])
        .unwrap_err();
        let all = errs.join("\n");
        for needle in [
            "METERING_ENABLED",
            "search_path",
            "REDIS_URL",
            "STUDY_LESSON_CACHE_TTL_SECS",
            "PANAVERSITY_BIND",
        ] {
            assert!(all.contains(needle), "{needle} in {all}");
        }
        assert_eq!(errs.len(), 5);
    }

    #[test]
    fn redis_passwords() {
        assert_eq!(
            with_password("redis://h:6379", "pw").as_deref(),
            Some("redis://:pw@h:6379")
        );
        assert_eq!(
            with_password("redis://user@h/1", "pw").as_deref(),
            Some("redis://user:pw@h/1")
        );
        assert_eq!(with_password("redis://:x@h/", "pw"), None);
    }
}
