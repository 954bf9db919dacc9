package websocket_test

import (
	"database/sql/driver"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/streamspace/streamspace-realtime/models"
)

// commandPayload is the embedder's payload type: a named map that stores itself as JSON, as
// StreamSpace's models.CommandPayload does.
type commandPayload map[string]interface{}

func (p commandPayload) Value() (driver.Value, error) { return json.Marshal(p) }

func (p *commandPayload) Scan(v any) error {
	switch b := v.(type) {
	case nil:
		*p = nil
		return nil
	case []byte:
		return json.Unmarshal(b, p)
	case string:
		return json.Unmarshal([]byte(b), p)
	}
	return fmt.Errorf("command payload: cannot scan %T", v)
}

// embedderCommand is the embedder's own command model, shaped as StreamSpace's
// models.AgentCommand: a surrogate ID next to the CommandID the agent sees, nullable
// SessionID and ErrorMessage, a pointer to a named payload map, nullable timestamps.
type embedderCommand struct {
	ID             string          `json:"id" db:"id"`
	CommandID      string          `json:"commandId" db:"command_id"`
	AgentID        string          `json:"agentId" db:"agent_id"`
	SessionID      *string         `json:"sessionId,omitempty" db:"session_id"`
	Action         string          `json:"action" db:"action"`
	Payload        *commandPayload `json:"payload,omitempty" db:"payload"`
	Status         string          `json:"status" db:"status"`
	ErrorMessage   *string         `json:"errorMessage,omitempty" db:"error_message"`
	CreatedAt      time.Time       `json:"createdAt" db:"created_at"`
	SentAt         *time.Time      `json:"sentAt,omitempty" db:"sent_at"`
	AcknowledgedAt *time.Time      `json:"acknowledgedAt,omitempty" db:"acknowledged_at"`
	CompletedAt    *time.Time      `json:"completedAt,omitempty" db:"completed_at"`
}

// toModel converts the embedder's command to the package's, field for field: the only
// conversion an embedder writes to hand its commands to AgentHub.SendCommandToAgent.
func (c embedderCommand) toModel() *models.AgentCommand {
	var payload map[string]interface{}
	if c.Payload != nil {
		payload = *c.Payload
	}
	return &models.AgentCommand{
		ID:             c.ID,
		CommandID:      c.CommandID,
		AgentID:        c.AgentID,
		SessionID:      c.SessionID,
		Action:         c.Action,
		Payload:        payload,
		Status:         c.Status,
		ErrorMessage:   c.ErrorMessage,
		CreatedAt:      c.CreatedAt,
		SentAt:         c.SentAt,
		AcknowledgedAt: c.AcknowledgedAt,
		CompletedAt:    c.CompletedAt,
	}
}

// embedderCommandFrom converts a command read back from the hub's store to the embedder's
// model, field for field.
func embedderCommandFrom(m models.AgentCommand) embedderCommand {
	var payload *commandPayload
	if m.Payload != nil {
		p := commandPayload(m.Payload)
		payload = &p
	}
	return embedderCommand{
		ID:             m.ID,
		CommandID:      m.CommandID,
		AgentID:        m.AgentID,
		SessionID:      m.SessionID,
		Action:         m.Action,
		Payload:        payload,
		Status:         m.Status,
		ErrorMessage:   m.ErrorMessage,
		CreatedAt:      m.CreatedAt,
		SentAt:         m.SentAt,
		AcknowledgedAt: m.AcknowledgedAt,
		CompletedAt:    m.CompletedAt,
	}
}

// String shows a command with its optional fields dereferenced, for test failures.
func (c embedderCommand) String() string {
	deref := func(p *string) string {
		if p == nil {
			return "<nil>"
		}
		return strconv.Quote(*p)
	}
	var payload any
	if c.Payload != nil {
		payload = *c.Payload
	}
	return fmt.Sprintf("{ID:%q CommandID:%q AgentID:%q SessionID:%s Action:%q Payload:%v Status:%q ErrorMessage:%s acked:%t completed:%t}",
		c.ID, c.CommandID, c.AgentID, deref(c.SessionID), c.Action, payload, c.Status, deref(c.ErrorMessage),
		c.AcknowledgedAt != nil, c.CompletedAt != nil)
}
