//! The one parser for boolean settings (flags, environment variables, config-file values):
//! `1/0`, `true/false`, `yes/no`, `on/off`, in any letter case, surrounded by optional blanks.
//! Anything else is an error naming the accepted spellings, never a silent `false`.

/// The accepted spellings, for messages.
pub const ACCEPTED: &str = "1/0, true/false, yes/no, on/off";

/// Parse a boolean setting.
pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("invalid boolean {value:?}: use one of {ACCEPTED}")),
    }
}

/// [`parse_bool`] for an optional environment variable: unset or empty is `None`.
pub fn env_bool(name: &str) -> Result<Option<bool>, String> {
    match std::env::var(name) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => parse_bool(&v).map(Some).map_err(|e| format!("{name}: {e}")),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{name}: not valid UTF-8")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_parses_and_nothing_else_does() {
        for t in [
            "1",
            "true",
            "TRUE",
            " yes ",
            "On",
            "Y E S".replace(' ', "").as_str(),
        ] {
            assert_eq!(parse_bool(t), Ok(true), "{t}");
        }
        for f in ["0", "false", "False", "no", "OFF", " off\n"] {
            assert_eq!(parse_bool(f), Ok(false), "{f}");
        }
        for bad in ["", "2", "y", "n", "truee", "enabled", "-1", "t"] {
            let e = parse_bool(bad).unwrap_err();
            assert!(e.contains(ACCEPTED), "{e}");
        }
    }
}
