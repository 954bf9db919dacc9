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

// TestAgentOversizeFieldsNotStored: what an agent reports is stored, and sent on to browsers,
// within bounds. A status report naming a 500 KiB pod is refused (the pod would be in every
// sessions_update), as is a heartbeat with a capacity past MaxAgentObjectBytes; a failed
// command's error text is stored cut. The connection goes on.
func TestAgentOversizeFieldsNotStored(t *testing.T) {
	t.Parallel()
	dbtest.ForEachDialect(t, func(t *testing.T, d *db.Database) {
		t.Parallel()
		h := newAgentHarness(t, d, AgentHubConfig{HeartbeatTimeout: time.Hour})
		h.addAgent("a1")
		ctx := t.Context()
		if err := d.CreateSession(ctx, models.Session{ID: "s1", OrgID: "o1", UserID: "u1", AgentID: "a1"}); err != nil {
			t.Fatal(err)
		}
		a := h.connect("a1")

		a.send("status", map[string]any{"sessionId": "s1", "state": "running",
			"platformMetadata": map[string]any{"podName": strings.Repeat("p", 500<<10)}})
		if e := a.errorFrame(); e.Message != `status payload field "platformMetadata.podName" is too long` {
			t.Fatalf("answer to a 500 KiB pod name: %+v", e)
		}
		a.send("heartbeat", map[string]any{"status": "online",
			"capacity": map[string]any{"blob": strings.Repeat("c", models.MaxAgentObjectBytes)}})
		if e := a.errorFrame(); e.Message != `heartbeat payload field "capacity" is too large` {
			t.Fatalf("answer to a huge capacity: %+v", e)
		}

		// Within bounds: a pod name as long as Kubernetes allows, a heartbeat without capacity
		// (it keeps the last one queued, had the huge one been), a long error text.
		pod := strings.Repeat("q", models.MaxPodNameLen)
		a.send("status", map[string]any{"sessionId": "s1", "state": "running", "platformMetadata": map[string]any{"podName": pod}})
		a.send("heartbeat", map[string]any{"status": "online"})
		cmd := h.submit("a1", models.ActionStopSession, map[string]any{"sessionId": "s1"})
		a.command()
		a.send("failed", map[string]any{"commandId": cmd.CommandID, "error": "é" + strings.Repeat("e", 100<<10)})
		testkit.Eventually(t, 5*time.Second, "session running with its pod and the command failed", func() bool {
			s, _ := d.GetSession(ctx, "s1")
			return s.State == models.SessionStateRunning && s.PodName == pod && h.command(cmd.CommandID).Status == models.CommandStatusFailed
		})
		if got := h.command(cmd.CommandID).GetErrorMessage(); len(got) != models.MaxCommandErrorLen || !strings.HasPrefix(got, "é") {
			t.Errorf("stored error text of %d bytes, want the first %d", len(got), models.MaxCommandErrorLen)
		}
		evs := h.events.all()
		if len(evs) != 1 || evs[0].ev.Data["podName"] != pod {
			t.Errorf("%d events, want one naming the short pod", len(evs))
		}
		flushes := counterValue(t, h.hub.metrics.flushes)
		h.clock.Advance(h.hub.cfg.HeartbeatFlush)
		testkit.Eventually(t, 5*time.Second, "heartbeats flushed", func() bool { return counterValue(t, h.hub.metrics.flushes) > flushes })
		if c := h.agentRow("a1").Capacity; c["blob"] != nil {
			t.Errorf("the refused capacity was stored (%d keys)", len(c))
		}
	})
}
