//! Shared infrastructure for both services: configuration, telemetry, database pools,
//! authentication (JWT/JWKS, API keys), rate limiting and HTTP server assembly.

pub mod auth;
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
