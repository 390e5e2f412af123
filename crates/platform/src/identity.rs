//! The authenticated caller, as every transport sees it after authentication.
//!
//! The auth middleware (see [`crate::auth`]) puts an [`Identity`] into the request extensions;
//! handlers read it with `Extension<Identity>`. Nothing downstream trusts client headers for who
//! the caller is, except in dev mode, where the middleware itself builds the identity from them.

use serde::Serialize;

/// Permission scopes (`read`, `write`, `admin`). `admin` implies the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Scopes {
    pub read: bool,
    pub write: bool,
    pub admin: bool,
}

impl Scopes {
    pub const ALL: Scopes = Scopes {
        read: true,
        write: true,
        admin: true,
    };

    /// Parse a space- or comma-separated scope string (`"read write"`). Unknown scopes are ignored;
    /// `admin` implies `read` and `write`, `write` implies `read`.
    pub fn parse(s: &str) -> Scopes {
        let mut out = Scopes::default();
        for tok in s.split([' ', ',']).filter(|t| !t.is_empty()) {
            match tok {
                "read" | "pfs:read" => out.read = true,
                "write" | "pfs:write" => {
                    out.write = true;
                    out.read = true
                }
                "admin" | "pfs:admin" => out = Scopes::ALL,
                _ => {}
            }
        }
        out
    }

    /// Like [`Scopes::parse`] for a list an operator typed (`fs keys create --scopes`): names
    /// separated by spaces and/or commas, each one of [`Scopes::NAMES`] (or its `pfs:` form);
    /// an unknown name or an empty list is an error naming the valid ones.
    pub fn parse_strict(s: &str) -> Result<Scopes, String> {
        let tokens: Vec<&str> = s
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty())
            .collect();
        let unknown: Vec<&str> = tokens
            .iter()
            .copied()
            .filter(|t| !Self::NAMES.contains(&t.strip_prefix("pfs:").unwrap_or(t)))
            .collect();
        let valid = Self::NAMES.join(", ");
        if !unknown.is_empty() {
            return Err(format!(
                "unknown scope{} {}: valid scopes are {valid} (separated by spaces or commas)",
                if unknown.len() > 1 { "s" } else { "" },
                unknown
                    .iter()
                    .map(|u| format!("{u:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if tokens.is_empty() {
            return Err(format!("no scope given: valid scopes are {valid}"));
        }
        Ok(Scopes::parse(&tokens.join(" ")))
    }

    /// The scope names.
    pub const NAMES: [&'static str; 3] = ["read", "write", "admin"];

    pub fn as_list(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.read {
            v.push("read");
        }
        if self.write {
            v.push("write");
        }
        if self.admin {
            v.push("admin");
        }
        v
    }
}

/// How the caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// Dev mode: no verification at all.
    Dev,
    /// A JWT verified against the JWKS.
    Jwt,
    /// An API key from our database.
    ApiKey,
    /// An API key verified by an external auth server.
    ExternalApiKey,
    /// An opaque token verified through the SSO userinfo endpoint.
    Userinfo,
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// Stable subject (JWT `sub`, API-key owner, or the dev-mode id). Never empty, never `system`.
    pub subject: String,
    pub scopes: Scopes,
    /// Display name (JWT `name`, else `email`), if known.
    pub name: Option<String>,
    pub email: Option<String>,
    /// Organization from the token (never from a client header outside dev mode).
    pub organization: Option<String>,
    pub method: AuthMethod,
    /// In dev mode only: the user id the client asked to act as (`X-User-ID`).
    pub acting_user: Option<String>,
}

impl Identity {
    /// The id recorded as `agent_id` in audit rows.
    pub fn agent_id(&self) -> &str {
        &self.subject
    }
}

#[cfg(test)]
mod tests {
    use super::Scopes;

    #[test]
    fn strict_scope_lists() {
        let rw = Scopes {
            read: true,
            write: true,
            admin: false,
        };
        for ok in [
            "read write",
            "read,write",
            "read, write",
            " write ",
            "pfs:read\twrite",
        ] {
            assert_eq!(Scopes::parse_strict(ok), Ok(rw), "{ok}");
        }
        assert_eq!(Scopes::parse_strict("admin"), Ok(Scopes::ALL));
        let e = Scopes::parse_strict("read wrte").unwrap_err();
        assert!(
            e.contains("\"wrte\"") && e.contains("read, write, admin"),
            "{e}"
        );
        assert!(
            Scopes::parse_strict(" , ")
                .unwrap_err()
                .contains("no scope")
        );
        // The lenient parser (JWT scope claims) still ignores what it does not know.
        assert_eq!(Scopes::parse("read wrte").as_list(), vec!["read"]);
    }
}
