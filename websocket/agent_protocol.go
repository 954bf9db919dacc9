package websocket

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/models"
)

// agentFrame is one decoded frame from an agent: the envelope of PROTOCOL.md 3.2 with its
// payload still raw, decoded by the handler of its type.
type agentFrame struct {
	Type      string
	Timestamp time.Time // zero when the agent sent none
	Payload   json.RawMessage
}

// frameError is the reason a frame was refused. Its text goes back to the agent in an error
// frame, so it names the problem without echoing the frame.
type frameError struct {
	msg       string
	commandID string
	sessionID string
	// malformed frames count toward the per-connection limit; refusals of well-formed frames
	// (a replayed complete) do not, since at-least-once delivery makes them legitimate.
	malformed bool
	// logged: the cause was logged where it happened.
	logged bool
	// retry: the frame was fine but could not be recorded; the agent should send it again.
	retry bool
}

func (e *frameError) Error() string { return e.msg }

func malformed(format string, args ...any) *frameError {
	return &frameError{msg: fmt.Sprintf(format, args...), malformed: true}
}

// decodeAgentFrame checks the envelope: one JSON object whose "type" is a non-empty string,
// whose "timestamp", when present, is an RFC 3339 string, and whose "payload", when present, is
// an object. Anything else is malformed.
func decodeAgentFrame(data []byte) (agentFrame, *frameError) {
	var raw struct {
		Type      json.RawMessage `json:"type"`
		Timestamp json.RawMessage `json:"timestamp"`
		Payload   json.RawMessage `json:"payload"`
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return agentFrame{}, malformed("frame is not a JSON object")
	}
	if err := json.Unmarshal(trimmed, &raw); err != nil {
		return agentFrame{}, malformed("frame is not valid JSON")
	}
	var f agentFrame
	if json.Unmarshal(raw.Type, &f.Type) != nil || f.Type == "" {
		return agentFrame{}, malformed("type must be a non-empty string")
	}
	if isPresent(raw.Timestamp) {
		var ts string
		if json.Unmarshal(raw.Timestamp, &ts) != nil {
			return agentFrame{}, malformed("timestamp must be an RFC 3339 string")
		}
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			return agentFrame{}, malformed("timestamp must be an RFC 3339 string")
		}
		f.Timestamp = t.UTC()
	}
	if isPresent(raw.Payload) {
		if raw.Payload[0] != '{' {
			return agentFrame{}, malformed("payload must be an object")
		}
		f.Payload = raw.Payload
	}
	return f, nil
}

// isPresent reports whether a raw field was given a value other than null.
func isPresent(raw json.RawMessage) bool {
	return len(raw) > 0 && !bytes.Equal(raw, []byte("null"))
}

// decodePayload decodes a frame's payload into dst; an absent payload leaves dst zero.
func decodePayload(f agentFrame, dst any) *frameError {
	if len(f.Payload) == 0 {
		return nil
	}
	if err := json.Unmarshal(f.Payload, dst); err != nil {
		return malformed("%s payload has the wrong shape: %s", f.Type, shapeError(err))
	}
	return nil
}

// shapeError names the field a decode failed on, without the value.
func shapeError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Sprintf("field %q must be %s", te.Field, jsonKind(te.Type.Kind().String()))
	}
	return "invalid JSON"
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "map", "struct":
		return "an object"
	case "slice", "array":
		return "an array"
	case "int", "int64", "float64", "int32", "uint", "uint64":
		return "a number"
	}
	return "of another type"
}

// maxIDLen bounds command and session ids from agents; real ones are far shorter.
const maxIDLen = models.MaxIDLen

// requireID checks an id an agent sent: present, bounded, and valid UTF-8 without control
// characters (NUL included), so an id that can name nothing never reaches the database.
func requireID(frameType, field, v string) *frameError {
	if v == "" {
		return malformed("%s payload needs %q", frameType, field)
	}
	if len(v) > maxIDLen {
		return malformed("%s payload field %q is too long", frameType, field)
	}
	if !models.ValidID(v) {
		return malformed("%s payload field %q is not valid UTF-8 text without control characters", frameType, field)
	}
	return nil
}

func decodeHeartbeat(f agentFrame) (models.HeartbeatMessage, *frameError) {
	var hb models.HeartbeatMessage
	if err := decodePayload(f, &hb); err != nil {
		return hb, err
	}
	switch hb.Status {
	case "":
		hb.Status = models.AgentStatusOnline
	case models.AgentStatusOnline, models.AgentStatusDraining:
	default:
		return hb, malformed("heartbeat status must be online or draining")
	}
	// The capacity is stored with the agent and listed to operators. Only a payload that
	// could hold a large one pays for measuring it.
	if len(f.Payload) > models.MaxAgentObjectBytes && len(hb.Capacity) > 0 {
		if b, _ := json.Marshal(hb.Capacity); len(b) > models.MaxAgentObjectBytes {
			return hb, malformed("heartbeat payload field %q is too large", "capacity")
		}
	}
	return hb, nil
}

func decodeAck(f agentFrame) (models.AckMessage, *frameError) {
	var m models.AckMessage
	if err := decodePayload(f, &m); err != nil {
		return m, err
	}
	return m, requireID(f.Type, "commandId", m.CommandID)
}

// decodeComplete accepts any JSON result: an object is stored as it is, null or none as no
// result, and anything else under "value" (the stored result is always an object).
func decodeComplete(f agentFrame) (models.CompleteMessage, *frameError) {
	var m struct {
		CommandID string          `json:"commandId"`
		Result    json.RawMessage `json:"result"`
	}
	if err := decodePayload(f, &m); err != nil {
		return models.CompleteMessage{}, err
	}
	out := models.CompleteMessage{CommandID: m.CommandID}
	if err := requireID(f.Type, "commandId", m.CommandID); err != nil {
		return out, err
	}
	if isPresent(m.Result) {
		if m.Result[0] == '{' {
			if json.Unmarshal(m.Result, &out.Result) != nil {
				return out, malformed("complete result is not valid JSON")
			}
		} else {
			var v any
			if json.Unmarshal(m.Result, &v) != nil {
				return out, malformed("complete result is not valid JSON")
			}
			out.Result = map[string]any{"value": v}
		}
	}
	return out, nil
}

// decodeFailed reads a failed frame. The error is text for people: a NUL in it (which
// PostgreSQL cannot store) is dropped rather than losing the failure, and it is cut at
// models.MaxCommandErrorLen.
func decodeFailed(f agentFrame) (models.FailedMessage, *frameError) {
	var m models.FailedMessage
	if err := decodePayload(f, &m); err != nil {
		return m, err
	}
	m.Error = models.TruncateUTF8(models.SanitizeText(m.Error), models.MaxCommandErrorLen)
	return m, requireID(f.Type, "commandId", m.CommandID)
}

// maxStateLen bounds a reported session state.
const maxStateLen = 64

func decodeStatus(f agentFrame) (models.StatusMessage, *frameError) {
	var m models.StatusMessage
	if err := decodePayload(f, &m); err != nil {
		return m, err
	}
	if err := requireID(f.Type, "sessionId", m.SessionID); err != nil {
		return m, err
	}
	m.State = strings.ToLower(strings.TrimSpace(m.State))
	if m.State == "" || len(m.State) > maxStateLen {
		return m, malformed("status payload needs a state")
	}
	if !models.ValidName(m.State) {
		return m, malformed("status payload field %q is not valid UTF-8 text without control characters", "state")
	}
	if pod, ok := m.PlatformMetadata["podName"].(string); ok && !models.ValidName(pod) {
		return m, malformed("status payload field %q is not valid UTF-8 text without control characters", "platformMetadata.podName")
	}
	// The pod name is stored with the session and sent in every sessions_update: one that is
	// no Kubernetes name refuses the report rather than being stored cut.
	if len(statusPodName(m)) > models.MaxPodNameLen {
		return m, malformed("status payload field %q is too long", "platformMetadata.podName")
	}
	return m, nil
}

// statusPodName is the pod a status report names, if any (a podName that is not a string is
// ignored).
func statusPodName(m models.StatusMessage) string {
	pod, _ := m.PlatformMetadata["podName"].(string)
	return pod
}

// Session states an agent may report that end a session's row.
const sessionStateDeleted = "deleted"

// handleDecoded acts on one frame from an agent, as decodeAgentFrame read it, and reports
// whether the hub left the frame to the embedder (AgentConnection.Receive): a type it does not
// handle, or a vnc_* frame of a session no Tunnel of this package holds. A refused frame is
// answered with an error frame and logged once; malformed ones count toward the connection's
// limit; neither is left to the embedder.
func (h *AgentHub) handleDecoded(c *AgentConnection, f agentFrame, ferr *frameError, now time.Time) (left bool) {
	if ferr == nil {
		h.metrics.frameIn(f.Type)
		left, ferr = h.dispatchFrame(c, f, now)
	} else {
		h.metrics.frameIn("unknown")
	}
	if ferr != nil {
		h.refuse(c, ferr, now)
		return false
	}
	return left
}

func (h *AgentHub) dispatchFrame(c *AgentConnection, f agentFrame, now time.Time) (left bool, _ *frameError) {
	if handled, left, err := h.dispatchTunnelFrame(c, f, now); handled {
		return left, err
	}
	if !controlFrames[f.Type] {
		// Unknown types are counted (frameIn) and left to the embedder, so agents can be
		// newer than us and embedders can speak more than we do.
		return true, nil
	}
	return false, h.dispatchControlFrame(c, f, now)
}

// controlFrames are the types of the agent's control protocol (PROTOCOL.md 3) the hub handles.
var controlFrames = map[string]bool{
	models.MessageTypeHeartbeat: true, models.MessageTypeAck: true, models.MessageTypeComplete: true,
	models.MessageTypeFailed: true, models.MessageTypeStatus: true, models.MessageTypeLog: true,
	models.MessageTypeLogEnd: true, models.MessageTypePong: true,
}

// dispatchControlFrame handles a frame of one of the controlFrames types.
func (h *AgentHub) dispatchControlFrame(c *AgentConnection, f agentFrame, now time.Time) *frameError {
	switch f.Type {
	case models.MessageTypeHeartbeat:
		hb, err := decodeHeartbeat(f)
		if err != nil {
			return err
		}
		c.setStatus(hb.Status)
		h.beats.queue(c.AgentID, c.connID, now, hb.Status, hb.Capacity)
	case models.MessageTypeAck:
		m, err := decodeAck(f)
		if err != nil {
			return err
		}
		return h.withStore(func(ctx context.Context) *frameError {
			return h.answered(c, "ack", m.CommandID, h.commands.ack(ctx, c.cmds, m.CommandID, now))
		})
	case models.MessageTypeComplete:
		m, err := decodeComplete(f)
		if err != nil {
			return err
		}
		return h.withStore(func(ctx context.Context) *frameError {
			err := h.commands.finish(ctx, c.cmds, m.CommandID, models.CommandStatusCompleted, m.Result, "", now)
			return h.answered(c, models.CommandStatusCompleted, m.CommandID, err)
		})
	case models.MessageTypeFailed:
		m, err := decodeFailed(f)
		if err != nil {
			return err
		}
		return h.withStore(func(ctx context.Context) *frameError {
			err := h.commands.finish(ctx, c.cmds, m.CommandID, models.CommandStatusFailed, nil, m.Error, now)
			return h.answered(c, models.CommandStatusFailed, m.CommandID, err)
		})
	case models.MessageTypeStatus:
		m, err := decodeStatus(f)
		if err != nil {
			return err
		}
		c.statuses.put(m, statusPodName(m), now)
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
	if ferr.malformed && c.budget.noteMalformed(now) {
		c.closeWith(websocket.ClosePolicyViolation, "too many malformed frames", "malformed")
	}
}

// answered turns the commandBook's answer to an agent's ack, complete or failed frame into
// the hub's answer to the agent: nothing, unknown command (malformed), a replay of a final
// command (answered so the agent can tell, logged at debug), or a database failure.
func (h *AgentHub) answered(c *AgentConnection, what, id string, err error) *frameError {
	var final alreadyFinal
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errUnknownCommand):
		return &frameError{msg: "unknown command", commandID: id, malformed: true}
	case errors.As(err, &final):
		// Results are sent at least once: after a redelivery this replay is expected, and an
		// agent back to a large backlog sends many. Answered and counted, logged at debug.
		h.cfg.Logger.Debug("agent frame refused", "agent_id", c.AgentID, "reason", "rejected",
			"err", final.Error(), "command_id", id)
		return &frameError{msg: final.Error(), commandID: id, logged: true}
	default:
		return h.storeFailed(c, what, id, err)
	}
}

// storeFailed logs a database failure while handling a command's answer and answers the agent
// without blaming it: the frame was fine, so it does not count toward the malformed limit. The
// answer names the command and says retry, so the agent can send the frame again (status
// reports get the same answer from applyStatuses).
func (h *AgentHub) storeFailed(c *AgentConnection, what, id string, err error) *frameError {
	h.cfg.Logger.Warn("handling agent frame failed", "agent_id", c.AgentID, "type", what, "id", id, "err", err)
	return &frameError{msg: fmt.Sprintf("could not record %s now; send it again later", what), commandID: id, logged: true, retry: true}
}

// outbound encodes one frame to an agent. Every frame carries the time it was made, as an
// RFC 3339 string: StreamSpace's agents decode it into a time.Time.
func outbound(frameType string, at time.Time, payload any) []byte {
	b, err := json.Marshal(struct {
		Type      string    `json:"type"`
		Timestamp time.Time `json:"timestamp"`
		Payload   any       `json:"payload"`
	}{frameType, at.UTC(), payload})
	if err != nil {
		// Payloads are the package's own types and maps read back from the database's JSON
		// columns, so they always encode; failing here is a bug in this package.
		panic(fmt.Sprintf("websocket: encode %s frame: %v", frameType, err))
	}
	return b
}

func errorFrame(e *frameError, at time.Time) []byte {
	return outbound(models.MessageTypeError, at, models.ErrorMessage{
		Message: e.msg, CommandID: e.commandID, SessionID: e.sessionID, Retry: e.retry,
	})
}
