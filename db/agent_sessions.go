package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/streamspace/streamspace-realtime/models"
)

var (
	qSessionForUpdate = dialectQuery(
		`SELECT `+sessionColumns+` FROM sessions s WHERE s.id = ?`, // the IMMEDIATE transaction holds the write lock
		`SELECT `+sessionColumns+` FROM sessions s WHERE s.id = ? FOR UPDATE OF s`)
	qSetSessionStateAndPod = newQuery(`UPDATE sessions SET state = ?, pod_name = ?, updated_at = ? WHERE id = ?`)
)

// ApplyAgentStatus records what an agent reports of a session placed on it: the new state
// and, when podName is not empty, the pod. The session is read, checked and written in one
// transaction with its row locked, so the report can neither land on a session that was just
// placed elsewhere nor undo a concurrent change it never saw. It returns the session as it was
// before, and whether anything changed. ErrNotFound when the session does not exist or is not
// placed on agentID (one answer for both: an agent learns nothing of others' sessions).
func (d *Database) ApplyAgentStatus(ctx context.Context, agentID, sessionID, state, podName string) (before models.Session, changed bool, err error) {
	err = d.inTx(ctx, func(tx *sql.Tx) error {
		s, err := scanSession(d.queryRow(ctx, tx, qSessionForUpdate, sessionID))
		if err != nil {
			return err
		}
		if s.AgentID != agentID {
			return sql.ErrNoRows
		}
		before = s
		pod := s.PodName
		if podName != "" {
			pod = podName
		}
		if s.State == state && s.PodName == pod {
			return nil
		}
		changed = true
		_, err = d.exec(ctx, tx, qSetSessionStateAndPod, state, pod, d.timeArg(d.now()), sessionID)
		return err
	})
	if errors.Is(err, sql.ErrNoRows) {
		return models.Session{}, false, fmt.Errorf("db: session %q of agent %q: %w", sessionID, agentID, ErrNotFound)
	}
	if err != nil {
		return models.Session{}, false, fmt.Errorf("db: apply status of session %q: %w", sessionID, err)
	}
	return before, changed, nil
}
