package websocket

import (
	"context"
	"time"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/models"
)

// maxPendingStatuses bounds the sessions whose status reports wait to be written for one
// connection; past it the reader waits for the writer to take them.
const maxPendingStatuses = 1024

// pendingStatus is what an agent reported of one session since its reports were last taken
// for writing: only the latest state counts (and the latest pod named), since a batch is
// written at once and browsers are told the change from the state they last saw.
type pendingStatus struct {
	sessionID string
	state     string
	podName   string
	at        time.Time
	deleted   bool
	// late counts the reports of the session after its deletion: the session is gone once the
	// deletion is written, so each is answered as for a session that is not there.
	late int
}

// queueStatus keeps a status report for the connection's status writer. The reader hands
// reports over instead of writing each in a transaction of its own, so it keeps up with any
// rate the frame budget admits, and an agent that exits leaves at most one batch to write.
func (c *AgentConnection) queueStatus(m models.StatusMessage, podName string, now time.Time) {
	c.statusMu.Lock()
	for len(c.statuses) >= maxPendingStatuses && c.statuses[m.SessionID] == nil {
		// Full: wait for the writer to take the batch. It does, since it runs until the
		// reader ends, and the wake-up for these reports is already given.
		taken := c.statusTaken
		c.statusMu.Unlock()
		<-taken
		c.statusMu.Lock()
	}
	p := c.statuses[m.SessionID]
	switch {
	case p == nil:
		c.statuses[m.SessionID] = &pendingStatus{sessionID: m.SessionID, state: m.State, podName: podName,
			at: now, deleted: m.State == sessionStateDeleted}
	case p.deleted:
		p.late++
	default:
		p.state, p.at, p.deleted = m.State, now, m.State == sessionStateDeleted
		if podName != "" {
			p.podName = podName
		}
	}
	c.statusMu.Unlock()
	select {
	case c.statusWake <- struct{}{}:
	default:
	}
}

// takeStatuses returns the pending reports and lets a reader waiting for room go on.
func (c *AgentConnection) takeStatuses() []*pendingStatus {
	c.statusMu.Lock()
	defer c.statusMu.Unlock()
	if len(c.statuses) == 0 {
		return nil
	}
	batch := make([]*pendingStatus, 0, len(c.statuses))
	for _, p := range c.statuses {
		batch = append(batch, p)
	}
	clear(c.statuses)
	close(c.statusTaken)
	c.statusTaken = make(chan struct{})
	return batch
}

// statusLoop writes the connection's status reports: whatever accumulated while the previous
// batch was written, in one transaction. It ends once the reader has ended, after writing what
// the reader handed over last, so the agent's offline mark (written when every goroutine of the
// connection has ended) follows at most one batch.
func (c *AgentConnection) statusLoop() {
	defer c.pumpDone()
	for {
		select {
		case <-c.statusWake:
			c.hub.applyStatuses(c, c.takeStatuses())
		case <-c.readDone:
			c.hub.applyStatuses(c, c.takeStatuses())
			return
		}
	}
}

// applyStatuses writes a batch of one agent's status reports in one transaction, then
// publishes the changes: session.state.changed from the state before the batch to the one
// reported last (none when they are the same), session.deleted for deletions. Reports of
// sessions that are not the agent's are answered one by one, as a single report would be.
func (h *AgentHub) applyStatuses(c *AgentConnection, batch []*pendingStatus) {
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(h.ctx, defaultStoreCallTimeout)
	defer cancel()
	reports := make([]db.AgentStatusReport, len(batch))
	for i, p := range batch {
		reports[i] = db.AgentStatusReport{SessionID: p.sessionID, State: p.state, PodName: p.podName, Delete: p.deleted}
	}
	results, err := h.store.ApplyAgentStatuses(ctx, c.AgentID, reports)
	if err != nil {
		// Logged once for the batch; each session is answered so the agent can send it again.
		h.cfg.Logger.Warn("handling agent frame failed", "agent_id", c.AgentID, "type", "status",
			"sessions", len(batch), "err", err)
		for _, p := range batch {
			fe := &frameError{msg: "could not record status now; send it again later", sessionID: p.sessionID, logged: true, retry: true}
			for range 1 + p.late {
				h.refuse(c, fe, p.at)
			}
		}
		return
	}
	h.metrics.statusBatches.Inc()
	for i, p := range batch {
		res := results[i]
		notMine := &frameError{msg: "session is not placed on this agent", sessionID: p.sessionID, malformed: true}
		if !res.Found {
			h.refuse(c, notMine, p.at)
		}
		for range p.late {
			h.refuse(c, notMine, p.at)
		}
		if !res.Found {
			continue
		}
		s := res.Before
		if p.deleted {
			h.publish(ctx, s.OrgID, SessionEvent{Type: EventSessionDeleted, SessionID: s.ID, UserID: s.UserID, Timestamp: p.at})
			continue
		}
		if !res.Changed || s.State == p.state {
			continue // the same state again, or only the pod: no event
		}
		data := map[string]any{"oldState": s.State, "newState": p.state, "agentId": c.AgentID}
		if p.podName != "" {
			data["podName"] = p.podName
		}
		h.publish(ctx, s.OrgID, SessionEvent{
			Type: EventSessionStateChange, SessionID: s.ID, UserID: s.UserID, Timestamp: p.at, Data: data,
		})
	}
}
