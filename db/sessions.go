package db

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/streamspace/streamspace-realtime/models"
)

// sessionColumns is the select list every session read uses, with the live connection count
// computed in the same statement (connections_session index), never one query per session.
const sessionColumns = `s.id, s.org_id, s.user_id, s.namespace, s.template, s.state, s.pod_name,
	s.url, s.cpu, s.memory, s.platform, s.agent_id, s.idle_timeout_seconds, s.last_activity,
	s.created_at, s.updated_at, s.idle_announced,
	(SELECT COUNT(*) FROM {connections} c WHERE c.session_id = s.id) AS active_connections`

const sessionInsert = `INSERT INTO {sessions} (id, org_id, user_id, namespace, template, state,
	pod_name, url, cpu, memory, platform, agent_id, idle_timeout_seconds, last_activity,
	created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

var (
	qCreateSession = newQuery(sessionInsert + ` ON CONFLICT (id) DO NOTHING`)
	// The WHERE keeps an upsert from moving a session into another org: a row of another org
	// is left alone and no row counts as affected.
	qUpsertSession = newQuery(sessionInsert + ` ON CONFLICT (id) DO UPDATE SET
		user_id = excluded.user_id, namespace = excluded.namespace, template = excluded.template,
		state = excluded.state, pod_name = excluded.pod_name, url = excluded.url,
		cpu = excluded.cpu, memory = excluded.memory, platform = excluded.platform,
		agent_id = excluded.agent_id, idle_timeout_seconds = excluded.idle_timeout_seconds,
		last_activity = COALESCE(excluded.last_activity, {sessions}.last_activity),
		updated_at = excluded.updated_at
		WHERE {sessions}.org_id = excluded.org_id`)
	qGetSession      = newQuery(`SELECT ` + sessionColumns + ` FROM {sessions} s WHERE s.id = ?`)
	qGetSessionByPod = newQuery(`SELECT ` + sessionColumns + ` FROM {sessions} s
		WHERE s.org_id = ? AND s.pod_name = ? ORDER BY s.created_at DESC, s.id LIMIT 1`)
	qDeleteSession    = newQuery(`DELETE FROM {sessions} WHERE id = ?`)
	qListOrgSessions  = newQuery(`SELECT ` + sessionColumns + ` FROM {sessions} s WHERE s.org_id = ? ORDER BY s.created_at, s.id`)
	qListUserSessions = dialectQuery(
		`SELECT `+sessionColumns+` FROM {sessions} s WHERE s.org_id = ?
		AND (s.user_id = ? OR s.id IN (SELECT value FROM json_each(?)))
		ORDER BY s.created_at, s.id`,
		`SELECT `+sessionColumns+` FROM {sessions} s WHERE s.org_id = ?
		AND (s.user_id = ? OR s.id IN (SELECT jsonb_array_elements_text(CAST(? AS jsonb))))
		ORDER BY s.created_at, s.id`)
	qSessionStateForUpdate = dialectQuery(
		`SELECT state FROM {sessions} WHERE id = ?`, // the IMMEDIATE transaction holds the write lock
		`SELECT state FROM {sessions} WHERE id = ? FOR UPDATE`)
	qSetSessionState = newQuery(`UPDATE {sessions} SET state = ?, updated_at = ? WHERE id = ?`)
	// The CASE keeps last_activity from moving backwards while still matching the row, so zero
	// rows affected means the session does not exist.
	qTouchSession = newQuery(`UPDATE {sessions} SET last_activity =
		CASE WHEN last_activity IS NULL OR last_activity < ? THEN ? ELSE last_activity END
		WHERE id = ?`)
)

func (d *Database) sessionArgs(s models.Session) []any {
	return []any{s.ID, s.OrgID, s.UserID, s.Namespace, s.Template, s.State, s.PodName, s.URL,
		s.CPU, s.Memory, s.Platform, s.AgentID, s.IdleTimeoutSeconds, d.nullTimeArg(s.LastActivity),
		d.timeArg(s.CreatedAt), d.timeArg(s.UpdatedAt)}
}

// prepareSession validates s and fills the defaults of a write: state pending, created now,
// updated at creation.
func (d *Database) prepareSession(s models.Session) (models.Session, error) {
	if s.ID == "" || s.OrgID == "" {
		return s, errors.New("session id and org id are required")
	}
	if s.State == "" {
		s.State = models.SessionStatePending
	}
	if s.CreatedAt.IsZero() {
		s.CreatedAt = d.now()
	}
	if s.UpdatedAt.IsZero() {
		s.UpdatedAt = s.CreatedAt
	}
	return s, nil
}

// CreateSession inserts a new session: ErrConflict when the id exists. Zero CreatedAt is now,
// zero UpdatedAt is CreatedAt, empty State is pending. ActiveConnections is ignored.
func (d *Database) CreateSession(ctx context.Context, s models.Session) error {
	s, err := d.prepareSession(s)
	if err != nil {
		return fmt.Errorf("db: create session: %w", err)
	}
	n, err := d.execAffected(ctx, d.db, qCreateSession, d.sessionArgs(s)...)
	if err != nil {
		return fmt.Errorf("db: create session %q: %w", s.ID, err)
	}
	if n == 0 {
		return fmt.Errorf("db: create session %q: %w", s.ID, ErrConflict)
	}
	return nil
}

// UpsertSession inserts the session or replaces every field but ID, OrgID and CreatedAt.
// A zero LastActivity keeps the stored one; a zero UpdatedAt is now. A session of another org
// with the same id is never touched: that is ErrConflict.
func (d *Database) UpsertSession(ctx context.Context, s models.Session) error {
	if s.UpdatedAt.IsZero() {
		s.UpdatedAt = d.now()
	}
	s, err := d.prepareSession(s)
	if err != nil {
		return fmt.Errorf("db: upsert session: %w", err)
	}
	n, err := d.execAffected(ctx, d.db, qUpsertSession, d.sessionArgs(s)...)
	if err != nil {
		return fmt.Errorf("db: upsert session %q: %w", s.ID, err)
	}
	if n == 0 {
		return fmt.Errorf("db: upsert session %q: belongs to another org: %w", s.ID, ErrConflict)
	}
	return nil
}

// GetSession returns the session with its ActiveConnections, or ErrNotFound.
func (d *Database) GetSession(ctx context.Context, id string) (models.Session, error) {
	s, err := scanSession(d.queryRow(ctx, d.db, qGetSession, id))
	if errors.Is(err, sql.ErrNoRows) {
		return models.Session{}, fmt.Errorf("db: session %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return models.Session{}, fmt.Errorf("db: get session %q: %w", id, err)
	}
	return s, nil
}

// GetSessionByPod returns the newest session of orgID that runs podName, or ErrNotFound: a pod
// of another organization is not found either. An empty podName is never found.
func (d *Database) GetSessionByPod(ctx context.Context, orgID, podName string) (models.Session, error) {
	if podName == "" {
		return models.Session{}, fmt.Errorf("db: session with an empty pod name: %w", ErrNotFound)
	}
	s, err := scanSession(d.queryRow(ctx, d.db, qGetSessionByPod, orgID, podName))
	if errors.Is(err, sql.ErrNoRows) {
		return models.Session{}, fmt.Errorf("db: session of pod %q in org %q: %w", podName, orgID, ErrNotFound)
	}
	if err != nil {
		return models.Session{}, fmt.Errorf("db: session of pod %q in org %q: %w", podName, orgID, err)
	}
	return s, nil
}

// DeleteSession removes the session with its shares and connections, or returns ErrNotFound.
func (d *Database) DeleteSession(ctx context.Context, id string) error {
	n, err := d.execAffected(ctx, d.db, qDeleteSession, id)
	if err != nil {
		return fmt.Errorf("db: delete session %q: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("db: session %q: %w", id, ErrNotFound)
	}
	return nil
}

// ListSessions returns orgID's sessions ordered by creation, each with its ActiveConnections,
// in one query; an org without sessions gives an empty, non-nil slice. With a userID it returns only the sessions that user owns plus those whose id
// is in extraIDs (sessions shared with the user); extraIDs never reach outside orgID.
func (d *Database) ListSessions(ctx context.Context, orgID, userID string, extraIDs ...string) ([]models.Session, error) {
	if orgID == "" {
		return nil, errors.New("db: list sessions: empty org id")
	}
	var (
		rows *sql.Rows
		err  error
	)
	if userID == "" {
		rows, err = d.queryRows(ctx, d.db, qListOrgSessions, orgID)
	} else {
		if extraIDs == nil {
			extraIDs = []string{}
		}
		ids, _ := json.Marshal(extraIDs) // a []string always encodes
		rows, err = d.queryRows(ctx, d.db, qListUserSessions, orgID, userID, string(ids))
	}
	if err != nil {
		return nil, fmt.Errorf("db: list sessions of org %q: %w", orgID, err)
	}
	defer rows.Close()
	out := []models.Session{} // never nil: callers encode it as a JSON list
	for rows.Next() {
		s, err := scanSession(rows)
		if err != nil {
			return nil, fmt.Errorf("db: list sessions of org %q: %w", orgID, err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("db: list sessions of org %q: %w", orgID, err)
	}
	return out, nil
}

// SetSessionState sets the session's state and returns the one it replaced, or ErrNotFound.
// Setting the current state again changes nothing, updated_at included, so callers can compare
// oldState with state to decide whether to publish a change.
func (d *Database) SetSessionState(ctx context.Context, id, state string) (oldState string, err error) {
	err = d.inTx(ctx, func(tx *sql.Tx) error {
		if err := d.queryRow(ctx, tx, qSessionStateForUpdate, id).Scan(&oldState); err != nil {
			return err
		}
		if oldState == state {
			return nil
		}
		_, err := d.exec(ctx, tx, qSetSessionState, state, d.timeArg(d.now()), id)
		return err
	})
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("db: session %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("db: set state of session %q: %w", id, err)
	}
	return oldState, nil
}

// TouchSessionActivity records activity at the given time. last_activity never moves
// backwards, so late or reordered touches from several replicas are harmless. ErrNotFound when
// the session does not exist.
func (d *Database) TouchSessionActivity(ctx context.Context, id string, at time.Time) error {
	if at.IsZero() {
		at = d.now()
	}
	t := d.timeArg(at)
	n, err := d.execAffected(ctx, d.db, qTouchSession, t, t, id)
	if err != nil {
		return fmt.Errorf("db: touch session %q: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("db: session %q: %w", id, ErrNotFound)
	}
	return nil
}

// rowScanner is *sql.Row or *sql.Rows.
type rowScanner interface{ Scan(dest ...any) error }

func scanSession(r rowScanner) (models.Session, error) {
	var s models.Session
	err := r.Scan(&s.ID, &s.OrgID, &s.UserID, &s.Namespace, &s.Template, &s.State, &s.PodName,
		&s.URL, &s.CPU, &s.Memory, &s.Platform, &s.AgentID, &s.IdleTimeoutSeconds,
		timeDest{&s.LastActivity}, timeDest{&s.CreatedAt}, timeDest{&s.UpdatedAt},
		&s.IdleAnnounced, &s.ActiveConnections)
	return s, err
}

// qAnnounceIdle flips idle_announced only from the other value, so of several replicas that
// see a session cross its idle threshold, one announces it.
var qAnnounceIdle = newQuery(`UPDATE {sessions} SET idle_announced = ? WHERE id = ? AND idle_announced = ?`)

// AnnounceIdle records that the session's idleness changed to idle and reports whether this
// call made the change (false: another caller did, or it was already so).
func (d *Database) AnnounceIdle(ctx context.Context, id string, idle bool) (bool, error) {
	n, err := d.execAffected(ctx, d.db, qAnnounceIdle, idle, id, !idle)
	if err != nil {
		return false, fmt.Errorf("db: announce idleness of session %q: %w", id, err)
	}
	return n == 1, nil
}
