package websocket_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
	"github.com/streamspace/streamspace-realtime/websocket"
)

// embedderAgentStore is the hub's store of an embedder whose sessions live in its own table
// (docs/EMBEDDING.md 5.1): agents and the command queue stay in this project's tables, while
// the session side of the agent protocol (status reports, the vnc_ready placement check) reads
// and writes the embedder's sessions table, as its old status handler did.
type embedderAgentStore struct {
	*db.Database
	sessions *embedderSessions
}

func (s embedderAgentStore) GetSession(ctx context.Context, id string) (models.Session, error) {
	return s.sessions.GetSession(ctx, id)
}

// ApplyAgentStatuses records each report on the embedder's row of a session placed on the
// reporting agent; any other session is not found, one answer for unknown and not placed.
func (s embedderAgentStore) ApplyAgentStatuses(ctx context.Context, agentID string, reports []db.AgentStatusReport) ([]db.AgentStatusResult, error) {
	out := make([]db.AgentStatusResult, len(reports))
	for i, r := range reports {
		before, err := s.sessions.GetSession(ctx, r.SessionID)
		if errors.Is(err, websocket.ErrNotFound) || (err == nil && before.AgentID != agentID) {
			continue
		}
		if err != nil {
			return nil, err
		}
		state := r.State
		if r.Delete {
			state = "terminated"
		}
		pod := before.PodName
		if r.PodName != "" {
			pod = r.PodName
		}
		changed := r.Delete || state != before.State || pod != before.PodName
		if changed {
			err := s.sessions.e.exec(ctx, `UPDATE sessions SET state = ?, pod_name = ?, updated_at = ? WHERE id = ? AND agent_id = ?`,
				state, pod, time.Now().UTC(), r.SessionID, agentID)
			if err != nil {
				return nil, fmt.Errorf("embedder: record status of %q: %w", r.SessionID, err)
			}
		}
		out[i] = db.AgentStatusResult{Found: true, Before: before, Changed: changed}
	}
	return out, nil
}

// TestEmbeddingStatusReportsReachOwnSessions: with the hub's store wrapping the Database, an
// agent's status report changes the embedder's own session row and reaches its browsers as
// session.state.changed; a report of a session not placed on the agent changes nothing and is
// answered with an error frame.
func TestEmbeddingStatusReportsReachOwnSessions(t *testing.T) {
	for _, dialect := range []db.Dialect{db.SQLite, db.Postgres} {
		t.Run(dialect.String(), func(t *testing.T) {
			e := openEmbedderDB(t, dialect)
			createEmbedderSchema(t, e)
			seedEmbedderRows(t, e, time.Now())
			s := startEmbedder(t, e, func(d *db.Database, sessions *embedderSessions) websocket.AgentStore {
				return embedderAgentStore{Database: d, sessions: sessions}
			})

			operator, code := dialEmbedBrowser(t, s, "tok-operator", "")
			if code != http.StatusSwitchingProtocols {
				t.Fatalf("operator: HTTP %d, want 101", code)
			}
			nextFrame(t, operator, "sessions_update", nil)
			agent, code := dialEmbedAgent(t, s, embedAgentID, embedAgentKey)
			if code != http.StatusSwitchingProtocols {
				t.Fatalf("agent connect: HTTP %d, want 101", code)
			}
			testkit.Eventually(t, embedReadWait, "the agent is connected", func() bool {
				return s.hub.IsAgentConnected(embedAgentID)
			})
			otherBefore := e.rows(t, "sessions")

			sendAgentFrame(t, agent, "status", map[string]any{
				"sessionId": embedBobSess, "state": "running",
				"platformMetadata": map[string]any{"podName": "ss-bob-gimp-0"},
			})
			ev := nextFrame(t, operator, string(websocket.EventSessionStateChange), func(f embedFrame) bool {
				return f["sessionId"] == embedBobSess
			})
			if data, _ := ev["data"].(map[string]any); data["oldState"] != "pending" || data["newState"] != "running" || data["podName"] != "ss-bob-gimp-0" {
				t.Errorf("state change event = %v, want pending -> running on pod ss-bob-gimp-0", ev)
			}
			row, err := s.sessions.GetSession(t.Context(), embedBobSess)
			if err != nil || row.State != "running" || row.PodName != "ss-bob-gimp-0" {
				t.Errorf("embedder's row of %s = %+v, %v; want running on ss-bob-gimp-0", embedBobSess, row, err)
			}

			// Another organization's session, not placed on this agent: refused, untouched.
			sendAgentFrame(t, agent, "status", map[string]any{"sessionId": embedOtherSess, "state": "failed"})
			nextFrame(t, agent, "error", func(f embedFrame) bool { return f.payload()["sessionId"] == embedOtherSess })
			other, err := s.sessions.GetSession(t.Context(), embedOtherSess)
			if err != nil || other.State != "running" {
				t.Errorf("the other organization's session = %+v, %v; want it still running", other, err)
			}
			if len(otherBefore) != len(e.rows(t, "sessions")) {
				t.Errorf("the embedder's sessions table gained or lost rows")
			}
		})
	}
}
