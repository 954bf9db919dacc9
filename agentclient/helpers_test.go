package agentclient

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/streamspace/streamspace-realtime/agentclient/agenttest"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitTimeout bounds every wait of these tests.
const waitTimeout = 5 * time.Second

// testConfig is a Config for cp with small durations; logs go to logs.
func testConfig(cp *agenttest.Server, logs *testkit.LockedBuffer) Config {
	return Config{
		ServerURL:         cp.URL,
		AgentID:           "agent-1",
		APIKey:            "k1",
		Platform:          models.PlatformDocker,
		HeartbeatInterval: time.Hour,
		BackoffMin:        5 * time.Millisecond,
		BackoffMax:        40 * time.Millisecond,
		ShutdownTimeout:   2 * time.Second,
		Logger:            slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// setup starts a control plane accepting "k1" and an Agent for it; mutate adjusts the config.
func setup(t *testing.T, mutate func(*Config)) (*agenttest.Server, *Agent, *testkit.LockedBuffer) {
	t.Helper()
	cp := agenttest.NewServer("k1")
	t.Cleanup(cp.Close)
	logs := &testkit.LockedBuffer{}
	cfg := testConfig(cp, logs)
	if mutate != nil {
		mutate(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if n := cp.Malformed(); n != 0 {
			t.Errorf("the agent sent %d frames that were not one JSON object with a type", n)
		}
		if t.Failed() {
			t.Logf("agent logs:\n%s", logs.String())
		}
	})
	return cp, a, logs
}

// running is an Agent's Run in a goroutine.
type running struct {
	cancel context.CancelFunc
	errc   chan error
}

// start runs a.Run until the test stops it or ends (then it must return nil).
func start(t *testing.T, a *Agent) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, errc: make(chan error, 1)}
	go func() { r.errc <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.errc:
		case <-time.After(waitTimeout):
			t.Error("Run did not return after cancel")
		}
	})
	return r
}

// wait waits for Run to return on its own and returns its error.
func (r *running) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.errc:
		r.errc <- err // for the cleanup
		return err
	case <-time.After(waitTimeout):
		t.Fatal("Run did not return")
		return nil
	}
}

// stop cancels Run and returns its error.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	return r.wait(t)
}

func waitCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

func nextConn(t *testing.T, cp *agenttest.Server) *agenttest.Conn {
	t.Helper()
	c, err := cp.NextConn(waitCtx(t))
	if err != nil {
		t.Fatalf("no connection: %v", err)
	}
	return c
}

// next returns the next frame of type typ on c, decoded.
func next[T any](t *testing.T, c *agenttest.Conn, typ string) T {
	t.Helper()
	m, err := c.Next(waitCtx(t), typ)
	if err != nil {
		t.Fatalf("no %s frame: %v", typ, err)
	}
	if m.Timestamp.IsZero() || m.Timestamp.Location() != time.UTC {
		t.Errorf("%s frame timestamp %v, want a UTC time", typ, m.Timestamp)
	}
	v, err := agenttest.Decode[T](m)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// roundTrip sends a ping frame and waits for its pong: every frame sent before has been read.
func roundTrip(t *testing.T, c *agenttest.Conn) {
	t.Helper()
	if err := c.Send(models.MessageTypePing, models.PingMessage{Timestamp: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	next[models.PongMessage](t, c, models.MessageTypePong)
}

// types lists the types of frames.
func types(frames []models.AgentMessage) []string {
	out := make([]string, len(frames))
	for i, f := range frames {
		out[i] = f.Type
	}
	return out
}

func isErr(err, target error) bool { return errors.Is(err, target) }

func countOf(s, sub string) int { return strings.Count(s, sub) }
