//go:build linux

package server

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/agentclient"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/internal/vnctest"
	"github.com/streamspace/streamspace-realtime/models"
)

// The harness of TestStreamingFaults: server processes that can be killed, stopped and started
// again on the same ports, SDK agents that prefer the replica they belong to and fall back to
// the others, and viewers that keep pulling framebuffer updates until told to stop. Linux
// only: the processes run in process groups of their own and die with the test binary
// (Pdeathsig), so a test that fails or times out leaves none behind.

// plainClient talks to the replicas without keeping connections: an idle keep-alive
// connection would hold goroutines on the replica whose count is being read.
var plainClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// faultReplica is one `serve` process on fixed ports, restartable after a kill.
type faultReplica struct {
	name                      string
	addr, peerAddr, debugAddr string
	bin                       string
	args                      []string
	log                       *testkit.LockedBuffer
	mu                        sync.Mutex
	cmd                       *exec.Cmd
	done                      chan struct{}
	stopped                   bool // SIGSTOP sent, no SIGCONT yet
	starts                    int
}

// newFaultReplica reserves the replica's ports and starts it; cleanup ends its process group.
func newFaultReplica(t *testing.T, bin, name string, args []string) *faultReplica {
	t.Helper()
	r := &faultReplica{name: name, bin: bin, args: args, log: &testkit.LockedBuffer{},
		addr: freeAddr(t), peerAddr: freeAddr(t), debugAddr: freeAddr(t)}
	t.Cleanup(func() {
		r.terminate()
		if t.Failed() {
			t.Logf("replica %s log tail:\n%s", name, tail(r.log.String(), 4000))
		}
	})
	r.start(t)
	return r
}

// freeAddr is a 127.0.0.1 port nobody listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (r *faultReplica) base() string { return "http://" + r.addr }

// start runs the process and waits until /readyz answers 200.
func (r *faultReplica) start(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	r.starts++
	fmt.Fprintf(r.log, "--- start %d of replica %s ---\n", r.starts, r.name)
	cmd := exec.Command(r.bin, append([]string{"serve", "--addr", r.addr, "--replica", r.name,
		"--peer-addr", r.peerAddr, "--peer-advertise-addr", r.peerAddr, "--debug-addr", r.debugAddr}, r.args...)...)
	cmd.Env = append(os.Environ(), "STREAMSPACE_LOG_LEVEL=info")
	cmd.Stdout, cmd.Stderr = r.log, r.log
	// A group of its own, killed as one; and killed with the test binary should it die first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		r.mu.Unlock()
		t.Fatalf("start replica %s: %v", r.name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	r.cmd, r.done, r.stopped = cmd, done, false
	r.mu.Unlock()
	started := func() bool {
		select {
		case <-done:
			t.Fatalf("replica %s exited at start:\n%s", r.name, tail(r.log.String(), 3000))
		default:
		}
		return r.ready()
	}
	if err := testkit.WaitFor(60*time.Second, started); err != nil {
		t.Fatalf("replica %s not ready:\n%s", r.name, tail(r.log.String(), 3000))
	}
}

// signal sends sig to the replica's process group.
func (r *faultReplica) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := syscall.Kill(-r.cmd.Process.Pid, sig); err != nil {
		t.Fatalf("%v to replica %s: %v", sig, r.name, err)
	}
	switch sig {
	case syscall.SIGSTOP:
		r.stopped = true
	case syscall.SIGCONT:
		r.stopped = false
	}
}

// resume sends SIGCONT if the replica is stopped: a cleanup, so that a test failing during a
// stall leaves a replica the agents can say goodbye to.
func (r *faultReplica) resume() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGCONT)
		r.stopped = false
	}
}

// kill ends the process with SIGKILL: no shutdown, its claims left in Redis.
func (r *faultReplica) kill(t *testing.T) {
	t.Helper()
	r.signal(t, syscall.SIGKILL)
	<-r.done
}

// terminate ends the process at cleanup, whatever state the test left it in.
func (r *faultReplica) terminate() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	pgid := -r.cmd.Process.Pid
	select {
	case <-r.done:
		return
	default:
	}
	if r.stopped {
		_ = syscall.Kill(pgid, syscall.SIGCONT)
	}
	_ = syscall.Kill(pgid, syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(pgid, syscall.SIGKILL)
		<-r.done
	}
}

func (r *faultReplica) ready() bool {
	resp, err := plainClient.Get(r.base() + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// goroutines reads go_goroutines from the replica's /metrics.
func (r *faultReplica) goroutines() (int, error) {
	resp, err := plainClient.Get(r.base() + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return int(f), err
		}
	}
	return 0, fmt.Errorf("no go_goroutines in /metrics of %s: %v", r.name, sc.Err())
}

// steadyGoroutines waits until four readings in a row, 250 ms apart, agree.
func (r *faultReplica) steadyGoroutines(t *testing.T) int {
	t.Helper()
	last, same := -1, 0
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		n, err := r.goroutines()
		if err != nil {
			t.Fatalf("goroutines of %s: %v", r.name, err)
		}
		if n == last {
			same++
		} else {
			last, same = n, 1
		}
		if same == 4 {
			return n
		}
		time.Sleep(250 * time.Millisecond) // kept: the interval between readings
	}
	t.Fatalf("the goroutines of %s did not settle within 20 s (last %d)", r.name, last)
	return 0
}

// goroutineDump is the replica's goroutine profile, for a failure message.
func (r *faultReplica) goroutineDump() string {
	resp, err := plainClient.Get("http://" + r.debugAddr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return "(no goroutine profile: " + err.Error() + ")"
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return string(b)
}

// agentsOnline maps each online agent to the replica holding it, as r reports them.
func (r *faultReplica) agentsOnline() map[string]string {
	req, err := http.NewRequest(http.MethodGet, r.base()+"/api/v1/agents", nil)
	if err != nil {
		return nil
	}
	req.Header.Set("Authorization", "Bearer "+testService)
	resp, err := plainClient.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var out struct {
		Agents []struct{ AgentID, Status, Replica string } `json:"agents"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&out) != nil {
		return nil
	}
	m := map[string]string{}
	for _, a := range out.Agents {
		if a.Status == models.AgentStatusOnline {
			m[a.AgentID] = a.Replica
		}
	}
	return m
}

// faultAgent is an SDK agent relaying its sessions to the test VNC server. It connects to the
// first replica of its order that accepts a TCP connection: its home replica while that is
// up, else the next one.
type faultAgent struct {
	id       string
	home     string
	sessions []string
	order    []*faultReplica

	mu     sync.Mutex
	conn   net.Conn // the WebSocket's connection
	at     string   // the replica it was dialed to
	dials  int
	open   map[string]int // session → tunnels running
	closed map[string]int // session → tunnels ended
}

// startFaultAgent runs the agent until the test ends.
func startFaultAgent(t *testing.T, id, key, vnc string, order []*faultReplica, sessions []string, logs io.Writer) *faultAgent {
	t.Helper()
	a := &faultAgent{id: id, home: order[0].name, sessions: sessions, order: order,
		open: map[string]int{}, closed: map[string]int{}}
	proxy := agentclient.ProxyTo(func(ctx context.Context, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", vnc)
	})
	dialer := &gorilla.Dialer{HandshakeTimeout: 10 * time.Second, NetDialContext: a.dialTracked}
	httpClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, _, err := a.dial(ctx)
			return c, err
		},
	}}
	ag, err := agentclient.New(agentclient.Config{
		ServerURL: order[0].base(), AgentID: id, APIKey: key, Platform: models.PlatformDocker,
		BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
		Dialer: dialer, HTTPClient: httpClient,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Tunnels: func(ctx context.Context, tun *agentclient.Tunnel) error {
			s := tun.SessionID()
			a.count(s, 1)
			defer a.count(s, -1)
			return proxy(ctx, tun)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = ag.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	for _, s := range sessions {
		if err := ag.OpenTunnel(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	return a
}

// dial connects to the first replica of the agent's order that accepts.
func (a *faultAgent) dial(ctx context.Context) (net.Conn, string, error) {
	var last error
	for _, r := range a.order {
		d := net.Dialer{Timeout: time.Second}
		c, err := d.DialContext(ctx, "tcp", r.addr)
		if err == nil {
			return c, r.name, nil
		}
		last = err
	}
	return nil, "", fmt.Errorf("no replica accepts agent %s: %w", a.id, last)
}

func (a *faultAgent) dialTracked(ctx context.Context, _, _ string) (net.Conn, error) {
	c, at, err := a.dial(ctx)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.conn, a.at = c, at
	a.dials++
	a.mu.Unlock()
	return c, nil
}

func (a *faultAgent) count(session string, d int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.open[session] += d
	if d < 0 {
		a.closed[session]++
	}
}

// tunnels is how many tunnels of session run and how many ended.
func (a *faultAgent) tunnels(session string) (open, closed int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.open[session], a.closed[session]
}

// connection is the replica the agent's socket was dialed to and how many sockets it dialed.
func (a *faultAgent) connection() (at string, dials int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.at, a.dials
}

// drop cuts the agent's socket, as a network failure does: it reconnects, home first.
func (a *faultAgent) drop() {
	a.mu.Lock()
	c := a.conn
	a.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}

// faultViewer is a browser's RFB client on a viewer socket.
type faultViewer struct {
	via     string
	session string
	ws      *gorilla.Conn
	rw      io.ReadWriteCloser
	rfb     *vnctest.Client
	w, h    int

	streaming bool          // stream was called
	pushing   bool          // push was called
	pushed    chan struct{} // closed when push's writes end
	updates   atomic.Int64
	stop      chan struct{}
	done      chan struct{}
	stopOnce  sync.Once
	mu        sync.Mutex
	endErr    error
	ended     time.Time
}

// viewerRefusal is an answer other than 101 to a viewer's upgrade.
type viewerRefusal struct {
	status int
	body   string
}

func (e *viewerRefusal) Error() string { return fmt.Sprintf("%d %s", e.status, e.body) }

// dialFaultViewer opens session's viewer socket on r as alice, runs the RFB handshake and reads a
// region of the screen: the desktop is there.
func dialFaultViewer(t *testing.T, r *faultReplica, session string) (*faultViewer, error) {
	return dialFaultViewerWithin(t, r, session, 10*time.Second)
}

// dialFaultViewerWithin is dialFaultViewer waiting up to handshake for the answer to the upgrade.
func dialFaultViewerWithin(t *testing.T, r *faultReplica, session string, handshake time.Duration) (*faultViewer, error) {
	tok := aliceToken(t)
	d := gorilla.Dialer{Subprotocols: []string{"binary"}, HandshakeTimeout: handshake}
	ws, resp, err := d.Dial("ws://"+r.addr+"/api/v1/vnc/"+session+"?token="+tok, nil)
	if err != nil {
		if resp != nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			return nil, &viewerRefusal{status: resp.StatusCode, body: strings.TrimSpace(string(b))}
		}
		return nil, err
	}
	v := &faultViewer{via: r.name, session: session, ws: ws, rw: vnctest.WSConn(ws),
		stop: make(chan struct{}), done: make(chan struct{})}
	v.rfb = vnctest.NewClient(v.rw)
	fail := func(err error) (*faultViewer, error) {
		_ = ws.Close()
		return nil, err
	}
	_ = ws.SetReadDeadline(time.Now().Add(15 * time.Second))
	w, h, _, err := v.rfb.Handshake()
	if err != nil {
		return fail(fmt.Errorf("RFB handshake: %w", err))
	}
	v.w, v.h = min(w, 256), min(h, 256)
	if err := v.rfb.SetPixelFormat32(); err != nil {
		return fail(err)
	}
	if err := v.rfb.SetEncodings(0); err != nil { // Raw
		return fail(err)
	}
	if err := v.rfb.RequestUpdate(false, 0, 0, v.w, v.h); err != nil {
		return fail(err)
	}
	for covered := 0; covered < v.w*v.h; {
		rects, err := v.rfb.ReadUpdate()
		if err != nil {
			return fail(fmt.Errorf("reading the screen: %w", err))
		}
		for _, rc := range rects {
			covered += rc.Dx() * rc.Dy()
		}
	}
	_ = ws.SetReadDeadline(time.Time{})
	return v, nil
}

// waitDesktop retries dialFaultViewer until the desktop answers, for up to within: while the
// cluster recovers, 503 answers and sockets that end early are expected; any other viewerRefusal
// fails at once. It returns the viewer and how long it took.
func waitDesktop(t *testing.T, r *faultReplica, session string, within time.Duration) (*faultViewer, time.Duration) {
	t.Helper()
	start := time.Now()
	var last error
	for time.Since(start) < within {
		v, err := dialFaultViewer(t, r, session)
		if err == nil {
			t.Cleanup(v.close)
			return v, time.Since(start)
		}
		last = err
		if ref := (*viewerRefusal)(nil); errors.As(err, &ref) && ref.status != http.StatusServiceUnavailable {
			break
		}
		time.Sleep(200 * time.Millisecond) // kept: a viewer's pause between attempts
	}
	t.Fatalf("viewer of %s through replica %s: no desktop after %v; last answer: %v", session, r.name, time.Since(start).Round(time.Millisecond), last)
	return nil, 0
}

// stream pulls a 256×256 region of the screen again and again, 20 times a second, counting
// the updates, until close or the socket ends.
func (v *faultViewer) stream() {
	v.streaming = true
	go func() {
		defer close(v.done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			err := v.rfb.RequestUpdate(false, 0, 0, v.w, v.h)
			if err == nil {
				_, err = v.rfb.ReadUpdate()
			}
			if err != nil {
				v.mu.Lock()
				v.endErr, v.ended = err, time.Now()
				v.mu.Unlock()
				return
			}
			v.updates.Add(1)
			select {
			case <-v.stop:
				return
			case <-tick.C:
			}
		}
	}()
}

// end is how the stream ended: the close frame's code and reason (code -1: the socket ended
// without one), and when; ok is false while it streams.
func (v *faultViewer) end() (code int, reason string, at time.Time, ok bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.endErr == nil {
		return 0, "", time.Time{}, false
	}
	var ce *gorilla.CloseError
	if errors.As(v.endErr, &ce) {
		return ce.Code, ce.Text, v.ended, true
	}
	return -1, v.endErr.Error(), v.ended, true
}

// close leaves: a 1000 close frame, then the socket closed, and the streaming goroutine
// waited for. Safe to call more than once.
func (v *faultViewer) close() {
	v.stopOnce.Do(func() {
		close(v.stop)
		if v.pushing {
			_ = v.ws.Close() // a close frame would wait for the pusher's blocked write
			<-v.pushed
		} else {
			_ = v.rw.Close()
		}
		if v.streaming {
			<-v.done
		}
	})
}

// push sends 32 KiB ClientCutText messages as fast as the socket takes them, from a goroutine
// of its own, until a write fails (each may wait 60 s); the channel closes then.
func (v *faultViewer) push() <-chan struct{} {
	msg := make([]byte, 8+32<<10)
	msg[0] = 6 // ClientCutText: type, 3 bytes of padding, length, text
	binary.BigEndian.PutUint32(msg[4:], 32<<10)
	for i := 8; i < len(msg); i++ {
		msg[i] = 'x'
	}
	ended := make(chan struct{})
	v.pushing, v.pushed = true, ended
	go func() {
		defer close(ended)
		for {
			_ = v.ws.SetWriteDeadline(time.Now().Add(60 * time.Second))
			if _, err := v.rw.Write(msg); err != nil {
				return
			}
		}
	}()
	return ended
}
