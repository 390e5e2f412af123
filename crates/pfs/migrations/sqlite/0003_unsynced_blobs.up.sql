-- Blobs written to local storage without fsync (see pfs::engine, "unsynced blobs"): the bytes ride
-- in the same transaction as the journal row that names them, so the row can never be durable
-- while its blob is not. A background task flushes the filesystem (syncfs) and then deletes the
-- rows it covered; at startup every remaining row's file is checked and rewritten if a crash
-- lost or tore it.
CREATE TABLE unsynced_blobs (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    sha256 TEXT    NOT NULL UNIQUE,
    data   BLOB    NOT NULL
);
