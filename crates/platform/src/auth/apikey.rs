//! API keys kept in our own database (table `api_keys`, migrations in `crates/platform/migrations`,
//! tracking table `_platform_migrations`).
//!
//! A key is `pvk_` followed by 40 hex digits (160 random bits). Only its SHA-256 is stored, so a
//! database leak does not leak usable keys. Verified keys are cached in process for at most
//! [`VERIFY_CACHE_TTL`] (5 s): a key revoked through another process stops working within 5 s, one
//! revoked through this store instance stops at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::db::{Db, ExecuteWrite, migrator_with_table};
use crate::identity::Scopes;

/// Prefix of every key this store issues.
pub const API_KEY_PREFIX: &str = "pvk_";
/// Upper bound on how long a revoked key may still verify in another process.
pub const VERIFY_CACHE_TTL: Duration = Duration::from_secs(5);
/// `last_used_at` is written at most this often per key.
const LAST_USED_RESOLUTION: Duration = Duration::from_secs(60);
const CACHE_MAX: usize = 10_000;
const MIGRATIONS_TABLE: &str = "_platform_migrations";

/// Apply the platform migrations (the `api_keys` table).
pub async fn migrate_up(db: &Db) -> anyhow::Result<()> {
    migrator(db)
        .run(db.pool())
        .await
        .context("applying platform migrations")
}

/// Revert every platform migration (drops `api_keys`).
pub async fn migrate_down(db: &Db) -> anyhow::Result<()> {
    migrator(db)
        .undo(db.pool(), 0)
        .await
        .context("reverting platform migrations")
}

fn migrator(db: &Db) -> sqlx::migrate::Migrator {
    match db.kind() {
        crate::db::DbKind::Sqlite => {
            migrator_with_table(sqlx::migrate!("./migrations/sqlite"), MIGRATIONS_TABLE)
        }
        crate::db::DbKind::Postgres => {
            migrator_with_table(sqlx::migrate!("./migrations/postgres"), MIGRATIONS_TABLE)
        }
    }
}

/// Everything about a key except the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyInfo {
    pub id: String,
    /// The first characters of the key (`pvk_1a2b3c4d`), to recognise it in listings.
    pub prefix: String,
    /// The subject the key authenticates as.
    pub owner: String,
    pub scopes: Scopes,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

type Row = (
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
);

const COLUMNS: &str = "id, prefix, owner, scopes, name, created_at, revoked_at, last_used_at";

fn micros_to_time(us: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(us).unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

fn row_to_info(r: Row) -> ApiKeyInfo {
    ApiKeyInfo {
        id: r.0,
        prefix: r.1,
        owner: r.2,
        scopes: Scopes::parse(&r.3),
        name: r.4,
        created_at: micros_to_time(r.5),
        revoked_at: r.6.map(micros_to_time),
        last_used_at: r.7.map(micros_to_time),
    }
}

/// SHA-256 of a key, hex-encoded (what the table stores).
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn is_valid_owner(owner: &str) -> bool {
    !owner.is_empty()
        && owner != "system"
        && owner.len() <= 200
        && !owner.chars().any(|c| c.is_control() || c.is_whitespace())
}

struct CacheEntry {
    info: ApiKeyInfo,
    at: Instant,
}

/// CRUD and verification of API keys. Cheap to clone.
#[derive(Clone)]
pub struct ApiKeyStore {
    db: Db,
    cache: Arc<Mutex<HashMap<String, CacheEntry>>>,
}

impl std::fmt::Debug for ApiKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyStore")
            .field("db", &self.db.kind())
            .finish_non_exhaustive()
    }
}

impl ApiKeyStore {
    /// A store over `db` (run [`migrate_up`] first).
    pub fn new(db: Db) -> ApiKeyStore {
        ApiKeyStore {
            db,
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Issue a key for `owner`. Returns its info and the plaintext key, which is not stored and
    /// cannot be shown again.
    pub async fn create(
        &self,
        owner: &str,
        scopes: Scopes,
        name: &str,
    ) -> anyhow::Result<(ApiKeyInfo, String)> {
        anyhow::ensure!(
            is_valid_owner(owner),
            "invalid key owner {owner:?}: 1-200 characters, no whitespace, not \"system\""
        );
        anyhow::ensure!(name.len() <= 200, "key name is longer than 200 characters");
        let mut secret = [0u8; 20];
        rand::rng().fill_bytes(&mut secret);
        let key = format!("{API_KEY_PREFIX}{}", hex::encode(secret));
        let prefix = key[..API_KEY_PREFIX.len() + 8].to_owned();
        let id = format!("key_{}", uuid::Uuid::now_v7().simple());
        let now = Utc::now();
        let scopes_str = scopes.as_list().join(" ");
        sqlx::query(
            "INSERT INTO api_keys (id, key_hash, prefix, owner, scopes, name, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(hash_key(&key))
        .bind(&prefix)
        .bind(owner)
        .bind(&scopes_str)
        .bind(name)
        .bind(now.timestamp_micros())
        .execute_write(&self.db)
        .await
        .context("inserting API key")?;
        let info = ApiKeyInfo {
            id,
            prefix,
            owner: owner.to_owned(),
            scopes: Scopes::parse(&scopes_str),
            name: name.to_owned(),
            created_at: micros_to_time(now.timestamp_micros()),
            revoked_at: None,
            last_used_at: None,
        };
        Ok((info, key))
    }

    /// All keys, newest first (revoked ones included).
    pub async fn list(&self) -> anyhow::Result<Vec<ApiKeyInfo>> {
        let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM api_keys ORDER BY created_at DESC, id DESC"
        )))
        .fetch_all(self.db.pool())
        .await
        .context("listing API keys")?;
        Ok(rows.into_iter().map(row_to_info).collect())
    }

    /// Revoke a key by id. `Ok(false)` when no such unrevoked key exists.
    pub async fn revoke(&self, id: &str) -> anyhow::Result<bool> {
        let res =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(Utc::now().timestamp_micros())
                .bind(id)
                .execute_write(&self.db)
                .await
                .context("revoking API key")?;
        if let Ok(mut c) = self.cache.lock() {
            c.retain(|_, e| e.info.id != id);
        }
        Ok(res.rows_affected() > 0)
    }

    /// Look a presented key up. `Ok(None)` for unknown or revoked keys (and for strings that are
    /// not our keys at all); `Err` only when the database fails.
    pub async fn verify(&self, key: &str) -> anyhow::Result<Option<ApiKeyInfo>> {
        let Some(rest) = key.strip_prefix(API_KEY_PREFIX) else {
            return Ok(None);
        };
        if rest.is_empty() || rest.len() > 128 || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Ok(None);
        }
        let hash = hash_key(key);
        if let Ok(c) = self.cache.lock()
            && let Some(e) = c.get(&hash)
            && e.at.elapsed() < VERIFY_CACHE_TTL
        {
            return Ok(Some(e.info.clone()));
        }
        let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM api_keys WHERE key_hash = $1"
        )))
        .bind(&hash)
        .fetch_optional(self.db.pool())
        .await
        .context("looking up API key")?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut info = row_to_info(row);
        if info.revoked_at.is_some() {
            if let Ok(mut c) = self.cache.lock() {
                c.remove(&hash);
            }
            return Ok(None);
        }
        let now = Utc::now();
        let due = info
            .last_used_at
            .is_none_or(|t| (now - t).to_std().unwrap_or(Duration::ZERO) >= LAST_USED_RESOLUTION);
        if due {
            let res = sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
                .bind(now.timestamp_micros())
                .bind(&info.id)
                .execute_write(&self.db)
                .await;
            match res {
                Ok(_) => info.last_used_at = Some(micros_to_time(now.timestamp_micros())),
                Err(e) => {
                    tracing::warn!(error = %e, key_id = %info.id, "recording API key use failed")
                }
            }
        }
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= CACHE_MAX {
                c.retain(|_, e| e.at.elapsed() < VERIFY_CACHE_TTL);
                if c.len() >= CACHE_MAX {
                    c.clear();
                }
            }
            c.insert(
                hash,
                CacheEntry {
                    info: info.clone(),
                    at: Instant::now(),
                },
            );
        }
        Ok(Some(info))
    }
}
