-- Version history for agents (list_versions, move_content) and overlay drift.
-- file_versions.operation: the tool that produced the version (writes: write_content; a rename
-- adds a move_content version under the new path). file_journal.base_sha256: for an overlay
-- row, the base file's sha256 when the overlay was last written (NULL: no base then), so a read
-- can say the base has changed since the overlay was made.
ALTER TABLE file_versions ADD COLUMN operation TEXT NOT NULL DEFAULT 'write_content';
ALTER TABLE file_journal ADD COLUMN base_sha256 TEXT;
