package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/agentclient"
	"github.com/streamspace/streamspace-realtime/internal/vnctest"
	"github.com/streamspace/streamspace-realtime/models"
)

// envTunnelPeer, when set (to a JSON tunnelPeer), makes the test binary the far side of
// BenchmarkIdleTunnelMemory: an SDK agent, its VNC server and its viewers, in a process of
// their own so that the benchmark's process holds the control plane only.
const envTunnelPeer = "STREAMSPACE_BENCH_TUNNEL_PEER"

// idleTunnels is how many idle tunnels the benchmark opens: under the SDK's 256 per
// connection.
const idleTunnels = 200

// tunnelPeer is what the far side needs to open tunnels through the server.
type tunnelPeer struct {
	Server, AgentID, Key, Session, Token string
	Tunnels                              int
}

// BenchmarkIdleTunnelMemory measures what one open, idle tunnel/1 tunnel costs the control
// plane: a viewer socket, its tunnel and the agent's side of it, each tunnel having carried a
// VNC server's 12-byte banner and nothing since. The agent and the viewers run in a child
// process; B/tunnel is the growth of this process's heap and goroutine stacks in use
// (after a collection) per tunnel, rss-B/tunnel that of its resident set (the heap's free
// pages given back first, but the runtime's own reserves still move it). Run it with
//
//	go test -run '^$' -bench IdleTunnelMemory ./internal/server/
func BenchmarkIdleTunnelMemory(b *testing.B) {
	ts := startServer(b, "sqlite", func(c *Config) {
		c.VNCMaxPerUser, c.VNCMaxPerAgent, c.MaxConnectionsPerUser = 0, 0, 0
	})
	sess := models.Session{ID: "s-idle", OrgID: "org-a", UserID: "alice", State: models.SessionStateRunning, AgentID: "idle-1"}
	if err := ts.Database().CreateSession(context.Background(), sess); err != nil {
		b.Fatal(err)
	}
	spec, err := json.Marshal(tunnelPeer{
		Server: ts.base, AgentID: sess.AgentID, Key: createAgent(b, ts, sess.AgentID), Session: sess.ID,
		Token: aliceToken(b), Tunnels: idleTunnels,
	})
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), envTunnelPeer+"="+string(spec))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = stdin.Close(); _ = cmd.Wait() })
	lines := bufio.NewScanner(stdout)
	expect := func(want string) {
		b.Helper()
		if !lines.Scan() || lines.Text() != want {
			b.Fatalf("the peer process said %q (%v), want %q", lines.Text(), lines.Err(), want)
		}
	}
	expect("warm") // the agent is connected and one tunnel has carried bytes
	heap0, stack0 := memoryInUse()
	rss0 := residentBytes()
	if _, err := io.WriteString(stdin, "go\n"); err != nil {
		b.Fatal(err)
	}
	expect("ready")
	heap1, stack1 := memoryInUse()

	rss1 := residentBytes()
	for b.Loop() {
	}
	n := float64(idleTunnels)
	b.ReportMetric(float64(heap1+stack1-heap0-stack0)/n, "B/tunnel")
	b.ReportMetric(float64(heap1-heap0)/n, "heap-B/tunnel")
	b.ReportMetric(float64(stack1-stack0)/n, "stack-B/tunnel")
	b.ReportMetric(float64(rss1-rss0)/n, "rss-B/tunnel")
}

// memoryInUse is the heap and the goroutine stacks in use after a collection, which also
// gives the freed memory back to the system so that the resident set counts what is in use.
func memoryInUse() (heap, stack int64) {
	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse), int64(m.StackInuse)
}

// residentBytes is this process's resident set (0 where /proc cannot tell).
func residentBytes() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kib, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kib << 10
		}
	}
	return 0
}

// runTunnelPeer is the child process of BenchmarkIdleTunnelMemory: it opens one tunnel and
// prints "warm", opens spec.Tunnels more once it reads a line and prints "ready", and holds
// them until its stdin closes. It returns the process's exit code.
func runTunnelPeer(spec string) int {
	var p tunnelPeer
	if err := json.Unmarshal([]byte(spec), &p); err != nil {
		fmt.Fprintln(os.Stderr, "tunnel peer:", err)
		return 2
	}
	if err := p.run(); err != nil {
		fmt.Fprintln(os.Stderr, "tunnel peer:", err)
		return 1
	}
	return 0
}

func (p tunnelPeer) run() error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The VNC server: its banner, then silence.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := io.WriteString(c, "RFB 003.008\n"); err == nil {
					_, _ = io.Copy(io.Discard, c)
				}
			}()
		}
	}()
	a, err := agentclient.New(agentclient.Config{
		ServerURL: p.Server, AgentID: p.AgentID, APIKey: p.Key, Platform: models.PlatformDocker,
		Tunnels: agentclient.ProxyTo(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", ln.Addr().String())
		}),
	})
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	if err := a.OpenTunnel(ctx, p.Session); err != nil {
		return err
	}
	url := "ws" + strings.TrimPrefix(p.Server, "http") + "/api/v1/vnc/" + p.Session + "?token=" + p.Token
	var viewers []*gorilla.Conn
	defer func() {
		for _, v := range viewers {
			_ = v.Close()
		}
	}()
	open := func() error {
		d := gorilla.Dialer{Subprotocols: []string{"binary"}, HandshakeTimeout: 10 * time.Second}
		deadline := time.Now().Add(10 * time.Second)
		for {
			ws, resp, err := d.Dial(url, nil)
			if err != nil {
				// The agent may not be connected yet: 503 agent_offline.
				if resp != nil && resp.StatusCode == 503 && time.Now().Before(deadline) {
					time.Sleep(50 * time.Millisecond)
					continue
				}
				status := 0
				if resp != nil {
					status = resp.StatusCode
				}
				return fmt.Errorf("open viewer %d: %d %w", len(viewers), status, err)
			}
			viewers = append(viewers, ws)
			banner := make([]byte, 12)
			if _, err := io.ReadFull(vnctest.WSConn(ws), banner); err != nil {
				return fmt.Errorf("read the banner: %w", err)
			}
			return nil
		}
	}
	if err := open(); err != nil {
		return err
	}
	in := bufio.NewScanner(os.Stdin)
	fmt.Println("warm")
	if !in.Scan() {
		return errors.New("stdin closed before go")
	}
	for range p.Tunnels {
		if err := open(); err != nil {
			return err
		}
	}
	fmt.Println("ready")
	for in.Scan() {
	}
	return nil
}
