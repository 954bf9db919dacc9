package server

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/agentclient"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/internal/vnctest"
	"github.com/streamspace/streamspace-realtime/models"
)

// sourceRequest is the size of a request to the byte source: 4 bytes (big-endian) naming how
// many bytes to answer, then padding. It is the 10-byte message of the round trip.
const sourceRequest = 10

// sourceMax bounds one answer of the byte source.
const sourceMax = 8 << 20

// startByteSource runs a TCP server that answers each 10-byte request with the number of
// bytes it names, written as fast as the socket takes them: a VNC server whose own cost is
// nil, so the relay's cost shows.
func startByteSource(tb testing.TB) string {
	tb.Helper()
	payload := make([]byte, sourceMax)
	for i := range payload {
		payload[i] = byte(i)
	}
	return vnctest.ServeTCP(tb, func(c net.Conn) {
		defer c.Close()
		req := make([]byte, sourceRequest)
		for {
			if _, err := io.ReadFull(c, req); err != nil {
				return
			}
			n := min(int(binary.BigEndian.Uint32(req)), sourceMax)
			if _, err := c.Write(payload[:n]); err != nil {
				return
			}
		}
	})
}

// sourceAsk sends one request for n bytes and reads the answer into buf.
func sourceAsk(tb testing.TB, c io.ReadWriter, n int, buf []byte) {
	req := make([]byte, sourceRequest)
	binary.BigEndian.PutUint32(req, uint32(n))
	if _, err := c.Write(req); err != nil {
		tb.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf[:n]); err != nil {
		tb.Fatalf("reading %d bytes from the source: %v", n, err)
	}
}

// BenchmarkTunnelSource measures one viewer of a fast byte source (startByteSource) two ways in
// one run: through websockify straight to the source, and through this server and an SDK agent
// (tunnel/1). Without a real VNC server's own cost, what remains is the relays'.
//
// roundtrip/*: a 10-byte message and a 10-byte answer, one at a time; ns/op is the mean round
// trip, p50-ns and p99-ns its percentiles. stream/*: 4 MiB answers, one request at a time;
// MB/s is one tunnel's throughput, cpu-ns/MB this process's CPU time (viewer, source, and for
// tunnel1 the server and the agent) per MB. Run it with
//
//	go test -run '^$' -bench TunnelSource -benchtime 3s -count 3 ./internal/server/
func BenchmarkTunnelSource(b *testing.B) {
	src := startByteSource(b)
	ts := startServer(b, "sqlite")
	sess := models.Session{ID: "s-src", OrgID: "org-a", UserID: "alice", State: models.SessionStateRunning, AgentID: "src-1"}
	if err := ts.Database().CreateSession(context.Background(), sess); err != nil {
		b.Fatal(err)
	}
	startSDKAgent(b, ts, "src-1", src, sess.ID)
	if err := testkit.WaitFor(10*time.Second, func() bool { return ts.agents.IsAgentConnected("src-1") }); err != nil {
		b.Fatal("the agent did not connect")
	}
	direct := startWebsockify(b, src)
	dial := func(b *testing.B, url string) io.ReadWriter {
		d := gorilla.Dialer{Subprotocols: []string{"binary"}, HandshakeTimeout: 10 * time.Second}
		ws, _, err := d.Dial(url, nil)
		if err != nil {
			b.Fatalf("dial %s: %v", url, err)
		}
		b.Cleanup(func() { _ = ws.Close() })
		return vnctest.WSConn(ws)
	}
	paths := []struct {
		name string
		url  func() string
	}{
		{"websockify", func() string { return "ws://" + direct + "/" }},
		{"tunnel1", func() string { return ts.wsURL("/api/v1/vnc/" + sess.ID + "?token=" + aliceToken(b)) }},
	}
	for _, p := range paths {
		b.Run("roundtrip/"+p.name, func(b *testing.B) {
			c := dial(b, p.url())
			buf := make([]byte, sourceRequest)
			sourceAsk(b, c, sourceRequest, buf) // the tunnel is open
			took := make([]time.Duration, 0, 1<<16)
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				sourceAsk(b, c, sourceRequest, buf)
				took = append(took, time.Since(start))
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Nanoseconds()), "p50-ns")
			b.ReportMetric(float64(took[len(took)*99/100].Nanoseconds()), "p99-ns")
		})
	}
	const answer = 4 << 20
	for _, p := range paths {
		b.Run("stream/"+p.name, func(b *testing.B) {
			c := dial(b, p.url())
			buf := make([]byte, answer)
			sourceAsk(b, c, sourceRequest, buf)
			b.SetBytes(answer)
			b.ResetTimer()
			cpu0 := processCPU()
			for b.Loop() {
				sourceAsk(b, c, answer, buf)
			}
			b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N)/(answer/1e6), "cpu-ns/MB")
		})
	}
}

// BenchmarkBusyAgentCommand measures the round trip of a command (the admin API's POST until
// the database holds the agent's result) on an agent whose socket is idle, then on the same
// agent while busyViewers viewers each pull busyRate from the byte source through it: control
// frames go first on both sides of the socket (PROTOCOL.md 6.4), so the busy round trip stays
// near the idle one. rate-min-MB/s is the slowest viewer's rate while busy. Run it with
//
//	go test -run '^$' -bench BusyAgentCommand -benchtime 200x ./internal/server/
func BenchmarkBusyAgentCommand(b *testing.B) {
	const busyViewers, busyRate, piece = 100, 1 << 20, 64 << 10
	src := startByteSource(b)
	ts := startServer(b, "sqlite", func(c *Config) {
		c.VNCMaxPerUser, c.VNCMaxPerAgent, c.MaxConnectionsPerUser = 0, 0, 0
	})
	sess := models.Session{ID: "s-busy", OrgID: "org-a", UserID: "alice", State: models.SessionStateRunning, AgentID: "busy-1"}
	if err := ts.Database().CreateSession(context.Background(), sess); err != nil {
		b.Fatal(err)
	}
	a, err := agentclient.New(agentclient.Config{
		ServerURL: ts.base, AgentID: sess.AgentID, APIKey: createAgent(b, ts, sess.AgentID), Platform: models.PlatformDocker,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Tunnels: agentclient.ProxyTo(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", src)
		}),
	})
	if err != nil {
		b.Fatal(err)
	}
	a.Handle(models.ActionStopSession, func(context.Context, agentclient.Command) (map[string]any, error) {
		return map[string]any{}, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	if err := a.OpenTunnel(ctx, sess.ID); err != nil {
		b.Fatal(err)
	}
	if err := testkit.WaitFor(10*time.Second, func() bool { return ts.agents.IsAgentConnected(sess.AgentID) }); err != nil {
		b.Fatal("the agent did not connect")
	}
	command := func(b *testing.B) time.Duration {
		start := time.Now()
		code, body := ts.call(b, http.MethodPost, "/api/v1/admin/agents/"+sess.AgentID+"/command", bearer(testService),
			`{"action":"stop_session","sessionId":"s-busy"}`)
		var answer struct{ CommandID string }
		if code != http.StatusAccepted || json.Unmarshal(body, &answer) != nil {
			b.Fatalf("command: %d %s", code, body)
		}
		for {
			c, err := ts.Database().GetCommand(context.Background(), answer.CommandID)
			if err == nil && c.Status == models.CommandStatusCompleted {
				return time.Since(start)
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	measure := func(b *testing.B) {
		took := make([]time.Duration, 0, 1024)
		for b.Loop() {
			took = append(took, command(b))
		}
		slices.Sort(took)
		b.ReportMetric(float64(took[len(took)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(took[len(took)*99/100].Microseconds()), "p99-µs")
	}
	b.Run("idle", measure)
	b.Run("busy", func(b *testing.B) {
		url := ts.wsURL("/api/v1/vnc/" + sess.ID + "?token=" + aliceToken(b))
		conns := make([]io.ReadWriter, busyViewers)
		for i := range conns {
			d := gorilla.Dialer{Subprotocols: []string{"binary"}, HandshakeTimeout: 10 * time.Second}
			ws, _, err := d.Dial(url, nil)
			if err != nil {
				b.Fatalf("viewer %d: %v", i, err)
			}
			b.Cleanup(func() { _ = ws.Close() })
			conns[i] = vnctest.WSConn(ws)
		}
		// Each viewer asks for a piece every piece/busyRate and records what it got.
		stop := make(chan struct{})
		got := make([]atomic.Int64, busyViewers)
		var wg sync.WaitGroup
		for i, c := range conns {
			wg.Go(func() {
				buf := make([]byte, piece)
				tick := time.NewTicker(time.Second * piece / busyRate)
				defer tick.Stop()
				for {
					select {
					case <-stop:
						return
					case <-tick.C:
					}
					req := make([]byte, sourceRequest)
					binary.BigEndian.PutUint32(req, piece)
					if _, err := c.Write(req); err != nil {
						b.Logf("viewer %d: %v", i, err)
						return
					}
					if _, err := io.ReadFull(c, buf); err != nil {
						b.Logf("viewer %d: %v", i, err)
						return
					}
					got[i].Add(piece)
				}
			})
		}
		time.Sleep(time.Second) // every viewer at its pace
		started := time.Now()
		for i := range got {
			got[i].Store(0)
		}
		measure(b)
		elapsed := time.Since(started)
		close(stop)
		for _, ws := range conns {
			_ = ws.(io.Closer).Close()
		}
		wg.Wait()
		slowest, total := int64(math.MaxInt64), int64(0)
		for i := range got {
			n := got[i].Load()
			if n == 0 {
				b.Logf("viewer %d got nothing", i)
			}
			slowest, total = min(slowest, n), total+n
		}
		b.ReportMetric(float64(slowest)/elapsed.Seconds()/1e6, "rate-min-MB/s")
		b.ReportMetric(float64(total)/elapsed.Seconds()/1e6, "total-MB/s")
	})
}
