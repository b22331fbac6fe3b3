-- Identities, audit and replay timing (see the SQLite twin).
ALTER TABLE tenants ADD COLUMN retention_days BIGINT;

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
    id          BIGSERIAL PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    role        TEXT NOT NULL,
    action      TEXT NOT NULL,
    resource    TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_by_tenant ON audit_events (tenant_id, id);

ALTER TABLE output_chunks ADD COLUMN at_ms BIGINT;

CREATE TABLE session_events (
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    session_id    BIGINT NOT NULL REFERENCES sessions(id),
    seq           BIGSERIAL PRIMARY KEY,
    at_ms         BIGINT NOT NULL,
    stream_offset BIGINT NOT NULL,
    kind          TEXT NOT NULL,
    data          TEXT NOT NULL
);
CREATE INDEX session_events_by_session ON session_events (session_id, seq);

GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO paddock_app, paddock_system;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO paddock_app, paddock_system;

DO $$
DECLARE t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['users', 'audit_events', 'session_events'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I
                 USING (tenant_id = current_setting(''app.tenant_id'', true))
                 WITH CHECK (tenant_id = current_setting(''app.tenant_id'', true))', t);
    END LOOP;
END $$;
