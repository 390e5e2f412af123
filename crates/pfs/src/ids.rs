//! Identifiers parsed once at the edge: a `BookId` or `UserId` that exists is valid.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::PfsError;

/// The journal's user id for shared (non-overlay) content.
pub const BASE_USER: &str = "__base__";

/// A book identifier: `^[a-z0-9-]{3,50}$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct BookId(String);

impl BookId {
    pub fn parse(s: &str) -> Result<BookId, PfsError> {
        let ok = (3..=50).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(BookId(s.to_string()))
        } else {
            Err(PfsError::InvalidInput(format!(
                "invalid book_id {s:?}: use 3-50 characters from a-z, 0-9 and '-'"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BookId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for BookId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        BookId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A student/user identifier for overlays: `^[A-Za-z0-9_-]{1,100}$`, and never `__base__`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    pub fn parse(s: &str) -> Result<UserId, PfsError> {
        let ok = (1..=100).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && s != BASE_USER;
        if ok {
            Ok(UserId(s.to_string()))
        } else {
            Err(PfsError::InvalidInput(format!(
                "invalid user_id {s:?}: use 1-100 characters from A-Z, a-z, 0-9, '_' and '-'"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        UserId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Whose copy of a file: the shared base, or one user's overlay.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Namespace {
    Base,
    Overlay(UserId),
}

impl Namespace {
    pub fn from_user(user: Option<UserId>) -> Namespace {
        match user {
            Some(u) => Namespace::Overlay(u),
            None => Namespace::Base,
        }
    }

    /// The journal/audit `user_id` column value (`__base__` for base).
    pub fn journal_user(&self) -> &str {
        match self {
            Namespace::Base => BASE_USER,
            Namespace::Overlay(u) => u.as_str(),
        }
    }

    pub fn user(&self) -> Option<&UserId> {
        match self {
            Namespace::Base => None,
            Namespace::Overlay(u) => Some(u),
        }
    }
}

/// A SHA-256 digest as 64 lowercase hex digits: the name of a blob, the identity of a version,
/// what `expected_hash` must equal. Only made by hashing bytes or by parsing a valid digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256(String);

impl Sha256 {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Sha256 {
        use sha2::Digest;
        Sha256(hex::encode(sha2::Sha256::digest(bytes)))
    }

    /// Parse a digest a client sent (surrounding space ignored, any case accepted).
    pub fn parse(s: &str) -> Result<Sha256, PfsError> {
        let h = s.trim().to_ascii_lowercase();
        if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Sha256(h))
        } else {
            Err(PfsError::InvalidInput(
                "expected_hash must be the 64-hex-digit sha256 returned by read_content".into(),
            ))
        }
    }

    /// A digest the journal stored (written only from [`Sha256`] values; not re-validated).
    pub(crate) fn from_journal(s: String) -> Sha256 {
        Sha256(s)
    }

    /// The 64 hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex digits, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::ops::Deref for Sha256 {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Sha256 {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl rusqlite::ToSql for Sha256 {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        self.0.to_sql()
    }
}

/// Who performs a mutation: the `agent_id` of audit rows. Never empty, never `system`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Actor {
    agent_id: String,
    request: Option<RequestKey>,
}

/// A client-chosen request id (at most 64 printable characters) and a hash of the call it names
/// (tool and arguments): recorded on the audit rows of the change it makes, so a retry of the
/// same call is answered from them instead of writing again (see `pfs_mcp`'s replay).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct RequestKey {
    id: String,
    call_hash: String,
}

impl RequestKey {
    /// Longest request id.
    pub const MAX_LEN: usize = 64;

    /// Check a request id and pair it with the hash of the call.
    pub fn new(id: &str, call_hash: String) -> Result<RequestKey, PfsError> {
        if id.is_empty() || id.len() > Self::MAX_LEN || id.chars().any(|c| c.is_control()) {
            return Err(PfsError::InvalidInput(format!(
                "request_id must be 1 to {} characters without control characters (a UUID is ideal)",
                Self::MAX_LEN
            )));
        }
        Ok(RequestKey {
            id: id.to_string(),
            call_hash,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn call_hash(&self) -> &str {
        &self.call_hash
    }
}

impl Actor {
    /// Check and wrap a caller id (token subject, API key owner, configured dev id).
    pub fn new(agent_id: impl Into<String>) -> Result<Actor, PfsError> {
        let agent_id = agent_id.into();
        if agent_id.trim().is_empty() {
            return Err(PfsError::InvalidInput(
                "agent id is empty; every change needs a caller identity".into(),
            ));
        }
        if agent_id.trim().eq_ignore_ascii_case("system") {
            return Err(PfsError::InvalidInput(
                "agent id 'system' is reserved; use the caller's real identity".into(),
            ));
        }
        if agent_id.len() > 255 || agent_id.chars().any(char::is_control) {
            return Err(PfsError::InvalidInput(
                "agent id must be at most 255 characters without control characters".into(),
            ));
        }
        Ok(Actor {
            agent_id,
            request: None,
        })
    }

    /// The same caller acting for the client request `request` (its audit rows carry it).
    pub fn with_request(self, request: Option<RequestKey>) -> Actor {
        Actor { request, ..self }
    }

    /// The client request this change is made for, if the client named one.
    pub fn request(&self) -> Option<&RequestKey> {
        self.request.as_ref()
    }

    /// The caller id recorded in audit rows.
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn book_ids() {
        assert!(BookId::parse("ai-native-dev").is_ok());
        assert!(BookId::parse("abc").is_ok());
        for bad in ["ab", "ABC", "a_b", "a b", "../x", "", &"a".repeat(51)] {
            assert!(BookId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn user_ids() {
        assert!(UserId::parse("user_1-A").is_ok());
        for bad in ["", "__base__", "a/b", "a.b", &"u".repeat(101)] {
            assert!(UserId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sha256_is_made_by_hashing_or_by_parsing_a_valid_digest() {
        let d = Sha256::of(b"hello");
        assert_eq!(
            d.as_str(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        let upper = format!(" {} ", d.as_str().to_ascii_uppercase());
        assert_eq!(Sha256::parse(&upper).expect("parses"), d);
        for bad in ["", "abc", &"g".repeat(64), &"a".repeat(63), &"a".repeat(65)] {
            let e = Sha256::parse(bad).expect_err(bad);
            assert_eq!(e.code(), crate::ErrorCode::InvalidInput);
        }
    }
}
