package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/streamspace/streamspace-realtime/cluster"
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
	if _, ok := s.authorize(w, r, serviceOnly); !ok {
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
	scope, ok := s.authorize(w, r, orgAdminAPI)
	if !ok {
		return
	}
	if !scope.Service && scope.OrgID != org {
		s.fail(w, r, http.StatusForbidden, "forbidden", orgAdminAPI.message)
		return
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
