package websocket

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/streamspace/streamspace-realtime/cluster"
	"github.com/streamspace/streamspace-realtime/internal/redistest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, redistest.LeakOptions()...) }

var testUpgrader = NewUpgrader(nil)

// sessionsServer serves m's sessions socket; the test names the caller's
// OrgContext in the query (org, user, role, session, ttl), standing in for
// the verified token the real server uses.
func sessionsServer(t testing.TB, m *Manager) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		org := &OrgContext{OrgID: q.Get("org"), UserID: q.Get("user"), Role: q.Get("role"), K8sNamespace: q.Get("ns")}
		if ttl := q.Get("ttl"); ttl != "" {
			d, _ := time.ParseDuration(ttl)
			org.ExpiresAt = time.Now().Add(d)
		}
		conn, err := testUpgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		_ = m.ServeSessions(r.Context(), conn, org, SessionsRequest{SessionID: q.Get("session"), Since: q.Get("since")})
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

// socketServer upgrades every request and hands the connection and the query to serve,
// which stands in for the server's route after it checked the token.
func socketServer(t testing.TB, serve func(conn *websocket.Conn, q url.Values)) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := testUpgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		serve(conn, r.URL.Query())
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

// hubServer serves h through the reference entry points: ServeClientWithOrg
// with the org in the query, or the deprecated ServeClient when it is absent.
func hubServer(t *testing.T, h *Hub) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		conn, err := testUpgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		if q.Has("org") {
			h.ServeClientWithOrg(conn, q.Get("id"), q.Get("org"), q.Get("ns"), q.Get("user"))
		} else {
			h.ServeClient(conn, q.Get("id"))
		}
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

func dial(t testing.TB, base string, params url.Values) *websocket.Conn {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial(base+"?"+params.Encode(), nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// dialSmallBuffer is dial with a 4 KiB socket receive buffer, for tests of a browser that stops
// reading: the server's nonblocking writes fill the kernel's buffers in a few kilobytes rather
// than megabytes, and what follows waits in the client's queue.
func dialSmallBuffer(t testing.TB, base string, params url.Values) *websocket.Conn {
	t.Helper()
	// Set before connecting, so the window the client advertises is small from the start.
	small := &net.Dialer{Control: func(_, _ string, raw syscall.RawConn) error {
		var serr error
		err := raw.Control(func(fd uintptr) {
			serr = setReceiveBuffer(fd, 4096)
		})
		return cmp.Or(err, serr)
	}}
	d := websocket.Dialer{NetDialContext: small.DialContext}
	conn, _, err := d.Dial(base+"?"+params.Encode(), nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// frame is a decoded server frame.
type frame map[string]any

func (f frame) str(k string) string { s, _ := f[k].(string); return s }

func readFrame(t testing.TB, conn *websocket.Conn) frame {
	t.Helper()
	var f frame
	readJSON(t, conn, 5*time.Second, &f)
	return f
}

// readJSON reads one frame within d and decodes it into v.
func readJSON(t testing.TB, conn *websocket.Conn, d time.Duration, v any) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(d))
	_, data, err := conn.ReadMessage()
	if err != nil {
		t.Fatalf("read frame: %v", err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("frame %q is not one JSON object: %v", data, err)
	}
}

// readUntilType skips frames until one of type typ arrives.
func readUntilType(t testing.TB, conn *websocket.Conn, typ string) frame {
	t.Helper()
	for {
		if f := readFrame(t, conn); f.str("type") == typ {
			return f
		}
	}
}

// expectClose reads until the server's close frame and returns its code and reason.
func expectClose(t testing.TB, conn *websocket.Conn, within time.Duration) (int, string) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(within))
	for {
		_, _, err := conn.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code, ce.Text
		}
		t.Fatalf("connection ended without a close frame: %v", err)
	}
}

// startManager returns a started manager that is shut down at cleanup.
func startManager(t testing.TB, store SessionStore, cfg Config) *Manager {
	t.Helper()
	m := newManager(store, nil, cfg)
	m.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return m
}

func params(kv ...string) url.Values {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return v
}

var clusterPositionZero = cluster.Position{Epoch: "e"}

func clusterMessage(org string, offset uint64, payload []byte) cluster.Message {
	return cluster.Message{OrgID: org, Position: cluster.Position{Epoch: "e", Offset: offset}, Payload: payload}
}

// dialMany connects n clients, 64 at a time; query names client i's
// caller, and ready (optional) runs on each new connection before it counts.
func dialMany(tb testing.TB, dialer *websocket.Dialer, base string, n int,
	query func(i int) url.Values, ready func(*websocket.Conn) error) []*websocket.Conn {
	tb.Helper()
	conns := make([]*websocket.Conn, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			c, _, err := dialer.Dial(base+"?"+query(i).Encode(), nil)
			if err == nil && ready != nil {
				err = ready(c)
			}
			if err != nil {
				errs <- err
				return
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
		tb.Fatalf("dial: %v", err)
	}
	return conns
}
