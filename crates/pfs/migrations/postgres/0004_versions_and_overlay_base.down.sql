ALTER TABLE file_journal DROP COLUMN base_sha256;
ALTER TABLE file_versions DROP COLUMN operation;
