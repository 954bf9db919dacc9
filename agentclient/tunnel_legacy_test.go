package agentclient

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
)

// With a control plane that does not answer X-Agent-Features, the agent speaks StreamSpace's
// messages: vnc_ready once the handler runs, base64 vnc_data both ways, a new tunnel and a new
// vnc_ready after each vnc_close, the sessions announced again after a reconnect, and
// CloseTunnel ends it for good.
func TestStreamSpaceTunnels(t *testing.T) {
	var live atomic.Int32
	ends := make(chan error, 8)
	cp, a, _ := setup(t, func(c *Config) { c.Tunnels = echoHandler("RFB 003.008\n", &live, ends) })
	if err := a.OpenTunnel(t.Context(), "s1"); err != nil {
		t.Fatal(err)
	}
	start(t, a)
	c := nextConn(t, cp)
	if c.Features != models.AgentFeatureTunnel || c.Tunnels {
		t.Fatalf("features %q, tunnels %v: want offered, not taken up", c.Features, c.Tunnels)
	}
	ready := next[models.VNCReadyMessage](t, c, models.MessageTypeVNCReady)
	if ready.SessionID != "s1" {
		t.Fatalf("vnc_ready %+v", ready)
	}
	if got := string(nextVNCData(t, c, "s1")); got != "RFB 003.008\n" {
		t.Fatalf("first bytes %q", got)
	}
	sendVNCData(t, c, "s1", []byte("hello"))
	if got := string(nextVNCData(t, c, "s1")); got != "hello" {
		t.Fatalf("echo %q", got)
	}

	// vnc_close: that tunnel ends and a new one is announced for the next viewer.
	if err := c.Send(models.MessageTypeVNCClose, models.VNCCloseMessage{SessionID: "s1", Reason: "client_disconnect"}); err != nil {
		t.Fatal(err)
	}
	if err := recvErr(t, ends); err != nil {
		t.Fatal(err)
	}
	if r := next[models.VNCReadyMessage](t, c, models.MessageTypeVNCReady); r.SessionID != "s1" {
		t.Fatalf("second vnc_ready %+v", r)
	}
	if got := string(nextVNCData(t, c, "s1")); got != "RFB 003.008\n" {
		t.Fatalf("the new tunnel's first bytes %q", got)
	}

	// A session opened while connected.
	if err := a.OpenTunnel(t.Context(), "s2"); err != nil {
		t.Fatal(err)
	}
	if r := next[models.VNCReadyMessage](t, c, models.MessageTypeVNCReady); r.SessionID != "s2" {
		t.Fatalf("vnc_ready %+v, want s2", r)
	}

	// A reconnect announces both again.
	if err := c.Kill(); err != nil {
		t.Fatal(err)
	}
	c = nextConn(t, cp)
	announced := map[string]bool{}
	for range 2 {
		announced[next[models.VNCReadyMessage](t, c, models.MessageTypeVNCReady).SessionID] = true
	}
	if !announced["s1"] || !announced["s2"] {
		t.Fatalf("announced again %v, want s1 and s2", announced)
	}
	testkit.Eventually(t, waitTimeout, "one handler per session", func() bool { return live.Load() == 2 })

	// CloseTunnel: the session's tunnel ends and is not reopened.
	a.CloseTunnel("s1")
	a.CloseTunnel("s2")
	testkit.Eventually(t, waitTimeout, "handlers to end", func() bool { return live.Load() == 0 })
	roundTrip(t, c)
	if n := countType(c.Frames(), models.MessageTypeVNCReady); n != 2 {
		t.Fatalf("%d vnc_ready on the second connection, want 2 (none after CloseTunnel)", n)
	}
}

// Invalid base64 ends the session's tunnel with vnc_error; the agent's socket goes on, and a
// new tunnel opens.
func TestStreamSpaceInvalidDataClosesTheTunnel(t *testing.T) {
	var live atomic.Int32
	cp, a, _ := setup(t, func(c *Config) { c.Tunnels = echoHandler("RFB 003.008\n", &live, nil) })
	a.tunnelRetry = 10 * time.Millisecond
	if err := a.OpenTunnel(t.Context(), "s1"); err != nil {
		t.Fatal(err)
	}
	start(t, a)
	c := nextConn(t, cp)
	next[models.VNCReadyMessage](t, c, models.MessageTypeVNCReady)
	nextVNCData(t, c, "s1")
	if err := c.Send(models.MessageTypeVNCData, map[string]string{"sessionId": "s1", "data": "!!not base64"}); err != nil {
		t.Fatal(err)
	}
	e := next[models.VNCErrorMessage](t, c, models.MessageTypeVNCError)
	if e != (models.VNCErrorMessage{SessionID: "s1", Error: "invalid data"}) {
		t.Fatalf("vnc_error %+v", e)
	}
	// tunnelRetry later, a new tunnel.
	if r := next[models.VNCReadyMessage](t, c, models.MessageTypeVNCReady); r.SessionID != "s1" {
		t.Fatalf("vnc_ready %+v", r)
	}
	if got := string(nextVNCData(t, c, "s1")); got != "RFB 003.008\n" {
		t.Fatalf("the new tunnel's first bytes %q", got)
	}
}

func countType(frames []models.AgentMessage, typ string) int {
	n := 0
	for _, f := range frames {
		if f.Type == typ {
			n++
		}
	}
	return n
}

// Tunnels end with their connection, and nothing of them outlives the Agent's Run.
func TestTunnelsLeaveNoGoroutines(t *testing.T) {
	base := testkit.SteadyGoroutines()
	var live atomic.Int32
	cp, a, _ := setup(t, func(c *Config) { c.Tunnels = echoHandler("hi", &live, nil) })
	cp.UseTunnels(true)
	if err := a.OpenTunnel(t.Context(), "s1"); err != nil {
		t.Fatal(err)
	}
	r := start(t, a)
	c := nextConn(t, cp)
	for id := uint32(1); id <= 3; id++ {
		openTunnel(t, c, id, "s1", false, models.DefaultTunnelWindow)
		nextData(t, c, id)
	}
	if err := c.Kill(); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, waitTimeout, "handlers to end with their connection", func() bool { return live.Load() == 0 })
	c = nextConn(t, cp)
	openTunnel(t, c, 1, "s1", false, models.DefaultTunnelWindow)
	nextData(t, c, 1)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if n := live.Load(); n != 0 {
		t.Fatalf("%d handlers still running after Run returned", n)
	}
	cp.Close()
	testkit.GoroutinesBackTo(t, waitTimeout, base)
}
