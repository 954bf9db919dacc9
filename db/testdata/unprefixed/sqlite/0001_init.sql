-- Timestamps are UTC text 'YYYY-MM-DDTHH:MM:SS.ffffffZ' (fixed width, so text order is time
-- order). Maps are JSON text. Tables are STRICT so a wrongly typed write fails loudly.

CREATE TABLE organizations (
    id            TEXT NOT NULL PRIMARY KEY,
    name          TEXT NOT NULL DEFAULT '',
    k8s_namespace TEXT NOT NULL DEFAULT '',
    created_at    TEXT NOT NULL
) STRICT;

CREATE TABLE sessions (
    id                   TEXT NOT NULL PRIMARY KEY,
    org_id               TEXT NOT NULL,
    user_id              TEXT NOT NULL DEFAULT '',
    namespace            TEXT NOT NULL DEFAULT '',
    template             TEXT NOT NULL DEFAULT '',
    state                TEXT NOT NULL DEFAULT 'pending',
    pod_name             TEXT NOT NULL DEFAULT '',
    url                  TEXT NOT NULL DEFAULT '',
    cpu                  TEXT NOT NULL DEFAULT '',
    memory               TEXT NOT NULL DEFAULT '',
    platform             TEXT NOT NULL DEFAULT '',
    agent_id             TEXT NOT NULL DEFAULT '',
    idle_timeout_seconds INTEGER NOT NULL DEFAULT 0,
    last_activity        TEXT NULL,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL,
    -- target of the connections foreign key, so a connection can never point into another org
    UNIQUE (id, org_id)
) STRICT;
CREATE INDEX sessions_org_user ON sessions (org_id, user_id);
CREATE INDEX sessions_agent ON sessions (agent_id);

CREATE TABLE session_shares (
    session_id  TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL,
    permissions TEXT NOT NULL DEFAULT '[]',
    created_at  TEXT NOT NULL,
    PRIMARY KEY (session_id, user_id)
) STRICT;

CREATE TABLE connections (
    id             TEXT NOT NULL PRIMARY KEY,
    session_id     TEXT NOT NULL,
    user_id        TEXT NOT NULL DEFAULT '',
    org_id         TEXT NOT NULL,
    client_ip      TEXT NOT NULL DEFAULT '',
    user_agent     TEXT NOT NULL DEFAULT '',
    replica        TEXT NOT NULL DEFAULT '',
    connected_at   TEXT NOT NULL,
    last_heartbeat TEXT NOT NULL,
    FOREIGN KEY (session_id, org_id) REFERENCES sessions (id, org_id) ON DELETE CASCADE
) STRICT;
CREATE INDEX connections_session ON connections (session_id);

CREATE TABLE agents (
    id              TEXT NOT NULL PRIMARY KEY,
    org_id          TEXT NOT NULL DEFAULT '',
    platform        TEXT NOT NULL DEFAULT '',
    region          TEXT NOT NULL DEFAULT '',
    status          TEXT NOT NULL DEFAULT 'offline',
    approval_status TEXT NOT NULL DEFAULT 'pending',
    api_key_hash    TEXT NOT NULL DEFAULT '',
    capacity        TEXT NOT NULL DEFAULT '{}',
    metadata        TEXT NOT NULL DEFAULT '{}',
    replica         TEXT NOT NULL DEFAULT '',
    last_heartbeat  TEXT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
) STRICT;

CREATE TABLE agent_commands (
    id              TEXT NOT NULL PRIMARY KEY,
    agent_id        TEXT NOT NULL,
    session_id      TEXT NOT NULL DEFAULT '',
    action          TEXT NOT NULL,
    payload         TEXT NOT NULL DEFAULT '{}',
    status          TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    error           TEXT NOT NULL DEFAULT '',
    result          TEXT NULL,
    created_at      TEXT NOT NULL,
    sent_at         TEXT NULL,
    acknowledged_at TEXT NULL,
    completed_at    TEXT NULL,
    expires_at      TEXT NULL,
    updated_at      TEXT NOT NULL
) STRICT;
CREATE INDEX agent_commands_agent_status ON agent_commands (agent_id, status, created_at);
