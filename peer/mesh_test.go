package peer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/streamspace/streamspace-realtime/internal/testkit"
)

// net/http's connection goroutine lingers for its reset-avoidance delay (500 ms) after a
// stream's server side closed it; it ends by itself, so it is not a leak.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("net/http.(*conn).closeWriteAndWait"))
}

var secret = []byte("0123456789abcdef0123456789abcdef")

// testHandler answers who opened the stream, and floods a response nobody may read.
func testHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/whoami", func(w http.ResponseWriter, r *http.Request) {
		name, _ := ReplicaFrom(r.Context())
		fmt.Fprint(w, name)
	})
	mux.HandleFunc("/flood", func(w http.ResponseWriter, r *http.Request) {
		chunk := bytes.Repeat([]byte("x"), 32<<10)
		for range 128 { // 4 MiB, far over one stream's window
			if _, err := w.Write(chunk); err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	})
	return mux
}

type node struct {
	*Mesh
	addr string
}

func newNode(t *testing.T, name string, key []byte, tweak ...func(*Config)) *node {
	t.Helper()
	cfg := Config{
		Replica: name, Secret: key, Handler: testHandler(),
		Logger:           slog.New(slog.NewTextHandler(io.Discard, nil)),
		HandshakeTimeout: 2 * time.Second, KeepAlive: 200 * time.Millisecond, WriteTimeout: time.Second,
	}
	for _, f := range tweak {
		f(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- m.Serve(ln) }()
	t.Cleanup(func() {
		_ = m.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &node{Mesh: m, addr: ln.Addr().String()}
}

// get makes one HTTP request over a new stream from m to replica at addr.
func get(ctx context.Context, m *Mesh, replica, addr, path string) (string, error) {
	tr := &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return m.Dial(ctx, replica, addr)
		},
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+replica+path, nil)
	if err != nil {
		return "", err
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Streams in both directions share the one link the first dial made; the handler learns
// which replica opened each stream.
func TestOneLinkServesBothDirections(t *testing.T) {
	ctx := ctxFor(t)
	a, b := newNode(t, "a", secret), newNode(t, "b", secret)
	for range 5 {
		got, err := get(ctx, a.Mesh, "b", b.addr, "/whoami")
		if err != nil || got != "a" {
			t.Fatalf("a → b: %q, %v", got, err)
		}
	}
	// b has no address of a that works: only the link a dialled can carry this.
	got, err := get(ctx, b.Mesh, "a", "127.0.0.1:1", "/whoami")
	if err != nil || got != "b" {
		t.Fatalf("b → a over a's link: %q, %v", got, err)
	}
	if n := testutil.ToFloat64(a.metrics.links.WithLabelValues("out")); n != 1 {
		t.Fatalf("a's outbound links = %v, want 1", n)
	}
	if n := testutil.ToFloat64(b.metrics.links.WithLabelValues("in")); n != 1 {
		t.Fatalf("b's inbound links = %v, want 1", n)
	}
	if n := testutil.ToFloat64(a.metrics.dials.WithLabelValues("ok")); n != 1 {
		t.Fatalf("a dialled %v links, want 1", n)
	}
}

// Concurrent first dials to one replica make one link.
func TestConcurrentDialsShareOneLink(t *testing.T) {
	ctx := ctxFor(t)
	a, b := newNode(t, "a", secret), newNode(t, "b", secret)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			if got, err := get(ctx, a.Mesh, "b", b.addr, "/whoami"); err != nil || got != "a" {
				errs <- fmt.Errorf("%q, %v", got, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := testutil.ToFloat64(a.metrics.dials.WithLabelValues("ok")); n != 1 {
		t.Fatalf("a dialled %v links, want 1", n)
	}
}

// A replica without the secret gets no link, learns nothing, and the handler never runs.
func TestWrongSecretIsRefused(t *testing.T) {
	ctx := ctxFor(t)
	b := newNode(t, "b", secret)
	other := []byte("another secret, also 32 bytes long!")
	c := newNode(t, "c", other)
	_, err := get(ctx, c.Mesh, "b", b.addr, "/whoami")
	if !errors.Is(err, ErrNotAuthenticated) {
		t.Fatalf("err = %v, want ErrNotAuthenticated", err)
	}
	testkit.Eventually(t, 10*time.Second, "b to count the refusal", func() bool {
		return testutil.ToFloat64(b.metrics.handshakes.WithLabelValues("refused_proof")) == 1
	})
	if n := testutil.ToFloat64(b.metrics.handshakes.WithLabelValues("ok")); n != 0 {
		t.Fatalf("b accepted %v links", n)
	}
	// b answers a replica that knows the secret, but claims b's own name, the same way.
	impostor := newNode(t, "b", secret)
	if _, err := get(ctx, impostor.Mesh, "b", b.addr, "/whoami"); err == nil {
		t.Fatal("a peer using b's own name was accepted")
	}
}

// Anything that is not a peer link (plain HTTP, silence) is closed, and a dial that reaches
// another replica than the one it meant fails with ErrWrongReplica.
func TestNonPeersAndWrongReplica(t *testing.T) {
	ctx := ctxFor(t)
	b := newNode(t, "b", secret)
	plain, err := net.Dial("tcp", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = plain.Close() }()
	_, _ = io.WriteString(plain, "GET /whoami HTTP/1.1\r\nHost: b\r\n\r\n")
	_ = plain.SetReadDeadline(time.Now().Add(15 * time.Second))
	if got, _ := io.ReadAll(plain); strings.Contains(string(got), "HTTP/1.1") {
		t.Fatalf("plain HTTP was answered: %q", got)
	}
	silent, err := net.Dial("tcp", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = silent.Close() }()
	_ = silent.SetReadDeadline(time.Now().Add(15 * time.Second))
	var ne net.Error
	if _, err := silent.Read(make([]byte, 1)); err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("a silent connection was kept open: %v", err)
	}
	testkit.Eventually(t, 10*time.Second, "both refusals counted", func() bool {
		return testutil.ToFloat64(b.metrics.handshakes.WithLabelValues("refused_tls")) == 2
	})

	a := newNode(t, "a", secret)
	if _, err := a.Dial(ctx, "x", b.addr); !errors.Is(err, ErrWrongReplica) {
		t.Fatalf("err = %v, want ErrWrongReplica", err)
	}
}

// A stream whose reader stops takes only its own window: another stream on the same link
// still gets through.
func TestStalledStreamLeavesOthersMoving(t *testing.T) {
	ctx := ctxFor(t)
	a, b := newNode(t, "a", secret), newNode(t, "b", secret)
	conn, err := a.Dial(ctx, "b", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(conn, "GET /flood HTTP/1.1\r\nHost: b\r\n\r\n")
	// Read a little so the flood has started, then stop reading.
	if _, err := io.ReadFull(conn, make([]byte, 1024)); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if got, err := get(ctx, a.Mesh, "b", b.addr, "/whoami"); err != nil || got != "a" {
			t.Fatalf("second stream: %q, %v", got, err)
		}
	}
	_ = conn.Close()
}

// A link that stops answering (its peer frozen) is closed by the keepalive, and until then
// blocks nothing but its own streams: links to other replicas keep working.
func TestStalledLinkBlocksOnlyItself(t *testing.T) {
	ctx := ctxFor(t)
	a, b, c := newNode(t, "a", secret), newNode(t, "b", secret), newNode(t, "c", secret)
	proxy := newPausableProxy(t, b.addr)
	if got, err := get(ctx, a.Mesh, "b", proxy.addr, "/whoami"); err != nil || got != "a" {
		t.Fatalf("a → b: %q, %v", got, err)
	}
	stuck, err := a.Dial(ctx, "b", proxy.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stuck.Close() }()
	proxy.pause()
	writing := make(chan error, 1)
	go func() { // fills the stalled stream's window, then waits on it
		_, err := stuck.Write(make([]byte, 1<<20))
		writing <- err
	}()
	for range 3 {
		if got, err := get(ctx, a.Mesh, "c", c.addr, "/whoami"); err != nil || got != "a" {
			t.Fatalf("a → c while b is stalled: %q, %v", got, err)
		}
	}
	testkit.Eventually(t, 15*time.Second, "the stalled link to be closed", func() bool {
		return testutil.ToFloat64(a.metrics.links.WithLabelValues("out")) == 1 // c's only
	})
	if err := <-writing; err == nil {
		t.Fatal("a write on the stalled link succeeded")
	}
	proxy.resume()
	got, err := get(ctx, a.Mesh, "b", proxy.addr, "/whoami")
	if err != nil || got != "a" {
		t.Fatalf("a → b after the stall: %q, %v", got, err)
	}
}

// Closing a mesh ends its links on the other side and the streams over them.
func TestCloseEndsLinksAndStreams(t *testing.T) {
	ctx := ctxFor(t)
	b := newNode(t, "b", secret)
	a, err := New(Config{Replica: "a", Secret: secret, Handler: testHandler(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := a.Dial(ctx, "b", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "b to see the link", func() bool {
		return testutil.ToFloat64(b.metrics.links.WithLabelValues("in")) == 1
	})
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("a stream outlived its mesh")
	}
	if _, err := a.Dial(ctx, "b", b.addr); !errors.Is(err, ErrClosed) {
		t.Fatalf("Dial after Close: %v", err)
	}
	testkit.Eventually(t, 10*time.Second, "b to drop the link", func() bool {
		return testutil.ToFloat64(b.metrics.links.WithLabelValues("in")) == 0
	})
}

func TestNewRefusesBadConfig(t *testing.T) {
	h := testHandler()
	for name, cfg := range map[string]Config{
		"short secret": {Replica: "a", Secret: []byte("short"), Handler: h},
		"no name":      {Secret: secret, Handler: h},
		"bad name":     {Replica: "a b", Secret: secret, Handler: h},
		"no handler":   {Replica: "a", Secret: secret},
	} {
		if m, err := New(cfg); err == nil {
			_ = m.Close()
			t.Errorf("%s: accepted", name)
		}
	}
}

// pausableProxy forwards TCP to a target until paused; paused, it forwards nothing and
// accepts connections it does not serve, as a frozen process would.
type pausableProxy struct {
	addr    string
	mu      sync.Mutex
	paused  bool
	resumed chan struct{}
}

func newPausableProxy(t *testing.T, target string) *pausableProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pausableProxy{addr: ln.Addr().String(), resumed: make(chan struct{})}
	var wg sync.WaitGroup
	var conns []net.Conn
	var connsMu sync.Mutex
	t.Cleanup(func() {
		_ = ln.Close()
		p.resumeNow()
		connsMu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		connsMu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				_ = in.Close()
				continue
			}
			connsMu.Lock()
			conns = append(conns, in, out)
			connsMu.Unlock()
			wg.Go(func() { p.copy(out, in) })
			wg.Go(func() { p.copy(in, out) })
		}
	})
	return p
}

func (p *pausableProxy) copy(dst, src net.Conn) {
	defer func() { _ = dst.Close(); _ = src.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		p.mu.Lock()
		wait, resumed := p.paused, p.resumed
		p.mu.Unlock()
		if wait {
			<-resumed
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *pausableProxy) pause() {
	p.mu.Lock()
	p.paused = true
	p.mu.Unlock()
}

func (p *pausableProxy) resumeNow() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.paused {
		p.paused = false
		close(p.resumed)
		p.resumed = make(chan struct{})
	}
}

func (p *pausableProxy) resume() { p.resumeNow() }
