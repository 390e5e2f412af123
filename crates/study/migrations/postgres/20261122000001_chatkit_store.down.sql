DROP TABLE IF EXISTS study_feedback;
DROP INDEX IF EXISTS study_items_thread_created;
DROP TABLE IF EXISTS study_items;
DROP INDEX IF EXISTS study_threads_owner_created;
DROP TABLE IF EXISTS study_threads;
