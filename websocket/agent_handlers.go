package websocket

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/models"
)

// Session states an agent may report that end a session's row.
const sessionStateDeleted = "deleted"

// handleFrame decodes one frame from an agent and acts on it. A refused frame is answered
// with an error frame and logged once; malformed ones count toward the connection's limit.
func (h *AgentHub) handleFrame(c *AgentConnection, data []byte, now time.Time) {
	f, ferr := decodeAgentFrame(data)
	if ferr == nil {
		h.metrics.frameIn(f.Type)
		ferr = h.dispatchFrame(c, f, now)
	} else {
		h.metrics.frameIn("unknown")
	}
	if ferr != nil {
		h.refuse(c, ferr, now)
	}
}

func (h *AgentHub) dispatchFrame(c *AgentConnection, f agentFrame, now time.Time) *frameError {
	switch f.Type {
	case models.MessageTypeHeartbeat:
		hb, err := decodeHeartbeat(f)
		if err != nil {
			return err
		}
		c.setStatus(hb.Status)
		h.queueBeat(c, now, hb.Status, hb.Capacity)
	case models.MessageTypeAck:
		m, err := decodeAck(f)
		if err != nil {
			return err
		}
		return h.withStore(func(ctx context.Context) *frameError { return h.ack(ctx, c, m, now) })
	case models.MessageTypeComplete:
		m, err := decodeComplete(f)
		if err != nil {
			return err
		}
		return h.withStore(func(ctx context.Context) *frameError {
			return h.finish(ctx, c, m.CommandID, models.CommandStatusCompleted, m.Result, "", now)
		})
	case models.MessageTypeFailed:
		m, err := decodeFailed(f)
		if err != nil {
			return err
		}
		return h.withStore(func(ctx context.Context) *frameError {
			return h.finish(ctx, c, m.CommandID, models.CommandStatusFailed, nil, m.Error, now)
		})
	case models.MessageTypeStatus:
		m, err := decodeStatus(f)
		if err != nil {
			return err
		}
		c.queueStatus(m, statusPodName(m), now)
	case models.MessageTypeLog:
		var m models.LogLine
		if err := decodePayload(f, &m); err != nil {
			return err
		}
		h.logs.onLogLine(c, m, now)
	case models.MessageTypeLogEnd:
		var m models.LogEnd
		if err := decodePayload(f, &m); err != nil {
			return err
		}
		h.logs.onLogEnd(c, m)
	case models.MessageTypePong:
		// A sign of life, already counted.
	default:
		// Unknown types are counted (frameIn) and ignored, so agents can be newer than us.
	}
	return nil
}

// withStore runs fn with a context bounded for one round of database calls; frames that need
// no database (heartbeats, pongs) do not pay for a timer.
func (h *AgentHub) withStore(fn func(ctx context.Context) *frameError) *frameError {
	ctx, cancel := context.WithTimeout(h.ctx, defaultStoreCallTimeout)
	defer cancel()
	return fn(ctx)
}

// refuse answers a refused frame and closes the connection with 1008 once malformed frames
// pass the limit.
func (h *AgentHub) refuse(c *AgentConnection, ferr *frameError, now time.Time) {
	reason := "rejected"
	if ferr.malformed {
		reason = "malformed"
	}
	h.metrics.refused.WithLabelValues(reason).Inc()
	if !ferr.logged {
		h.cfg.Logger.Info("agent frame refused", "agent_id", c.AgentID, "reason", reason,
			"err", ferr.msg, "command_id", ferr.commandID, "session_id", ferr.sessionID)
	}
	c.push(errorFrame(ferr, now))
	if ferr.malformed && c.noteMalformed(now) {
		c.closeWith(websocket.ClosePolicyViolation, "too many malformed frames", "malformed")
	}
}

// ack moves the command to ack. An ack for a command that already moved on is a harmless
// duplicate; one for a command that is not this agent's is refused.
func (h *AgentHub) ack(ctx context.Context, c *AgentConnection, m models.AckMessage, now time.Time) *frameError {
	c.answered(m.CommandID, now)
	tr, err := h.store.AckCommand(ctx, c.AgentID, m.CommandID, now)
	if errors.Is(err, db.ErrNotFound) {
		return &frameError{msg: "unknown command", commandID: m.CommandID, malformed: true}
	}
	if err != nil {
		return h.storeFailed(c, "ack", m.CommandID, err)
	}
	c.untrack(m.CommandID)
	if tr.Applied {
		h.metrics.commands.WithLabelValues(models.CommandStatusAck).Inc()
	}
	return nil
}

// finish records a command's result (completed) or error (failed). A replay of a command
// that is already final changes nothing and is answered so the agent can tell.
func (h *AgentHub) finish(ctx context.Context, c *AgentConnection, id, status string, result map[string]any, errText string, now time.Time) *frameError {
	c.answered(id, now)
	var (
		tr  db.Transition
		err error
	)
	if status == models.CommandStatusCompleted {
		tr, err = h.store.CompleteCommand(ctx, c.AgentID, id, result, now)
	} else {
		tr, err = h.store.FailCommand(ctx, c.AgentID, id, errText, now)
	}
	if errors.Is(err, db.ErrNotFound) {
		return &frameError{msg: "unknown command", commandID: id, malformed: true}
	}
	if err != nil {
		return h.storeFailed(c, status, id, err)
	}
	c.untrack(id)
	if !tr.Applied {
		// Results are sent at least once: after a redelivery this replay is expected, and an
		// agent back to a large backlog sends many. Answered and counted, logged at debug.
		h.cfg.Logger.Debug("agent frame refused", "agent_id", c.AgentID, "reason", "rejected",
			"err", "command is already "+tr.Status, "command_id", id)
		return &frameError{msg: "command is already " + tr.Status, commandID: id, logged: true}
	}
	h.metrics.commands.WithLabelValues(status).Inc()
	return nil
}

// storeFailed logs a database failure while handling a command's answer and answers the agent
// without blaming it: the frame was fine, so it does not count toward the malformed limit. The
// answer names the command and says retry, so the agent can send the frame again (status
// reports get the same answer from applyStatuses).
func (h *AgentHub) storeFailed(c *AgentConnection, what, id string, err error) *frameError {
	h.cfg.Logger.Warn("handling agent frame failed", "agent_id", c.AgentID, "type", what, "id", id, "err", err)
	return &frameError{msg: fmt.Sprintf("could not record %s now; send it again later", what), commandID: id, logged: true, retry: true}
}
