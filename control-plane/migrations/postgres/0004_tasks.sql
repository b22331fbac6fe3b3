-- Agents and their tasks (see the SQLite twin).
CREATE TABLE agents (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    UNIQUE (tenant_id, name)
);

ALTER TABLE api_tokens ADD COLUMN agent_id TEXT;

CREATE TABLE tasks (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    agent_id         TEXT NOT NULL REFERENCES agents(id),
    state            TEXT NOT NULL,
    priority         BIGINT NOT NULL DEFAULT 0,
    seq              BIGINT NOT NULL,
    labels           TEXT NOT NULL DEFAULT '{}',
    steps            TEXT NOT NULL,
    timeout_secs     BIGINT,
    retry            TEXT NOT NULL,
    attempt          BIGINT NOT NULL DEFAULT 0,
    not_before_ms    BIGINT NOT NULL DEFAULT 0,
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
    id          BIGSERIAL PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    task_id     TEXT NOT NULL REFERENCES tasks(id),
    at          TEXT NOT NULL,
    kind        TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX task_events_by_task ON task_events (task_id, id);

GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO paddock_app, paddock_system;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO paddock_app, paddock_system;

DO $$
DECLARE t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['agents', 'tasks', 'task_events'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I
                 USING (tenant_id = current_setting(''app.tenant_id'', true))
                 WITH CHECK (tenant_id = current_setting(''app.tenant_id'', true))', t);
    END LOOP;
END $$;
