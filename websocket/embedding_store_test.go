package websocket_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/streamspace/streamspace-realtime/models"
	"github.com/streamspace/streamspace-realtime/websocket"
)

// embedderSessions is the embedder's session source: websocket.SessionStore over its own
// sessions and organizations tables, whose columns it maps onto models.Session. The Manager
// reads session lists and authorizes subscriptions through it; nothing of it writes.
type embedderSessions struct{ e *embedderDB }

var _ websocket.SessionStore = (*embedderSessions)(nil)

const embedderSessionColumns = `id, user_id, COALESCE(org_id, ''), COALESCE(template_name, ''),
	COALESCE(state, ''), COALESCE(namespace, ''), COALESCE(platform, ''), COALESCE(pod_name, ''),
	COALESCE(url, ''), COALESCE(cpu, ''), COALESCE(memory, ''), COALESCE(agent_id, ''),
	COALESCE(idle_timeout, ''), COALESCE(active_connections, 0), last_activity, created_at, updated_at`

type rowScanner interface{ Scan(dest ...any) error }

// scanSession maps one row of the embedder's sessions table.
func scanSession(r rowScanner) (models.Session, error) {
	var (
		s             models.Session
		idle          string
		lastActivity  sql.NullTime
		created, upd  sql.NullTime
		activeViewers int64
	)
	if err := r.Scan(&s.ID, &s.UserID, &s.OrgID, &s.Template, &s.State, &s.Namespace, &s.Platform,
		&s.PodName, &s.URL, &s.CPU, &s.Memory, &s.AgentID, &idle, &activeViewers,
		&lastActivity, &created, &upd); err != nil {
		return models.Session{}, err
	}
	// StreamSpace keeps the idle timeout as a duration string ("30m").
	if d, err := time.ParseDuration(idle); err == nil && d > 0 {
		s.IdleTimeoutSeconds = int64(d / time.Second)
	}
	s.State = strings.ToLower(s.State)
	s.ActiveConnections = int(activeViewers)
	s.LastActivity = lastActivity.Time
	s.CreatedAt, s.UpdatedAt = created.Time, upd.Time
	return s, nil
}

func (s *embedderSessions) GetSession(ctx context.Context, id string) (models.Session, error) {
	row := s.e.sql.QueryRowContext(ctx, s.e.rebind(`SELECT `+embedderSessionColumns+` FROM sessions WHERE id = ?`), id)
	sess, err := scanSession(row)
	if errors.Is(err, sql.ErrNoRows) {
		return models.Session{}, fmt.Errorf("embedder: session %q: %w", id, websocket.ErrNotFound)
	}
	if err != nil {
		return models.Session{}, fmt.Errorf("embedder: session %q: %w", id, err)
	}
	return sess, nil
}

// ListSessions returns the organization's sessions, or with userID those the user owns plus
// extraIDs (sessions shared with it), never outside orgID.
func (s *embedderSessions) ListSessions(ctx context.Context, orgID, userID string, extraIDs ...string) ([]models.Session, error) {
	q := `SELECT ` + embedderSessionColumns + ` FROM sessions WHERE org_id = ?`
	args := []any{orgID}
	if userID != "" {
		q += ` AND (user_id = ?`
		args = append(args, userID)
		if len(extraIDs) > 0 {
			q += ` OR id IN (?` + strings.Repeat(`, ?`, len(extraIDs)-1) + `)`
			for _, id := range extraIDs {
				args = append(args, id)
			}
		}
		q += `)`
	}
	rows, err := s.e.sql.QueryContext(ctx, s.e.rebind(q+` ORDER BY created_at, id`), args...)
	if err != nil {
		return nil, fmt.Errorf("embedder: list sessions of %q: %w", orgID, err)
	}
	defer rows.Close()
	out := []models.Session{}
	for rows.Next() {
		sess, err := scanSession(rows)
		if err != nil {
			return nil, fmt.Errorf("embedder: list sessions of %q: %w", orgID, err)
		}
		out = append(out, sess)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("embedder: list sessions of %q: %w", orgID, err)
	}
	return out, nil
}

func (s *embedderSessions) GetOrganization(ctx context.Context, id string) (models.Organization, error) {
	var (
		org     models.Organization
		created sql.NullTime
	)
	err := s.e.sql.QueryRowContext(ctx, s.e.rebind(
		`SELECT id, name, k8s_namespace, created_at FROM organizations WHERE id = ?`), id).
		Scan(&org.ID, &org.Name, &org.K8sNamespace, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return models.Organization{}, fmt.Errorf("embedder: organization %q: %w", id, websocket.ErrNotFound)
	}
	if err != nil {
		return models.Organization{}, fmt.Errorf("embedder: organization %q: %w", id, err)
	}
	org.CreatedAt = created.Time
	return org, nil
}

// IsSessionSharedWith: this server has no session shares, so a user sees its own sessions and
// operators and admins their organization's.
func (s *embedderSessions) IsSessionSharedWith(context.Context, string, string) (bool, error) {
	return false, nil
}
