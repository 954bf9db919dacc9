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

// send tracks a command as delivered and queues its frame.
func (c *AgentConnection) send(cmd models.AgentCommand, attempt int, now time.Time) bool {
	c.track(cmd, attempt, now)
	if attempt > 1 {
		c.hub.metrics.commands.WithLabelValues("resent").Inc()
	} else {
		c.hub.metrics.commands.WithLabelValues(models.CommandStatusSent).Inc()
	}
	return c.pushWait(commandFrame(cmd, attempt, now))
}

func (c *AgentConnection) track(cmd models.AgentCommand, attempt int, at time.Time) {
	c.flightMu.Lock()
	c.inflight[cmd.CommandID] = inflightCommand{cmd: cmd, attempt: attempt, sentAt: at}
	c.flightMu.Unlock()
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
// that runs before the dispatcher gets to it does not queue it twice.
func (c *AgentConnection) overdue(now time.Time, ackTimeout time.Duration, maxAttempts int) (exhausted []inflightCommand) {
	c.flightMu.Lock()
	defer c.flightMu.Unlock()
	for id, f := range c.inflight {
		if now.Sub(f.sentAt) < ackTimeout {
			continue
		}
		if f.attempt >= maxAttempts {
			exhausted = append(exhausted, f)
			delete(c.inflight, id)
			continue
		}
		f.sentAt = now
		c.inflight[id] = f
		c.resend = append(c.resend, id)
	}
	return exhausted
}
