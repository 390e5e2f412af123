DROP INDEX IF EXISTS study_items_content_key;
DROP INDEX IF EXISTS study_items_request_key;
ALTER TABLE study_items DROP COLUMN content_key;
ALTER TABLE study_items DROP COLUMN request_key;
ALTER TABLE study_items DROP COLUMN updated_at;
ALTER TABLE study_items DROP COLUMN stream_state;
