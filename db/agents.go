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

// agentColumns is the select list of every agent read, secrets included: the JSON tags of
// models.Agent keep api_key_hash and connection_id off the wire, not the reads.
const agentColumns = `id, org_id, platform, region, status, approval_status, api_key_hash,
	capacity, metadata, replica, connection_id, last_heartbeat, created_at, updated_at`

// onlineStatuses is the SQL list of statuses that count as connected.
const onlineStatuses = `('online', 'draining')`

var (
	qCreateAgent = newQuery(`INSERT INTO {agents} (` + agentColumns + `)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`)
	qGetAgent       = newQuery(`SELECT ` + agentColumns + ` FROM {agents} WHERE id = ?`)
	qListAllAgents  = newQuery(`SELECT ` + agentColumns + ` FROM {agents} ORDER BY id`)
	qListOrgAgents  = newQuery(`SELECT ` + agentColumns + ` FROM {agents} WHERE org_id = ? OR org_id = '' ORDER BY id`)
	qUpdateAgentReg = newQuery(`UPDATE {agents} SET platform = ?, region = ?, capacity = ?, metadata = ?,
		updated_at = ? WHERE id = ?`)
	qSetAgentApproval    = newQuery(`UPDATE {agents} SET approval_status = ?, updated_at = ? WHERE id = ?`)
	qSetAgentApprovalKey = newQuery(`UPDATE {agents} SET approval_status = ?, api_key_hash = ?, updated_at = ?
		WHERE id = ?`)
	qMarkAgentOnline = newQuery(`UPDATE {agents} SET status = 'online', replica = ?, connection_id = ?,
		last_heartbeat = ?, updated_at = ? WHERE id = ?`)
	// Guarded by the connection: the late cleanup of a replaced connection matches no row.
	qMarkAgentOffline = newQuery(`UPDATE {agents} SET status = 'offline', replica = '', connection_id = '',
		updated_at = ? WHERE id = ? AND connection_id = ?`)
	// Guarded by the connection, and by last_heartbeat so a beat older than the stored one (a
	// reordered flush) changes nothing: neither the heartbeat nor the status it carried. A NULL
	// capacity keeps the stored one.
	qAgentHeartbeat = newQuery(`UPDATE {agents} SET last_heartbeat = ?, status = ?,
		capacity = COALESCE(?, capacity)
		WHERE id = ? AND connection_id = ? AND (last_heartbeat IS NULL OR last_heartbeat <= ?)`)
	qCountAllAgents = newQuery(`SELECT COALESCE(SUM(CASE WHEN status IN ` + onlineStatuses + ` THEN 1 ELSE 0 END), 0),
		COUNT(*) FROM {agents}`)
	qCountOrgAgents = newQuery(`SELECT COALESCE(SUM(CASE WHEN status IN ` + onlineStatuses + ` THEN 1 ELSE 0 END), 0),
		COUNT(*) FROM {agents} WHERE org_id = ? OR org_id = ''`)
)

// CreateAgent inserts a new agent: ErrConflict when the id exists. Empty Status is offline,
// empty ApprovalStatus is pending, zero CreatedAt is now and zero UpdatedAt is CreatedAt; nil
// Capacity and Metadata store "{}".
func (d *Database) CreateAgent(ctx context.Context, a models.Agent) error {
	if a.ID == "" {
		return errors.New("db: create agent: empty id")
	}
	if a.Status == "" {
		a.Status = models.AgentStatusOffline
	}
	if a.ApprovalStatus == "" {
		a.ApprovalStatus = models.ApprovalPending
	}
	if a.CreatedAt.IsZero() {
		a.CreatedAt = d.now()
	}
	if a.UpdatedAt.IsZero() {
		a.UpdatedAt = a.CreatedAt
	}
	capacity, err := jsonObjectArg(a.Capacity)
	if err != nil {
		return fmt.Errorf("db: create agent %q: %w", a.ID, err)
	}
	metadata, err := jsonObjectArg(a.Metadata)
	if err != nil {
		return fmt.Errorf("db: create agent %q: %w", a.ID, err)
	}
	n, err := d.execAffected(ctx, d.db, qCreateAgent, a.ID, a.OrgID, a.Platform, a.Region, a.Status,
		a.ApprovalStatus, a.APIKeyHash, capacity, metadata, a.Replica, a.ConnectionID,
		d.nullTimePtrArg(a.LastHeartbeat), d.timeArg(a.CreatedAt), d.timeArg(a.UpdatedAt))
	if err != nil {
		return fmt.Errorf("db: create agent %q: %w", a.ID, err)
	}
	if n == 0 {
		return fmt.Errorf("db: create agent %q: %w", a.ID, ErrConflict)
	}
	return nil
}

// GetAgent returns the agent with its key hash and connection id, or ErrNotFound.
func (d *Database) GetAgent(ctx context.Context, id string) (models.Agent, error) {
	a, err := scanAgent(d.queryRow(ctx, d.db, qGetAgent, id))
	if errors.Is(err, sql.ErrNoRows) {
		return models.Agent{}, fmt.Errorf("db: agent %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return models.Agent{}, fmt.Errorf("db: get agent %q: %w", id, err)
	}
	return a, nil
}

// ListAgents returns the agents that serve orgID, its own and the shared ones (empty OrgID),
// ordered by id; an empty orgID lists every agent. The slice is never nil.
func (d *Database) ListAgents(ctx context.Context, orgID string) ([]models.Agent, error) {
	var (
		rows *sql.Rows
		err  error
	)
	if orgID == "" {
		rows, err = d.queryRows(ctx, d.db, qListAllAgents)
	} else {
		rows, err = d.queryRows(ctx, d.db, qListOrgAgents, orgID)
	}
	if err != nil {
		return nil, fmt.Errorf("db: list agents of org %q: %w", orgID, err)
	}
	defer rows.Close()
	out := []models.Agent{} // never nil: callers encode it as a JSON list
	for rows.Next() {
		a, err := scanAgent(rows)
		if err != nil {
			return nil, fmt.Errorf("db: list agents of org %q: %w", orgID, err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("db: list agents of org %q: %w", orgID, err)
	}
	return out, nil
}

// UpdateAgentRegistration stores what an existing agent reports when it registers again: its
// platform, region, capacity and metadata. Status, approval and key are left alone.
// ErrNotFound when the agent does not exist.
func (d *Database) UpdateAgentRegistration(ctx context.Context, id, platform, region string, capacity, metadata map[string]any) error {
	c, err := jsonObjectArg(capacity)
	if err != nil {
		return fmt.Errorf("db: update registration of agent %q: %w", id, err)
	}
	m, err := jsonObjectArg(metadata)
	if err != nil {
		return fmt.Errorf("db: update registration of agent %q: %w", id, err)
	}
	n, err := d.execAffected(ctx, d.db, qUpdateAgentReg, platform, region, c, m, d.timeArg(d.now()), id)
	if err != nil {
		return fmt.Errorf("db: update registration of agent %q: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("db: agent %q: %w", id, ErrNotFound)
	}
	return nil
}

// SetAgentApproval records an admin's decision. A non-empty keyHash replaces the stored API
// key hash (approval is when a key is issued); an empty one keeps it. ErrNotFound when the
// agent does not exist.
func (d *Database) SetAgentApproval(ctx context.Context, id, approval, keyHash string) error {
	if approval == "" {
		return fmt.Errorf("db: set approval of agent %q: empty approval status", id)
	}
	var (
		n   int64
		err error
	)
	now := d.timeArg(d.now())
	if keyHash == "" {
		n, err = d.execAffected(ctx, d.db, qSetAgentApproval, approval, now, id)
	} else {
		n, err = d.execAffected(ctx, d.db, qSetAgentApprovalKey, approval, keyHash, now, id)
	}
	if err != nil {
		return fmt.Errorf("db: set approval of agent %q: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("db: agent %q: %w", id, ErrNotFound)
	}
	return nil
}

// MarkAgentOnline records that connectionID on replica now holds the agent, replacing any
// earlier connection: from now on only this connection's heartbeats and cleanup count. Zero at
// is now. ErrNotFound when the agent does not exist.
func (d *Database) MarkAgentOnline(ctx context.Context, id, replica, connectionID string, at time.Time) error {
	if at.IsZero() {
		at = d.now()
	}
	t := d.timeArg(at)
	n, err := d.execAffected(ctx, d.db, qMarkAgentOnline, replica, connectionID, t, t, id)
	if err != nil {
		return fmt.Errorf("db: mark agent %q online: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("db: agent %q: %w", id, ErrNotFound)
	}
	return nil
}

// MarkAgentOffline marks the agent offline only while connectionID still holds it, so the
// late cleanup of a replaced connection never takes the new one offline. It reports whether
// the row changed; an unknown agent, another connection or an empty connectionID change
// nothing. last_heartbeat is kept to show when the agent was last seen. Zero at is now.
func (d *Database) MarkAgentOffline(ctx context.Context, id, connectionID string, at time.Time) (bool, error) {
	if connectionID == "" {
		// An offline agent stores connection_id '': matching it would "change" nothing real.
		return false, nil
	}
	if at.IsZero() {
		at = d.now()
	}
	n, err := d.execAffected(ctx, d.db, qMarkAgentOffline, d.timeArg(at), id, connectionID)
	if err != nil {
		return false, fmt.Errorf("db: mark agent %q offline: %w", id, err)
	}
	return n > 0, nil
}

// AgentHeartbeat is one heartbeat received from an agent's connection, queued by the hub
// until the next RecordAgentHeartbeats flush.
type AgentHeartbeat struct {
	AgentID, ConnectionID string
	// At is when the heartbeat arrived; zero is the time of the flush.
	At time.Time
	// Status is online or draining; empty is online.
	Status string
	// Capacity replaces the stored capacity unless nil.
	Capacity map[string]any
}

// RecordAgentHeartbeats writes a batch of heartbeats in one transaction, so the hub can
// coalesce every agent's beats into one write every few seconds. A beat only counts while its
// connection still holds the agent, and one older than the stored last_heartbeat changes
// nothing, so last_heartbeat never moves backwards. Beats without a connection id are
// dropped. An unknown status fails the whole batch before anything is written. updated_at
// is left alone: it records registrations and connections, last_heartbeat records liveness.
func (d *Database) RecordAgentHeartbeats(ctx context.Context, beats []AgentHeartbeat) error {
	type beatArgs struct {
		agentID string
		args    []any
	}
	now := d.now()
	todo := make([]beatArgs, 0, len(beats))
	for _, b := range beats {
		if b.ConnectionID == "" {
			continue
		}
		status := b.Status
		switch status {
		case "":
			status = models.AgentStatusOnline
		case models.AgentStatusOnline, models.AgentStatusDraining:
		default:
			return fmt.Errorf("db: record heartbeat of agent %q: status %q is not online or draining", b.AgentID, b.Status)
		}
		var capacity any // NULL keeps the stored capacity
		if b.Capacity != nil {
			c, err := jsonObjectArg(b.Capacity)
			if err != nil {
				return fmt.Errorf("db: record heartbeat of agent %q: %w", b.AgentID, err)
			}
			capacity = c
		}
		at := b.At
		if at.IsZero() {
			at = now
		}
		t := d.timeArg(at)
		todo = append(todo, beatArgs{b.AgentID, []any{t, status, capacity, b.AgentID, b.ConnectionID, t}})
	}
	if len(todo) == 0 {
		return nil
	}
	// Rows are locked in id order, so two concurrent flushes on PostgreSQL cannot deadlock.
	// The sort is stable: an agent's beats keep their order.
	slices.SortStableFunc(todo, func(a, b beatArgs) int { return strings.Compare(a.agentID, b.agentID) })
	err := d.groupedTx(ctx, func(ctx context.Context, on querier) error {
		stmt, err := on.PrepareContext(ctx, d.text(qAgentHeartbeat))
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, b := range todo {
			if _, err := stmt.ExecContext(ctx, b.args...); err != nil {
				return fmt.Errorf("agent %q: %w", b.agentID, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("db: record %d agent heartbeats: %w", len(todo), err)
	}
	return nil
}

// CountAgents counts the agents serving orgID (its own and the shared ones) and how many of
// them are connected (online or draining); an empty orgID counts every agent.
func (d *Database) CountAgents(ctx context.Context, orgID string) (online, total int, err error) {
	var row *sql.Row
	if orgID == "" {
		row = d.queryRow(ctx, d.db, qCountAllAgents)
	} else {
		row = d.queryRow(ctx, d.db, qCountOrgAgents, orgID)
	}
	if err := row.Scan(&online, &total); err != nil {
		return 0, 0, fmt.Errorf("db: count agents of org %q: %w", orgID, err)
	}
	return online, total, nil
}

func scanAgent(r rowScanner) (models.Agent, error) {
	var a models.Agent
	err := r.Scan(&a.ID, &a.OrgID, &a.Platform, &a.Region, &a.Status, &a.ApprovalStatus,
		&a.APIKeyHash, jsonDest{&a.Capacity}, jsonDest{&a.Metadata}, &a.Replica, &a.ConnectionID,
		timePtrDest{&a.LastHeartbeat}, timeDest{&a.CreatedAt}, timeDest{&a.UpdatedAt})
	return a, err
}
