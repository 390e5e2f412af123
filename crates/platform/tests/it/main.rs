//! Integration tests for the platform crate: real HTTP servers on 127.0.0.1, real SQLite and
//! PostgreSQL (DATABASE_URL), real Redis (REDIS_URL). External services (JWKS, SSO userinfo, the
//! external API-key server) are small local axum servers speaking their real protocols.

mod apikeys;
mod group_commit;
mod http_layers;
mod jwks;
mod ratelimit;
mod remote;

use std::net::SocketAddr;

use axum::Router;

/// Process-wide test setup (crypto provider, quiet tracing).
pub fn init() {
    platform::install_crypto_provider();
    platform::telemetry::init_tracing(platform::telemetry::TracingConfig {
        json: false,
        filter: "warn".into(),
    });
}

/// Serve `router` on a random loopback port; returns the address. The server runs until the test's
/// runtime ends.
pub async fn spawn(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        platform::http::serve(router, listener, std::future::pending())
            .await
            .unwrap();
    });
    addr
}

/// A plain HTTP client for the tests.
pub fn client() -> reqwest::Client {
    init();
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
