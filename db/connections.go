package db

import (
	"context"
	"fmt"
	"time"

	"github.com/streamspace/streamspace-realtime/models"
)

var (
	qAddConnection = newQuery(`
		INSERT INTO {connections} (id, session_id, user_id, org_id, client_ip, user_agent, replica,
			connected_at, last_heartbeat) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	qRemoveConnection  = newQuery(`DELETE FROM {connections} WHERE id = ?`)
	qCountConnections  = newQuery(`SELECT COUNT(*) FROM {connections} WHERE session_id = ?`)
	qTouchConnections  = newQuery(`UPDATE {connections} SET last_heartbeat = ? WHERE replica = ?`)
	qSweepConnections  = newQuery(`DELETE FROM {connections} WHERE last_heartbeat < ?`)
	qForgetConnections = newQuery(`DELETE FROM {connections} WHERE replica = ?`)
)

// AddConnection records a browser viewing a session. The foreign key is (session_id, org_id),
// so a connection whose OrgID is not its session's org is refused like a missing session:
// ErrNotFound. ErrConflict when the id exists. Zero ConnectedAt is now; zero LastHeartbeat is
// ConnectedAt. The browser's ClientIP and UserAgent are stored cut to models.MaxClientIPLen
// and models.MaxUserAgentLen: whatever a browser sends, its row stays small.
func (d *Database) AddConnection(ctx context.Context, c models.Connection) error {
	c.ClientIP = models.TruncateUTF8(c.ClientIP, models.MaxClientIPLen)
	c.UserAgent = models.TruncateUTF8(c.UserAgent, models.MaxUserAgentLen)
	if c.ConnectedAt.IsZero() {
		c.ConnectedAt = d.now()
	}
	if c.LastHeartbeat.IsZero() {
		c.LastHeartbeat = c.ConnectedAt
	}
	_, err := d.exec(ctx, d.db, qAddConnection, c.ID, c.SessionID, c.UserID, c.OrgID, c.ClientIP,
		c.UserAgent, c.Replica, d.timeArg(c.ConnectedAt), d.timeArg(c.LastHeartbeat))
	switch {
	case err == nil:
		return nil
	case isForeignKeyViolation(err):
		return fmt.Errorf("db: add connection %q: session %q in org %q: %w", c.ID, c.SessionID, c.OrgID, ErrNotFound)
	case isUniqueViolation(err):
		return fmt.Errorf("db: add connection %q: %w", c.ID, ErrConflict)
	}
	return fmt.Errorf("db: add connection %q: %w", c.ID, err)
}

// RemoveConnection forgets a connection. Removing one that is already gone (its session was
// deleted, or cleanup ran twice) is not an error, so disconnect paths stay simple.
func (d *Database) RemoveConnection(ctx context.Context, id string) error {
	if _, err := d.exec(ctx, d.db, qRemoveConnection, id); err != nil {
		return fmt.Errorf("db: remove connection %q: %w", id, err)
	}
	return nil
}

// CountConnections returns how many browsers view the session, on every replica.
func (d *Database) CountConnections(ctx context.Context, sessionID string) (int, error) {
	var n int
	if err := d.queryRow(ctx, d.db, qCountConnections, sessionID).Scan(&n); err != nil {
		return 0, fmt.Errorf("db: count connections of session %q: %w", sessionID, err)
	}
	return n, nil
}

// TouchConnections marks every connection of replica alive at at, in one statement: the
// replica still holds them.
func (d *Database) TouchConnections(ctx context.Context, replica string, at time.Time) error {
	if _, err := d.exec(ctx, d.db, qTouchConnections, d.timeArg(at), replica); err != nil {
		return fmt.Errorf("db: touch connections of replica %q: %w", replica, err)
	}
	return nil
}

// SweepConnections deletes the connections not touched since before: their replica died
// without removing them. It returns how many it deleted.
func (d *Database) SweepConnections(ctx context.Context, before time.Time) (int64, error) {
	n, err := d.execAffected(ctx, d.db, qSweepConnections, d.timeArg(before))
	if err != nil {
		return 0, fmt.Errorf("db: sweep connections: %w", err)
	}
	return n, nil
}

// ForgetConnections deletes every connection of replica: a replica starting again holds none
// of the rows its previous run left.
func (d *Database) ForgetConnections(ctx context.Context, replica string) error {
	if _, err := d.exec(ctx, d.db, qForgetConnections, replica); err != nil {
		return fmt.Errorf("db: forget connections of replica %q: %w", replica, err)
	}
	return nil
}
