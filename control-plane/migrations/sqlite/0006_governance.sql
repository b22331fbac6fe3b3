-- Governance: quotas, cost budgets, reputation and their limits, per agent
-- and per tenant. Agents are keyed by `agent_id` without a foreign key to
-- `agents`, so this migration and the one creating agents may land in
-- either order.

-- One row per governed action (`push`, `task_execution`), for rolling-window quotas.
CREATE TABLE agent_actions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    agent_id    TEXT NOT NULL,
    action      TEXT NOT NULL,
    at_ms       INTEGER NOT NULL
);
CREATE INDEX agent_actions_by_agent ON agent_actions (tenant_id, agent_id, action, at_ms);
CREATE INDEX agent_actions_by_tenant ON agent_actions (tenant_id, action, at_ms);

-- Costs in integer micro-dollars, for rolling-window budgets.
CREATE TABLE agent_costs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    agent_id    TEXT NOT NULL,
    at_ms       INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    micros      INTEGER NOT NULL,
    note        TEXT
);
CREATE INDEX agent_costs_by_agent ON agent_costs (tenant_id, agent_id, at_ms);
CREATE INDEX agent_costs_by_tenant ON agent_costs (tenant_id, at_ms);

-- Every change of an agent's reputation, with why and the score after it.
CREATE TABLE reputation_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    agent_id    TEXT NOT NULL,
    at_ms       INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    delta       INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    score_after INTEGER NOT NULL
);
CREATE INDEX reputation_events_by_agent ON reputation_events (tenant_id, agent_id, id);

-- The current score (restricted = 1 below the threshold). Its row is also
-- what serializes an agent's governed writes on SQLite.
CREATE TABLE agent_reputation (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    agent_id    TEXT NOT NULL,
    score       INTEGER NOT NULL,
    restricted  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, agent_id)
);

-- Limit overrides as JSON: agent_id NULL for the tenant level.
CREATE TABLE governance_limits (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    agent_id    TEXT,
    overrides   TEXT NOT NULL
);
CREATE UNIQUE INDEX governance_limits_by_scope ON governance_limits (tenant_id, COALESCE(agent_id, ''));
