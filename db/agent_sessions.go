package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/streamspace/streamspace-realtime/models"
)

var (
	qSessionForUpdate = dialectQuery(
		`SELECT `+sessionColumns+` FROM {sessions} s WHERE s.id = ?`, // the IMMEDIATE transaction holds the write lock
		`SELECT `+sessionColumns+` FROM {sessions} s WHERE s.id = ? FOR UPDATE OF s`)
	qSetSessionStateAndPod = newQuery(`UPDATE {sessions} SET state = ?, pod_name = ?, updated_at = ? WHERE id = ?`)
)

// AgentStatusReport is what an agent last reported of one session placed on it: its state
// and, when PodName is not empty, its pod; or, with Delete, that the session is gone.
type AgentStatusReport struct {
	SessionID string
	State     string
	PodName   string
	Delete    bool
}

// AgentStatusResult is the outcome of one AgentStatusReport.
type AgentStatusResult struct {
	// Found is false when the session does not exist or is not placed on the reporting agent
	// (one answer for both: an agent learns nothing of others' sessions).
	Found bool
	// Before is the session as it was before the report.
	Before models.Session
	// Changed: the state or the pod changed, or the session was deleted.
	Changed bool
}

// ApplyAgentStatus records what an agent reports of a session placed on it: the new state
// and, when podName is not empty, the pod. It returns the session as it was before, and
// whether anything changed; ErrNotFound when the session does not exist or is not placed on
// agentID. See ApplyAgentStatuses.
func (d *Database) ApplyAgentStatus(ctx context.Context, agentID, sessionID, state, podName string) (before models.Session, changed bool, err error) {
	res, err := d.ApplyAgentStatuses(ctx, agentID, []AgentStatusReport{{SessionID: sessionID, State: state, PodName: podName}})
	if err != nil {
		return models.Session{}, false, err
	}
	if !res[0].Found {
		return models.Session{}, false, fmt.Errorf("db: session %q of agent %q: %w", sessionID, agentID, ErrNotFound)
	}
	return res[0].Before, res[0].Changed, nil
}

// ApplyAgentStatuses records an agent's reports of sessions placed on it, all in one
// transaction: each session is read, checked and written with its row locked, so a report can
// neither land on a session that was just placed elsewhere nor undo a concurrent change it
// never saw. Rows are locked in the order of their ids, so two batches never wait on each
// other in a cycle. Results are in the order of reports; give each session once.
func (d *Database) ApplyAgentStatuses(ctx context.Context, agentID string, reports []AgentStatusReport) ([]AgentStatusResult, error) {
	order := make([]int, len(reports))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(reports[a].SessionID, reports[b].SessionID) })
	results := make([]AgentStatusResult, len(reports))
	err := d.inTx(ctx, func(tx *sql.Tx) error {
		at := d.timeArg(d.now())
		for _, i := range order {
			r := reports[i]
			s, err := scanSession(d.queryRow(ctx, tx, qSessionForUpdate, r.SessionID))
			if errors.Is(err, sql.ErrNoRows) || (err == nil && s.AgentID != agentID) {
				continue
			}
			if err != nil {
				return err
			}
			res := &results[i]
			res.Found, res.Before = true, s
			if r.Delete {
				res.Changed = true
				if _, err := d.exec(ctx, tx, qDeleteSession, s.ID); err != nil {
					return err
				}
				continue
			}
			pod := s.PodName
			if r.PodName != "" {
				pod = r.PodName
			}
			if s.State == r.State && s.PodName == pod {
				continue
			}
			res.Changed = true
			if _, err := d.exec(ctx, tx, qSetSessionStateAndPod, r.State, pod, at, s.ID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("db: apply %d status reports of agent %q: %w", len(reports), agentID, err)
	}
	return results, nil
}
