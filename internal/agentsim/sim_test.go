package agentsim

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.uber.org/goleak"

	"github.com/streamspace/streamspace-realtime/agentclient"
	"github.com/streamspace/streamspace-realtime/agentclient/agenttest"
	"github.com/streamspace/streamspace-realtime/models"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitTimeout = 5 * time.Second

// run starts a Sim against a fake control plane and returns the plane and the connection.
func run(t *testing.T, clock clockwork.Clock) (*Sim, *agenttest.Server, *agenttest.Conn) {
	t.Helper()
	cp := agenttest.NewServer("k")
	t.Cleanup(cp.Close)
	sim, err := New(Config{
		Config: agentclient.Config{
			ServerURL: cp.URL, AgentID: "sim-1", APIKey: "k", Platform: models.PlatformDocker,
			HeartbeatInterval: 10 * time.Millisecond, BackoffMin: 5 * time.Millisecond, BackoffMax: 20 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Clock: clock,
		},
		StepDelay: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- sim.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(waitTimeout):
			t.Error("Run did not return")
		}
	})
	conn, err := cp.NextConn(wctx(t))
	if err != nil {
		t.Fatal(err)
	}
	return sim, cp, conn
}

func wctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

func next[T any](t *testing.T, c *agenttest.Conn, typ string) T {
	t.Helper()
	m, err := c.Next(wctx(t), typ)
	if err != nil {
		t.Fatal(err)
	}
	v, err := agenttest.Decode[T](m)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func command(t *testing.T, c *agenttest.Conn, id, action, session string) {
	t.Helper()
	payload := map[string]any{}
	if session != "" {
		payload["sessionId"] = session
	}
	if err := c.SendCommand(id, action, payload, 1); err != nil {
		t.Fatal(err)
	}
}

// expectStatus waits for the next status report and checks its state.
func expectStatus(t *testing.T, c *agenttest.Conn, state string) models.StatusMessage {
	t.Helper()
	s := next[models.StatusMessage](t, c, models.MessageTypeStatus)
	if s.SessionID != "s1" || s.State != state {
		t.Fatalf("status %+v, want s1 %s", s, state)
	}
	return s
}

func TestSessionLifecycle(t *testing.T) {
	sim, _, c := run(t, nil)

	command(t, c, "c1", models.ActionStartSession, "s1")
	if s := expectStatus(t, c, models.SessionStatePending); s.VNCReady {
		t.Fatalf("pending session vncReady: %+v", s)
	}
	s := expectStatus(t, c, models.SessionStateRunning)
	if !s.VNCReady || s.VNCPort != 5900 || s.PlatformMetadata["podName"] != "sim-s1" || s.PlatformMetadata["podIP"] != "10.0.0.1" {
		t.Fatalf("running status %+v", s)
	}
	done := next[models.CompleteMessage](t, c, models.MessageTypeComplete)
	if done.CommandID != "c1" || done.Result["sessionId"] != "s1" || done.Result["podName"] != "sim-s1" || done.Result["state"] != "running" {
		t.Fatalf("complete %+v", done)
	}
	if got := sim.Sessions(); got["s1"] != models.SessionStateRunning {
		t.Fatalf("sessions %v", got)
	}
	// The heartbeats count it.
	for hb := next[models.HeartbeatMessage](t, c, models.MessageTypeHeartbeat); hb.ActiveSessions != 1; {
		hb = next[models.HeartbeatMessage](t, c, models.MessageTypeHeartbeat)
	}

	for _, step := range []struct{ id, action, state string }{
		{"c2", models.ActionHibernateSession, models.SessionStateHibernated},
		{"c3", models.ActionWakeSession, models.SessionStateRunning},
		{"c4", models.ActionStopSession, models.SessionStateStopped},
	} {
		command(t, c, step.id, step.action, "s1")
		expectStatus(t, c, step.state)
		if done := next[models.CompleteMessage](t, c, models.MessageTypeComplete); done.CommandID != step.id || done.Result["state"] != step.state {
			t.Fatalf("%s: complete %+v", step.action, done)
		}
	}
	if got := sim.Sessions(); len(got) != 0 {
		t.Fatalf("a stopped session is still held: %v", got)
	}

	// Every transition was reported before its command completed.
	var order []string
	for _, f := range c.Frames() {
		if f.Type == models.MessageTypeStatus || f.Type == models.MessageTypeComplete {
			order = append(order, f.Type)
		}
	}
	want := []string{"status", "status", "complete", "status", "complete", "status", "complete", "status", "complete"}
	if !slices.Equal(order, want) {
		t.Fatalf("frames %v, want %v", order, want)
	}
}

func TestCommandFailures(t *testing.T) {
	_, _, c := run(t, nil)
	command(t, c, "c1", models.ActionStartSession, "")
	command(t, c, "c2", models.ActionStopSession, "nope")
	command(t, c, "c3", models.ActionHibernateSession, "nope")
	command(t, c, "c4", models.ActionWakeSession, "nope")
	want := map[string]string{
		"c1": "payload.sessionId is required",
		"c2": "unknown session nope",
		"c3": "unknown session nope",
		"c4": "unknown session nope",
	}
	for range want {
		f := next[models.FailedMessage](t, c, models.MessageTypeFailed)
		if want[f.CommandID] != f.Error {
			t.Errorf("%s failed with %q, want %q", f.CommandID, f.Error, want[f.CommandID])
		}
	}
}

func TestLogs(t *testing.T) {
	clock := clockwork.NewFakeClock()
	_, _, c := run(t, clock)
	command(t, c, "c1", models.ActionStartSession, "s1")
	expectStatus(t, c, models.SessionStatePending)
	// One step on the fake clock; the agent's tickers (ping, heartbeat) and the step timer wait.
	if err := clock.BlockUntilContext(wctx(t), 3); err != nil {
		t.Fatal(err)
	}
	clock.Advance(10 * time.Millisecond)
	expectStatus(t, c, models.SessionStateRunning)

	if err := c.Send(models.MessageTypeLogs, models.LogsRequest{RequestID: "r1", SessionID: "s1", Pod: "sim-s1", TailLines: 2, Follow: true}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"line 1", "line 2"} {
		l := next[models.LogLine](t, c, models.MessageTypeLog)
		if l.RequestID != "r1" || l.Pod != "sim-s1" || l.Timestamp == nil || !strings.HasSuffix(l.Line, "sim sim-s1: "+n) {
			t.Fatalf("log line %+v, want %q", l, n)
		}
	}
	if err := clock.BlockUntilContext(wctx(t), 3); err != nil { // ping, heartbeat, follow tickers
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	if l := next[models.LogLine](t, c, models.MessageTypeLog); !strings.HasSuffix(l.Line, "line 3") {
		t.Fatalf("followed line %+v", l)
	}
	if err := c.Send(models.MessageTypeLogsStop, models.LogsStop{RequestID: "r1"}); err != nil {
		t.Fatal(err)
	}
	if end := next[models.LogEnd](t, c, models.MessageTypeLogEnd); end.RequestID != "r1" || end.Error != "" {
		t.Fatalf("log_end %+v", end)
	}

	if err := c.Send(models.MessageTypeLogs, models.LogsRequest{RequestID: "r2", SessionID: "gone", TailLines: 2}); err != nil {
		t.Fatal(err)
	}
	if end := next[models.LogEnd](t, c, models.MessageTypeLogEnd); end.RequestID != "r2" || end.Error != "unknown session gone" {
		t.Fatalf("log_end of an unknown session %+v", end)
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := New(Config{Config: agentclient.Config{ServerURL: "http://h", AgentID: "a", Platform: "vm"}, StepDelay: -1}); err == nil {
		t.Fatal("negative StepDelay accepted")
	}
	if _, err := New(Config{Config: agentclient.Config{ServerURL: "http://h", AgentID: "a", Platform: "nope"}}); err == nil {
		t.Fatal("bad platform accepted")
	}
}
