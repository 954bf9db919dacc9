package websocket

import (
	"context"
	"time"

	"github.com/streamspace/streamspace-realtime/models"
)

// dispatchLoop delivers the agent's commands. Its first pass sends every command waiting for
// the agent, the unacknowledged ones of earlier connections included, in creation order; later
// passes, woken by new commands or by the check loop, send what is pending and what the check
// loop wants sent again. One goroutine per connection keeps deliveries in order.
func (c *AgentConnection) dispatchLoop() {
	defer c.pumpDone()
	defer c.cancelDispatch()
	ctx := c.dispatchCtx // cancelled by closeWith: a pass blocked on the database ends with the connection
	first := true
	for {
		if c.deliverPass(ctx, first) {
			first = false
			c.retry.Store(false)
		} else {
			c.retry.Store(true)
		}
		select {
		case <-c.wake:
		case <-c.done:
			return
		}
	}
}

// deliverPass sends resends, then waiting commands, until none are left. It reports false when
// the database failed, so the check loop wakes the dispatcher again later.
func (c *AgentConnection) deliverPass(ctx context.Context, includeSent bool) bool {
	h := c.hub
	for _, id := range c.takeResends() {
		if !c.resendOne(ctx, c.inflightCommand(id)) {
			return false
		}
	}
	for {
		limit := deliverBatch
		if includeSent {
			limit = firstPassLimit
		}
		now := h.cfg.Clock.Now()
		// Claiming marks the batch sent (attempt+1) in one statement; a command claimed and
		// then lost with the connection is claimed again by the next one.
		cmds, err := h.store.ClaimCommands(ctx, c.AgentID, includeSent, limit, now)
		if err != nil {
			if !c.closing() {
				h.cfg.Logger.Warn("claiming waiting commands failed", "agent_id", c.AgentID, "err", err)
			}
			return false
		}
		for _, cmd := range cmds {
			if !c.send(cmd, cmd.Attempts, now) {
				return false
			}
		}
		if len(cmds) < limit {
			return true
		}
		// Unacknowledged commands past the first firstPassLimit wait for the next connection;
		// pending ones keep coming in batches.
		includeSent = false
	}
}

// resendOne marks a late command sent once more and queues it. A command that moved on
// meanwhile (acknowledged, finished) is skipped: the guarded update refuses it.
func (c *AgentConnection) resendOne(ctx context.Context, cmd *models.AgentCommand) bool {
	if cmd == nil {
		return true // acknowledged since the check loop asked
	}
	h := c.hub
	now := h.cfg.Clock.Now()
	attempt, ok, err := h.store.MarkCommandSent(ctx, cmd.CommandID, now)
	if err != nil {
		if !c.closing() {
			h.cfg.Logger.Warn("marking command sent failed", "agent_id", c.AgentID,
				"command_id", cmd.CommandID, "err", err)
		}
		return false
	}
	if !ok {
		c.untrack(cmd.CommandID)
		return true
	}
	return c.send(*cmd, attempt, now)
}

// send tracks a command as delivered and queues its frame. Only this connection's dispatcher
// sends commands, so the frame's number is the one after those queued so far (frames of
// other kinds queued meanwhile only make the ack timeout start a little later).
func (c *AgentConnection) send(cmd models.AgentCommand, attempt int, now time.Time) bool {
	c.track(cmd, attempt, now, c.queuedFrames.Load()+1)
	if attempt > 1 {
		c.hub.metrics.commands.WithLabelValues("resent").Inc()
	} else {
		c.hub.metrics.commands.WithLabelValues(models.CommandStatusSent).Inc()
	}
	return c.pushWait(commandFrame(cmd, attempt, now))
}

func (c *AgentConnection) track(cmd models.AgentCommand, attempt int, at time.Time, frame uint64) {
	stalled := c.stalled(at)
	c.flightMu.Lock()
	c.inflight[cmd.CommandID] = inflightCommand{cmd: cmd, attempt: attempt, sentAt: at, stalled: stalled, frame: frame}
	c.flightMu.Unlock()
}

// answered records that the agent answered command id at now: it has read the command's
// frame, and every frame before it.
func (c *AgentConnection) answered(id string, now time.Time) {
	c.flightMu.Lock()
	defer c.flightMu.Unlock()
	if f, ok := c.inflight[id]; ok && f.frame > c.reachedFrame {
		c.reachedFrame = f.frame
	}
	if now.After(c.lastAnswer) {
		c.lastAnswer = now
		c.answerStalled = c.stalled(now)
	}
}

func (c *AgentConnection) untrack(id string) {
	c.flightMu.Lock()
	delete(c.inflight, id)
	c.flightMu.Unlock()
}

func (c *AgentConnection) inflightCommand(id string) *models.AgentCommand {
	c.flightMu.Lock()
	defer c.flightMu.Unlock()
	f, ok := c.inflight[id]
	if !ok {
		return nil // acknowledged since the check loop asked
	}
	return &f.cmd
}

func (c *AgentConnection) hasResends() bool {
	c.flightMu.Lock()
	defer c.flightMu.Unlock()
	return len(c.resend) > 0
}

func (c *AgentConnection) takeResends() []string {
	c.flightMu.Lock()
	defer c.flightMu.Unlock()
	ids := c.resend
	c.resend = nil
	return ids
}

// overdue sorts the commands whose ack is late: those with deliveries left are queued for a
// resend, the others are returned to be failed. A queued resend counts as sent now, so a check
// that runs before the dispatcher gets to it does not queue it twice. A command whose frame
// still waits in the queue is not late: its timeout starts again, so that an agent busy
// reading a backlog is not sent the backlog a second time. Nor does the time the reader spent
// on this agent's frames count (a slow database): the agent's answers were waiting for it.
func (c *AgentConnection) overdue(now time.Time, ackTimeout time.Duration, maxAttempts int) (exhausted []inflightCommand) {
	written := c.writtenFrames.Load()
	stalled := c.stalled(now)
	c.flightMu.Lock()
	defer c.flightMu.Unlock()
	for id, f := range c.inflight {
		if f.frame > written {
			f.sentAt, f.stalled = now, stalled
			c.inflight[id] = f
			continue
		}
		// Past the last command the agent answered, the agent is still reading: its timeout
		// runs from that answer, so an agent working through a backlog is not sent it twice.
		// A command before it was read and left unanswered: it is late from its own delivery.
		since, stalledSince := f.sentAt, f.stalled
		if f.frame > c.reachedFrame && c.lastAnswer.After(since) {
			since, stalledSince = c.lastAnswer, c.answerStalled
		}
		if now.Sub(since)-(stalled-stalledSince) < ackTimeout {
			continue
		}
		if f.attempt >= maxAttempts {
			exhausted = append(exhausted, f)
			delete(c.inflight, id)
			continue
		}
		f.sentAt, f.stalled = now, stalled
		c.inflight[id] = f
		c.resend = append(c.resend, id)
	}
	return exhausted
}
