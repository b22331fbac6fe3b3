-- Agents and their tasks: a durable queue, every transition an event.
CREATE TABLE agents (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    UNIQUE (tenant_id, name)
);

-- An `agent` token acts for one agent.
ALTER TABLE api_tokens ADD COLUMN agent_id TEXT;

CREATE TABLE tasks (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    agent_id         TEXT NOT NULL REFERENCES agents(id),
    state            TEXT NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    seq              INTEGER NOT NULL,
    labels           TEXT NOT NULL DEFAULT '{}',
    steps            TEXT NOT NULL,
    timeout_secs     INTEGER,
    retry            TEXT NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    not_before_ms    INTEGER NOT NULL DEFAULT 0,
    sandbox_id       TEXT,
    owner            TEXT,
    results          TEXT NOT NULL DEFAULT '[]',
    reason           TEXT,
    idempotency_key  TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    UNIQUE (tenant_id, agent_id, idempotency_key)
);
CREATE INDEX tasks_queue ON tasks (state, priority, seq);

CREATE TABLE task_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    task_id     TEXT NOT NULL REFERENCES tasks(id),
    at          TEXT NOT NULL,
    kind        TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX task_events_by_task ON task_events (task_id, id);
