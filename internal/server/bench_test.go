package server

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/db/dbtest"
)

// BenchmarkCommandRoundTrip measures a command from the admin API to the agent on loopback:
// POST /api/v1/admin/agents/{id}/command until the agent has read the command frame. The
// command is stored first, so the figure includes that write and the claim that marks it sent.
// p50 and p99 are reported per operation; the agent acks each command outside the timing.
func BenchmarkCommandRoundTrip(b *testing.B) {
	for _, dialect := range dbtest.Dialects() {
		b.Run("db="+dialect, func(b *testing.B) { benchCommandRoundTrip(b, dialect) })
	}
}

func benchCommandRoundTrip(b *testing.B, dialect string) {
	ts := startServer(b, dialect)
	code, raw := ts.call(b, "POST", "/api/v1/admin/agents", bearer(testService), registerBody("bench-1", "docker"))
	if code != http.StatusCreated {
		b.Fatalf("create agent: %d %s", code, raw)
	}
	var reg struct{ APIKey string }
	_ = json.Unmarshal(raw, &reg)
	agent, _, err := gorilla.DefaultDialer.Dial(ts.wsURL("/api/v1/agents/connect?agent_id=bench-1"), agentKey(reg.APIKey))
	if err != nil {
		b.Fatal(err)
	}
	defer agent.Close()
	b.ResetTimer()
	reportPercentiles(b, commandLatencies(b, ts.base, "bench-1", agent))
}

// commandLatencies posts b.N commands for agentID to base's admin API and returns, for each,
// the time until the agent read the command frame. The agent acks each outside the timing.
func commandLatencies(b *testing.B, base, agentID string, agent *gorilla.Conn) []time.Duration {
	client := &http.Client{}
	body := `{"action":"wake_session","sessionId":"s1","payload":{}}`
	lat := make([]time.Duration, 0, b.N)
	for range b.N {
		start := time.Now()
		req, _ := http.NewRequest(http.MethodPost, base+"/api/v1/admin/agents/"+agentID+"/command", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testService)
		resp, err := client.Do(req)
		if err != nil || resp.StatusCode != http.StatusAccepted {
			b.Fatalf("command: %v %v", err, resp)
		}
		_ = resp.Body.Close()
		_, msg, err := agent.ReadMessage()
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
		b.StopTimer()
		var f struct {
			Payload struct {
				CommandID string `json:"commandId"`
			} `json:"payload"`
		}
		_ = json.Unmarshal(msg, &f)
		ack, _ := json.Marshal(map[string]any{"type": "ack", "timestamp": time.Now().UTC(), "payload": map[string]any{"commandId": f.Payload.CommandID}})
		_ = agent.WriteMessage(gorilla.TextMessage, ack)
		b.StartTimer()
	}
	b.StopTimer()
	return lat
}

// reportPercentiles reports the median and 99th percentile of lat per operation.
func reportPercentiles(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
