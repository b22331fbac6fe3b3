-- Sandbox lifecycle (see the SQLite twin). `sandboxes` keeps its row-level
-- security; `deployment` holds no tenant's data (the owner id of this
-- deployment) and is read by the system role only.

ALTER TABLE sandboxes ADD COLUMN state TEXT NOT NULL DEFAULT 'disconnected';
ALTER TABLE sandboxes ADD COLUMN state_reason TEXT;
ALTER TABLE sandboxes ADD COLUMN state_changed_at TEXT;
ALTER TABLE sandboxes ADD COLUMN resource_id TEXT;
ALTER TABLE sandboxes ADD COLUMN size TEXT;

CREATE INDEX sandboxes_by_provider ON sandboxes (provider, state);

CREATE TABLE deployment (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);

GRANT SELECT, INSERT ON deployment TO paddock_system;
