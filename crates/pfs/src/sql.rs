//! SQL fragments shared by the journal statements of every commit strategy and by the audit
//! appends, so a new column of `audit_log`, `file_versions` or `file_journal` is one edit here.
//! Each is a `macro_rules!` expanding to a string literal, for `concat!` in `const` statements.
//! Placeholders follow the caller's numbering; each fragment says which it uses.

/// `INSERT INTO audit_log (…all columns…) ` (the values follow).
macro_rules! audit_log_insert {
    () => {
        "INSERT INTO audit_log (seq, shard, ts, agent_id, operation, book_id, path, user_id, \
         prev_hash, new_hash, status, error_message, execution_time_ms, row_hash, prev_row_hash, \
         request_id, request_hash) "
    };
}

/// `INSERT INTO file_versions (…all columns…) ` (the values follow).
macro_rules! file_versions_insert {
    () => {
        "INSERT INTO file_versions (book_id, path, user_id, version, sha256, size, written_at, agent_id) "
    };
}

/// For a row of `($1, $2, $3)`: the base file's current sha256 when `$3` is an overlay owner
/// (NULL for base rows, and when the base file does not exist), stored as the overlay's
/// `base_sha256` so a later read can tell that the base changed since.
macro_rules! overlay_base_hash {
    () => {
        "(SELECT ob.sha256 FROM file_journal ob WHERE ob.book_id = $1 AND ob.path = $2 \
         AND ob.user_id = '__base__' AND $3 <> '__base__')"
    };
}

/// Create the journal row of `($1, $2, $3)` with sha256 `$4`, size `$5`, time `$6`, backend `$7`;
/// the version continues a deleted file's history. No `ON CONFLICT` yet (callers add a filter).
macro_rules! journal_create_select {
    () => {
        concat!("INSERT INTO file_journal (book_id, path, user_id, sha256, size, last_written_at, storage_backend, version, base_sha256) \
         SELECT $1, $2, $3, $4, $5, $6, $7, COALESCE(MAX(version), 0) + 1, ",
        overlay_base_hash!(),
        " FROM file_versions WHERE book_id = $1 AND path = $2 AND user_id = $3 ")
    };
}

/// The compare-and-swap of an update of `($1, $2, $3)` from sha256 `$8` (values as in
/// `journal_create_select`).
macro_rules! journal_cas_update {
    () => {
        concat!("UPDATE file_journal SET sha256 = $4, size = $5, last_written_at = $6, storage_backend = $7, \
         version = version + 1, base_sha256 = ",
        overlay_base_hash!(),
        " WHERE book_id = $1 AND path = $2 AND user_id = $3 AND sha256 = $8 ")
    };
}

/// `INSERT INTO book_generations (book_id, shard, generation) ` (the values follow, then
/// `generation_bump_on_conflict`).
macro_rules! generation_insert {
    () => {
        "INSERT INTO book_generations (book_id, shard, generation) "
    };
}

/// A generation row that exists is incremented.
macro_rules! generation_bump_on_conflict {
    () => {
        "ON CONFLICT (book_id, shard) DO UPDATE SET generation = book_generations.generation + 1"
    };
}

/// `INSERT INTO pending_materializations (book_id, path, user_id, ticket) ` (values follow).
macro_rules! pending_insert {
    () => {
        "INSERT INTO pending_materializations (book_id, path, user_id, ticket) "
    };
}

/// A pending row that exists takes the new ticket.
macro_rules! pending_take_ticket_on_conflict {
    () => {
        "ON CONFLICT (book_id, path, user_id) DO UPDATE SET ticket = excluded.ticket"
    };
}
