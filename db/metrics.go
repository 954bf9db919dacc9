package db

import (
	"context"
	"fmt"

	"github.com/streamspace/streamspace-realtime/models"
)

// qOrgMetrics counts everything `metrics_update` shows for one organization in one round
// trip; each count uses an index on org_id (agents are few).
var qOrgMetrics = newQuery(`SELECT
	(SELECT COUNT(*) FROM {sessions} WHERE org_id = ? AND state = 'running'),
	(SELECT COUNT(*) FROM {sessions} WHERE org_id = ? AND state = 'hibernated'),
	(SELECT COUNT(*) FROM {sessions} WHERE org_id = ?),
	(SELECT COUNT(*) FROM {connections} WHERE org_id = ?),
	(SELECT COUNT(*) FROM {agents} WHERE (org_id = ? OR org_id = '') AND status IN ` + onlineStatuses + `),
	(SELECT COUNT(*) FROM {agents} WHERE org_id = ? OR org_id = '')`)

// OrgMetrics returns the organization's session, connection and agent counts.
func (d *Database) OrgMetrics(ctx context.Context, orgID string) (models.OrgMetrics, error) {
	var m models.OrgMetrics
	err := d.queryRow(ctx, d.db, qOrgMetrics, orgID, orgID, orgID, orgID, orgID, orgID).Scan(
		&m.SessionsRunning, &m.SessionsHibernated, &m.SessionsTotal, &m.ActiveConnections,
		&m.AgentsOnline, &m.AgentsTotal)
	if err != nil {
		return models.OrgMetrics{}, fmt.Errorf("db: metrics of org %q: %w", orgID, err)
	}
	return m, nil
}
