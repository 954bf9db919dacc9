-- The organization whose session a command acts on (or, without a session, its agent's): the
-- one organization whose admins may read the command and its result. Empty for commands stored
-- before it was recorded, which are read with the old rule.
ALTER TABLE agent_commands ADD COLUMN org_id TEXT NOT NULL DEFAULT '';
