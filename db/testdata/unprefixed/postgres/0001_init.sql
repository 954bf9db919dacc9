-- Timestamps are TIMESTAMPTZ (UTC, microseconds). Maps are JSON text, as on SQLite, so every
-- statement is written once for both dialects.

CREATE TABLE organizations (
    id            TEXT NOT NULL PRIMARY KEY,
    name          TEXT NOT NULL DEFAULT '',
    k8s_namespace TEXT NOT NULL DEFAULT '',
    created_at    TIMESTAMPTZ NOT NULL
);

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
    idle_timeout_seconds BIGINT NOT NULL DEFAULT 0,
    last_activity        TIMESTAMPTZ NULL,
    created_at           TIMESTAMPTZ NOT NULL,
    updated_at           TIMESTAMPTZ NOT NULL,
    -- target of the connections foreign key, so a connection can never point into another org
    UNIQUE (id, org_id)
);
CREATE INDEX sessions_org_user ON sessions (org_id, user_id);
CREATE INDEX sessions_agent ON sessions (agent_id);

CREATE TABLE session_shares (
    session_id  TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL,
    permissions TEXT NOT NULL DEFAULT '[]',
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (session_id, user_id)
);

CREATE TABLE connections (
    id             TEXT NOT NULL PRIMARY KEY,
    session_id     TEXT NOT NULL,
    user_id        TEXT NOT NULL DEFAULT '',
    org_id         TEXT NOT NULL,
    client_ip      TEXT NOT NULL DEFAULT '',
    user_agent     TEXT NOT NULL DEFAULT '',
    replica        TEXT NOT NULL DEFAULT '',
    connected_at   TIMESTAMPTZ NOT NULL,
    last_heartbeat TIMESTAMPTZ NOT NULL,
    FOREIGN KEY (session_id, org_id) REFERENCES sessions (id, org_id) ON DELETE CASCADE
);
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
    last_heartbeat  TIMESTAMPTZ NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);

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
    created_at      TIMESTAMPTZ NOT NULL,
    sent_at         TIMESTAMPTZ NULL,
    acknowledged_at TIMESTAMPTZ NULL,
    completed_at    TIMESTAMPTZ NULL,
    expires_at      TIMESTAMPTZ NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX agent_commands_agent_status ON agent_commands (agent_id, status, created_at);
