-- Study Mode ChatKit store: threads, items and feedback, every row scoped by user (and org).
CREATE TABLE study_threads (
    user_id TEXT NOT NULL,
    id TEXT NOT NULL,
    org_id TEXT NOT NULL DEFAULT '',
    title TEXT,
    title_set_by_user INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    metadata TEXT NOT NULL,
    tutor_state TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, id)
);
CREATE INDEX study_threads_owner_created ON study_threads (user_id, org_id, created_at, id);

CREATE TABLE study_items (
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    id TEXT NOT NULL,
    type TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (user_id, id)
);
CREATE INDEX study_items_thread_created ON study_items (user_id, thread_id, created_at, id);

CREATE TABLE study_feedback (
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, item_id)
);
