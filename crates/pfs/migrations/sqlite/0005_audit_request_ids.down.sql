DROP INDEX IF EXISTS ix_audit_log_request;
ALTER TABLE audit_log DROP COLUMN request_hash;
ALTER TABLE audit_log DROP COLUMN request_id;
