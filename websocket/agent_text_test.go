package websocket

import (
	"strings"
	"testing"
	"time"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
)

// TestAgentFramesWithBytesThatAreNotText: ids and names holding a NUL, which PostgreSQL cannot
// store, are refused as malformed frames before any database call, on both dialects, with the
// answer of any malformed frame (never "could not record … send it again", which would have the
// agent resend them forever); a failure's error text has its NUL dropped and is recorded.
func TestAgentFramesWithBytesThatAreNotText(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		h := newAgentHarness(t, d, AgentHubConfig{})
		h.addAgent("a1")
		ctx := t.Context()
		if err := d.CreateSession(ctx, models.Session{ID: "s1", OrgID: "o1", UserID: "u1", AgentID: "a1"}); err != nil {
			t.Fatal(err)
		}
		const nul = `\u0000`
		cases := []struct {
			name, frame, want string
		}{
			{"ack id with NUL", `{"type":"ack","payload":{"commandId":"c` + nul + `"}}`, `ack payload field "commandId" is not valid UTF-8 text without control characters`},
			{"complete id with NUL", `{"type":"complete","payload":{"commandId":"c` + nul + `"}}`, `complete payload field "commandId" is not valid UTF-8 text without control characters`},
			{"failed id with NUL", `{"type":"failed","payload":{"commandId":"c` + nul + `","error":"x"}}`, `failed payload field "commandId" is not valid UTF-8 text without control characters`},
			{"status session id with NUL", `{"type":"status","payload":{"sessionId":"s1` + nul + `","state":"running"}}`, `status payload field "sessionId" is not valid UTF-8 text without control characters`},
			{"status state with NUL", `{"type":"status","payload":{"sessionId":"s1","state":"run` + nul + `"}}`, `status payload field "state" is not valid UTF-8 text without control characters`},
			{"status pod with NUL", `{"type":"status","payload":{"sessionId":"s1","state":"running","platformMetadata":{"podName":"p` + nul + `"}}}`, `status payload field "platformMetadata.podName" is not valid UTF-8 text without control characters`},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				a := h.connectFor(t, "a1")
				a.sendRaw(c.frame)
				if e := a.errorFrame(); e.Message != c.want || e.Retry {
					t.Errorf("answer %+v, want %q without retry", e, c.want)
				}
			})
		}
		if s, err := d.GetSession(ctx, "s1"); err != nil || s.State != models.SessionStatePending || s.PodName != "" {
			t.Errorf("session after refused reports: %+v, %v", s, err)
		}
		if got := counterValue(t, h.hub.metrics.refused.WithLabelValues("malformed")); got != float64(len(cases)) {
			t.Errorf("%v frames counted malformed, want %d", got, len(cases))
		}

		// A failure whose error text holds a NUL is recorded without it.
		cmd := h.submit("a1", models.ActionStopSession, map[string]any{"sessionId": "s1"})
		a := h.connect("a1")
		a.command()
		a.sendRaw(`{"type":"failed","payload":{"commandId":"` + cmd.CommandID + `","error":"disk` + nul + ` full"}}`)
		testkit.Eventually(t, 5*time.Second, "command failed", func() bool {
			return h.command(cmd.CommandID).Status == models.CommandStatusFailed
		})
		if got := h.command(cmd.CommandID).GetErrorMessage(); got != "disk full" || strings.ContainsRune(got, 0) {
			t.Errorf("stored error %q, want %q", got, "disk full")
		}
		a.quiet(100 * time.Millisecond)
	})
}
