-- PanaversityFS core tables (SQLite). Timestamps are BIGINT microseconds since the Unix epoch (UTC).

CREATE TABLE books (
    book_id    TEXT   NOT NULL PRIMARY KEY,
    profile    TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);

-- Current state per file: the source of truth for what exists and its hash.
CREATE TABLE file_journal (
    book_id         TEXT   NOT NULL,
    path            TEXT   NOT NULL,
    user_id         TEXT   NOT NULL,
    sha256          TEXT   NOT NULL,
    size            BIGINT NOT NULL,
    last_written_at BIGINT NOT NULL,
    storage_backend TEXT   NOT NULL,
    version         BIGINT NOT NULL,
    PRIMARY KEY (book_id, path, user_id)
);
CREATE INDEX ix_file_journal_book_user ON file_journal (book_id, user_id);

-- Every committed version of every file (the bytes stay in the content-addressed blob store).
CREATE TABLE file_versions (
    book_id    TEXT   NOT NULL,
    path       TEXT   NOT NULL,
    user_id    TEXT   NOT NULL,
    version    BIGINT NOT NULL,
    sha256     TEXT   NOT NULL,
    size       BIGINT NOT NULL,
    written_at BIGINT NOT NULL,
    agent_id   TEXT   NOT NULL,
    PRIMARY KEY (book_id, path, user_id, version)
);

-- Canonical objects whose materialization (copy from the blob, or delete) may not have happened yet.
CREATE TABLE pending_materializations (
    book_id TEXT   NOT NULL,
    path    TEXT   NOT NULL,
    user_id TEXT   NOT NULL,
    ticket  BIGINT NOT NULL,
    PRIMARY KEY (book_id, path, user_id)
);

CREATE TABLE manifest_snapshots (
    book_id       TEXT   NOT NULL,
    manifest_hash TEXT   NOT NULL,
    created_at    BIGINT NOT NULL,
    file_count    BIGINT NOT NULL,
    content_json  TEXT   NOT NULL,
    PRIMARY KEY (book_id, manifest_hash)
);

-- Append-only audit log with tamper-evident row chains (row_hash covers the row and the
-- previous row_hash of the same shard; see pfs::audit).
CREATE TABLE audit_log (
    seq               BIGINT NOT NULL PRIMARY KEY,
    shard             BIGINT NOT NULL,
    ts                BIGINT NOT NULL,
    agent_id          TEXT   NOT NULL CHECK (agent_id <> '' AND agent_id <> 'system'),
    operation         TEXT   NOT NULL,
    book_id           TEXT   NOT NULL,
    path              TEXT   NOT NULL,
    user_id           TEXT   NOT NULL,
    prev_hash         TEXT,
    new_hash          TEXT,
    status            TEXT   NOT NULL,
    error_message     TEXT,
    execution_time_ms BIGINT,
    row_hash          TEXT   NOT NULL,
    prev_row_hash     TEXT   NOT NULL
);
CREATE INDEX ix_audit_log_ts ON audit_log (ts);
CREATE INDEX ix_audit_log_agent ON audit_log (agent_id);
CREATE INDEX ix_audit_log_key ON audit_log (book_id, path, user_id);
CREATE INDEX ix_audit_log_shard ON audit_log (shard, seq);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

-- The head of each row chain (shard 0..63): its row count and last row_hash.
CREATE TABLE audit_head (
    shard     BIGINT NOT NULL PRIMARY KEY,
    row_count BIGINT NOT NULL,
    row_hash  TEXT   NOT NULL
);
WITH RECURSIVE shards(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM shards WHERE n < 63)
INSERT INTO audit_head (shard, row_count, row_hash)
SELECT n, 0, '0000000000000000000000000000000000000000000000000000000000000000' FROM shards;
