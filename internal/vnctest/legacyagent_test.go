package vnctest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
)

// controlPlane is the server end of one legacy agent's socket, as a test sees it.
type controlPlane struct {
	srv    *httptest.Server
	header chan http.Header
	frames chan models.AgentMessage
	wsc    chan *websocket.Conn
	stop   chan struct{}
	ws     *websocket.Conn
	wmu    sync.Mutex
}

func newControlPlane(t *testing.T) *controlPlane {
	cp := &controlPlane{header: make(chan http.Header, 1), frames: make(chan models.AgentMessage, 1024), wsc: make(chan *websocket.Conn, 1), stop: make(chan struct{})}
	up := websocket.Upgrader{}
	cp.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/agents/connect" || r.URL.Query().Get("agent_id") != "agent-1" {
			http.Error(w, "wrong URL "+r.URL.String(), http.StatusNotFound)
			return
		}
		cp.header <- r.Header.Clone()
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		cp.wsc <- ws
		defer close(cp.frames)
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				return
			}
			var m models.AgentMessage
			if err := json.Unmarshal(data, &m); err != nil {
				m = models.AgentMessage{Type: "undecodable: " + string(data)}
			}
			select {
			case cp.frames <- m:
			case <-cp.stop:
				ws.Close()
				return
			}
		}
	}))
	t.Cleanup(cp.srv.Close)
	t.Cleanup(func() { close(cp.stop) })
	return cp
}

func (cp *controlPlane) send(t *testing.T, typ string, payload any) {
	t.Helper()
	p, _ := json.Marshal(payload)
	f, _ := json.Marshal(models.AgentMessage{Type: typ, Timestamp: time.Now(), Payload: p})
	cp.wmu.Lock()
	defer cp.wmu.Unlock()
	if err := cp.ws.WriteMessage(websocket.TextMessage, f); err != nil {
		t.Fatal(err)
	}
}

// next returns the next frame that is not a heartbeat, counting heartbeats seen.
func (cp *controlPlane) next(t *testing.T, heartbeats *int) models.AgentMessage {
	t.Helper()
	for {
		select {
		case m, ok := <-cp.frames:
			if !ok {
				t.Fatal("agent socket ended")
			}
			if m.Timestamp.IsZero() {
				t.Fatalf("%s frame without a timestamp", m.Type)
			}
			if m.Type == models.MessageTypeHeartbeat {
				*heartbeats++
				continue
			}
			return m
		case <-time.After(safety):
			t.Fatal("no frame from the agent")
		}
	}
}

// tunnelRW is the viewer's side of a session tunnel seen through the control plane: writes
// become vnc_data to the agent, reads come from the agent's vnc_data.
type tunnelRW struct {
	t          *testing.T
	cp         *controlPlane
	session    string
	pending    bytes.Buffer
	heartbeats *int
}

func (r *tunnelRW) Write(p []byte) (int, error) {
	r.cp.send(r.t, models.MessageTypeVNCData, models.VNCDataMessage{SessionID: r.session, Data: base64.StdEncoding.EncodeToString(p)})
	return len(p), nil
}

func (r *tunnelRW) Read(p []byte) (int, error) {
	for r.pending.Len() == 0 {
		m := r.cp.next(r.t, r.heartbeats)
		if m.Type != models.MessageTypeVNCData {
			r.t.Fatalf("got %s, want vnc_data", m.Type)
		}
		var d models.VNCDataMessage
		if err := json.Unmarshal(m.Payload, &d); err != nil {
			r.t.Fatal(err)
		}
		if d.SessionID != r.session {
			r.t.Fatalf("vnc_data for %q", d.SessionID)
		}
		b, err := base64.StdEncoding.DecodeString(d.Data)
		if err != nil {
			r.t.Fatal(err)
		}
		if len(b) > legacyReadChunk {
			r.t.Fatalf("vnc_data of %d bytes", len(b))
		}
		r.pending.Write(b)
	}
	return r.pending.Read(p)
}

func TestLegacyAgentRelaysXvnc(t *testing.T) {
	vnc := Addr(t)
	cp := newControlPlane(t)
	base := testkit.SteadyGoroutines()
	ctx, cancel := context.WithTimeout(context.Background(), safety)
	defer cancel()
	agent, err := DialLegacyAgent(ctx, LegacyAgentConfig{ServerURL: cp.srv.URL, AgentID: "agent-1", APIKey: "key-1",
		VNCAddr: func(string) string { return vnc }})
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()
	h := <-cp.header
	if h.Get("X-Agent-API-Key") != "key-1" || h.Get(models.AgentFeaturesHeader) != "" {
		t.Fatalf("upgrade headers %v", h)
	}
	cp.ws = <-cp.wsc

	heartbeats := 0
	cp.send(t, models.MessageTypeCommand, models.CommandMessage{CommandID: "c1", Action: models.ActionStartSession,
		Payload: map[string]any{"sessionId": "s1"}, Attempt: 1})
	for i, want := range []string{models.MessageTypeAck, models.MessageTypeComplete, models.MessageTypeVNCReady} {
		m := cp.next(t, &heartbeats)
		if m.Type != want {
			t.Fatalf("frame %d: %s, want %s", i, m.Type, want)
		}
		if want == models.MessageTypeVNCReady {
			var r models.VNCReadyMessage
			_ = json.Unmarshal(m.Payload, &r)
			if r.SessionID != "s1" || r.VNCPort == 0 || r.PodName == "" {
				t.Fatalf("vnc_ready %+v", r)
			}
		}
	}
	if heartbeats == 0 {
		// The first heartbeat is sent at once, so it precedes the answers to the command.
		t.Fatal("no heartbeat before the command's answers")
	}

	// A whole RFB session with Xvnc through the agent's base64 frames.
	c := NewClient(&tunnelRW{t: t, cp: cp, session: "s1", heartbeats: &heartbeats})
	w, hh, _, err := c.Handshake()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetPixelFormat32(); err != nil {
		t.Fatal(err)
	}
	if err := c.RequestUpdate(false, 0, 0, w, min(hh, 64)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadUpdate(); err != nil {
		t.Fatal(err)
	}
	if agent.TunnelsOpen() != 1 || agent.TunnelsOpened() != 1 || agent.Received(models.MessageTypeVNCData) == 0 {
		t.Fatalf("open %d opened %d vnc_data %d", agent.TunnelsOpen(), agent.TunnelsOpened(), agent.Received(models.MessageTypeVNCData))
	}

	// vnc_close ends the tunnel for good; vnc_data after it is not relayed anywhere.
	cp.send(t, models.MessageTypeVNCClose, models.VNCCloseMessage{SessionID: "s1", Reason: "client_disconnect"})
	testkit.Eventually(t, safety, "tunnel closed", func() bool { return agent.TunnelsOpen() == 0 })
	if agent.TunnelsOpened() != 1 || len(agent.Frames(models.MessageTypeVNCClose)) != 1 {
		t.Fatalf("opened %d, vnc_close frames %d", agent.TunnelsOpened(), len(agent.Frames(models.MessageTypeVNCClose)))
	}

	// OpenTunnel opens one without a command; SendRaw reaches the server as is.
	if err := agent.OpenTunnel("s2"); err != nil {
		t.Fatal(err)
	}
	if m := cp.next(t, &heartbeats); m.Type != models.MessageTypeVNCReady {
		t.Fatalf("got %s", m.Type)
	}
	if err := agent.SendRaw([]byte(`{"type":"vnc_data","timestamp":"2026-01-01T00:00:00Z","payload":{"sessionId":"s2","data":"!!"}}`)); err != nil {
		t.Fatal(err)
	}
	for {
		m := cp.next(t, &heartbeats)
		var d models.VNCDataMessage
		_ = json.Unmarshal(m.Payload, &d)
		if d.Data == "!!" {
			break
		}
	}
	agent.Close()
	testkit.GoroutinesBackTo(t, safety, base)
}

func TestLegacyAgentHeartbeatsAndRefusal(t *testing.T) {
	cp := newControlPlane(t)
	ctx, cancel := context.WithTimeout(context.Background(), safety)
	defer cancel()
	agent, err := DialLegacyAgent(ctx, LegacyAgentConfig{ServerURL: cp.srv.URL, AgentID: "agent-1", APIKey: "k",
		Heartbeat: time.Millisecond, VNCAddr: func(string) string { return "127.0.0.1:1" }})
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()
	<-cp.header
	cp.ws = <-cp.wsc
	for hb := 0; hb < 3; {
		if m := <-cp.frames; m.Type == models.MessageTypeHeartbeat {
			hb++
		}
	}
	// A VNC server that cannot be reached: OpenTunnel says why and announces nothing.
	if err := agent.OpenTunnel("s1"); err == nil {
		t.Fatal("opened a tunnel to a closed port")
	}
	cp.send(t, models.MessageTypeError, models.ErrorMessage{Message: "nope", SessionID: "s1"})
	testkit.Eventually(t, safety, "error frame recorded", func() bool { return agent.Received(models.MessageTypeError) == 1 })
	cp.ws.Close()
	select {
	case <-agent.Done():
	case <-time.After(safety):
		t.Fatal("agent did not notice its socket ended")
	}
	if agent.Err() == nil {
		t.Fatal("no error after the server hung up")
	}

	if _, err := DialLegacyAgent(ctx, LegacyAgentConfig{ServerURL: cp.srv.URL, AgentID: "other"}); err == nil {
		t.Fatal("dialled a refusing server")
	}
}

// TestLegacyAgentReportsVNCErrors: a VNC server that resets the connection is a vnc_error, and
// the tunnel is gone.
func TestLegacyAgentReportsVNCErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	reset := make(chan struct{})
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		_, _ = c.Write([]byte("RFB 003.008\n"))
		<-reset                           // once the banner went through the agent
		_ = c.(*net.TCPConn).SetLinger(0) // close with a reset, not an EOF
		c.Close()
	}()
	cp := newControlPlane(t)
	ctx, cancel := context.WithTimeout(context.Background(), safety)
	defer cancel()
	agent, err := DialLegacyAgent(ctx, LegacyAgentConfig{ServerURL: cp.srv.URL, AgentID: "agent-1", APIKey: "k",
		VNCAddr: func(string) string { return ln.Addr().String() }})
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()
	<-cp.header
	cp.ws = <-cp.wsc
	if err := agent.OpenTunnel("s9"); err != nil {
		t.Fatal(err)
	}
	hb := 0
	for {
		m := cp.next(t, &hb)
		if m.Type == models.MessageTypeVNCData {
			close(reset)
			continue
		}
		if m.Type != models.MessageTypeVNCError {
			continue
		}
		var e models.VNCErrorMessage
		_ = json.Unmarshal(m.Payload, &e)
		if e.SessionID != "s9" || e.Error == "" {
			t.Fatalf("vnc_error %+v", e)
		}
		break
	}
	testkit.Eventually(t, safety, "tunnel gone", func() bool { return agent.TunnelsOpen() == 0 })
}
