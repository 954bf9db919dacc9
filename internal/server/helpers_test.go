package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/streamspace/streamspace-realtime/db/dbtest"
	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/internal/redistest"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(envTunnelPeer); spec != "" {
		os.Exit(runTunnelPeer(spec))
	}
	goleak.VerifyTestMain(m, redistest.LeakOptions()...)
}

const (
	testSecret  = "0123456789abcdef0123456789abcdef-test"
	testService = "service-token-for-tests"
)

// testServer is a real server on a loopback port with a fresh database.
type testServer struct {
	*Server
	base string // http://127.0.0.1:port
	logs *testkit.LockedBuffer
	stop func()
}

// forEachDialect runs fn as a parallel subtest per database dialect, each with its name.
func forEachDialect(t *testing.T, fn func(t *testing.T, dialect string)) {
	t.Helper()
	for _, dialect := range dbtest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			fn(t, dialect)
		})
	}
}

// testConfig is the configuration of a test server on a fresh database of dialect, with env
// set on top of the test secrets.
func testConfig(t testing.TB, dialect string, env map[string]string) Config {
	t.Helper()
	cfg, err := LoadConfig(nil, func(k string) string {
		switch k {
		case "STREAMSPACE_JWT_SECRET":
			return testSecret
		case "STREAMSPACE_SERVICE_TOKEN":
			return testService
		case "STREAMSPACE_DATABASE_URL":
			return dbtest.URL(t, dialect)
		case "STREAMSPACE_PEER_ADDR":
			if v := env[k]; v != "" {
				return v
			}
			return "127.0.0.1:0" // replicas in one process, each with its own port
		}
		return env[k]
	})
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

func startServer(t testing.TB, dialect string, mutate ...func(*Config)) *testServer {
	t.Helper()
	cfg := testConfig(t, dialect, nil)
	cfg.ShutdownTimeout = 5 * time.Second
	for _, f := range mutate {
		f(&cfg)
	}
	logs := &testkit.LockedBuffer{}
	level := slog.LevelInfo
	if cfg.LogLevel == "debug" {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: level}))
	srv, err := New(context.Background(), cfg, log)
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	var once sync.Once
	ts := &testServer{Server: srv, base: "http://" + ln.Addr().String(), logs: logs}
	ts.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		})
	}
	t.Cleanup(ts.stop)
	return ts
}

func (ts *testServer) wsURL(path string) string {
	return "ws" + strings.TrimPrefix(ts.base, "http") + path
}

func mint(t *testing.T, user, org string, role auth.Role, ttl time.Duration) string {
	t.Helper()
	tok, err := auth.Mint([]byte(testSecret), auth.Identity{UserID: user, OrgID: org, Role: role}, ttl, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// post sends a JSON body with a bearer token and returns status and body.
func (ts *testServer) post(t *testing.T, path, bearer, body string) (int, errorBody) {
	t.Helper()
	status, raw := ts.postRaw(t, path, bearer, body)
	var eb errorBody
	_ = json.Unmarshal(raw, &eb)
	return status, eb
}

// postRaw sends a JSON body with a bearer token (none when empty) and returns status and the
// body as it came.
func (ts *testServer) postRaw(t *testing.T, path, bearer, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, ts.base+path, strings.NewReader(body))
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

// dialWS connects with the token in the query; it returns the connection
// or the HTTP status and error code of the refusal.
func (ts *testServer) dialWS(t *testing.T, path string, header http.Header) (*gorilla.Conn, int, string) {
	t.Helper()
	conn, resp, err := gorilla.DefaultDialer.Dial(ts.wsURL(path), header)
	if err == nil {
		t.Cleanup(func() { _ = conn.Close() })
		return conn, http.StatusSwitchingProtocols, ""
	}
	if resp == nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	defer resp.Body.Close()
	var eb errorBody
	if derr := json.NewDecoder(resp.Body).Decode(&eb); derr != nil {
		t.Fatalf("refusal of %s is not JSON: %v", path, derr)
	}
	return nil, resp.StatusCode, eb.Error
}

type wsFrame map[string]any

func (f wsFrame) str(k string) string { s, _ := f[k].(string); return s }

func readWS(t *testing.T, c *gorilla.Conn) wsFrame {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, data, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var f wsFrame
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("frame %q: %v", data, err)
	}
	return f
}

func closeCode(t *testing.T, c *gorilla.Conn, within time.Duration) int {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(within))
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			var ce *gorilla.CloseError
			if errors.As(err, &ce) {
				return ce.Code
			}
			t.Fatalf("no close frame: %v", err)
		}
	}
}
