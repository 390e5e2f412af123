//! API keys in our database, on SQLite and PostgreSQL.

use http::{HeaderMap, HeaderValue, header};
use platform::auth::{
    API_KEY_PREFIX, ApiKeyStore, AuthConfig, AuthError, Authenticator, migrate_down, migrate_up,
};
use platform::db::TestDb;
use platform::{AuthMethod, Scopes};

use crate::init;

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    h
}

#[tokio::test]
async fn create_verify_revoke_on_every_backend() {
    init();
    for t in TestDb::all().await {
        let db = t.connect().await;
        migrate_up(&db).await.unwrap();
        // Idempotent.
        migrate_up(&db).await.unwrap();
        let store = ApiKeyStore::new(db.clone());

        let write = Scopes {
            read: true,
            write: true,
            admin: false,
        };
        let (info, key) = store.create("agent-1", write, "ci key").await.unwrap();
        assert!(key.starts_with(API_KEY_PREFIX), "{key}");
        assert!(key.len() >= API_KEY_PREFIX.len() + 32, "≥128 bits: {key}");
        assert!(key.starts_with(&info.prefix));
        assert_eq!(info.owner, "agent-1");
        assert_eq!(info.scopes, write);
        assert!(info.revoked_at.is_none());

        // Two keys never collide, and the plaintext is not what the table stores.
        let (info2, key2) = store
            .create("agent-2", Scopes::ALL, "admin key")
            .await
            .unwrap();
        assert_ne!(key, key2);
        let stored: Vec<(String,)> = sqlx::query_as("SELECT key_hash FROM api_keys")
            .fetch_all(db.pool())
            .await
            .unwrap();
        assert!(stored.iter().all(|(h,)| h != &key && h != &key2));

        let got = store.verify(&key).await.unwrap().expect("valid key");
        assert_eq!(got.id, info.id);
        assert!(got.last_used_at.is_some(), "use is recorded");
        assert!(store.verify("pvk_deadbeef").await.unwrap().is_none());
        assert!(store.verify("not-a-key").await.unwrap().is_none());
        assert!(store.verify(&format!("{key}x")).await.unwrap().is_none());

        // Through the authenticator.
        let auth = Authenticator::new(AuthConfig {
            api_keys: Some(store.clone()),
            ..Default::default()
        });
        let id = auth.authenticate(&bearer(&key)).await.unwrap();
        assert_eq!(id.subject, "agent-1");
        assert_eq!(id.method, AuthMethod::ApiKey);
        assert_eq!(id.scopes, write);
        let id2 = auth.authenticate(&bearer(&key2)).await.unwrap();
        assert_eq!(id2.scopes, Scopes::ALL);

        let list = store.list().await.unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].id, info2.id, "newest first");

        // A second store instance (another replica) verifies it too, then sees the revocation.
        let replica = ApiKeyStore::new(db.clone());
        assert!(replica.verify(&key).await.unwrap().is_some());

        assert!(store.revoke(&info.id).await.unwrap());
        assert!(!store.revoke(&info.id).await.unwrap(), "already revoked");
        assert!(!store.revoke("key_missing").await.unwrap());
        assert!(store.verify(&key).await.unwrap().is_none());
        let err = auth.authenticate(&bearer(&key)).await.unwrap_err();
        assert!(matches!(err, AuthError::Invalid(_)), "{err:?}");
        // A fresh instance (no cache) rejects it at once.
        assert!(
            ApiKeyStore::new(db.clone())
                .verify(&key)
                .await
                .unwrap()
                .is_none()
        );
        // The other key still works.
        assert!(auth.authenticate(&bearer(&key2)).await.is_ok());

        let list = store.list().await.unwrap();
        assert!(
            list.iter()
                .find(|k| k.id == info.id)
                .unwrap()
                .revoked_at
                .is_some()
        );

        // Invalid owners are refused (and the database CHECK backs it up).
        assert!(store.create("system", Scopes::ALL, "x").await.is_err());
        assert!(store.create("", Scopes::ALL, "x").await.is_err());

        // Reversible: down drops the table, up recreates it empty.
        migrate_down(&db).await.unwrap();
        assert!(store.list().await.is_err());
        migrate_up(&db).await.unwrap();
        assert!(store.list().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn api_keys_are_refused_when_no_store_is_configured() {
    init();
    let auth = Authenticator::new(AuthConfig::default());
    let err = auth
        .authenticate(&bearer("pvk_0123456789abcdef0123456789abcdef01234567"))
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::Invalid(_)));
}

#[tokio::test]
async fn database_failure_is_unavailable_not_unauthorized() {
    init();
    let t = TestDb::sqlite();
    let db = t.connect().await;
    // No migration: the table is missing, so the lookup fails.
    let auth = Authenticator::new(AuthConfig {
        api_keys: Some(ApiKeyStore::new(db)),
        ..Default::default()
    });
    let err = auth
        .authenticate(&bearer("pvk_0123456789abcdef0123456789abcdef01234567"))
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::Unavailable(_)), "{err:?}");
}
