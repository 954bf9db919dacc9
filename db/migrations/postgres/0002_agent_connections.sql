-- The connection that owns an agent's online status: cleanup of a replaced connection only
-- touches the row while it still names that connection.
ALTER TABLE {agents} ADD COLUMN connection_id TEXT NOT NULL DEFAULT '';
-- Commands waiting for an ack, scanned by the resend loop.
CREATE INDEX {agent_commands_status_sent} ON {agent_commands} (status, sent_at);
-- Unfinished commands with a deadline, scanned by the expiry loop.
CREATE INDEX {agent_commands_expires} ON {agent_commands} (expires_at) WHERE expires_at IS NOT NULL;
