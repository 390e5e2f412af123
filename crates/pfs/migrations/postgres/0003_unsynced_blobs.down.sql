DROP TABLE IF EXISTS unsynced_blobs;
