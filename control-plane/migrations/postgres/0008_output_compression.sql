-- Terminal output is stored compressed (zstd) when that saves space:
-- `raw_len` is then the chunk's length as the program wrote it, and `data`
-- the compressed bytes. NULL: `data` is the output as is (every chunk
-- written before this migration, and chunks compression would not shrink).
ALTER TABLE output_chunks ADD COLUMN raw_len BIGINT;
-- The bytes come compressed already (or would not compress): no second
-- attempt by TOAST's own compression.
ALTER TABLE output_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
