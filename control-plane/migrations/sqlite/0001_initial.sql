-- Paddock's first schema. Every table whose rows belong to a tenant carries
-- tenant_id, so tenancy can be enforced without reshaping data later.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
);

CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
);

CREATE TABLE sandboxes (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    name           TEXT NOT NULL,
    labels         TEXT NOT NULL DEFAULT '{}',
    token_hash     TEXT NOT NULL UNIQUE,
    provider       TEXT,
    created_at     TEXT NOT NULL,
    last_seen_at   TEXT,
    agent_version  TEXT,
    UNIQUE (tenant_id, name)
);

CREATE TABLE sessions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    sandbox_id   TEXT NOT NULL REFERENCES sandboxes(id),
    command      TEXT,
    args         TEXT NOT NULL DEFAULT '[]',
    cols         INTEGER NOT NULL,
    rows         INTEGER NOT NULL,
    state        TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    ended_at     TEXT,
    exit_code    INTEGER,
    exit_signal  INTEGER,
    end_offset   INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX sessions_by_sandbox ON sessions (tenant_id, sandbox_id, id);
