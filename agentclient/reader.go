package agentclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/models"
)

// inFrame is the envelope of a frame from the control plane. The timestamp is not read, so a
// missing or odd one never costs a frame.
type inFrame struct {
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload"`
}

// readLoop reads frames until the connection ends. Any frame, ping or pong extends the read
// deadline by pongWait. Pings of the control plane are answered through the writer, and close
// frames are answered by the writer too, so the reader never writes. Any read error ends the
// whole connection.
func (c *conn) readLoop() {
	defer close(c.readDone)
	ws := c.ws
	ws.SetReadLimit(readLimit)
	extend := func() { _ = ws.SetReadDeadline(time.Now().Add(c.a.pongWait)) }
	extend()
	ws.SetPongHandler(func(data string) error {
		extend()
		c.confirm(data)
		return nil
	})
	ws.SetPingHandler(func(data string) error {
		extend()
		select {
		case c.send <- outFrame{kind: websocket.PongMessage, data: []byte(data)}:
		default: // the queue is full: the next ping gets its pong
		}
		return nil
	})
	ws.SetCloseHandler(func(int, string) error { return nil })
	for {
		kind, data, err := ws.ReadMessage()
		if err != nil {
			c.readFailed(err)
			return
		}
		extend()
		c.gotFrame.Store(true)
		if kind == websocket.BinaryMessage {
			c.onData(data)
			continue
		}
		c.handle(data)
	}
}

// readFailed ends the connection after a read error. A close frame of the control plane is
// answered with the same code; 4000 means another process took the agent id over, 1001 that
// the replica is shutting down.
func (c *conn) readFailed(err error) {
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code == websocket.CloseAbnormalClosure {
		c.fail(fmt.Errorf("agentclient: read frame: %w", err))
		return
	}
	c.peerClose.Store(int32(ce.Code))
	var cause error
	switch ce.Code {
	case 4000:
		cause = fmt.Errorf("agentclient: connection closed by the control plane: %w", ErrReplaced)
	case websocket.CloseGoingAway:
		cause = fmt.Errorf("agentclient: connection closed by the control plane: %w", errGoingAway)
	default:
		cause = fmt.Errorf("agentclient: connection closed by the control plane: %w", ce)
	}
	code := ce.Code
	if code == websocket.CloseNoStatusReceived {
		code = websocket.CloseNormalClosure
	}
	c.closeWith(cause, code, "", false)
}

// handle dispatches one frame.
func (c *conn) handle(data []byte) {
	var f inFrame
	if err := json.Unmarshal(data, &f); err != nil || f.Type == "" {
		c.a.stats.unknown.Add(1)
		c.a.log.Debug("malformed frame from the control plane ignored", "frame", truncate(data, 200))
		return
	}
	switch f.Type {
	case models.MessageTypeCommand:
		c.onCommand(f.Payload)
	case models.MessageTypePing:
		c.onPing(f.Payload)
	case models.MessageTypeShutdown:
		c.onShutdown(f.Payload)
	case models.MessageTypeLogs:
		c.onLogs(f.Payload)
	case models.MessageTypeLogsStop:
		c.onLogsStop(f.Payload)
	case models.MessageTypeError:
		c.onError(f.Payload)
	case models.MessageTypeTunnelOpen:
		c.onTunnelOpen(f.Payload)
	case models.MessageTypeTunnelCredit:
		c.onTunnelCredit(f.Payload)
	case models.MessageTypeTunnelClose:
		c.onTunnelClose(f.Payload)
	case models.MessageTypeVNCData:
		c.onVNCData(f.Payload)
	case models.MessageTypeVNCClose:
		c.onVNCClose(f.Payload)
	default:
		c.a.stats.unknown.Add(1)
		c.a.log.Debug("frame of unknown type ignored", "type", f.Type)
	}
}

// onCommand acknowledges a command at once and hands it to the dispatcher, which runs it off
// this loop. While the Agent stops, commands are left unacknowledged for redelivery.
func (c *conn) onCommand(p json.RawMessage) {
	var cm models.CommandMessage
	if err := json.Unmarshal(p, &cm); err != nil || cm.CommandID == "" {
		c.a.stats.unknown.Add(1)
		c.a.log.Warn("malformed command ignored", "payload", truncate(p, 200))
		return
	}
	select {
	case <-c.done:
		return // the connection is ending: the command will be delivered again
	default:
	}
	if c.runCtx.Err() != nil {
		c.a.log.Debug("stopping: command left for redelivery", "command_id", cm.CommandID)
		return
	}
	c.a.stats.received.Add(1)
	c.a.dispatch(c.runCtx, cm, func() {
		// The queue applies backpressure to reading, never to handlers.
		_ = c.enqueueText(context.Background(), models.MessageTypeAck, models.AckMessage{CommandID: cm.CommandID})
	})
}

func (c *conn) onPing(json.RawMessage) {
	_ = c.enqueueText(context.Background(), models.MessageTypePong, models.PongMessage{Timestamp: c.a.clock.Now().UTC()})
}

// onShutdown stops the agent for good: an operator retired it.
func (c *conn) onShutdown(p json.RawMessage) {
	var m models.ShutdownMessage
	_ = json.Unmarshal(p, &m)
	c.a.log.Warn("control plane retired the agent (shutdown): stopping for good", "reason", m.Reason)
	c.closeWith(fmt.Errorf("agentclient: %w: %s", ErrShutdown, m.Reason), websocket.CloseNormalClosure, "shutdown received", true)
}

// onError logs an error frame once and counts it.
func (c *conn) onError(p json.RawMessage) {
	c.a.stats.serverErrors.Add(1)
	var m models.ErrorMessage
	if err := json.Unmarshal(p, &m); err != nil {
		c.a.log.Warn("control plane reported an error", "payload", truncate(p, 200))
		return
	}
	if m.Retry && m.CommandID != "" {
		// The control plane could not record a result for now: send it again with the next
		// heartbeat, a pace a control plane in trouble can bear.
		if f := c.a.resultFrame(m.CommandID); f != nil {
			c.a.retryLater(f)
			c.a.log.Info("control plane could not record a result; sending it again later", "command_id", m.CommandID, "message", m.Message)
			return
		}
	}
	if m.CommandID != "" && c.a.resultKnown(m.CommandID) {
		// Results are sent at least once: a replay is refused and that is expected.
		c.a.log.Info("control plane refused a result it already has", "message", m.Message, "command_id", m.CommandID)
		return
	}
	c.a.log.Warn("control plane reported an error", "message", m.Message, "command_id", m.CommandID, "session_id", m.SessionID)
}
