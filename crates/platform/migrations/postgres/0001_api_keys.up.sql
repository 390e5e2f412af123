-- API keys issued by this service. Only the SHA-256 of the key is stored; the plaintext is shown once.
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    key_hash     TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    owner        TEXT NOT NULL CHECK (owner <> '' AND owner <> 'system'),
    scopes       TEXT NOT NULL,
    name         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT NULL,
    last_used_at BIGINT NULL
);
CREATE INDEX api_keys_owner_idx ON api_keys (owner);
