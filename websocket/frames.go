package websocket

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/streamspace/streamspace-realtime/cluster"
	"github.com/streamspace/streamspace-realtime/models"
)

// connectedFrame is the first frame of a sessions socket (PROTOCOL.md 2.3):
// where in its org's stream the client starts.
func connectedFrame(clientID string, pos cluster.Position, recovered bool) []byte {
	b, _ := json.Marshal(struct {
		Type      string `json:"type"`
		ClientID  string `json:"clientId"`
		Epoch     string `json:"epoch"`
		Offset    uint64 `json:"offset"`
		Recovered bool   `json:"recovered"`
	}{"connected", clientID, pos.Epoch, pos.Offset, recovered})
	return b
}

// SessionView is one session as browsers see it in `sessions_update`
// (StreamSpace's shape, PROTOCOL.md 2.3).
type SessionView struct {
	Name              string          `json:"name"`
	Namespace         string          `json:"namespace"`
	User              string          `json:"user"`
	Template          string          `json:"template"`
	State             string          `json:"state"`
	CreatedAt         time.Time       `json:"createdAt"`
	ActiveConnections int             `json:"activeConnections"`
	Status            SessionStatus   `json:"status"`
	Resources         SessionResource `json:"resources"`
	Platform          string          `json:"platform"`
	AgentID           string          `json:"agent_id"`
	LastActivity      *time.Time      `json:"lastActivity"`
	SessionIdleness
}

// SessionIdleness is the idle state of a SessionView, present (its fields inline in the JSON)
// only when the session has an idle timeout.
type SessionIdleness struct {
	IdleDuration  *int64 `json:"idleDuration,omitempty"`
	IdleThreshold *int64 `json:"idleThreshold,omitempty"`
	IsIdle        *bool  `json:"isIdle,omitempty"`
	IsActive      *bool  `json:"isActive,omitempty"`
}

// SessionStatus is the status block of a SessionView.
type SessionStatus struct {
	Phase   string `json:"phase"`
	PodName string `json:"podName"`
	URL     string `json:"url"`
}

// SessionResource is the resources block of a SessionView.
type SessionResource struct {
	Memory string `json:"memory"`
	CPU    string `json:"cpu"`
}

// NewSessionView renders s as browsers see it at now.
func NewSessionView(s models.Session, now time.Time) SessionView {
	state := strings.ToLower(s.State)
	v := SessionView{
		Name:              s.ID,
		Namespace:         s.Namespace,
		User:              s.UserID,
		Template:          s.Template,
		State:             state,
		CreatedAt:         s.CreatedAt.UTC(),
		ActiveConnections: s.ActiveConnections,
		Status:            SessionStatus{Phase: phaseOf(state), PodName: s.PodName, URL: s.URL},
		Resources:         SessionResource{Memory: s.Memory, CPU: s.CPU},
		Platform:          s.Platform,
		AgentID:           s.AgentID,
	}
	if !s.LastActivity.IsZero() {
		t := s.LastActivity.UTC()
		v.LastActivity = &t
	}
	if s.IdleTimeoutSeconds > 0 {
		since := s.LastActivity
		if since.IsZero() {
			since = s.CreatedAt
		}
		idle := int64(now.Sub(since) / time.Second)
		if idle < 0 {
			idle = 0
		}
		threshold := s.IdleTimeoutSeconds
		isIdle := idle >= threshold
		isActive := !isIdle
		v.IdleDuration, v.IdleThreshold, v.IsIdle, v.IsActive = &idle, &threshold, &isIdle, &isActive
	}
	return v
}

// phaseOf is the state with its first letter upper case ("running" → "Running").
func phaseOf(state string) string {
	if state == "" {
		return ""
	}
	return strings.ToUpper(state[:1]) + state[1:]
}

// sessionsUpdateFrame renders a `sessions_update` snapshot.
func sessionsUpdateFrame(orgID string, sessions []models.Session, now time.Time) ([]byte, error) {
	views := make([]SessionView, 0, len(sessions))
	for _, s := range sessions {
		views = append(views, NewSessionView(s, now))
	}
	return json.Marshal(struct {
		Type      string        `json:"type"`
		Sessions  []SessionView `json:"sessions"`
		Count     int           `json:"count"`
		OrgID     string        `json:"org_id"`
		Timestamp time.Time     `json:"timestamp"`
	}{"sessions_update", views, len(views), orgID, now.UTC()})
}
