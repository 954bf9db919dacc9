package agentclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/streamspace/streamspace-realtime/models"
)

// RegisterResult is the control plane's answer to a registration that went through.
type RegisterResult struct {
	// StatusCode is 201 (new agent approved: a key was issued) or 200 (known agent).
	StatusCode int
	// ApprovalStatus is "approved" unless the control plane says otherwise.
	ApprovalStatus string
	// AgentID and Status (online, offline, draining) as the reply states them.
	AgentID string
	Status  string
	// APIKey is the key the control plane issued with this answer, empty when none was. The
	// Agent already uses it and has called Config.OnAPIKey.
	APIKey string
	// Agent is the reply's "agent" object as sent.
	Agent map[string]any
}

// registerReply is the body of a register answer (PROTOCOL.md 3.1).
type registerReply struct {
	Agent          map[string]any `json:"agent"`
	ApprovalStatus string         `json:"approvalStatus"`
	APIKey         string         `json:"apiKey"`
	AgentID        string         `json:"agentId"`
	Status         string         `json:"status"`
}

// errorReply is the body of an HTTP error (PROTOCOL.md 1).
type errorReply struct {
	Code    string `json:"error"`
	Message string `json:"message"`
}

// errPending is registerOnce's answer while an admin has not approved the agent.
var errPending = errors.New("registration pending approval")

// Register registers the agent: POST {server}/api/v1/agents/register with its id, platform,
// region, org, capacity and metadata. While the agent waits for approval (202) it retries with
// backoff until approved, ctx ends, or the agent is rejected (ErrRejected) or its key refused
// (ErrUnauthorized); other failures are returned at once. When the answer carries a new API
// key, the Agent switches to it and calls Config.OnAPIKey. Run registers by itself; call
// Register to register without connecting. Safe for concurrent use.
func (a *Agent) Register(ctx context.Context) (RegisterResult, error) {
	bo := newBackoff(a.cfg.BackoffMin, a.cfg.BackoffMax)
	pending := false
	for {
		res, err := a.registerOnce(ctx)
		if errors.Is(err, errPending) {
			if !pending {
				a.log.Info("registration pending: waiting for an admin to approve the agent")
				pending = true
			}
			if !sleep(ctx, a.clock, bo.next()) {
				return RegisterResult{}, fmt.Errorf("agentclient: register agent: %w", ctx.Err())
			}
			continue
		}
		if err != nil {
			return RegisterResult{}, err
		}
		if pending {
			a.log.Info("registration approved")
		}
		a.registered.Store(true)
		return res, nil
	}
}

// registerOnce sends one registration and interprets the answer.
func (a *Agent) registerOnce(ctx context.Context) (RegisterResult, error) {
	fail := func(err error) (RegisterResult, error) {
		return RegisterResult{}, fmt.Errorf("agentclient: register agent: %w", err)
	}
	body, err := json.Marshal(models.AgentRegistration{
		AgentID:  a.cfg.AgentID,
		Platform: a.cfg.Platform,
		Region:   a.cfg.Region,
		OrgID:    a.cfg.OrgID,
		Capacity: a.cfg.Capacity,
		Metadata: a.cfg.Metadata,
	})
	if err != nil {
		return fail(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.httpURL+"/api/v1/agents/register", bytes.NewReader(body))
	if err != nil {
		return fail(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Agent-API-Key", a.key())
	resp, err := a.cfg.HTTPClient.Do(req)
	if err != nil {
		return fail(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fail(fmt.Errorf("read answer: %w", err))
	}
	switch resp.StatusCode {
	case http.StatusOK, http.StatusCreated, http.StatusAccepted:
	case http.StatusUnauthorized:
		return fail(fmt.Errorf("%w: %s", ErrUnauthorized, httpErrorText(resp, data)))
	case http.StatusForbidden:
		return fail(fmt.Errorf("%w: %s", ErrRejected, httpErrorText(resp, data)))
	default:
		return fail(fmt.Errorf("unexpected answer %s", httpErrorText(resp, data)))
	}
	var reply registerReply
	if err := json.Unmarshal(data, &reply); err != nil {
		return fail(fmt.Errorf("decode %d answer: %w", resp.StatusCode, err))
	}
	// An issued key is taken whatever else the answer says: it may be the only copy.
	if reply.APIKey != "" {
		a.setKey(reply.APIKey)
	}
	switch {
	case reply.ApprovalStatus == models.ApprovalRejected:
		return fail(ErrRejected)
	case resp.StatusCode == http.StatusAccepted || reply.ApprovalStatus == models.ApprovalPending:
		return RegisterResult{}, errPending
	}
	res := RegisterResult{
		StatusCode:     resp.StatusCode,
		ApprovalStatus: reply.ApprovalStatus,
		AgentID:        reply.AgentID,
		Status:         reply.Status,
		APIKey:         reply.APIKey,
		Agent:          reply.Agent,
	}
	if res.ApprovalStatus == "" {
		res.ApprovalStatus = models.ApprovalApproved
	}
	return res, nil
}

// httpErrorText describes an HTTP error answer: its status and, when the body is the JSON error
// of PROTOCOL.md 1, its message.
func httpErrorText(resp *http.Response, body []byte) string {
	var e errorReply
	if json.Unmarshal(body, &e) == nil && (e.Message != "" || e.Code != "") {
		if e.Message == "" {
			e.Message = e.Code
		}
		return fmt.Sprintf("%s: %s", resp.Status, e.Message)
	}
	return resp.Status
}
