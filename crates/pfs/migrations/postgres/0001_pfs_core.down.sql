DROP TABLE IF EXISTS audit_head;
DROP TABLE IF EXISTS audit_log;
DROP FUNCTION IF EXISTS pfs_audit_log_append_only();
DROP TABLE IF EXISTS manifest_snapshots;
DROP TABLE IF EXISTS pending_materializations;
DROP TABLE IF EXISTS file_versions;
DROP TABLE IF EXISTS file_journal;
DROP TABLE IF EXISTS books;
