package websocket_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"
)

// embedReadWait bounds each wait for a frame: generous, so a loaded machine is only slower.
const embedReadWait = 20 * time.Second

// embedFrame is one decoded frame of either side.
type embedFrame map[string]any

func (f embedFrame) payload() embedFrame {
	p, _ := f["payload"].(map[string]any)
	return p
}

// dialEmbedder opens a socket on the embedder's server; it returns the HTTP answer of a
// refused upgrade instead of failing.
func dialEmbedder(t *testing.T, s *embedderServer, path string, query url.Values, header http.Header) (*gorilla.Conn, int) {
	t.Helper()
	u := s.wsURL + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	conn, resp, err := gorilla.DefaultDialer.Dial(u, header)
	if err != nil {
		if resp != nil {
			return nil, resp.StatusCode
		}
		t.Fatalf("dial %s: %v", path, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn, http.StatusSwitchingProtocols
}

// dialEmbedAgent connects a StreamSpace agent speaking PROTOCOL.md 3 with its key.
func dialEmbedAgent(t *testing.T, s *embedderServer, agentID, key string) (*gorilla.Conn, int) {
	t.Helper()
	return dialEmbedder(t, s, "/api/v1/agents/connect", url.Values{"agent_id": {agentID}},
		http.Header{"X-Agent-API-Key": {key}})
}

// dialEmbedBrowser opens a browser's sessions socket with a token of the embedder.
func dialEmbedBrowser(t *testing.T, s *embedderServer, token, sessionID string) (*gorilla.Conn, int) {
	t.Helper()
	q := url.Values{}
	if sessionID != "" {
		q.Set("session_id", sessionID)
	}
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	return dialEmbedder(t, s, "/api/v1/ws/sessions", q, h)
}

// sendAgentFrame writes one frame of the agent envelope (PROTOCOL.md 3.2).
func sendAgentFrame(t *testing.T, conn *gorilla.Conn, typ string, payload any) {
	t.Helper()
	frame := map[string]any{"type": typ, "timestamp": time.Now().UTC().Format(time.RFC3339Nano), "payload": payload}
	if err := conn.WriteJSON(frame); err != nil {
		t.Fatalf("agent: send %s: %v", typ, err)
	}
}

// nextFrame reads frames until one of type typ for which match (when given) holds, skipping
// the others (list refreshes, error answers, events).
func nextFrame(t *testing.T, conn *gorilla.Conn, typ string, match func(embedFrame) bool) embedFrame {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(embedReadWait))
	defer func() { _ = conn.SetReadDeadline(time.Time{}) }()
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for a %s frame: %v", typ, err)
		}
		var f embedFrame
		if err := json.Unmarshal(data, &f); err != nil {
			t.Fatalf("frame is not a JSON object: %v: %s", err, data)
		}
		if f["type"] == typ && (match == nil || match(f)) {
			return f
		}
	}
}

// nextCommand reads the agent's next command frame with the given commandId.
func nextCommand(t *testing.T, conn *gorilla.Conn, commandID string) embedFrame {
	t.Helper()
	return nextFrame(t, conn, "command", func(f embedFrame) bool {
		return f.payload()["commandId"] == commandID
	}).payload()
}

// sessionNames lists the names of a sessions_update frame's sessions.
func sessionNames(f embedFrame) []string {
	list, _ := f["sessions"].([]any)
	var names []string
	for _, s := range list {
		if m, ok := s.(map[string]any); ok {
			name, _ := m["name"].(string)
			names = append(names, name)
		}
	}
	return names
}

// sessionEntry returns the entry of a sessions_update frame named name.
func sessionEntry(f embedFrame, name string) embedFrame {
	list, _ := f["sessions"].([]any)
	for _, s := range list {
		if m, ok := s.(map[string]any); ok && m["name"] == name {
			return m
		}
	}
	return nil
}
