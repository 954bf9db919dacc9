package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/streamspace/streamspace-realtime/models"
)

// The command queue only moves forward: pending → sent → ack → completed | failed, or expired
// (PROTOCOL.md 3.5). Every transition is one UPDATE whose WHERE names the statuses it may
// leave, so concurrent calls on any replica serialize on the row and a late or replayed call
// matches nothing instead of moving a command backwards. Transitions RETURN the row they
// wrote (but its payload), so the caller sees the command as it stands without a second read.

// commandColumns is the select list of every command read.
const commandColumns = `id, agent_id, session_id, action, payload, status, attempts, error, result,
	created_at, sent_at, acknowledged_at, completed_at, expires_at, org_id, record_id`

// transitionColumns is commandColumns without the payload, read as NULL: a transition's
// caller needs the command's state, not its payload, which can be large and on SQLite costs a
// walk of overflow pages and a JSON decode on every ack and result.
var transitionColumns = strings.Replace(commandColumns, "payload", "NULL", 1)

// defaultCommandLimit bounds the lists when the caller gives no limit.
const defaultCommandLimit = 1000

var (
	qCreateCommand = newQuery(`INSERT INTO {agent_commands} (id, agent_id, session_id, action, payload,
		status, attempts, created_at, expires_at, updated_at, org_id, record_id)
		VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO NOTHING`)
	qGetCommand = newQuery(`SELECT ` + commandColumns + ` FROM {agent_commands} WHERE id = ?`)
	// The state of a command a transition did not move.
	qCommandState      = newQuery(`SELECT ` + transitionColumns + ` FROM {agent_commands} WHERE id = ?`)
	qAgentCommandState = newQuery(`SELECT ` + transitionColumns + ` FROM {agent_commands} WHERE id = ? AND agent_id = ?`)
	// One statement marks a batch of the agent's waiting commands sent and returns them: the
	// agent_commands_agent_status index finds them in created_at order, and the outer status
	// guard keeps a command that moved on meanwhile from being claimed.
	qClaimCommands = newQuery(`UPDATE {agent_commands} SET status = 'sent', attempts = attempts + 1,
		sent_at = ?, updated_at = ?
		WHERE id IN (SELECT id FROM {agent_commands}
			WHERE agent_id = ? AND status IN (?, ?) AND (expires_at IS NULL OR expires_at > ?)
			ORDER BY created_at, id LIMIT ?)
		AND status IN ('pending', 'sent') RETURNING ` + commandColumns)
	// A resend of a sent command counts as another attempt; an acked or final command is never
	// sent again.
	qMarkCommandSent = newQuery(`UPDATE {agent_commands} SET status = 'sent', attempts = attempts + 1,
		sent_at = ?, updated_at = ? WHERE id = ? AND status IN ('pending', 'sent') RETURNING attempts`)
	qCommandAttempts = newQuery(`SELECT attempts FROM {agent_commands} WHERE id = ?`)
	qAckCommand      = newQuery(`UPDATE {agent_commands} SET status = 'ack', acknowledged_at = ?, updated_at = ?
		WHERE id = ? AND agent_id = ? AND status IN ('pending', 'sent') RETURNING ` + transitionColumns)
	// An agent may complete a command whose ack was lost: acknowledged_at is then the
	// completion time, so a finished command always has one.
	qCompleteCommand = newQuery(`UPDATE {agent_commands} SET status = 'completed', result = ?,
		acknowledged_at = COALESCE(acknowledged_at, ?), completed_at = ?, updated_at = ?
		WHERE id = ? AND agent_id = ? AND status IN ('pending', 'sent', 'ack') RETURNING ` + transitionColumns)
	qFailCommand = newQuery(`UPDATE {agent_commands} SET status = 'failed', error = ?,
		acknowledged_at = COALESCE(acknowledged_at, ?), completed_at = ?, updated_at = ?
		WHERE id = ? AND agent_id = ? AND status IN ('pending', 'sent', 'ack') RETURNING ` + transitionColumns)
	// The control plane fails a command whatever agent it was for (attempts exhausted).
	qFailAnyCommand = newQuery(`UPDATE {agent_commands} SET status = 'failed', error = ?,
		acknowledged_at = COALESCE(acknowledged_at, ?), completed_at = ?, updated_at = ?
		WHERE id = ? AND status IN ('pending', 'sent', 'ack') RETURNING ` + transitionColumns)
	// expires_at IS NOT NULL lets the partial agent_commands_expires index serve the scan.
	// Without statistics SQLite would rather take the status index and read every unfinished
	// row (past its payload's overflow pages) on every check: it is told which index to use.
	qExpireCommands = dialectQuery(`UPDATE {agent_commands} INDEXED BY {agent_commands_expires}
		SET status = 'expired', completed_at = ?, updated_at = ?
		WHERE status IN ('pending', 'sent', 'ack') AND expires_at IS NOT NULL AND expires_at <= ?`,
		`UPDATE {agent_commands} SET status = 'expired', completed_at = ?, updated_at = ?
		WHERE status IN ('pending', 'sent', 'ack') AND expires_at IS NOT NULL AND expires_at <= ?`)
	qCountAllCommands   = newQuery(`SELECT status, COUNT(*) FROM {agent_commands} GROUP BY status`)
	qCountAgentCommands = newQuery(`SELECT status, COUNT(*) FROM {agent_commands} WHERE agent_id = ? GROUP BY status`)
	qPendingAgents      = newQuery(`SELECT DISTINCT agent_id FROM {agent_commands} WHERE status = 'pending'`)
)

// Transition is the outcome of a status change. Applied reports whether this call moved the
// command; Status is its status after the call (the new one when Applied, else the one that
// stopped it) and Command the row as it then stood, without its payload (nil).
type Transition struct {
	Applied bool
	Status  string
	Command models.AgentCommand
}

// prepareCommand validates c and fills the defaults of a new command: status pending, created
// now. A command enters the queue pending; only the transitions move it on.
func (d *Database) prepareCommand(c models.AgentCommand) (models.AgentCommand, []any, error) {
	if c.CommandID == "" || c.AgentID == "" || c.Action == "" {
		return c, nil, errors.New("command id, agent id and action are required")
	}
	if c.ID != "" && !models.ValidID(c.ID) {
		return c, nil, fmt.Errorf("the caller's id of the command must be empty or 1-%d bytes of UTF-8 text without control characters", models.MaxIDLen)
	}
	if c.Status == "" {
		c.Status = models.CommandStatusPending
	}
	if c.Status != models.CommandStatusPending {
		return c, nil, fmt.Errorf("a new command must be %s, not %q", models.CommandStatusPending, c.Status)
	}
	if c.CreatedAt.IsZero() {
		c.CreatedAt = d.now()
	}
	payload, err := jsonObjectArg(c.Payload)
	if err != nil {
		return c, nil, err
	}
	created := d.timeArg(c.CreatedAt)
	return c, []any{c.CommandID, c.AgentID, c.GetSessionID(), c.Action, payload, c.Status, created,
		d.nullTimePtrArg(c.ExpiresAt), created, c.OrgID, c.ID}, nil
}

// CreateCommand queues a new command, pending with no attempts: ErrConflict when the id
// exists. Zero CreatedAt is now and a nil Payload stores "{}". ID, the caller's own identifier,
// is stored and read back with the command (empty or a models.ValidID). Attempts, Error, Result
// and the sent, acknowledged and completed times are ignored: a new command has none.
func (d *Database) CreateCommand(ctx context.Context, c models.AgentCommand) error {
	c, args, err := d.prepareCommand(c)
	if err != nil {
		return fmt.Errorf("db: create command %q: %w", c.CommandID, err)
	}
	var n int64
	err = d.grouped(ctx, func(ctx context.Context, on querier) error {
		var err error
		n, err = d.execAffected(ctx, on, qCreateCommand, args...)
		return err
	})
	if err != nil {
		return fmt.Errorf("db: create command %q: %w", c.CommandID, err)
	}
	if n == 0 {
		return fmt.Errorf("db: create command %q: %w", c.CommandID, ErrConflict)
	}
	return nil
}

// CreateSessionWithCommand creates a session and the command that starts it in one
// transaction, so a session is never left without its command nor a command without its
// session. The session gets CreateSession's validation and defaults; an empty c.SessionID is
// s.ID and any other is refused; an empty c.OrgID is s.OrgID; c.ID is stored as by
// CreateCommand. ErrConflict when either id exists, and then neither is stored.
func (d *Database) CreateSessionWithCommand(ctx context.Context, s models.Session, c models.AgentCommand) error {
	s, err := d.prepareSession(s)
	if err != nil {
		return fmt.Errorf("db: create session with command: %w", err)
	}
	if c.GetSessionID() == "" {
		c.SessionID = models.OptionalString(s.ID)
	}
	if c.GetSessionID() != s.ID {
		return fmt.Errorf("db: create session %q with command %q: command is for session %q", s.ID, c.CommandID, c.GetSessionID())
	}
	if c.OrgID == "" {
		c.OrgID = s.OrgID
	}
	c, cArgs, err := d.prepareCommand(c)
	if err != nil {
		return fmt.Errorf("db: create session %q with command %q: %w", s.ID, c.CommandID, err)
	}
	err = d.inTx(ctx, func(tx *sql.Tx) error {
		n, err := d.execAffected(ctx, tx, qCreateSession, d.sessionArgs(s)...)
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("session %q: %w", s.ID, ErrConflict)
		}
		n, err = d.execAffected(ctx, tx, qCreateCommand, cArgs...)
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("command %q: %w", c.CommandID, ErrConflict)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("db: create session %q with command %q: %w", s.ID, c.CommandID, err)
	}
	return nil
}

// GetCommand returns the command, or ErrNotFound.
func (d *Database) GetCommand(ctx context.Context, id string) (models.AgentCommand, error) {
	c, err := scanCommand(d.queryRow(ctx, d.db, qGetCommand, id))
	if errors.Is(err, sql.ErrNoRows) {
		return models.AgentCommand{}, fmt.Errorf("db: command %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return models.AgentCommand{}, fmt.Errorf("db: get command %q: %w", id, err)
	}
	return c, nil
}

// ClaimCommands marks the agent's pending commands sent, and with includeSent also those sent
// but never acknowledged (after a reconnect), counting one more attempt for each, and returns
// them oldest first (created_at, then id), at most limit (1000 when limit <= 0). The caller
// delivers them; one statement per batch instead of a read and a write per command. Commands
// past their deadline are left for ExpireCommands. Never nil. Zero at is now.
func (d *Database) ClaimCommands(ctx context.Context, agentID string, includeSent bool, limit int, at time.Time) ([]models.AgentCommand, error) {
	second := models.CommandStatusPending
	if includeSent {
		second = models.CommandStatusSent
	}
	if limit <= 0 {
		limit = defaultCommandLimit
	}
	if at.IsZero() {
		at = d.now()
	}
	t := d.timeArg(at)
	var out []models.AgentCommand
	err := d.grouped(ctx, func(ctx context.Context, on querier) error {
		rows, err := d.queryRows(ctx, on, qClaimCommands, t, t, agentID, models.CommandStatusPending, second, t, limit)
		if err != nil {
			return err
		}
		out, err = scanCommands(rows)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("db: claim commands of agent %q: %w", agentID, err)
	}
	// RETURNING follows no ORDER BY.
	slices.SortFunc(out, func(a, b models.AgentCommand) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.CommandID, b.CommandID)
	})
	return out, nil
}

// MarkCommandSent records one more delivery attempt of a pending or sent command, just before
// the caller writes it to the agent. ok is false, without error, when the command has moved
// past sent (acknowledged, or final): the caller must then not send it. attempt is the
// command's attempts after the call. ErrNotFound when the command does not exist. Zero at is
// now.
func (d *Database) MarkCommandSent(ctx context.Context, id string, at time.Time) (attempt int, ok bool, err error) {
	if at.IsZero() {
		at = d.now()
	}
	t := d.timeArg(at)
	err = d.queryRow(ctx, d.db, qMarkCommandSent, t, t, id).Scan(&attempt)
	if err == nil {
		return attempt, true, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return 0, false, fmt.Errorf("db: mark command %q sent: %w", id, err)
	}
	// Not moved: the command is past sent, or missing.
	err = d.queryRow(ctx, d.db, qCommandAttempts, id).Scan(&attempt)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, fmt.Errorf("db: command %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return 0, false, fmt.Errorf("db: mark command %q sent: %w", id, err)
	}
	return attempt, false, nil
}

// AckCommand records the agent's acknowledgement of a pending or sent command. An ack of an
// acknowledged or final command changes nothing (Applied false). A command of another agent
// is ErrNotFound like a missing one, so an agent learns nothing of other agents' commands.
// Zero at is now.
func (d *Database) AckCommand(ctx context.Context, agentID, id string, at time.Time) (Transition, error) {
	if at.IsZero() {
		at = d.now()
	}
	t := d.timeArg(at)
	tr, err := d.transition(ctx, agentID, id, qAckCommand, t, t, id, agentID)
	if err != nil {
		return Transition{}, fmt.Errorf("db: ack command %q: %w", id, err)
	}
	return tr, nil
}

// CompleteCommand records the result of a command that is not final yet; a nil result stores
// "{}". A replay on a final command changes nothing (Applied false) and keeps the first
// result. A command of another agent is ErrNotFound. Zero at is now.
func (d *Database) CompleteCommand(ctx context.Context, agentID, id string, result map[string]any, at time.Time) (Transition, error) {
	if at.IsZero() {
		at = d.now()
	}
	r, err := jsonObjectArg(result)
	if err != nil {
		return Transition{}, fmt.Errorf("db: complete command %q: %w", id, err)
	}
	t := d.timeArg(at)
	tr, err := d.transition(ctx, agentID, id, qCompleteCommand, r, t, t, t, id, agentID)
	if err != nil {
		return Transition{}, fmt.Errorf("db: complete command %q: %w", id, err)
	}
	return tr, nil
}

// FailCommand records the failure of a command that is not final yet, like CompleteCommand.
// An empty agentID is the control plane failing the command itself (its attempts are
// exhausted): then the command of any agent matches.
func (d *Database) FailCommand(ctx context.Context, agentID, id, errText string, at time.Time) (Transition, error) {
	if at.IsZero() {
		at = d.now()
	}
	t := d.timeArg(at)
	var (
		tr  Transition
		err error
	)
	if agentID == "" {
		tr, err = d.transition(ctx, "", id, qFailAnyCommand, errText, t, t, t, id)
	} else {
		tr, err = d.transition(ctx, agentID, id, qFailCommand, errText, t, t, t, id, agentID)
	}
	if err != nil {
		return Transition{}, fmt.Errorf("db: fail command %q: %w", id, err)
	}
	return tr, nil
}

// transition runs the guarded UPDATE ... RETURNING q. When it matches no row the command is
// read back to tell "already past this status" (Applied false) from "no such command of
// agentID" (ErrNotFound; an empty agentID matches any agent).
func (d *Database) transition(ctx context.Context, agentID, id string, q query, args ...any) (Transition, error) {
	var (
		tr       Transition
		notFound bool
	)
	err := d.grouped(ctx, func(ctx context.Context, on querier) error {
		var err error
		tr, err = d.transitionOn(ctx, on, agentID, id, q, args...)
		notFound = errors.Is(err, ErrNotFound)
		if notFound {
			return nil // an answer, not a failure of the shared transaction
		}
		return err
	})
	if err == nil && notFound {
		err = ErrNotFound
	}
	return tr, err
}

func (d *Database) transitionOn(ctx context.Context, on querier, agentID, id string, q query, args ...any) (Transition, error) {
	c, err := scanCommand(d.queryRow(ctx, on, q, args...))
	if err == nil {
		return Transition{Applied: true, Status: c.Status, Command: c}, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return Transition{}, err
	}
	if agentID == "" {
		c, err = scanCommand(d.queryRow(ctx, on, qCommandState, id))
	} else {
		c, err = scanCommand(d.queryRow(ctx, on, qAgentCommandState, id, agentID))
	}
	if errors.Is(err, sql.ErrNoRows) {
		return Transition{}, ErrNotFound
	}
	if err != nil {
		return Transition{}, err
	}
	return Transition{Applied: false, Status: c.Status, Command: c}, nil
}

// ExpireCommands moves every unfinished command whose deadline is at or before now to
// expired, with completed_at now, and returns how many it moved. Zero now is the clock's now.
func (d *Database) ExpireCommands(ctx context.Context, now time.Time) (int64, error) {
	if now.IsZero() {
		now = d.now()
	}
	t := d.timeArg(now)
	var n int64
	err := d.grouped(ctx, func(ctx context.Context, on querier) error {
		var err error
		n, err = d.execAffected(ctx, on, qExpireCommands, t, t, t)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("db: expire commands: %w", err)
	}
	return n, nil
}

// AgentsWithPendingCommands lists the agents that have commands not delivered yet, so a
// replica can start delivery passes a lost wake-up missed (the status index serves it).
func (d *Database) AgentsWithPendingCommands(ctx context.Context) ([]string, error) {
	rows, err := d.queryRows(ctx, d.db, qPendingAgents)
	if err != nil {
		return nil, fmt.Errorf("db: agents with pending commands: %w", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("db: agents with pending commands: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("db: agents with pending commands: %w", err)
	}
	return ids, nil
}

// CountCommands counts the agent's commands by status (every agent's when agentID is empty),
// for metrics and tests. Statuses without commands are absent.
func (d *Database) CountCommands(ctx context.Context, agentID string) (map[string]int, error) {
	var (
		rows *sql.Rows
		err  error
	)
	if agentID == "" {
		rows, err = d.queryRows(ctx, d.db, qCountAllCommands)
	} else {
		rows, err = d.queryRows(ctx, d.db, qCountAgentCommands, agentID)
	}
	if err != nil {
		return nil, fmt.Errorf("db: count commands of agent %q: %w", agentID, err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var (
			status string
			n      int
		)
		if err := rows.Scan(&status, &n); err != nil {
			return nil, fmt.Errorf("db: count commands of agent %q: %w", agentID, err)
		}
		out[status] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("db: count commands of agent %q: %w", agentID, err)
	}
	return out, nil
}

func scanCommand(r rowScanner) (models.AgentCommand, error) {
	var c models.AgentCommand
	err := r.Scan(&c.CommandID, &c.AgentID, optionalTextDest{&c.SessionID}, &c.Action, jsonDest{&c.Payload}, &c.Status,
		&c.Attempts, optionalTextDest{&c.ErrorMessage}, jsonDest{&c.Result}, timeDest{&c.CreatedAt}, timePtrDest{&c.SentAt},
		timePtrDest{&c.AcknowledgedAt}, timePtrDest{&c.CompletedAt}, timePtrDest{&c.ExpiresAt}, &c.OrgID, &c.ID)
	return c, err
}

// scanCommands reads and closes rows; the slice is never nil.
func scanCommands(rows *sql.Rows) ([]models.AgentCommand, error) {
	defer rows.Close()
	out := []models.AgentCommand{}
	for rows.Next() {
		c, err := scanCommand(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}
