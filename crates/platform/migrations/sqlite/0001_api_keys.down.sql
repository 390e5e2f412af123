DROP INDEX IF EXISTS api_keys_owner_idx;
DROP TABLE IF EXISTS api_keys;
