-- Paddock's schema on PostgreSQL: the same tables as on SQLite, plus the
-- second wall: row-level security on every tenant table, and two roles.
--   paddock_app     serves requests; subject to RLS; the tenant is set per
--                   transaction with set_config('app.tenant_id', ..., true).
--   paddock_system  crosses tenants (token lookup, retention); BYPASSRLS.
-- Creating roles needs CREATEROLE (BYPASSRLS needs a superuser); where the
-- migrating user lacks it, a DBA creates the two roles beforehand.

DO $$ BEGIN
    CREATE ROLE paddock_app NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

DO $$ BEGIN
    CREATE ROLE paddock_system NOLOGIN BYPASSRLS;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

-- The migrating user connects and then SET ROLEs to one of the two.
DO $$ BEGIN
    EXECUTE format('GRANT paddock_app, paddock_system TO %I', current_user);
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'could not grant paddock roles to %: %', current_user, SQLERRM;
END $$;

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
    id             BIGSERIAL PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    sandbox_id     TEXT NOT NULL REFERENCES sandboxes(id),
    command        TEXT,
    args           TEXT NOT NULL DEFAULT '[]',
    cols           BIGINT NOT NULL,
    rows           BIGINT NOT NULL,
    state          TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    ended_at       TEXT,
    exit_code      BIGINT,
    exit_signal    BIGINT,
    end_offset     BIGINT NOT NULL DEFAULT 0,
    stored_offset  BIGINT NOT NULL DEFAULT 0
);

CREATE INDEX sessions_by_sandbox ON sessions (tenant_id, sandbox_id, id);

CREATE TABLE output_chunks (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    session_id  BIGINT NOT NULL REFERENCES sessions(id),
    start       BIGINT NOT NULL,
    data        BYTEA NOT NULL,
    PRIMARY KEY (session_id, start)
);

CREATE TABLE output_gaps (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    session_id  BIGINT NOT NULL REFERENCES sessions(id),
    start       BIGINT NOT NULL,
    stop        BIGINT NOT NULL,
    reason      TEXT NOT NULL,
    PRIMARY KEY (session_id, start)
);

GRANT USAGE ON SCHEMA public TO paddock_app, paddock_system;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO paddock_app, paddock_system;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO paddock_app, paddock_system;

-- Tenants see their own tenant row only; the rest by tenant_id.
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants
    USING (id = current_setting('app.tenant_id', true))
    WITH CHECK (id = current_setting('app.tenant_id', true));

DO $$
DECLARE t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['api_tokens', 'sandboxes', 'sessions', 'output_chunks', 'output_gaps'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I
                 USING (tenant_id = current_setting(''app.tenant_id'', true))
                 WITH CHECK (tenant_id = current_setting(''app.tenant_id'', true))', t);
    END LOOP;
END $$;
