package websocket

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/streamspace/streamspace-realtime/cluster"
	"github.com/streamspace/streamspace-realtime/models"
)

// Kinds of the replica messages that relay an agent's log stream to the replica holding the
// browser that asked for it. The hub receives them and hands them to PodLogs.onReplicaMessage.
const (
	// kindLogsOpen: ask the agent on the receiving replica for logs (a logsOpen).
	kindLogsOpen = "logs.open"
	// kindLogsStop: the browser left; stop the agent's stream (payload: the request id).
	kindLogsStop = "logs.stop"
	// kindLogsLines: lines for the receiving replica's browser (a logsBatch).
	kindLogsLines = "logs.lines"
)

// Limits of log relaying between replicas.
const (
	logBatchLines   = 500
	logBatchTimeout = 5 * time.Second
	// logStreamRate bounds the log frames an agent may send per second, beyond its ordinary
	// budget, while it has log streams open.
	logStreamRate = 20000
)

// errAgentGone ends the log streams of an agent whose connection closed.
var errAgentGone = errors.New("the agent disconnected")

type logsOpen struct {
	Request models.LogsRequest `json:"request"`
	ReplyTo string             `json:"replyTo"`
}

type relayedLine struct {
	Line string    `json:"l"`
	At   time.Time `json:"t,omitzero"`
}

// logsBatch is a run of lines of one request from the agent's replica to the browser's. Seq
// counts batches from 1, so a batch lost between replicas is noticed instead of a silent gap.
type logsBatch struct {
	RequestID string        `json:"r"`
	Seq       uint64        `json:"s"`
	Lines     []relayedLine `json:"l,omitempty"`
	End       bool          `json:"e,omitempty"`
	Error     string        `json:"x,omitempty"`
}

// logRoute is where one request's lines go. Exactly one of local and fwd is set. conn is the
// agent's connection when it is on this replica.
type logRoute struct {
	conn    *AgentConnection
	local   *AgentLogStream
	fwd     *logForwarder
	nextSeq uint64 // the next batch expected from the agent's replica (remote local routes)
}

// AgentLogStream is a pod's log stream relayed by the agent that runs its session, for a
// browser on this replica; the agent may be connected to any replica. Close it when the browser
// leaves: the agent is told to stop.
type AgentLogStream struct {
	logs    *PodLogs
	agentID string
	req     models.LogsRequest
	owner   cluster.Owner // the agent's replica and connection when it is another replica
	q       *logQueue
	once    sync.Once
}

// RequestID names the stream in the agent's `log` frames.
func (s *AgentLogStream) RequestID() string { return s.req.RequestID }

// Next waits for the stream's next lines and returns them in order (a line without a source
// timestamp has the time it was received). At the end it returns io.EOF, or the error that
// ended the stream: the agent's, its disconnection, or an overflow of lines nobody read.
func (s *AgentLogStream) Next(ctx context.Context) ([]models.LogLine, error) {
	for {
		recs, done, err := s.q.take()
		if len(recs) > 0 {
			lines := make([]models.LogLine, len(recs))
			for i, r := range recs {
				lines[i] = models.LogLine{RequestID: s.req.RequestID, Namespace: s.req.Namespace, Pod: s.req.Pod, Line: r.Line, Timestamp: &r.At}
			}
			return lines, nil
		}
		if done {
			if err == nil {
				err = io.EOF
			}
			return nil, err
		}
		select {
		case <-s.q.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// OpenLogs asks the agent running a session for a pod's logs (`logs`, PROTOCOL.md 3.3) and
// returns the stream its `log` frames feed. ErrAgentNotConnected means no replica holds the
// agent. The stream ends when the agent sends `log_end`, disconnects, or outruns the stream's
// queue.
func (p *PodLogs) OpenLogs(ctx context.Context, agentID string, req models.LogsRequest) (*AgentLogStream, error) {
	if req.RequestID == "" {
		req.RequestID = uuid.NewString()
	}
	s := &AgentLogStream{logs: p, agentID: agentID, req: req, q: newLogQueue(defaultLogQueueLines, defaultLogQueueBytes)}
	if c := p.agent(agentID); c != nil {
		p.addRoute(req.RequestID, &logRoute{conn: c, local: s})
		if !c.push(outbound(models.MessageTypeLogs, p.clock.Now(), req)) {
			p.dropRoute(req.RequestID)
			return nil, fmt.Errorf("logs of agent %q: %w", agentID, ErrAgentNotConnected)
		}
		return s, nil
	}
	owner, ok := p.locate(ctx, agentID)
	if !ok {
		return nil, fmt.Errorf("logs of agent %q: %w", agentID, ErrAgentNotConnected)
	}
	s.owner = owner
	p.addRoute(req.RequestID, &logRoute{local: s, nextSeq: 1})
	payload, _ := json.Marshal(logsOpen{Request: req, ReplyTo: p.dir.Replica()})
	msg := cluster.ReplicaMessage{Kind: kindLogsOpen, AgentID: agentID, Generation: owner.Generation, Payload: payload}
	if err := p.dir.Send(ctx, owner.Replica, msg); err != nil {
		p.dropRoute(req.RequestID)
		return nil, fmt.Errorf("logs of agent %q on replica %q: %w", agentID, owner.Replica, err)
	}
	return s, nil
}

// OpenLogs asks the agent running a session for a pod's logs (`logs`, PROTOCOL.md 3.3) and
// returns the stream its `log` frames feed. ErrAgentNotConnected means no replica holds the
// agent. The stream ends when the agent sends `log_end`, disconnects, or outruns the stream's
// queue. It is the OpenLogs of the hub's PodLogs (AgentHubConfig.Logs).
func (h *AgentHub) OpenLogs(ctx context.Context, agentID string, req models.LogsRequest) (*AgentLogStream, error) {
	return h.logs.OpenLogs(ctx, agentID, req)
}

// Close stops the stream: the agent gets `logs_stop`, wherever it is. It is idempotent.
func (s *AgentLogStream) Close() {
	s.once.Do(func() {
		p := s.logs
		r := p.dropRoute(s.req.RequestID)
		s.q.finish(nil)
		stop := models.LogsStop{RequestID: s.req.RequestID}
		switch {
		case r != nil && r.conn != nil:
			r.conn.push(outbound(models.MessageTypeLogsStop, p.clock.Now(), stop))
		case s.owner.Replica != "":
			ctx, cancel := context.WithTimeout(p.relayCtx, logBatchTimeout)
			defer cancel()
			msg := cluster.ReplicaMessage{Kind: kindLogsStop, AgentID: s.agentID, Payload: []byte(s.req.RequestID)}
			if err := p.dir.Send(ctx, s.owner.Replica, msg); err != nil {
				p.log.Debug("stopping a relayed log stream failed", "request_id", s.req.RequestID, "err", err)
			}
		}
	})
}

// stillHeld reports whether the agent is still connected where the stream was opened; a
// stream relayed from a replica that died would otherwise wait for lines forever.
func (s *AgentLogStream) stillHeld(ctx context.Context) bool {
	if s.owner.Replica == "" {
		return true // local: the connection's cleanup ends the stream
	}
	owner, ok, err := s.logs.dir.Lookup(ctx, s.agentID)
	if err != nil {
		return true // an outage says nothing about the agent
	}
	return ok && owner == s.owner
}

// end ends the route's stream with err (nil: a normal end).
func (r *logRoute) end(err error) {
	if r.local != nil {
		r.local.q.finish(err)
	} else {
		r.fwd.finish(err)
	}
}

// onLogLine routes a `log` frame of c to its stream; lines of streams that ended are dropped.
func (p *PodLogs) onLogLine(c *AgentConnection, m models.LogLine, now time.Time) {
	r := p.route(m.RequestID)
	if r == nil || r.conn != c {
		p.agentLines.WithLabelValues("dropped").Inc()
		return
	}
	rec := logRecord{Line: m.Line, At: now}
	// The agent's own time, unless it lies outside what a browser's frame can carry (a year
	// from 0 to 9999 in UTC: "0000-01-01T00:00:00+01:00" is valid RFC 3339, and year -1).
	if ts := m.Timestamp; ts != nil && ts.UTC().Year() >= 0 && ts.UTC().Year() <= 9999 {
		rec.At = *ts
	}
	var ok bool
	if r.local != nil {
		ok = r.local.q.offer(rec)
	} else {
		ok = r.fwd.offer(rec)
	}
	if ok {
		p.agentLines.WithLabelValues("relayed").Inc()
		return
	}
	// The queue overflowed (the stream ended): tell the agent to stop.
	p.agentLines.WithLabelValues("dropped").Inc()
	if p.dropRoute(m.RequestID) != nil {
		c.push(outbound(models.MessageTypeLogsStop, now, models.LogsStop{RequestID: m.RequestID}))
	}
}

// onLogEnd ends a stream at the agent's `log_end`.
func (p *PodLogs) onLogEnd(c *AgentConnection, m models.LogEnd) {
	r := p.route(m.RequestID)
	if r == nil || r.conn != c {
		return
	}
	p.dropRoute(m.RequestID)
	var err error
	if m.Error != "" {
		err = fmt.Errorf("the agent reported: %s", m.Error)
	}
	r.end(err)
}

// onReplicaMessage takes a message of another replica about logs, which the hub hands on.
func (p *PodLogs) onReplicaMessage(msg cluster.ReplicaMessage) {
	switch msg.Kind {
	case kindLogsOpen:
		p.onLogsOpen(msg)
	case kindLogsStop:
		p.onLogsStop(msg)
	case kindLogsLines:
		p.onLogsLines(msg)
	}
}

// onLogsOpen serves a browser of another replica: it asks the agent held here for logs and
// starts forwarding its lines.
func (p *PodLogs) onLogsOpen(msg cluster.ReplicaMessage) {
	var o logsOpen
	if err := json.Unmarshal(msg.Payload, &o); err != nil || o.Request.RequestID == "" || o.ReplyTo == "" {
		p.log.Error("dropping malformed log stream request", "err", err)
		return
	}
	fwd := newLogForwarder(p, o.ReplyTo, o.Request.RequestID)
	c := p.agent(msg.AgentID)
	if c == nil || c.connID != msg.Generation {
		fwd.finish(errAgentGone)
		p.startForwarder(fwd)
		return
	}
	p.addRoute(o.Request.RequestID, &logRoute{conn: c, fwd: fwd})
	p.startForwarder(fwd)
	if !c.push(outbound(models.MessageTypeLogs, p.clock.Now(), o.Request)) {
		if r := p.dropRoute(o.Request.RequestID); r != nil {
			r.end(errAgentGone)
		}
	}
}

// onLogsStop stops the agent's stream for a browser of another replica that left.
func (p *PodLogs) onLogsStop(msg cluster.ReplicaMessage) {
	id := string(msg.Payload)
	r := p.route(id)
	if r == nil || r.fwd == nil {
		return
	}
	p.dropRoute(id)
	r.fwd.stop()
	r.conn.push(outbound(models.MessageTypeLogsStop, p.clock.Now(), models.LogsStop{RequestID: id}))
}

// onLogsLines feeds the lines another replica relayed to this replica's stream. A batch out of
// sequence ends the stream: lines were lost between replicas.
func (p *PodLogs) onLogsLines(msg cluster.ReplicaMessage) {
	var b logsBatch
	if err := json.Unmarshal(msg.Payload, &b); err != nil {
		p.log.Error("dropping malformed relayed log lines", "err", err)
		return
	}
	p.mu.Lock()
	r := p.routes[b.RequestID]
	inSeq := r != nil && r.local != nil && r.nextSeq == b.Seq
	if inSeq {
		r.nextSeq++
	}
	p.mu.Unlock()
	switch {
	case r == nil || r.local == nil:
		return
	case !inSeq:
		p.dropRoute(b.RequestID)
		r.local.q.finish(errors.New("log lines were lost between replicas"))
		return
	}
	recs := make([]logRecord, len(b.Lines))
	for i, l := range b.Lines {
		recs[i] = logRecord(l)
	}
	if len(recs) > 0 && !r.local.q.offer(recs...) {
		r.local.Close()
		return
	}
	if b.End {
		p.dropRoute(b.RequestID)
		var err error
		if b.Error != "" {
			err = errors.New(b.Error)
		}
		r.local.q.finish(err)
	}
}

// logForwarder sends one request's lines to the replica holding the browser, in order, in
// batches, from its own goroutine (owned by PodLogs.relays, stopped by stop or stopRelays).
type logForwarder struct {
	logs    *PodLogs
	replica string
	id      string
	q       *logQueue
	quit    chan struct{}
	once    sync.Once
}

func newLogForwarder(p *PodLogs, replica, id string) *logForwarder {
	return &logForwarder{logs: p, replica: replica, id: id,
		q: newLogQueue(defaultLogQueueLines, defaultLogQueueBytes), quit: make(chan struct{})}
}

func (f *logForwarder) offer(r logRecord) bool { return f.q.offer(r) }
func (f *logForwarder) finish(err error)       { f.q.finish(err) }

// stop ends the forwarder without sending the rest: the browser left.
func (f *logForwarder) stop() { f.once.Do(func() { close(f.quit) }) }

func (f *logForwarder) run() {
	p := f.logs
	var seq uint64
	for {
		recs, done, err := f.q.take()
		for len(recs) > 0 || done {
			n := min(len(recs), logBatchLines)
			seq++
			b := logsBatch{RequestID: f.id, Seq: seq, Lines: make([]relayedLine, n)}
			for i, r := range recs[:n] {
				b.Lines[i] = relayedLine(r)
			}
			recs = recs[n:]
			if done && len(recs) == 0 {
				b.End = true
				if err != nil {
					b.Error = err.Error()
				}
			}
			if sendErr := f.send(b); sendErr != nil {
				p.log.Debug("relaying log lines failed", "request_id", f.id, "replica", f.replica, "err", sendErr)
				f.abandon()
				return
			}
			if b.End {
				return
			}
		}
		select {
		case <-f.q.ready:
		case <-f.quit:
			return
		case <-p.relayCtx.Done():
			return
		}
	}
}

func (f *logForwarder) send(b logsBatch) error {
	payload, err := json.Marshal(b)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(f.logs.relayCtx, logBatchTimeout)
	defer cancel()
	return f.logs.dir.Send(ctx, f.replica, cluster.ReplicaMessage{Kind: kindLogsLines, Payload: payload})
}

// abandon stops the agent's stream when its lines cannot reach the browser's replica.
func (f *logForwarder) abandon() {
	p := f.logs
	if r := p.dropRoute(f.id); r != nil && r.conn != nil {
		r.conn.push(outbound(models.MessageTypeLogsStop, p.clock.Now(), models.LogsStop{RequestID: f.id}))
	}
}
