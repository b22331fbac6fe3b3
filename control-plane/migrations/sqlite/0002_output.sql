-- Durable terminal output: every session's byte stream, stored in chunks
-- per tenant, with explicit gap records. `stored_offset` is the durable end
-- of the stream, the offset acked to agentd.

CREATE TABLE output_chunks (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    session_id  INTEGER NOT NULL REFERENCES sessions(id),
    start       INTEGER NOT NULL,
    data        BLOB NOT NULL,
    PRIMARY KEY (session_id, start)
);

CREATE TABLE output_gaps (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    session_id  INTEGER NOT NULL REFERENCES sessions(id),
    start       INTEGER NOT NULL,
    stop        INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    PRIMARY KEY (session_id, start)
);

ALTER TABLE sessions ADD COLUMN stored_offset INTEGER NOT NULL DEFAULT 0;
