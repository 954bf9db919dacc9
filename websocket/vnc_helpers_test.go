package websocket

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/internal/vnctest"
	"github.com/streamspace/streamspace-realtime/models"
)

// vncRig is an AgentHub on a real database behind two real endpoints: agents connect to one
// (offering features in X-Agent-Features), viewers to the other (/{session}?user=&viewOnly=1),
// which does what the server's viewer endpoint does with OpenTunnel and Serve.
type vncRig struct {
	t         *testing.T
	db        *db.Database
	hub       *AgentHub
	reg       *prometheus.Registry
	agentURL  string
	viewerURL string
	serveErrs chan error
}

func newVNCRig(t *testing.T, cfg AgentHubConfig) *vncRig {
	t.Helper()
	d := dbtest.Open(t, "sqlite")
	r := &vncRig{t: t, db: d, reg: prometheus.NewRegistry(), serveErrs: make(chan error, 64)}
	cfg.Registerer = r.reg
	if cfg.Replica == "" {
		cfg.Replica = "replica-test"
	}
	r.hub = newAgentHub(d, cfg)
	agents := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		features := NegotiateAgentFeatures(req.Header.Get(models.AgentFeaturesHeader))
		var answer http.Header
		if len(features) > 0 {
			answer = http.Header{models.AgentFeaturesHeader: {strings.Join(features, ",")}}
		}
		conn, err := testUpgrader.Upgrade(w, req, answer)
		if err != nil {
			return
		}
		if _, err := r.hub.ServeAgentWithFeatures(conn, req.URL.Query().Get("agent_id"), "kubernetes", features); err != nil {
			closeConn(conn, time.Second, websocket.CloseInternalServerErr, err.Error())
		}
	}))
	serveCtx, stopServing := context.WithCancel(context.Background())
	viewers := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		sess, err := d.GetSession(req.Context(), strings.TrimPrefix(req.URL.Path, "/"))
		if err != nil {
			http.Error(w, "session_not_found", http.StatusNotFound)
			return
		}
		tun, err := r.hub.OpenTunnel(req.Context(), TunnelRequest{
			Session: sess, UserID: req.URL.Query().Get("user"), ViewOnly: req.URL.Query().Get("viewOnly") == "1",
		})
		switch {
		case errors.Is(err, ErrAgentOffline):
			http.Error(w, "agent_offline", http.StatusServiceUnavailable)
			return
		case errors.Is(err, ErrTunnelNotReady):
			http.Error(w, "tunnel_not_ready", http.StatusServiceUnavailable)
			return
		case errors.Is(err, ErrViewerBusy):
			http.Error(w, "viewer_busy", http.StatusConflict)
			return
		case errors.Is(err, ErrTooManyTunnels):
			http.Error(w, "too_many_tunnels", http.StatusTooManyRequests)
			return
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		conn, err := testUpgrader.Upgrade(w, req, nil)
		if err != nil {
			tun.Close()
			return
		}
		r.serveErrs <- tun.Serve(serveCtx, conn)
	}))
	r.agentURL = "ws" + strings.TrimPrefix(agents.URL, "http")
	r.viewerURL = "ws" + strings.TrimPrefix(viewers.URL, "http")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.hub.Shutdown(ctx); err != nil {
			t.Errorf("agent hub shutdown: %v", err)
		}
		stopServing()
		viewers.Close()
		agents.Close()
	})
	return r
}

// addSession stores an approved agent (once) and a running session placed on it.
func (r *vncRig) addSession(agentID, sessionID string) {
	r.t.Helper()
	ctx := r.t.Context()
	if _, err := r.db.GetAgent(ctx, agentID); err != nil {
		if err := r.db.CreateAgent(ctx, models.Agent{ID: agentID, Platform: "kubernetes", ApprovalStatus: models.ApprovalApproved}); err != nil {
			r.t.Fatalf("create agent %s: %v", agentID, err)
		}
	}
	if err := r.db.CreateSession(ctx, models.Session{ID: sessionID, OrgID: "o1", UserID: "u1", AgentID: agentID, State: models.SessionStateRunning}); err != nil {
		r.t.Fatalf("create session %s: %v", sessionID, err)
	}
}

// viewer dials the viewer endpoint.
func (r *vncRig) viewer(sessionID, user string, viewOnly bool) (*websocket.Conn, int) {
	r.t.Helper()
	u := r.viewerURL + "/" + sessionID + "?user=" + user
	if viewOnly {
		u += "&viewOnly=1"
	}
	conn, resp, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		if resp == nil {
			r.t.Fatalf("dial viewer: %v", err)
		}
		return nil, resp.StatusCode
	}
	r.t.Cleanup(func() { _ = conn.Close() })
	return conn, http.StatusSwitchingProtocols
}

// agentMsg is one frame a fake agent received: a JSON frame (typ, payload) or tunnel data.
type agentMsg struct {
	typ     string
	payload json.RawMessage
	tunnel  uint32
	data    []byte
}

// fakeAgent is the agent end of a socket, speaking the frames by hand. Its reader hands every
// frame to msgs; gate, while closed over, stops it reading (so TCP backs up to the server).
type fakeAgent struct {
	t        *testing.T
	conn     *websocket.Conn
	features string
	wmu      sync.Mutex
	msgs     chan agentMsg
	pause    sync.Mutex // held by a test: the reader stops, so TCP backs up to the server
	readDone chan struct{}
}

// dialAgent connects as agentID; tunnel1 offers the extension; rcvbuf, if set, shrinks the
// socket's receive buffer so a paused reader backs the server up quickly.
func (r *vncRig) dialAgent(agentID string, tunnel1 bool, rcvbuf int) *fakeAgent {
	r.t.Helper()
	h := http.Header{}
	if tunnel1 {
		h.Set(models.AgentFeaturesHeader, "log/2, tunnel/1")
	}
	dialer := *websocket.DefaultDialer
	if rcvbuf > 0 {
		nd := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) { serr = setReceiveBuffer(fd, rcvbuf) }); err != nil {
				return err
			}
			return serr
		}}
		dialer.NetDialContext = nd.DialContext
	}
	before := r.hub.GetConnection(agentID)
	conn, resp, err := dialer.Dial(r.agentURL+"?agent_id="+agentID, h)
	if err != nil {
		r.t.Fatalf("dial agent: %v", err)
	}
	a := &fakeAgent{t: r.t, conn: conn, features: resp.Header.Get(models.AgentFeaturesHeader),
		msgs: make(chan agentMsg, 1<<14), readDone: make(chan struct{})}
	go a.read()
	r.t.Cleanup(func() { _ = conn.Close(); <-a.readDone })
	testkit.Eventually(r.t, 10*time.Second, "agent registered", func() bool {
		c := r.hub.GetConnection(agentID)
		return c != nil && c != before
	})
	return a
}

func (a *fakeAgent) read() {
	defer close(a.readDone)
	defer close(a.msgs)
	for {
		a.pause.Lock()
		//lint:ignore SA2001 a gate the test closes, not a critical section
		a.pause.Unlock()
		mt, data, err := a.conn.ReadMessage()
		if err != nil {
			return
		}
		var m agentMsg
		if mt == websocket.BinaryMessage {
			m.tunnel, m.data = binary.BigEndian.Uint32(data), data[models.TunnelDataHeader:]
			m.typ = "data"
		} else {
			var f agentFrameIn
			_ = json.Unmarshal(data, &f)
			m.typ, m.payload = f.Type, f.Payload
		}
		a.msgs <- m
	}
}

// send writes a JSON frame; a failed write shows in what the test reads next.
func (a *fakeAgent) send(typ string, payload any) {
	b, _ := json.Marshal(map[string]any{"type": typ, "timestamp": time.Now().UTC(), "payload": payload})
	a.wmu.Lock()
	defer a.wmu.Unlock()
	_ = a.conn.WriteMessage(websocket.TextMessage, b)
}

func (a *fakeAgent) sendData(id uint32, p []byte) {
	frame := binary.BigEndian.AppendUint32(nil, id)
	a.wmu.Lock()
	defer a.wmu.Unlock()
	_ = a.conn.WriteMessage(websocket.BinaryMessage, append(frame, p...))
}

// relayTo makes a behave as the SDK's agent does, by hand: each tunnel_open dials addr and is
// answered with tunnel_opened(window); bytes go both ways within the windows, credit is granted
// once bytes are written to the VNC server. It consumes a.msgs until the socket ends.
func (a *fakeAgent) relayTo(addr string, window int64) {
	type tun struct {
		conn   net.Conn
		mu     sync.Mutex
		cond   *sync.Cond
		credit int64
		closed bool
	}
	tuns := map[uint32]*tun{}
	var wg sync.WaitGroup
	done := make(chan struct{})
	a.t.Cleanup(func() { _ = a.conn.Close(); <-done })
	go func() {
		defer close(done)
		defer wg.Wait()
		defer func() {
			for _, tn := range tuns {
				tn.mu.Lock()
				tn.closed = true
				tn.cond.Broadcast()
				tn.mu.Unlock()
				_ = tn.conn.Close()
			}
		}()
		for m := range a.msgs {
			switch m.typ {
			case models.MessageTypeTunnelOpen:
				var o models.TunnelOpenMessage
				_ = json.Unmarshal(m.payload, &o)
				c, err := net.Dial("tcp", addr)
				if err != nil {
					a.send(models.MessageTypeTunnelClose, models.TunnelCloseMessage{TunnelID: o.TunnelID, Reason: err.Error()})
					continue
				}
				tn := &tun{conn: c, credit: o.Window}
				tn.cond = sync.NewCond(&tn.mu)
				tuns[o.TunnelID] = tn
				a.send(models.MessageTypeTunnelOpened, models.TunnelOpenedMessage{TunnelID: o.TunnelID, Window: window})
				wg.Go(func() {
					buf := make([]byte, 32<<10)
					for {
						n, err := c.Read(buf)
						if err != nil {
							a.send(models.MessageTypeTunnelClose, models.TunnelCloseMessage{TunnelID: o.TunnelID})
							return
						}
						tn.mu.Lock()
						for tn.credit < int64(n) && !tn.closed {
							tn.cond.Wait()
						}
						if tn.closed {
							tn.mu.Unlock()
							return
						}
						tn.credit -= int64(n)
						tn.mu.Unlock()
						a.sendData(o.TunnelID, buf[:n])
					}
				})
			case "data":
				if tn := tuns[m.tunnel]; tn != nil {
					_, _ = tn.conn.Write(m.data)
					a.send(models.MessageTypeTunnelCredit, models.TunnelCreditMessage{TunnelID: m.tunnel, Bytes: int64(len(m.data))})
				}
			case models.MessageTypeTunnelCredit:
				var c models.TunnelCreditMessage
				_ = json.Unmarshal(m.payload, &c)
				if tn := tuns[c.TunnelID]; tn != nil {
					tn.mu.Lock()
					tn.credit += c.Bytes
					tn.cond.Broadcast()
					tn.mu.Unlock()
				}
			case models.MessageTypeTunnelClose:
				var c models.TunnelCloseMessage
				_ = json.Unmarshal(m.payload, &c)
				if tn := tuns[c.TunnelID]; tn != nil {
					tn.mu.Lock()
					tn.closed = true
					tn.cond.Broadcast()
					tn.mu.Unlock()
					_ = tn.conn.Close()
					delete(tuns, c.TunnelID)
				}
			}
		}
	}()
}

// echoServer is a TCP server that sends back what it reads: a VNC server stand-in where the
// bytes' meaning does not matter.
func echoServer(t *testing.T) string { return vnctest.ServeTCP(t, vnctest.Echo) }

func (a *fakeAgent) vncData(sessionID string, p []byte) {
	a.send(models.MessageTypeVNCData, models.VNCDataMessage{SessionID: sessionID, Data: base64.StdEncoding.EncodeToString(p)})
}

// expect returns the next frame of type typ, skipping others (skipped data is returned in
// skipped order to nobody: use expect only where data does not matter).
func (a *fakeAgent) expect(typ string) agentMsg {
	a.t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m, ok := <-a.msgs:
			if !ok {
				a.t.Fatalf("agent socket closed waiting for %s", typ)
			}
			if m.typ == typ {
				return m
			}
		case <-timeout:
			a.t.Fatalf("no %s frame", typ)
		}
	}
}

func decodeAs[T any](t *testing.T, m agentMsg) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(m.payload, &v); err != nil {
		t.Fatalf("%s payload %s: %v", m.typ, m.payload, err)
	}
	return v
}

// readViewer reads from a viewer until it has n bytes.
func readViewer(t *testing.T, conn *websocket.Conn, n int) []byte {
	t.Helper()
	var got []byte
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for len(got) < n {
		mt, data, err := conn.ReadMessage()
		if err != nil {
			t.Fatalf("viewer read after %d bytes: %v", len(got), err)
		}
		if mt != websocket.BinaryMessage {
			t.Fatalf("viewer got a frame of type %d", mt)
		}
		got = append(got, data...)
	}
	return got
}

// viewerClosed reads until the viewer's socket closes and returns the close.
func viewerClosed(t *testing.T, conn *websocket.Conn) (int, string) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, _, err := conn.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code, ce.Text
		}
		if err != nil {
			t.Fatalf("viewer read: %v", err)
		}
	}
}

// vncAddr is the machine's VNC server for tests.
func vncAddr() string {
	if a := os.Getenv("STREAMSPACE_TEST_VNC_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:5951"
}

// expect2 returns the next frame, whatever its type.
func (a *fakeAgent) expect2() agentMsg {
	a.t.Helper()
	select {
	case m, ok := <-a.msgs:
		if !ok {
			a.t.Fatal("agent socket closed")
		}
		return m
	case <-time.After(10 * time.Second):
		a.t.Fatal("no frame")
	}
	return agentMsg{}
}

// newViewerPair serves one viewer socket with serve and returns the browser's end.
func newViewerPair(t *testing.T, serve func(*websocket.Conn)) *websocket.Conn {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		conn, err := testUpgrader.Upgrade(w, req, nil)
		if err != nil {
			return
		}
		serve(conn)
	}))
	conn, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatalf("dial viewer: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(); srv.Close() })
	return conn
}

// newSlowViewer is newViewerPair with a browser whose receive buffer is 4 KiB.
func newSlowViewer(t *testing.T, serve func(*websocket.Conn)) *websocket.Conn {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		conn, err := testUpgrader.Upgrade(w, req, nil)
		if err != nil {
			return
		}
		serve(conn)
	}))
	nd := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = setReceiveBuffer(fd, 4096) }); err != nil {
			return err
		}
		return serr
	}}
	dialer := *websocket.DefaultDialer
	dialer.NetDialContext = nd.DialContext
	conn, _, err := dialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatalf("dial viewer: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(); srv.Close() })
	return conn
}
