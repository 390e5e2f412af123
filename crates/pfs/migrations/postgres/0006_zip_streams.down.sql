DROP TABLE IF EXISTS zip_streams;
