-- How each blob is stored inside a book archive, computed the first time it is archived and reused
-- by every later archive (blobs are immutable and content-addressed): the ZIP method (0 stored,
-- 8 deflate), the CRC-32 of the blob, and the size of the stored form. A deflated form is kept as
-- the object _pfs/zip/{codec}/{sha256}; `codec` names the compressor and level, so a change of
-- either starts a new cache instead of mixing streams.
CREATE TABLE zip_streams (
    codec           TEXT   NOT NULL,
    sha256          TEXT   NOT NULL,
    method          BIGINT NOT NULL,
    crc32           BIGINT NOT NULL,
    compressed_size BIGINT NOT NULL,
    PRIMARY KEY (codec, sha256)
);
