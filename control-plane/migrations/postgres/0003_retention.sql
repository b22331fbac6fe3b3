-- When retention deleted a session's output (NULL while it is kept).
ALTER TABLE sessions ADD COLUMN output_purged_at TEXT;
