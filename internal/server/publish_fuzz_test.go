package server

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/streamspace/streamspace-realtime/websocket"
)

// FuzzPublishEvent sends fuzzed bodies to POST /api/v1/events through the server's real handler.
// The answer is 202 or a 4xx, never a 5xx; a refusal is JSON {"error","message"}, both set; a 202
// carries the event's position and is given only to an event PROTOCOL.md 4.3 allows.
// The corpus is in testdata/fuzz/FuzzPublishEvent.
func FuzzPublishEvent(f *testing.F) {
	for _, seed := range []string{
		`{"orgId":"o1","type":"session.created","sessionId":"s1","userId":"u1","data":{"template":"firefox"}}`,
		`{"orgId":"o1","type":"session.state.changed","sessionId":"s1","timestamp":"2026-11-26T10:30:00Z","data":{"oldState":"pending","newState":"running"}}`,
		`{"orgId":"o1","type":"session.shared","userId":"u2","timestamp":"2026-11-26T10:30:00.5+02:00"}`,
		`{"orgId":"o1","type":"session.idle","sessionId":"s1","timestamp":"0000-01-01T00:00:00Z"}`,
		`{"orgId":"o1","type":"session.error","sessionId":"s1","timestamp":"9999-12-31T23:59:59Z"}`,
		`{"orgId":"o1","type":"session.active","userId":"u1","timestamp":"0000-01-01T00:00:00+00:00"}`,
		`{"orgId":"o1","type":"session.active","userId":"u1","timestamp":"9999-12-31T23:59:59-00:00"}`,
		`{"orgId":"o1","type":"session.created","sessionId":"s1","timestamp":12}`,
		`{"orgId":"o1","type":"session.created","sessionId":"s1","timestamp":null,"data":null}`,
		`{"orgId":"o1","type":"session.created","sessionId":"s1","data":[1]}`,
		`{"orgId":"o1","type":"session.exploded","sessionId":"s1"}`,
		`{"orgId":"o1","type":"session.created"}`,
		`{"type":"session.created","sessionId":"s1"}`,
		`{"orgId":"` + strings.Repeat("o", 5000) + `","type":"session.created","sessionId":"s1"}`,
		`{"ORGID":"o1","Type":"session.deleted","SessionId":"s1","orgId":""}`,
		`{"orgId":"o1",`, `[1,2]`, `null`, `"x"`, ``,
	} {
		f.Add([]byte(seed))
	}
	h := fuzzServer(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/api/v1/events", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testService)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("status %d with Content-Type %q", rec.Code, ct)
		}
		if rec.Code != http.StatusAccepted {
			var eb errorBody
			if rec.Code < 400 || rec.Code > 499 {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error == "" || eb.Message == "" {
				t.Fatalf("status %d with body %s (%v)", rec.Code, rec.Body, err)
			}
			return
		}
		var got accepted
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
			t.Fatalf("202 with body %s: %v", rec.Body, err)
		}
		// What the handler accepted, read here on its own.
		var sent struct {
			OrgID     string `json:"orgId"`
			Type      string `json:"type"`
			SessionID string `json:"sessionId"`
			UserID    string `json:"userId"`
		}
		if err := json.Unmarshal(body, &sent); err != nil {
			t.Fatalf("202 for a body that does not decode: %v", err)
		}
		switch {
		case got.Status != "accepted" || got.Epoch == "" || got.Offset == 0 || got.OrgID != sent.OrgID:
			t.Fatalf("202 with %+v for org %q", got, sent.OrgID)
		case sent.OrgID == "":
			t.Fatal("202 without an orgId")
		case !slices.Contains(websocket.EventTypes(), websocket.EventType(sent.Type)):
			t.Fatalf("202 for the event type %q", sent.Type)
		case sent.SessionID == "" && sent.UserID == "":
			t.Fatal("202 without sessionId or userId")
		}
	})
}

// fuzzServer builds one server for the whole fuzz run (each fuzzing process builds its own) and
// returns its handler; no listener is needed. The body limit is lowered so small inputs reach
// the 413 path, and each organization keeps one entry of history, since the fuzzer invents
// organizations by the thousand.
func fuzzServer(f *testing.F) http.Handler {
	cfg := testConfig(f, "sqlite", map[string]string{
		"STREAMSPACE_MAX_BODY_BYTES": "4096",
		"STREAMSPACE_HISTORY_SIZE":   "1",
		"STREAMSPACE_HISTORY_TTL":    "1ms",
	})
	srv, err := New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatalf("new server: %v", err)
	}
	f.Cleanup(func() {
		if err := srv.Shutdown(context.Background()); err != nil {
			f.Errorf("shutdown: %v", err)
		}
	})
	return srv.Handler()
}
