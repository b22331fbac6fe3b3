-- Browser console sign-ins: a random secret in an HttpOnly cookie (stored
-- hashed) stands for the API token it was exchanged for; revoking or
-- expiring that token ends its console sessions too. Logout deletes the row.
CREATE TABLE console_sessions (
    secret_hash TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    token_id    TEXT NOT NULL REFERENCES api_tokens(id),
    csrf_token  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);
CREATE INDEX console_sessions_by_token ON console_sessions (token_id);
