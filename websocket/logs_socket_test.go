package websocket

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
)

// logsServer serves logs sockets of m; the caller's organization, role and namespace come
// from the query, as the server's route passes them after checking the token.
func logsServer(t *testing.T, m *Manager) string {
	t.Helper()
	return socketServer(t, func(conn *websocket.Conn, q url.Values) {
		m.HandleLogsWebSocketWithOrg(conn, q.Get("pod"), &OrgContext{
			OrgID: q.Get("org"), UserID: "ops", Role: q.Get("role"), K8sNamespace: q.Get("ns"),
		})
	})
}

// logsFixture is a database with session s1 of org o1 on agent ag1 running pod pod-s1, an
// agent hub, and a Manager that asks that hub for logs.
type logsFixture struct {
	d      *db.Database
	agents *agentHarness
	m      *Manager
	base   string
}

func newLogsFixture(t *testing.T, cfg Config) *logsFixture {
	t.Helper()
	d := dbtest.Open(t, "sqlite")
	f := &logsFixture{d: d, agents: newAgentHarness(t, d, AgentHubConfig{})}
	f.agents.addAgent("ag1")
	for _, s := range []models.Session{
		{ID: "s1", OrgID: "o1", UserID: "u1", Namespace: "ns-o1", PodName: "pod-s1", AgentID: "ag1", State: models.SessionStateRunning},
		{ID: "s2", OrgID: "o2", UserID: "u2", Namespace: "ns-o2", PodName: "pod-s2", AgentID: "ag1", State: models.SessionStateRunning},
	} {
		if err := d.CreateSession(t.Context(), s); err != nil {
			t.Fatal(err)
		}
	}
	cfg.Agents = f.agents.hub
	f.m = startManager(t, d, cfg)
	f.base = logsServer(t, f.m)
	return f
}

func (f *logsFixture) dialLogs(t *testing.T, pod string) *websocket.Conn {
	t.Helper()
	return dial(t, f.base, params("org", "o1", "role", "operator", "ns", "ns-o1", "pod", pod))
}

// logsRequest reads frames until the agent's `logs` request.
func (a *testAgent) logsRequest() models.LogsRequest {
	a.t.Helper()
	for {
		f := a.next()
		if f.Type != models.MessageTypeLogs {
			continue
		}
		var req models.LogsRequest
		if err := json.Unmarshal(f.Payload, &req); err != nil {
			a.t.Fatal(err)
		}
		return req
	}
}

// awaitLogsStop reads frames until `logs_stop` for id arrives, and returns how long it took.
func (a *testAgent) awaitLogsStop(id string, within time.Duration) time.Duration {
	a.t.Helper()
	start := time.Now()
	_ = a.conn.SetReadDeadline(start.Add(within))
	for {
		_, data, err := a.conn.ReadMessage()
		if err != nil {
			a.t.Fatalf("no logs_stop for %s within %s: %v", id, within, err)
		}
		var f agentFrameIn
		_ = json.Unmarshal(data, &f)
		if f.Type != models.MessageTypeLogsStop {
			continue
		}
		var stop models.LogsStop
		_ = json.Unmarshal(f.Payload, &stop)
		if stop.RequestID == id {
			return time.Since(start)
		}
	}
}

// logFrame is a `log` frame as the browser reads it.
type logFrame struct {
	Type      string    `json:"type"`
	Namespace string    `json:"namespace"`
	Pod       string    `json:"pod"`
	Timestamp time.Time `json:"timestamp"`
	Line      string    `json:"line"`
	Message   string    `json:"message"`
}

func readLog(t *testing.T, conn *websocket.Conn) logFrame {
	t.Helper()
	var f logFrame
	readJSON(t, conn, 10*time.Second, &f)
	return f
}

// relayAndLeave has the agent send n lines for req while the browser reads them, checks they
// arrive in order with the agent's timestamps, then closes the browser and requires the
// agent to be told to stop within a second.
func relayAndLeave(t *testing.T, agent *testAgent, browser *websocket.Conn, req models.LogsRequest, n int) {
	t.Helper()
	at := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	sent := sendLines(agent.conn, req, n, at)
	for i := range n {
		l := readLog(t, browser)
		if l.Type != "log" || l.Line != fmt.Sprintf("line %d", i) || l.Namespace != req.Namespace || l.Pod != req.Pod ||
			!l.Timestamp.Equal(at.Add(time.Duration(i)*time.Millisecond)) {
			t.Fatalf("frame %d = %+v", i, l)
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	_ = browser.Close()
	if took := agent.awaitLogsStop(req.RequestID, time.Second); took > time.Second {
		t.Fatalf("logs_stop after %s", took)
	}
}

// sendLines writes n `log` frames for req from the agent's socket, from a goroutine, and
// returns the channel that gets its error.
func sendLines(conn *websocket.Conn, req models.LogsRequest, n int, at time.Time) <-chan error {
	errc := make(chan error, 1)
	go func() {
		for i := range n {
			b, _ := json.Marshal(map[string]any{"type": models.MessageTypeLog, "payload": models.LogLine{
				RequestID: req.RequestID, Namespace: req.Namespace, Pod: req.Pod,
				Line: fmt.Sprintf("line %d", i), Timestamp: new(at.Add(time.Duration(i) * time.Millisecond)),
			}})
			if err := conn.WriteMessage(websocket.TextMessage, b); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	return errc
}

// An operator's logs socket asks the agent running the session for the last 100 lines and
// to follow, relays 10,000 lines in order with the agent's timestamps, and when the browser
// leaves the agent is told to stop within a second and the goroutines return to baseline.
func TestLogsRelayedByAgent(t *testing.T) {
	f := newLogsFixture(t, Config{})
	agent := f.agents.connect("ag1")
	base := testkit.SteadyGoroutines()

	browser := f.dialLogs(t, "pod-s1")
	req := agent.logsRequest()
	want := models.LogsRequest{RequestID: req.RequestID, Namespace: "ns-o1", Pod: "pod-s1", SessionID: "s1", TailLines: 100, Follow: true}
	if req != want || req.RequestID == "" {
		t.Fatalf("logs request %+v, want %+v", req, want)
	}
	relayAndLeave(t, agent, browser, req, 10000)
	testkit.GoroutinesBackTo(t, 5*time.Second, base)
	f.agents.hub.logs.mu.Lock()
	defer f.agents.hub.logs.mu.Unlock()
	if got := len(f.agents.hub.logs.routes); got != 0 {
		t.Fatalf("%d log routes left", got)
	}
}

// The agent's end of the stream closes the socket: 1000 after a clean end, `log_error` and
// 1011 with the agent's error, and the same when the agent disconnects mid-stream.
func TestLogsAgentEnds(t *testing.T) {
	f := newLogsFixture(t, Config{})
	for _, tc := range []struct {
		name     string
		end      func(a *testAgent, req models.LogsRequest)
		code     int
		errorHas string
	}{
		{"clean end", func(a *testAgent, req models.LogsRequest) {
			a.send(models.MessageTypeLogEnd, models.LogEnd{RequestID: req.RequestID})
		}, websocket.CloseNormalClosure, ""},
		{"agent error", func(a *testAgent, req models.LogsRequest) {
			a.send(models.MessageTypeLogEnd, models.LogEnd{RequestID: req.RequestID, Error: "container not found"})
		}, websocket.CloseInternalServerErr, "container not found"},
		{"agent disconnects", func(a *testAgent, _ models.LogsRequest) {
			_ = a.conn.Close()
		}, websocket.CloseInternalServerErr, "disconnected"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			agent := f.agents.connectFor(t, "ag1")
			browser := f.dialLogs(t, "pod-s1")
			req := agent.logsRequest()
			agent.send(models.MessageTypeLog, models.LogLine{RequestID: req.RequestID, Line: "first"})
			if l := readLog(t, browser); l.Line != "first" || l.Timestamp.IsZero() {
				t.Fatalf("first frame %+v (a line without a timestamp gets the time received)", l)
			}
			tc.end(agent, req)
			if tc.errorHas != "" {
				if l := readLog(t, browser); l.Type != "log_error" || !strings.Contains(l.Message, tc.errorHas) {
					t.Fatalf("got %+v, want log_error with %q", l, tc.errorHas)
				}
			}
			if code, _ := expectClose(t, browser, 5*time.Second); code != tc.code {
				t.Fatalf("close %d, want %d", code, tc.code)
			}
		})
	}
}

// An agent that ignores `logs` (StreamSpace's own agents do) leaves the browser with
// `log_error` and 1011 after the silence limit, and is told to stop; an agent that is not
// connected fails the stream at once.
func TestLogsSilentOrMissingAgent(t *testing.T) {
	f := newLogsFixture(t, Config{LogsSilence: 300 * time.Millisecond})
	browser := f.dialLogs(t, "pod-s1")
	if l := readLog(t, browser); l.Type != "log_error" || !strings.Contains(l.Message, "not connected") {
		t.Fatalf("without the agent: %+v", l)
	}
	if code, _ := expectClose(t, browser, 5*time.Second); code != websocket.CloseInternalServerErr {
		t.Fatalf("close %d, want 1011", code)
	}

	agent := f.agents.connect("ag1")
	browser = f.dialLogs(t, "pod-s1")
	req := agent.logsRequest()
	start := time.Now()
	if l := readLog(t, browser); l.Type != "log_error" || !strings.Contains(l.Message, "sent no logs") {
		t.Fatalf("silent agent: %+v", l)
	}
	if waited := time.Since(start); waited < 250*time.Millisecond {
		t.Fatalf("log_error after %s, before the silence limit", waited)
	}
	if code, _ := expectClose(t, browser, 5*time.Second); code != websocket.CloseInternalServerErr {
		t.Fatalf("close %d, want 1011", code)
	}
	agent.awaitLogsStop(req.RequestID, 5*time.Second)
}

// Callers that may not read a pod's logs are refused with 1008 before anything is asked of
// an agent: users, another organization's pod, a pod nobody runs, a namespace that is not the
// organization's.
func TestLogsRefused(t *testing.T) {
	f := newLogsFixture(t, Config{})
	agent := f.agents.connect("ag1")
	for _, tc := range []struct {
		name string
		q    []string
	}{
		{"user", []string{"org", "o1", "role", "user", "pod", "pod-s1"}},
		{"other org's pod", []string{"org", "o1", "role", "admin", "pod", "pod-s2"}},
		{"missing pod", []string{"org", "o1", "role", "admin", "pod", "nope"}},
		{"no org", []string{"role", "admin", "pod", "pod-s1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := dial(t, f.base, params(tc.q...))
			if code, _ := expectClose(t, conn, 5*time.Second); code != websocket.ClosePolicyViolation {
				t.Fatalf("close %d, want 1008", code)
			}
		})
	}
	agent.quiet(200 * time.Millisecond)

	ops := &OrgContext{OrgID: "o1", Role: "operator", K8sNamespace: "ns-o1"}
	for _, tc := range []struct {
		org       *OrgContext
		namespace string
		pod       string
		want      error
	}{
		{ops, "ns-o2", "pod-s2", ErrNamespaceForbidden},
		{ops, "ns-o1", "pod-s2", ErrPodNotFound},
		{ops, "", "", ErrPodNotFound},
		{&OrgContext{OrgID: "o1", Role: "user"}, "", "pod-s1", ErrLogsForbidden},
	} {
		if _, err := f.m.ResolveLogs(t.Context(), tc.org, tc.namespace, tc.pod); !errors.Is(err, tc.want) {
			t.Errorf("ResolveLogs(%s/%s) = %v, want %v", tc.namespace, tc.pod, err, tc.want)
		}
	}
	got, err := f.m.ResolveLogs(t.Context(), ops, "ns-o1", "pod-s1")
	if err != nil || got.Session.ID != "s1" || got.Namespace != "ns-o1" {
		t.Fatalf("ResolveLogs(own pod) = %+v, %v", got, err)
	}
}

// A browser that never reads cannot hold an agent's stream or memory: the socket is closed,
// the agent is told to stop, and goroutines return to baseline.
func TestLogsBrowserNeverReads(t *testing.T) {
	f := newLogsFixture(t, Config{WriteWait: 200 * time.Millisecond})
	agent := f.agents.connect("ag1")
	base := testkit.SteadyGoroutines()
	browser := f.dialLogs(t, "pod-s1")
	req := agent.logsRequest()
	long := strings.Repeat("x", 2000)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for i := 0; ; i++ {
			b, _ := json.Marshal(map[string]any{"type": models.MessageTypeLog, "payload": models.LogLine{RequestID: req.RequestID, Line: long}})
			if agent.conn.WriteMessage(websocket.TextMessage, b) != nil || f.agents.hub.logs.route(req.RequestID) == nil {
				return
			}
			if i%1000 == 999 {
				time.Sleep(20 * time.Millisecond) // stay under the agent's frame budget
			}
		}
	}()
	select {
	case <-stopped:
	case <-time.After(20 * time.Second):
		t.Fatal("the stream of a browser that never reads was not ended")
	}
	agent.awaitLogsStop(req.RequestID, 5*time.Second)
	_ = browser.Close()
	testkit.GoroutinesBackTo(t, 5*time.Second, base)
}

// Shutdown closes logs sockets with 1001 and stops their sources.
func TestLogsShutdown(t *testing.T) {
	f := newLogsFixture(t, Config{})
	agent := f.agents.connect("ag1")
	browser := f.dialLogs(t, "pod-s1")
	req := agent.logsRequest()
	agent.send(models.MessageTypeLog, models.LogLine{RequestID: req.RequestID, Line: "hello"})
	readLog(t, browser)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- f.m.Shutdown(ctx)
	}()
	if code, _ := expectClose(t, browser, 5*time.Second); code != websocket.CloseGoingAway {
		t.Fatalf("close %d, want 1001", code)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	agent.awaitLogsStop(req.RequestID, 5*time.Second)
}

// With the browser on replica a and the agent on replica b, lines cross through Redis in
// order; the browser leaving stops the agent's stream on b within a second; the agent
// disconnecting from b ends the browser's stream with log_error, and no route is left on either
// replica. The Manager reaches the agents through the hub (Config.Agents), or, as the server
// wires it, through the one PodLogs of its replica that the hub was also given (Config.Logs).
func TestLogsAcrossReplicas(t *testing.T) {
	for _, wiring := range []string{"hub", "podlogs"} {
		t.Run(wiring, func(t *testing.T) {
			a, b, d := replicaPairWith(t, wiring == "podlogs")
			cfg := Config{Agents: a.hub}
			if wiring == "podlogs" {
				cfg = Config{Logs: a.hub.logs}
			}
			logsAcrossReplicas(t, a, b, d, cfg)
		})
	}
}

func logsAcrossReplicas(t *testing.T, a, b *agentHarness, d *db.Database, cfg Config) {
	b.addAgent("ag1")
	if err := d.CreateSession(t.Context(), models.Session{ID: "s1", OrgID: "o1", UserID: "u1", Namespace: "ns-o1",
		PodName: "pod-s1", AgentID: "ag1", State: models.SessionStateRunning}); err != nil {
		t.Fatal(err)
	}
	m := startManager(t, d, cfg)
	base := logsServer(t, m)
	agent := b.connect("ag1")
	testkit.Eventually(t, 5*time.Second, "replica a sees the agent on b", func() bool { return a.hub.IsAgentConnected("ag1") })

	browser := dial(t, base, params("org", "o1", "role", "admin", "ns", "ns-o1", "pod", "pod-s1"))
	req := agent.logsRequest()
	if req.SessionID != "s1" || req.TailLines != 100 || !req.Follow {
		t.Fatalf("logs request %+v", req)
	}
	relayAndLeave(t, agent, browser, req, 5000)

	browser = dial(t, base, params("org", "o1", "role", "admin", "ns", "ns-o1", "pod", "pod-s1"))
	req = agent.logsRequest()
	agent.send(models.MessageTypeLog, models.LogLine{RequestID: req.RequestID, Line: "before"})
	if l := readLog(t, browser); l.Line != "before" {
		t.Fatalf("got %+v", l)
	}
	_ = agent.conn.Close()
	if l := readLog(t, browser); l.Type != "log_error" || !strings.Contains(l.Message, "disconnected") {
		t.Fatalf("after the agent left: %+v", l)
	}
	if code, _ := expectClose(t, browser, 5*time.Second); code != websocket.CloseInternalServerErr {
		t.Fatalf("close %d, want 1011", code)
	}
	testkit.Eventually(t, 5*time.Second, "no log routes left", func() bool {
		return openRoutes(a.hub.logs) == 0 && openRoutes(b.hub.logs) == 0
	})
}

// The deprecated HandleLogsWebSocket serves the configured default organization as an
// operator, with the namespace it is given.
func TestHandleLogsWebSocketDeprecated(t *testing.T) {
	f := newLogsFixture(t, Config{DefaultOrg: "o1"})
	agent := f.agents.connect("ag1")
	base := socketServer(t, func(conn *websocket.Conn, q url.Values) {
		f.m.HandleLogsWebSocket(conn, q.Get("ns"), q.Get("pod"))
	})
	browser := dial(t, base, params("ns", "ns-o1", "pod", "pod-s1"))
	req := agent.logsRequest()
	agent.send(models.MessageTypeLog, models.LogLine{RequestID: req.RequestID, Line: "hi"})
	if l := readLog(t, browser); l.Line != "hi" || l.Namespace != "ns-o1" {
		t.Fatalf("got %+v", l)
	}
	other := dial(t, base, params("ns", "ns-o2", "pod", "pod-s2"))
	if code, _ := expectClose(t, other, 5*time.Second); code != websocket.ClosePolicyViolation {
		t.Fatalf("another organization's pod: close %d, want 1008", code)
	}
}

// A browser that sends a message over the limit is closed with 1009 and its source stopped.
func TestLogsBrowserMessageTooBig(t *testing.T) {
	f := newLogsFixture(t, Config{MaxMessageSize: 1024})
	agent := f.agents.connect("ag1")
	browser := f.dialLogs(t, "pod-s1")
	req := agent.logsRequest()
	if err := browser.WriteMessage(websocket.TextMessage, make([]byte, 2048)); err != nil {
		t.Fatal(err)
	}
	if code, _ := expectClose(t, browser, 5*time.Second); code != websocket.CloseMessageTooBig {
		t.Fatalf("close %d, want 1009", code)
	}
	agent.awaitLogsStop(req.RequestID, 5*time.Second)
}

// An embedder reads an agent's log stream with Next: the lines in order, then io.EOF at the
// agent's clean log_end.
func TestAgentLogStreamNext(t *testing.T) {
	f := newLogsFixture(t, Config{})
	agent := f.agents.connect("ag1")
	s, err := f.agents.hub.OpenLogs(t.Context(), "ag1", models.LogsRequest{Pod: "pod-s1", SessionID: "s1", TailLines: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	req := agent.logsRequest()
	if req.RequestID != s.RequestID() {
		t.Fatalf("request %q, stream %q", req.RequestID, s.RequestID())
	}
	at := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	agent.send(models.MessageTypeLog, models.LogLine{RequestID: req.RequestID, Line: "one", Timestamp: &at})
	agent.send(models.MessageTypeLog, models.LogLine{RequestID: req.RequestID, Line: "two"})
	agent.send(models.MessageTypeLogEnd, models.LogEnd{RequestID: req.RequestID})
	var got []string
	for {
		lines, err := s.Next(t.Context())
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range lines {
			got = append(got, l.Line)
			if l.Line == "one" && !l.Timestamp.Equal(at) {
				t.Errorf("timestamp %v, want %v", l.Timestamp, at)
			}
		}
	}
	if strings.Join(got, ",") != "one,two" {
		t.Fatalf("lines %v", got)
	}
	if _, err := f.agents.hub.OpenLogs(t.Context(), "nobody", models.LogsRequest{}); !errors.Is(err, ErrAgentNotConnected) {
		t.Fatalf("OpenLogs of an absent agent: %v", err)
	}
}

// A log line whose timestamp has no year from 0 to 9999 in UTC (valid RFC 3339 all the same)
// reaches the browser with the time it was received, not as an empty frame.
func TestLogsAgentTimestampOutOfRange(t *testing.T) {
	f := newLogsFixture(t, Config{})
	agent := f.agents.connect("ag1")
	browser := f.dialLogs(t, "pod-s1")
	req := agent.logsRequest()
	before := time.Now()
	agent.sendRaw(`{"type":"log","payload":{"requestId":"` + req.RequestID + `","line":"early","timestamp":"0000-01-01T00:00:00+01:00"}}`)
	agent.sendRaw(`{"type":"log","payload":{"requestId":"` + req.RequestID + `","line":"late","timestamp":"9999-12-31T23:59:59-00:01"}}`)
	for _, want := range []string{"early", "late"} {
		l := readLog(t, browser)
		if l.Type != "log" || l.Line != want || l.Timestamp.Before(before.Add(-time.Second)) || l.Timestamp.After(time.Now().Add(time.Second)) {
			t.Fatalf("got %+v, want %q stamped with the time received", l, want)
		}
	}
}
