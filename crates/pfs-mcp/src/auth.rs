//! Authorization inside tools: who is calling (from the HTTP request, or the configured stdio
//! identity) and what they may do.
//!
//! Rules (documented in the crate docs):
//! * read tools need `read`; mutations need `write`; `query_audit_log` and `verify_audit_chain`
//!   need `admin` (the audit log shows every agent's activity across books).
//! * A caller may read or write an overlay only for its own user id (the identity subject, or in
//!   dev mode the `acting_user` it asked for) unless it holds `admin`.

use pfs::{PfsError, UserId};
use platform::{AuthMethod, Identity};
use rmcp::RoleServer;
use rmcp::service::RequestContext;

/// The scope a tool needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Read content, assets, listings, builds.
    Read,
    /// Create, update or delete content/assets.
    Write,
    /// Audit log access.
    Admin,
}

/// The caller of a tool call: the identity from the HTTP request extensions (put there by the
/// auth middleware), else `fallback` (the stdio identity). No identity at all → `UNAUTHORIZED`.
pub fn caller(
    ctx: &RequestContext<RoleServer>,
    fallback: Option<&Identity>,
) -> Result<Identity, PfsError> {
    if let Some(parts) = ctx.extensions.get::<http::request::Parts>() {
        return parts.extensions.get::<Identity>().cloned().ok_or_else(|| {
            PfsError::Unauthorized("authentication required: send a bearer token or API key".into())
        });
    }
    fallback.cloned().ok_or_else(|| {
        PfsError::Unauthorized("no caller identity is configured for this transport".into())
    })
}

/// Check that `id` holds the scope `need`.
pub fn require(id: &Identity, need: Need) -> Result<(), PfsError> {
    let s = id.scopes;
    let ok = match need {
        Need::Read => s.read || s.write || s.admin,
        Need::Write => s.write || s.admin,
        Need::Admin => s.admin,
    };
    if ok {
        Ok(())
    } else {
        let name = match need {
            Need::Read => "read",
            Need::Write => "write",
            Need::Admin => "admin",
        };
        Err(PfsError::Forbidden(format!(
            "this tool needs the '{name}' scope; your credentials carry [{}]",
            s.as_list().join(", ")
        )))
    }
}

/// The user id whose overlay the caller owns: in dev mode the requested `acting_user` (if any),
/// else the subject — when it is a valid user id.
pub fn own_user(id: &Identity) -> Option<UserId> {
    if id.method == AuthMethod::Dev
        && let Some(u) = &id.acting_user
    {
        return UserId::parse(u).ok();
    }
    UserId::parse(&id.subject).ok()
}

/// Parse an optional `user_id` argument and check the caller may use that overlay.
pub fn overlay_user(id: &Identity, user_id: Option<&str>) -> Result<Option<UserId>, PfsError> {
    let Some(raw) = user_id else { return Ok(None) };
    let user = UserId::parse(raw)?;
    check_overlay(id, &user)?;
    Ok(Some(user))
}

/// `FORBIDDEN` unless `user` is the caller's own user id or the caller is admin.
pub fn check_overlay(id: &Identity, user: &UserId) -> Result<(), PfsError> {
    if id.scopes.admin || own_user(id).as_ref() == Some(user) {
        Ok(())
    } else {
        Err(PfsError::Forbidden(format!(
            "you may only use your own overlay; user_id {user} belongs to someone else (admin scope required)"
        )))
    }
}

/// The overlay searches and bulk reads include: the requested one (checked), else the caller's own.
pub fn search_user(id: &Identity, user_id: Option<&str>) -> Result<Option<UserId>, PfsError> {
    match user_id {
        Some(_) => overlay_user(id, user_id),
        None => Ok(own_user(id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use platform::Scopes;

    fn ident(subject: &str, scopes: &str, method: AuthMethod, acting: Option<&str>) -> Identity {
        Identity {
            subject: subject.into(),
            scopes: Scopes::parse(scopes),
            name: None,
            email: None,
            organization: None,
            method,
            acting_user: acting.map(str::to_string),
        }
    }

    #[test]
    fn scopes_are_enforced() {
        let r = ident("u1", "read", AuthMethod::Jwt, None);
        assert!(require(&r, Need::Read).is_ok());
        assert_eq!(
            require(&r, Need::Write).unwrap_err().code(),
            pfs::ErrorCode::Forbidden
        );
        assert_eq!(
            require(&r, Need::Admin).unwrap_err().code(),
            pfs::ErrorCode::Forbidden
        );
        let a = ident("root", "admin", AuthMethod::Jwt, None);
        assert!(require(&a, Need::Admin).is_ok());
        assert!(require(&a, Need::Write).is_ok());
    }

    #[test]
    fn overlays_belong_to_their_owner() {
        let u = ident("alice", "write", AuthMethod::Jwt, None);
        assert!(overlay_user(&u, Some("alice")).is_ok());
        assert_eq!(
            overlay_user(&u, Some("bob")).unwrap_err().code(),
            pfs::ErrorCode::Forbidden
        );
        assert_eq!(
            overlay_user(&u, Some("../x")).unwrap_err().code(),
            pfs::ErrorCode::InvalidInput
        );
        let dev = ident("dev-agent", "admin", AuthMethod::Dev, Some("carol"));
        assert_eq!(own_user(&dev).unwrap().as_str(), "carol");
        let admin = ident("root", "admin", AuthMethod::Jwt, None);
        assert!(overlay_user(&admin, Some("bob")).is_ok());
        assert_eq!(search_user(&u, None).unwrap().unwrap().as_str(), "alice");
    }
}
