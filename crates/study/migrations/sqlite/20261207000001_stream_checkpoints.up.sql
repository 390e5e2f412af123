-- Crash-safe streaming and idempotent messages.
-- stream_state: NULL = complete; 'streaming' = a reply being checkpointed (updated_at is its last
-- checkpoint or heartbeat); 'incomplete' = a reply that ended early (provider failure, stop).
-- request_key: the client's Idempotency-Key of the request that created the item (unique per user).
-- content_key: a hash of (scope, text, mode) of a user message, for the short duplicate window.
ALTER TABLE study_items ADD COLUMN stream_state TEXT;
ALTER TABLE study_items ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE study_items ADD COLUMN request_key TEXT;
ALTER TABLE study_items ADD COLUMN content_key TEXT;
CREATE UNIQUE INDEX study_items_request_key ON study_items (user_id, request_key);
CREATE INDEX study_items_content_key ON study_items (user_id, content_key, created_at);
