-- Governance: quotas, cost budgets, reputation and their limits (see the
-- SQLite twin). No foreign key to `agents`, so the order of this migration
-- and the one creating agents does not matter.

CREATE TABLE agent_actions (
    id          BIGSERIAL PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    agent_id    TEXT NOT NULL,
    action      TEXT NOT NULL,
    at_ms       BIGINT NOT NULL
);
CREATE INDEX agent_actions_by_agent ON agent_actions (tenant_id, agent_id, action, at_ms);
CREATE INDEX agent_actions_by_tenant ON agent_actions (tenant_id, action, at_ms);

CREATE TABLE agent_costs (
    id          BIGSERIAL PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    agent_id    TEXT NOT NULL,
    at_ms       BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    micros      BIGINT NOT NULL,
    note        TEXT
);
CREATE INDEX agent_costs_by_agent ON agent_costs (tenant_id, agent_id, at_ms);
CREATE INDEX agent_costs_by_tenant ON agent_costs (tenant_id, at_ms);

CREATE TABLE reputation_events (
    id          BIGSERIAL PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    agent_id    TEXT NOT NULL,
    at_ms       BIGINT NOT NULL,
    outcome     TEXT NOT NULL,
    delta       BIGINT NOT NULL,
    reason      TEXT NOT NULL,
    score_after BIGINT NOT NULL
);
CREATE INDEX reputation_events_by_agent ON reputation_events (tenant_id, agent_id, id);

CREATE TABLE agent_reputation (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    agent_id    TEXT NOT NULL,
    score       BIGINT NOT NULL,
    restricted  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, agent_id)
);

CREATE TABLE governance_limits (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    agent_id    TEXT,
    overrides   TEXT NOT NULL
);
CREATE UNIQUE INDEX governance_limits_by_scope ON governance_limits (tenant_id, COALESCE(agent_id, ''));

GRANT SELECT, INSERT, UPDATE, DELETE ON
    agent_actions, agent_costs, reputation_events, agent_reputation, governance_limits
    TO paddock_app, paddock_system;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO paddock_app, paddock_system;

DO $$
DECLARE t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['agent_actions', 'agent_costs', 'reputation_events',
                             'agent_reputation', 'governance_limits'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I
                 USING (tenant_id = current_setting(''app.tenant_id'', true))
                 WITH CHECK (tenant_id = current_setting(''app.tenant_id'', true))', t);
    END LOOP;
END $$;
