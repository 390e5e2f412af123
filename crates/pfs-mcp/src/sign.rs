//! HMAC-SHA256 signed, short-lived archive URLs.
//!
//! The signature covers `book`, `scope`, the optional `user_id` and the expiry (unix seconds), so
//! a URL cannot be widened to another book, scope or overlay, nor extended.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

fn message(book: &str, scope: &str, user: Option<&str>, expires: i64) -> String {
    format!(
        "archive\n{book}\n{scope}\n{}\n{expires}",
        user.unwrap_or("")
    )
}

/// Hex HMAC-SHA256 over the archive request fields.
pub fn sign(key: &[u8], book: &str, scope: &str, user: Option<&str>, expires: i64) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(message(book, scope, user, expires).as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Why a signature was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum SigError {
    /// The URL expired.
    Expired,
    /// The signature does not match (or is not hex).
    Invalid,
}

/// Verify `sig` (constant-time) and the expiry against `now` (unix seconds).
pub fn verify(
    key: &[u8],
    book: &str,
    scope: &str,
    user: Option<&str>,
    expires: i64,
    sig: &str,
    now: i64,
) -> Result<(), SigError> {
    let bytes = hex::decode(sig).map_err(|_| SigError::Invalid)?;
    let mut mac = HmacSha256::new_from_slice(key).map_err(|_| SigError::Invalid)?;
    mac.update(message(book, scope, user, expires).as_bytes());
    mac.verify_slice(&bytes).map_err(|_| SigError::Invalid)?;
    if now > expires {
        return Err(SigError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_every_field_and_expire() {
        let k = b"secret-key";
        let s = sign(k, "my-book", "content", None, 1000);
        assert_eq!(s.len(), 64);
        assert_eq!(verify(k, "my-book", "content", None, 1000, &s, 999), Ok(()));
        assert_eq!(
            verify(k, "my-book", "content", None, 1000, &s, 1001),
            Err(SigError::Expired)
        );
        assert_eq!(
            verify(k, "my-book", "all", None, 1000, &s, 999),
            Err(SigError::Invalid)
        );
        assert_eq!(
            verify(k, "other", "content", None, 1000, &s, 999),
            Err(SigError::Invalid)
        );
        assert_eq!(
            verify(k, "my-book", "content", Some("u"), 1000, &s, 999),
            Err(SigError::Invalid)
        );
        assert_eq!(
            verify(k, "my-book", "content", None, 2000, &s, 999),
            Err(SigError::Invalid)
        );
        assert_eq!(
            verify(b"other", "my-book", "content", None, 1000, &s, 999),
            Err(SigError::Invalid)
        );
        assert_eq!(
            verify(k, "my-book", "content", None, 1000, "zz", 999),
            Err(SigError::Invalid)
        );
    }
}
