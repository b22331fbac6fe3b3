-- Identities, audit and replay timing.
ALTER TABLE tenants ADD COLUMN retention_days INTEGER;

CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    email       TEXT,
    created_at  TEXT NOT NULL,
    UNIQUE (tenant_id, name)
);

ALTER TABLE api_tokens ADD COLUMN user_id TEXT REFERENCES users(id);
ALTER TABLE api_tokens ADD COLUMN expires_at TEXT;
ALTER TABLE api_tokens ADD COLUMN revoked_at TEXT;

CREATE TABLE audit_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    role        TEXT NOT NULL,
    action      TEXT NOT NULL,
    resource    TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_by_tenant ON audit_events (tenant_id, id);

-- When each chunk's first byte arrived (ms since the epoch), for asciicast.
ALTER TABLE output_chunks ADD COLUMN at_ms INTEGER;

-- Resizes by stream offset and time, for asciicast `r` events.
CREATE TABLE session_events (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    session_id  INTEGER NOT NULL REFERENCES sessions(id),
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms       INTEGER NOT NULL,
    stream_offset INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    data        TEXT NOT NULL
);
CREATE INDEX session_events_by_session ON session_events (session_id, seq);
