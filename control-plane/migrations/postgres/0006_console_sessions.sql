-- Browser console sign-ins (see the SQLite twin).
CREATE TABLE console_sessions (
    secret_hash TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    token_id    TEXT NOT NULL REFERENCES api_tokens(id),
    csrf_token  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);
CREATE INDEX console_sessions_by_token ON console_sessions (token_id);

GRANT SELECT, INSERT, UPDATE, DELETE ON console_sessions TO paddock_app, paddock_system;

ALTER TABLE console_sessions ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON console_sessions
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
