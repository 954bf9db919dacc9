package websocket

import (
	"context"
	"log/slog"
	"sync"
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

// statusQueue is one connection's status reports on their way from the reader to the status
// writer (statusLoop): the latest per session. The reader hands reports over instead of writing
// each in a transaction of its own, so it keeps up with any rate the frame budget admits, and an
// agent that exits leaves at most one batch to write.
type statusQueue struct {
	mu      sync.Mutex
	pending map[string]*pendingStatus
	// taken is closed when the writer takes the pending reports, for a reader waiting for
	// room; wake (capacity 1) says there are some.
	taken chan struct{}
	wake  chan struct{}
}

func newStatusQueue() *statusQueue {
	return &statusQueue{pending: make(map[string]*pendingStatus), taken: make(chan struct{}), wake: make(chan struct{}, 1)}
}

// put keeps a status report for the writer, waiting for room when maxPendingStatuses sessions
// already wait.
func (q *statusQueue) put(m models.StatusMessage, podName string, now time.Time) {
	q.mu.Lock()
	for len(q.pending) >= maxPendingStatuses && q.pending[m.SessionID] == nil {
		// Full: wait for the writer to take the batch. It does, since it runs until the
		// reader ends, and the wake-up for these reports is already given.
		taken := q.taken
		q.mu.Unlock()
		<-taken
		q.mu.Lock()
	}
	p := q.pending[m.SessionID]
	switch {
	case p == nil:
		q.pending[m.SessionID] = &pendingStatus{sessionID: m.SessionID, state: m.State, podName: podName,
			at: now, deleted: m.State == sessionStateDeleted}
	case p.deleted:
		p.late++
	default:
		p.state, p.at, p.deleted = m.State, now, m.State == sessionStateDeleted
		if podName != "" {
			p.podName = podName
		}
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// take returns the pending reports and lets a reader waiting for room go on.
func (q *statusQueue) take() []*pendingStatus {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pending) == 0 {
		return nil
	}
	batch := make([]*pendingStatus, 0, len(q.pending))
	for _, p := range q.pending {
		batch = append(batch, p)
	}
	clear(q.pending)
	close(q.taken)
	q.taken = make(chan struct{})
	return batch
}

// statusLoop writes the connection's status reports: whatever accumulated while the previous
// batch was written, in one transaction. It ends once the reader has ended, after writing what
// the reader handed over last, so the agent's offline mark (written when every goroutine of the
// connection has ended) follows at most one batch.
func (c *AgentConnection) statusLoop() {
	defer c.pumpDone()
	refuse := func(fe *frameError, at time.Time) { c.hub.refuse(c, fe, at) }
	for {
		select {
		case <-c.statuses.wake:
			c.hub.statuses.apply(c.hub.ctx, c.AgentID, c.statuses.take(), refuse)
		case <-c.readDone:
			c.hub.statuses.apply(c.hub.ctx, c.AgentID, c.statuses.take(), refuse)
			return
		}
	}
}

// statusRecorder turns agents' session status reports into session rows and session events.
type statusRecorder struct {
	store interface {
		ApplyAgentStatuses(ctx context.Context, agentID string, reports []db.AgentStatusReport) ([]db.AgentStatusResult, error)
	}
	events  sessionEvents
	metrics *agentMetrics
	logger  *slog.Logger
}

// apply writes a batch of one agent's status reports in one transaction, then publishes the
// changes: session.state.changed from the state before the batch to the one reported last
// (none when they are the same), session.deleted for deletions. Reports of sessions that are
// not the agent's are refused one by one, as a single report would be.
func (r *statusRecorder) apply(ctx context.Context, agentID string, batch []*pendingStatus, refuse func(*frameError, time.Time)) {
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, defaultStoreCallTimeout)
	defer cancel()
	reports := make([]db.AgentStatusReport, len(batch))
	for i, p := range batch {
		reports[i] = db.AgentStatusReport{SessionID: p.sessionID, State: p.state, PodName: p.podName, Delete: p.deleted}
	}
	results, err := r.store.ApplyAgentStatuses(ctx, agentID, reports)
	if err != nil {
		// Logged once for the batch; each session is answered so the agent can send it again.
		r.logger.Warn("handling agent frame failed", "agent_id", agentID, "type", "status",
			"sessions", len(batch), "err", err)
		for _, p := range batch {
			fe := &frameError{msg: "could not record status now; send it again later", sessionID: p.sessionID, logged: true, retry: true}
			for range 1 + p.late {
				refuse(fe, p.at)
			}
		}
		return
	}
	r.metrics.statusBatches.Inc()
	for i, p := range batch {
		res := results[i]
		notMine := &frameError{msg: "session is not placed on this agent", sessionID: p.sessionID, malformed: true}
		if !res.Found {
			refuse(notMine, p.at)
		}
		for range p.late {
			refuse(notMine, p.at)
		}
		if !res.Found {
			continue
		}
		s := res.Before
		if p.deleted {
			r.events.publish(ctx, s.OrgID, SessionEvent{Type: EventSessionDeleted, SessionID: s.ID, UserID: s.UserID, Timestamp: p.at})
			continue
		}
		if !res.Changed || s.State == p.state {
			continue // the same state again, or only the pod: no event
		}
		data := map[string]any{"oldState": s.State, "newState": p.state, "agentId": agentID}
		if p.podName != "" {
			data["podName"] = p.podName
		}
		r.events.publish(ctx, s.OrgID, SessionEvent{
			Type: EventSessionStateChange, SessionID: s.ID, UserID: s.UserID, Timestamp: p.at, Data: data,
		})
	}
}
