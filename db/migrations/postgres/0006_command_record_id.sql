-- The caller's own identifier of a command (models.AgentCommand.ID), for example the primary
-- key of an embedding server's own commands table: stored and read back, never sent to the
-- agent. Empty for commands stored without one.
ALTER TABLE {agent_commands} ADD COLUMN record_id TEXT NOT NULL DEFAULT '';
