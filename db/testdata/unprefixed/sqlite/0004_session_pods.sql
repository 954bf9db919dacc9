-- The logs socket finds the session that runs a pod of an organization.
CREATE INDEX sessions_org_pod ON sessions (org_id, pod_name);
