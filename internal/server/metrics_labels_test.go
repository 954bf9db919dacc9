package server

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"

	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
)

// metricLabels are the only label names the server's metrics use; each takes its values from
// a set fixed in the code (docs/OPERATIONS.md).
var metricLabels = []string{"kind", "reason", "type", "state", "outcome", "source", "route", "code", "error", "op"}

// TestMetricLabelsAreBounded drives traffic whose every identifier is unique (organizations,
// users, sessions, agents, paths, frame types, tokens) and checks that no metric grows a label
// value from it: the label sets stay what the code fixes, whoever connects.
func TestMetricLabelsAreBounded(t *testing.T) {
	ts := startServer(t, "sqlite", func(c *Config) { c.MaxConnectionsPerUser = 1 })
	const marker = "zzuniq"
	for i := range 3 {
		n := string(rune('a' + i))
		tok := mint(t, marker+"-user-"+n, marker+"-org-"+n, auth.RoleOperator, time.Hour)
		ts.dialWS(t, "/api/v1/ws/sessions?token="+tok, nil)
		ts.dialWS(t, "/api/v1/ws/sessions?token="+tok, nil) // 429: over the user's limit
		ts.dialWS(t, "/api/v1/ws/sessions?session_id="+marker+"-session-"+n+"&token="+tok, nil)
		ts.dialWS(t, "/api/v1/ws/logs/"+marker+"-pod-"+n+"?token="+tok, nil)
		ts.post(t, "/api/v1/events", testService, `{"orgId":"`+marker+`-org-`+n+`","type":"session.created","sessionId":"`+marker+`-s-`+n+`"}`)
		ts.post(t, "/api/v1/events", testService, `{"orgId":"`+marker+`-org-`+n+`","type":"`+marker+`.type"}`)
		ts.call(t, http.MethodGet, "/"+marker+"/path/"+n, nil, "")
		ts.call(t, http.MethodDelete, "/api/v1/events", nil, "")
		ts.dialWS(t, "/api/v1/ws/sessions?token="+marker+"-bad-token", nil)
	}
	// An agent sending types of its own, malformed frames and a flood of unknown commands.
	keys := provisionAgents(t, ts, marker+"-agent", 1)
	conn, status, code := ts.connectAgent(t, marker+"-agent-0000", keys[0])
	if conn == nil {
		t.Fatalf("agent connect: %d %s", status, code)
	}
	for i := range 5 {
		sendAgent(t, conn, marker+"-frame-"+string(rune('a'+i)), map[string]any{})
		sendAgent(t, conn, "ack", map[string]any{"commandId": marker + "-cmd"})
	}
	sendAgent(t, conn, "heartbeat", map[string]any{"status": "online"})
	for range 11 { // the eleventh malformed frame in a minute closes the agent
		_ = conn.WriteMessage(gorilla.TextMessage, []byte("not json "+marker))
	}

	// The agent's frames are counted as they are read: wait for its close.
	var families []*dto.MetricFamily
	closed := func() bool {
		var err error
		if families, err = ts.registry.Gather(); err != nil {
			t.Fatal(err)
		}
		return counted(families, "streamspace_disconnects_total") >= 1
	}
	_ = testkit.WaitFor(5*time.Second, closed) // on a timeout the checks below say what is missing
	var names []string
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), "streamspace_") {
			continue
		}
		names = append(names, f.GetName())
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if !slices.Contains(metricLabels, l.GetName()) {
					t.Errorf("%s has label %q, not one of %v", f.GetName(), l.GetName(), metricLabels)
				}
				if strings.Contains(l.GetValue(), marker) || len(l.GetValue()) > 64 {
					t.Errorf("%s{%s=%q}: a value from the traffic", f.GetName(), l.GetName(), l.GetValue())
				}
			}
		}
	}
	// The traffic reached the families whose labels could have grown.
	for _, want := range []string{
		"streamspace_connections", "streamspace_messages_in_total", "streamspace_messages_out_total",
		"streamspace_disconnects_total", "streamspace_http_requests_total", "streamspace_http_refusals_total",
		"streamspace_agent_frames_in_total", "streamspace_agent_frames_refused_total", "streamspace_events_published_total",
	} {
		if !slices.Contains(names, want) {
			t.Errorf("%s was not gathered; got %v", want, names)
		}
	}
}

// counted is the sum of a counter family's samples (0 when absent).
func counted(families []*dto.MetricFamily, name string) float64 {
	sum := 0.0
	for _, f := range families {
		if f.GetName() == name {
			for _, m := range f.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}
