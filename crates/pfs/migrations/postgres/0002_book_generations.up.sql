-- Per-book change counters for the cached base manifest (see pfs::engine::Engine::base_manifest).
-- Every committed change of a book's base rows increments the counter of the change's audit shard
-- in the same transaction (the shard's audit head is already locked by it, so this adds no new
-- contention). The vector of (shard, generation) of a book identifies the base state it names.
CREATE TABLE book_generations (
    book_id    TEXT   NOT NULL,
    shard      BIGINT NOT NULL,
    generation BIGINT NOT NULL,
    PRIMARY KEY (book_id, shard)
);
