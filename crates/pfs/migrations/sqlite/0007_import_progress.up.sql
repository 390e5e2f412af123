-- How far `panaversity fs import` got through a source's append-only tables (e.g. the
-- predecessor's audit_log ids), so a second import resumes instead of appending twice.
CREATE TABLE import_progress (
    source  TEXT   NOT NULL,
    item    TEXT   NOT NULL,
    last_id BIGINT NOT NULL,
    PRIMARY KEY (source, item)
);
