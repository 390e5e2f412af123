DROP TABLE IF EXISTS import_progress;
