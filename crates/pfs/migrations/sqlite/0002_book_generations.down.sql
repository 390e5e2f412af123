DROP TABLE IF EXISTS book_generations;
