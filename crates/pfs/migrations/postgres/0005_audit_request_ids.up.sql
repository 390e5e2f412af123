-- Idempotent retries: a mutation called with a client-chosen request_id records it, and a hash of
-- the call's tool and arguments, on its audit rows, in the transaction of the change. A retry
-- finds them (by caller and request_id) and gets the first outcome instead of writing again. Both
-- columns are covered by the row hash when present.
ALTER TABLE audit_log ADD COLUMN request_id TEXT;
ALTER TABLE audit_log ADD COLUMN request_hash TEXT;
CREATE INDEX ix_audit_log_request ON audit_log (agent_id, request_id) WHERE request_id IS NOT NULL;
