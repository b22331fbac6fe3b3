-- Sandbox lifecycle (issue 7): each sandbox's state, why it failed, the
-- provider's handle for it and its size; and the deployment's owner id,
-- shared by every replica on this database, which labels the resources
-- providers create.

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
