//! Shared infrastructure for both services: configuration, telemetry, database pools,
//! authentication (JWT/JWKS, API keys), rate limiting and HTTP server assembly.

pub mod db;
pub mod identity;
pub mod ratelimit;

pub use identity::{AuthMethod, Identity, Scopes};
