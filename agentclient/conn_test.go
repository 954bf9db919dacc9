package agentclient

import (
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jonboulle/clockwork"

	"github.com/streamspace/streamspace-realtime/agentclient/agenttest"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
)

func TestPingPongAndIgnoredFrames(t *testing.T) {
	cp, a, logs := setup(t, func(c *Config) { c.AgentID = "a b/c?d" })
	start(t, a)
	c := nextConn(t, cp)
	if c.AgentID != "a b/c?d" {
		t.Fatalf("agent_id arrived as %q", c.AgentID)
	}
	for _, raw := range []string{`not json`, `{"type":"weird","payload":{}}`, `{"type":"logs","payload":{"requestId":"r1"}}`} {
		if err := c.SendRaw([]byte(raw)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Send(models.MessageTypeError, models.ErrorMessage{Message: "bad frame", CommandID: "c9"}); err != nil {
		t.Fatal(err)
	}
	before := time.Now().Add(-time.Second)
	if err := c.Send(models.MessageTypePing, models.PingMessage{Timestamp: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	if p := next[models.PongMessage](t, c, models.MessageTypePong); p.Timestamp.Before(before) {
		t.Fatalf("pong %+v", p)
	}
	if s := a.Stats(); s.ServerErrors != 1 || s.UnknownFrames != 3 {
		t.Fatalf("stats %+v, want 1 server error and 3 unknown frames", s)
	}
	if n := countOf(logs.String(), "bad frame"); n != 1 {
		t.Fatalf("error frame logged %d times, want once", n)
	}
}

func TestReconnectAfterGoingAway(t *testing.T) {
	cp, a, _ := setup(t, func(c *Config) { c.BackoffMin, c.BackoffMax = 20*time.Millisecond, time.Minute })
	start(t, a)
	c1 := nextConn(t, cp)
	next[models.HeartbeatMessage](t, c1, models.MessageTypeHeartbeat)
	if err := c1.Close(websocket.CloseGoingAway, "server shutting down"); err != nil {
		t.Fatal(err)
	}
	c2 := nextConn(t, cp)
	if c1.CloseCode() != websocket.CloseGoingAway {
		t.Fatalf("agent answered the close with %d, want 1001", c1.CloseCode())
	}
	if hb := next[models.HeartbeatMessage](t, c2, models.MessageTypeHeartbeat); hb.Status != models.AgentStatusOnline {
		t.Fatalf("heartbeat %+v", hb)
	}
	if s := a.Stats(); s.Connects != 2 || s.Reconnects != 1 {
		t.Fatalf("stats %+v", s)
	}
	if len(cp.Registrations()) != 1 {
		t.Fatal("registered again after a 1001")
	}
}

func TestReplacedBy4000(t *testing.T) {
	cp, a1, _ := setup(t, nil)
	r1 := start(t, a1)
	c1 := nextConn(t, cp)
	next[models.HeartbeatMessage](t, c1, models.MessageTypeHeartbeat)

	// Another process with the same id connects: the control plane closes the first with 4000.
	a2, err := New(testConfig(cp, &testkit.LockedBuffer{}))
	if err != nil {
		t.Fatal(err)
	}
	start(t, a2)
	c2 := nextConn(t, cp)
	if err := r1.wait(t); !isErr(err, ErrReplaced) {
		t.Fatalf("Run: %v, want ErrReplaced", err)
	}
	<-c1.Done()
	if c1.CloseCode() != 4000 {
		t.Fatalf("first agent answered %d", c1.CloseCode())
	}
	roundTrip(t, c2) // the newer agent is unaffected
	if cp.ConnCount() != 2 {
		t.Fatalf("%d connections: the replaced agent reconnected", cp.ConnCount())
	}
}

func TestShutdownStopsForGood(t *testing.T) {
	cp, a, _ := setup(t, nil)
	r := start(t, a)
	c := nextConn(t, cp)
	if err := c.Send(models.MessageTypeShutdown, models.ShutdownMessage{Reason: "retired"}); err != nil {
		t.Fatal(err)
	}
	if err := r.wait(t); !isErr(err, ErrShutdown) {
		t.Fatalf("Run: %v, want ErrShutdown", err)
	}
	<-c.Done()
	if c.CloseCode() != websocket.CloseNormalClosure {
		t.Fatalf("close code %d, want 1000", c.CloseCode())
	}
	if cp.ConnCount() != 1 {
		t.Fatal("reconnected after shutdown")
	}
}

// A dead TCP connection while a handler runs: its status report and result are delivered on the
// next connection, before anything else, in order.
func TestResultsSurviveADeadConnection(t *testing.T) {
	cp, a, _ := setup(t, func(c *Config) { c.BackoffMin, c.BackoffMax = 200*time.Millisecond, time.Second })
	release := make(chan struct{})
	a.Handle("work", func(ctx context.Context, cmd Command) (map[string]any, error) {
		<-release
		if err := a.ReportStatus(ctx, models.StatusMessage{SessionID: "s1", State: "running"}); err != nil {
			return nil, err
		}
		return map[string]any{"ok": true}, nil
	})
	start(t, a)
	c1 := nextConn(t, cp)
	if err := c1.SendCommand("c1", "work", nil, 1); err != nil {
		t.Fatal(err)
	}
	next[models.AckMessage](t, c1, models.MessageTypeAck)
	if err := c1.Kill(); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, waitTimeout, "the agent to notice", func() bool { return !a.Stats().Connected })
	close(release) // the handler ends while no connection is up (backoff is ≥ 200ms)

	c2 := nextConn(t, cp)
	if s := next[models.StatusMessage](t, c2, models.MessageTypeStatus); s.SessionID != "s1" || s.State != "running" {
		t.Fatalf("status %+v", s)
	}
	if done := next[models.CompleteMessage](t, c2, models.MessageTypeComplete); done.CommandID != "c1" {
		t.Fatalf("complete %+v", done)
	}
	if got := types(c2.Frames())[:2]; !slices.Equal(got, []string{"status", "complete"}) {
		t.Fatalf("first frames on the new connection %v, want the outbox first", got)
	}
	if s := a.Stats(); s.Reconnects != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// A result written just before the connection dies, before the control plane confirmed it, is
// sent again on the next connection.
func TestUnconfirmedResultIsResent(t *testing.T) {
	cp, a, _ := setup(t, nil)
	release := make(chan struct{})
	a.Handle("work", func(ctx context.Context, cmd Command) (map[string]any, error) {
		<-release
		return nil, nil
	})
	start(t, a)
	c1 := nextConn(t, cp)
	if err := c1.SendCommand("c1", "work", nil, 1); err != nil {
		t.Fatal(err)
	}
	next[models.AckMessage](t, c1, models.MessageTypeAck)
	if err := c1.Kill(); err != nil {
		t.Fatal(err)
	}
	close(release) // races with the agent noticing: written into a dead socket, or not at all
	c2 := nextConn(t, cp)
	if done := next[models.CompleteMessage](t, c2, models.MessageTypeComplete); done.CommandID != "c1" {
		t.Fatalf("complete %+v", done)
	}
}

// A result the control plane read but never confirmed (its pong did not come) is sent again
// on the next connection; one it confirmed is not.
func TestResultsAreResentUntilConfirmed(t *testing.T) {
	cp, a, _ := setup(t, nil)
	a.Handle("work", func(ctx context.Context, cmd Command) (map[string]any, error) { return nil, nil })
	start(t, a)

	c1 := nextConn(t, cp) // answers pings: c1's result is confirmed
	if err := c1.SendCommand("c1", "work", nil, 1); err != nil {
		t.Fatal(err)
	}
	next[models.CompleteMessage](t, c1, models.MessageTypeComplete)
	// The agent pings right after writing the result, but the answer to a ping of ours that
	// was already queued may go out first. It writes that ping before it looks at its queue
	// again, so by the answer to a second ping of ours the control plane has read the agent's
	// ping and written its pong ahead of the close frame below.
	roundTrip(t, c1)
	roundTrip(t, c1)
	cp.IgnorePings(true)
	if err := c1.Close(websocket.CloseGoingAway, "bye"); err != nil {
		t.Fatal(err)
	}

	c2 := nextConn(t, cp) // ignores pings: c2's result stays unconfirmed
	cp.IgnorePings(false)
	if err := c2.SendCommand("c2", "work", nil, 1); err != nil {
		t.Fatal(err)
	}
	if done := next[models.CompleteMessage](t, c2, models.MessageTypeComplete); done.CommandID != "c2" {
		t.Fatalf("complete %+v", done)
	}
	if err := c2.Kill(); err != nil {
		t.Fatal(err)
	}

	c3 := nextConn(t, cp)
	if done := next[models.CompleteMessage](t, c3, models.MessageTypeComplete); done.CommandID != "c2" {
		t.Fatalf("re-sent complete %+v, want c2", done)
	}
	roundTrip(t, c3)
	for _, f := range c3.Frames() {
		if p, _ := agenttest.Decode[models.CompleteMessage](f); f.Type == models.MessageTypeComplete && p.CommandID == "c1" {
			t.Fatal("a confirmed result was sent again")
		}
	}
}

// failingConn fails its next write when failNext is set, as a broken network would.
type failingConn struct {
	net.Conn
	failNext *atomic.Bool
}

func (f failingConn) Write(p []byte) (int, error) {
	if f.failNext.CompareAndSwap(true, false) {
		return 0, errors.New("injected write failure")
	}
	return f.Conn.Write(p)
}

// One failed write tears the whole connection down (reader included) and the agent
// reconnects: it never stays half alive.
func TestWriteFailureTearsDownAndReconnects(t *testing.T) {
	var failNext atomic.Bool
	cp, a, _ := setup(t, func(c *Config) {
		c.Dialer = &websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return failingConn{Conn: conn, failNext: &failNext}, nil
		}}
	})
	start(t, a)
	c1 := nextConn(t, cp)
	next[models.HeartbeatMessage](t, c1, models.MessageTypeHeartbeat)
	failNext.Store(true)
	if err := c1.Send(models.MessageTypePing, models.PingMessage{Timestamp: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c1.Done(): // the agent closed the socket: its reader is gone too
	case <-waitCtx(t).Done():
		t.Fatal("the connection stayed open after a failed write")
	}
	c2 := nextConn(t, cp)
	roundTrip(t, c2)
}

func TestCancelClosesNormallyAfterHandlers(t *testing.T) {
	cp, a, _ := setup(t, nil)
	a.Handle("wait", func(ctx context.Context, cmd Command) (map[string]any, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	r := start(t, a)
	c := nextConn(t, cp)
	if err := c.SendCommand("c1", "wait", nil, 1); err != nil {
		t.Fatal(err)
	}
	next[models.AckMessage](t, c, models.MessageTypeAck)
	if err := r.stop(t); err != nil {
		t.Fatalf("Run: %v, want nil", err)
	}
	<-c.Done()
	if c.CloseCode() != websocket.CloseNormalClosure {
		t.Fatalf("close code %d, want 1000", c.CloseCode())
	}
	// The handler's outcome went out before the close frame.
	if f := next[models.FailedMessage](t, c, models.MessageTypeFailed); f.CommandID != "c1" {
		t.Fatalf("failed %+v", f)
	}
}

func TestCancelWhileDisconnected(t *testing.T) {
	cp, a, _ := setup(t, func(c *Config) { c.BackoffMin, c.BackoffMax = time.Hour, time.Hour })
	cp.QueueConnectAnswers(http.StatusServiceUnavailable)
	r := start(t, a)
	testkit.Eventually(t, waitTimeout, "a refused connect", func() bool { return len(cp.Registrations()) == 1 })
	if err := r.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if cp.ConnCount() != 0 {
		t.Fatal("connected despite the refusal")
	}
}

func TestRunOnceAtATime(t *testing.T) {
	cp, a, _ := setup(t, nil)
	start(t, a)
	nextConn(t, cp)
	if err := a.Run(context.Background()); !isErr(err, ErrRunning) {
		t.Fatalf("second Run: %v, want ErrRunning", err)
	}
}

func TestHeartbeats(t *testing.T) {
	clock := clockwork.NewFakeClock()
	cp, a, _ := setup(t, func(c *Config) {
		c.Clock = clock
		c.HeartbeatInterval = 30 * time.Second
		c.Capacity = map[string]any{"maxSessions": 5}
	})
	a.SetActiveSessions(func() int { return 3 })
	start(t, a)
	c := nextConn(t, cp)
	hb := next[models.HeartbeatMessage](t, c, models.MessageTypeHeartbeat)
	if hb.Status != models.AgentStatusOnline || hb.ActiveSessions != 3 || hb.Capacity["maxSessions"] != float64(5) {
		t.Fatalf("first heartbeat %+v", hb)
	}
	a.SetDraining(true) // sent at once
	if hb := next[models.HeartbeatMessage](t, c, models.MessageTypeHeartbeat); hb.Status != models.AgentStatusDraining {
		t.Fatalf("heartbeat after SetDraining %+v", hb)
	}
	// Writer's ping ticker and the heartbeat ticker.
	if err := clock.BlockUntilContext(waitCtx(t), 2); err != nil {
		t.Fatal(err)
	}
	clock.Advance(30 * time.Second)
	if hb := next[models.HeartbeatMessage](t, c, models.MessageTypeHeartbeat); hb.Status != models.AgentStatusDraining {
		t.Fatalf("periodic heartbeat %+v", hb)
	}
	a.SetDraining(false)
	if hb := next[models.HeartbeatMessage](t, c, models.MessageTypeHeartbeat); hb.Status != models.AgentStatusOnline {
		t.Fatalf("heartbeat after SetDraining(false) %+v", hb)
	}
}

func TestLogs(t *testing.T) {
	cp, a, _ := setup(t, nil)
	a.HandleLogs(func(ctx context.Context, req models.LogsRequest, emit func(string, time.Time) error) error {
		if req.Pod == "broken" {
			return errors.New("no such pod")
		}
		for i := range req.TailLines {
			if err := emit("line", time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC)); err != nil {
				return err
			}
		}
		if !req.Follow {
			return nil
		}
		<-ctx.Done()
		return ctx.Err()
	})
	start(t, a)
	c := nextConn(t, cp)
	send := func(typ string, p any) {
		t.Helper()
		if err := c.Send(typ, p); err != nil {
			t.Fatal(err)
		}
	}
	send(models.MessageTypeLogs, models.LogsRequest{RequestID: "r1", Namespace: "ns", Pod: "p1", SessionID: "s1", TailLines: 3, Follow: true})
	for i := range 3 {
		l := next[models.LogLine](t, c, models.MessageTypeLog)
		if l.RequestID != "r1" || l.Pod != "p1" || l.Namespace != "ns" || l.Line != "line" || l.Timestamp == nil || l.Timestamp.Second() != i {
			t.Fatalf("log line %d: %+v", i, l)
		}
	}
	send(models.MessageTypeLogsStop, models.LogsStop{RequestID: "r1"})
	if end := next[models.LogEnd](t, c, models.MessageTypeLogEnd); end.RequestID != "r1" || end.Error != "" {
		t.Fatalf("log_end after logs_stop %+v", end)
	}
	send(models.MessageTypeLogs, models.LogsRequest{RequestID: "r2", Pod: "broken"})
	if end := next[models.LogEnd](t, c, models.MessageTypeLogEnd); end.RequestID != "r2" || end.Error != "no such pod" {
		t.Fatalf("log_end of a failing stream %+v", end)
	}
}
