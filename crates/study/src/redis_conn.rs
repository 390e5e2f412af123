//! The one way Study Mode connects to Redis (lesson cache, turn bus): fail fast when Redis is
//! unreachable at start, short timeouts and a couple of retries afterwards.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Connect to `url` (an error names what failed).
pub(crate) async fn connect(url: &str) -> Result<ConnectionManager, String> {
    let client = redis::Client::open(url).map_err(|e| format!("bad Redis URL: {e}"))?;
    let cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2);
    ConnectionManager::new_with_config(client, cfg)
        .await
        .map_err(|e| format!("cannot connect to Redis: {e}"))
}
