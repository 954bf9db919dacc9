package websocket

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/streamspace/streamspace-realtime/models"
)

// listSessions reads an organization's sessions from the session source: the database, or
// with a Kubernetes client the Session resources of the organization's namespace (served from
// an informer's cache) that are the organization's (see ownsResource), merged with the
// database's fields. userID "" means every session of the organization; otherwise the user's
// own plus extraIDs. recorded are the sessions the database has rows for, the ones whose
// idleness can be recorded.
func (m *Manager) listSessions(ctx context.Context, orgID, namespace, userID string, extraIDs ...string) (sessions, recorded []models.Session, err error) {
	if m.source == nil {
		if m.store == nil {
			return nil, nil, nil
		}
		sessions, err = m.store.ListSessions(ctx, orgID, userID, extraIDs...)
		return sessions, sessions, err
	}
	resources, err := m.source.ListSessions(ctx, namespace)
	if err != nil {
		return nil, nil, fmt.Errorf("sessions of org %q: %w", orgID, err)
	}
	var rows []models.Session
	if m.store != nil {
		if rows, err = m.store.ListSessions(ctx, orgID, ""); err != nil {
			return nil, nil, fmt.Errorf("sessions of org %q: %w", orgID, err)
		}
	}
	sessions, recorded = mergeSessions(orgID, m.sharedNamespace(namespace), resources, rows, userID, extraIDs)
	return sessions, recorded, nil
}

// sharedNamespace reports whether namespace is the default namespace, the one every
// organization without a namespace of its own falls back to. Any other namespace an
// organization reads was named for it, by its token's k8s_namespace or its organization row.
func (m *Manager) sharedNamespace(namespace string) bool {
	return namespace == m.cfg.DefaultNamespace
}

// ownsResource decides whether the Session resource s, read from a namespace the caller's
// organization orgID lists, is that organization's. The resource's own word comes first: one
// that names an organization (k8s.OrgKey, read into s.OrgID) is that organization's and no
// other's, whatever the namespace. One that names none is the organization's in a namespace
// named for it; in the shared default namespace it is only when the organization has the
// database row of that session id (hasRow), and otherwise nobody's.
func ownsResource(orgID string, shared bool, s models.Session, hasRow bool) bool {
	if s.OrgID != "" {
		return s.OrgID == orgID
	}
	return !shared || hasRow
}

// mergeSessions joins the organization's Session resources (ownsResource; rows are the
// organization's database rows) with the rows of the same ids. Kubernetes says which sessions
// exist and their state, pod, URL, owner and resources; the database adds what only the control
// plane knows: browser connections, activity, idleness and the agent.
func mergeSessions(orgID string, shared bool, resources, rows []models.Session, userID string, extraIDs []string) (sessions, recorded []models.Session) {
	byID := make(map[string]models.Session, len(rows))
	for _, r := range rows {
		byID[r.ID] = r
	}
	sessions = make([]models.Session, 0, len(resources))
	for _, s := range resources {
		row, ok := byID[s.ID]
		if !ownsResource(orgID, shared, s, ok) {
			continue
		}
		if userID != "" && s.UserID != userID && !slices.Contains(extraIDs, s.ID) {
			continue
		}
		s.OrgID = orgID
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

// PodStore finds the session that runs a pod of an organization. *db.Database implements it.
type PodStore interface {
	GetSessionByPod(ctx context.Context, orgID, podName string) (models.Session, error)
}

// sessionByPod finds the session of orgID that runs podName, in the session source. With
// Kubernetes it is a Session resource of the namespace that is the organization's by the rule
// of the sessions list (ownsResource): a resource of another organization, or one that names
// none in the shared default namespace, is not found, as a pod no resource names is.
func (m *Manager) sessionByPod(ctx context.Context, orgID, namespace, podName string) (models.Session, error) {
	notFound := fmt.Errorf("logs of %s/%s for org %q: %w", namespace, podName, orgID, ErrPodNotFound)
	if !models.ValidName(podName) || podName == "" {
		return models.Session{}, notFound // no pod has a name that is not one
	}
	if m.source != nil {
		sessions, err := m.source.ListSessions(ctx, namespace)
		if err != nil {
			return models.Session{}, fmt.Errorf("logs of %s/%s: %w", namespace, podName, err)
		}
		shared := m.sharedNamespace(namespace)
		for _, s := range sessions {
			if s.PodName != podName {
				continue
			}
			hasRow := false
			if shared && s.OrgID == "" { // only then does the row decide
				if hasRow, err = m.hasSessionRow(ctx, orgID, s.ID); err != nil {
					return models.Session{}, fmt.Errorf("logs of %s/%s: %w", namespace, podName, err)
				}
			}
			if ownsResource(orgID, shared, s, hasRow) {
				s.OrgID = orgID
				return s, nil
			}
		}
		return models.Session{}, notFound
	}
	store, ok := m.store.(PodStore)
	if !ok {
		return models.Session{}, notFound
	}
	s, err := store.GetSessionByPod(ctx, orgID, podName)
	if errors.Is(err, ErrNotFound) {
		return models.Session{}, notFound
	}
	if err != nil {
		return models.Session{}, fmt.Errorf("logs of %s/%s: %w", namespace, podName, err)
	}
	return s, nil
}

// hasSessionRow reports whether the database has session id as a row of orgID.
func (m *Manager) hasSessionRow(ctx context.Context, orgID, id string) (bool, error) {
	if m.store == nil {
		return false, nil
	}
	row, err := m.store.GetSession(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return row.OrgID == orgID, nil
}
