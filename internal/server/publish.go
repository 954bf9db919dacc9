package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/streamspace/streamspace-realtime/cluster"
	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/websocket"
)

// publishRequest is the body of POST /api/v1/events: a SessionEvent and the
// organization it belongs to.
type publishRequest struct {
	OrgID     string                 `json:"orgId"`
	Type      websocket.EventType    `json:"type"`
	SessionID string                 `json:"sessionId"`
	UserID    string                 `json:"userId"`
	Timestamp *time.Time             `json:"timestamp"`
	Data      map[string]interface{} `json:"data"`
}

// accepted is the 202 answer of the publish APIs: where the entry went.
type accepted struct {
	Status string `json:"status"`
	OrgID  string `json:"orgId"`
	Epoch  string `json:"epoch"`
	Offset uint64 `json:"offset"`
}

func (s *Server) handlePublishEvent(w http.ResponseWriter, r *http.Request) {
	if !auth.ServiceTokenValid(r, s.cfg.ServiceToken) {
		s.fail(w, r, http.StatusUnauthorized, "unauthorized", "service token required")
		return
	}
	var req publishRequest
	if !s.decodeBody(w, r, &req) {
		return
	}
	switch {
	case req.OrgID == "":
		s.fail(w, r, http.StatusBadRequest, "missing_org", "orgId is required")
		return
	case !req.Type.Valid():
		s.fail(w, r, http.StatusBadRequest, "unknown_event_type", fmt.Sprintf("type %q is not a session event type", req.Type))
		return
	case req.SessionID == "" && req.UserID == "":
		s.fail(w, r, http.StatusBadRequest, "missing_target", "sessionId or userId is required")
		return
	case req.Timestamp != nil && !encodableInUTC(*req.Timestamp):
		s.fail(w, r, http.StatusBadRequest, "invalid_json", `body is not valid JSON of the expected shape: field "timestamp" is out of range`)
		return
	}
	event := websocket.SessionEvent{Type: req.Type, SessionID: req.SessionID, UserID: req.UserID, Data: req.Data}
	if req.Timestamp != nil {
		event.Timestamp = *req.Timestamp
	}
	pos, err := s.manager.GetNotifier().Publish(r.Context(), req.OrgID, event)
	s.answerPublished(w, r, req.OrgID, pos, err)
}

// encodableInUTC reports whether t, once in UTC as events are stored, still has a year JSON can
// encode (0000 to 9999). RFC 3339 allows "0000-01-01T00:00:00+01:00", which is year -1 in UTC:
// accepted as is, it failed the publish with a 503 instead of refusing the body.
func encodableInUTC(t time.Time) bool {
	y := t.UTC().Year()
	return y >= 0 && y <= 9999
}

// handleOrgBroadcast serves POST /api/v1/orgs/{org}/broadcast: any JSON
// object, to every browser of that organization. Callers: services (service
// token) and the organization's own admins.
func (s *Server) handleOrgBroadcast(w http.ResponseWriter, r *http.Request) {
	org := r.PathValue("org")
	if !auth.ServiceTokenValid(r, s.cfg.ServiceToken) {
		token, ok := auth.BearerToken(r)
		if !ok {
			s.fail(w, r, http.StatusUnauthorized, "unauthorized", "service token or admin token required")
			return
		}
		id, err := s.verifier.Verify(token)
		if err != nil {
			s.fail(w, r, http.StatusUnauthorized, auth.ErrorCode(err), err.Error())
			return
		}
		if id.Role != auth.RoleAdmin || id.OrgID != org {
			s.fail(w, r, http.StatusForbidden, "forbidden", "only the organization's admins may broadcast to it")
			return
		}
	}
	var body map[string]json.RawMessage
	raw, ok := s.readBodyUpTo(w, r, min(s.cfg.MaxBroadcastBytes, s.cfg.MaxBodyBytes), "broadcast body")
	if !ok {
		return
	}
	if err := json.Unmarshal(raw, &body); err != nil || body == nil {
		s.fail(w, r, http.StatusBadRequest, "invalid_body", "body must be a JSON object")
		return
	}
	for _, reserved := range []string{"offset", "epoch"} {
		if _, taken := body[reserved]; taken {
			s.fail(w, r, http.StatusBadRequest, "invalid_body", fmt.Sprintf("%q is set by the server", reserved))
			return
		}
	}
	pos, err := s.manager.GetNotifier().BroadcastToOrg(r.Context(), org, raw)
	s.answerPublished(w, r, org, pos, err)
}

func (s *Server) answerPublished(w http.ResponseWriter, r *http.Request, org string, pos cluster.Position, err error) {
	if err != nil {
		s.log.Error("publish failed", "org_id", org, "err", err)
		s.fail(w, r, http.StatusServiceUnavailable, "unavailable", "event stream unavailable")
		return
	}
	writeJSON(w, http.StatusAccepted, accepted{Status: "accepted", OrgID: org, Epoch: pos.Epoch, Offset: pos.Offset})
}

// readBody reads at most MaxBodyBytes, answering 413 past it.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	return s.readBodyUpTo(w, r, s.cfg.MaxBodyBytes, "body")
}

// readBodyUpTo reads at most limit bytes, answering 413 past it; what names the body there.
func (s *Server) readBodyUpTo(w http.ResponseWriter, r *http.Request, limit int64, what string) ([]byte, bool) {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		s.fail(w, r, http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("%s exceeds %d bytes", what, tooBig.Limit))
		return nil, false
	case err != nil:
		s.fail(w, r, http.StatusBadRequest, "invalid_body", "could not read body")
		return nil, false
	}
	return raw, true
}

// decodeBody reads and decodes a JSON body into v.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	raw, ok := s.readBody(w, r)
	if !ok {
		return false
	}
	if err := json.Unmarshal(raw, v); err != nil {
		s.fail(w, r, http.StatusBadRequest, "invalid_json", "body is not valid JSON of the expected shape: "+jsonProblem(err))
		return false
	}
	return true
}

// jsonProblem describes a decoding error without echoing the body.
func jsonProblem(err error) string {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		return fmt.Sprintf("field %q has the wrong type", typeErr.Field)
	}
	var syntaxErr *json.SyntaxError
	if errors.As(err, &syntaxErr) {
		return fmt.Sprintf("syntax error at byte %d", syntaxErr.Offset)
	}
	return "malformed"
}
