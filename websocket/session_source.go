package websocket

import (
	"context"
	"fmt"
	"slices"

	"github.com/streamspace/streamspace-realtime/models"
)

// listSessions reads an organization's sessions from the session source: the database, or
// with a Kubernetes client the Session resources of the organization's namespace (served from
// an informer's cache) merged with the database's fields. userID "" means every session of
// the organization; otherwise the user's own plus extraIDs. recorded are the sessions the
// database has rows for, the ones whose idleness can be recorded.
func (m *Manager) listSessions(ctx context.Context, orgID, namespace, userID string, extraIDs ...string) (sessions, recorded []models.Session, err error) {
	if m.k8s == nil {
		if m.store == nil {
			return nil, nil, nil
		}
		sessions, err = m.store.ListSessions(ctx, orgID, userID, extraIDs...)
		return sessions, sessions, err
	}
	resources, err := m.k8s.ListSessions(ctx, namespace)
	if err != nil {
		return nil, nil, fmt.Errorf("sessions of org %q: %w", orgID, err)
	}
	var rows []models.Session
	if m.store != nil {
		if rows, err = m.store.ListSessions(ctx, orgID, ""); err != nil {
			return nil, nil, fmt.Errorf("sessions of org %q: %w", orgID, err)
		}
	}
	sessions, recorded = mergeSessions(orgID, resources, rows, userID, extraIDs)
	return sessions, recorded, nil
}

// mergeSessions joins Session resources with the database rows of the same ids. Kubernetes
// says which sessions exist and their state, pod, URL, owner and resources; the database adds
// what only the control plane knows: browser connections, activity, idleness and the agent.
func mergeSessions(orgID string, resources, rows []models.Session, userID string, extraIDs []string) (sessions, recorded []models.Session) {
	byID := make(map[string]models.Session, len(rows))
	for _, r := range rows {
		byID[r.ID] = r
	}
	sessions = make([]models.Session, 0, len(resources))
	for _, s := range resources {
		if userID != "" && s.UserID != userID && !slices.Contains(extraIDs, s.ID) {
			continue
		}
		s.OrgID = orgID
		row, ok := byID[s.ID]
		if ok {
			s.ActiveConnections = row.ActiveConnections
			s.AgentID = row.AgentID
			s.IdleAnnounced = row.IdleAnnounced
			s.UpdatedAt = row.UpdatedAt
			if row.LastActivity.After(s.LastActivity) {
				s.LastActivity = row.LastActivity
			}
			if s.IdleTimeoutSeconds == 0 {
				s.IdleTimeoutSeconds = row.IdleTimeoutSeconds
			}
		}
		sessions = append(sessions, s)
		if ok {
			recorded = append(recorded, s)
		}
	}
	return sessions, recorded
}
