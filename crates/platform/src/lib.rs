//! Shared infrastructure for both services: telemetry ([`telemetry`]), database pools ([`db`]),
//! authentication (JWT/JWKS, API keys, external verifier, userinfo, dev mode: [`auth`]), rate
//! limiting ([`ratelimit`]) and HTTP server assembly ([`http`]). See `crates/platform/README.md`
//! for the design decisions.

pub mod auth;
pub mod boolean;
pub mod conn;
pub mod db;
pub mod http;
pub mod identity;
pub mod ratelimit;
pub mod telemetry;

pub use identity::{AuthMethod, Identity, Scopes};

/// Install rustls' ring crypto provider as the process default (reqwest is built without a
/// provider). Idempotent; a provider installed earlier is kept.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
