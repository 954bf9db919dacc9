-- Whether session.idle was announced for the session's current idle spell; flipped by a
-- guarded update, so one replica announces each change.
ALTER TABLE sessions ADD COLUMN idle_announced BOOLEAN NOT NULL DEFAULT FALSE;
-- Connection rows are refreshed and swept per replica, and counted per organization.
CREATE INDEX connections_replica ON connections (replica, last_heartbeat);
CREATE INDEX connections_org ON connections (org_id);
