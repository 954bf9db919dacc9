package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/streamspace/streamspace-realtime/internal/testkit"
)

// replicaProc is one server process.
type replicaProc struct {
	name string
	base string // http://127.0.0.1:port
	cmd  *exec.Cmd
	log  *testkit.LockedBuffer
	done chan struct{}
}

// startReplica runs `serve` with args and waits until it reports ready. The process is stopped
// (SIGTERM, then SIGKILL) when the test ends.
func startReplica(t *testing.T, name string, args ...string) *replicaProc {
	t.Helper()
	bin := testkit.StaticBinary(t) // a real process, which can be killed without any cleanup running
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	p := &replicaProc{name: name, base: "http://" + addr, log: &testkit.LockedBuffer{}, done: make(chan struct{})}
	// The peer link on a port of the system's choosing, advertised on loopback.
	p.cmd = exec.Command(bin, append([]string{"serve", "--addr", addr, "--replica", name, "--peer-addr", "127.0.0.1:0"}, args...)...)
	p.cmd.Env = append(os.Environ(), "STREAMSPACE_LOG_LEVEL=warn")
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("replica %s log tail:\n%s", name, tail(p.log.String(), 3000))
		}
	})
	started := func() bool {
		select {
		case <-p.done:
			t.Fatalf("replica %s exited at start:\n%s", name, tail(p.log.String(), 3000))
		default:
		}
		return p.ready()
	}
	if err := testkit.WaitFor(60*time.Second, started); err != nil {
		t.Fatalf("replica %s not ready:\n%s", name, tail(p.log.String(), 3000))
	}
	return p
}

// kill ends the process abruptly: no shutdown, no cleanup, claims left in Redis.
func (p *replicaProc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// ready reports whether the replica answers /readyz with 200.
func (p *replicaProc) ready() bool {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(p.base + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// call sends a JSON request with the service token and decodes a JSON answer into out.
func (p *replicaProc) call(ctx context.Context, method, path string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, p.base+path, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+testService)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return resp.StatusCode, err
		}
	}
	return resp.StatusCode, nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// balancer is a round-robin TCP load balancer with no stickiness: each new connection goes to
// the next backend that accepts it, so agents reconnect to whichever replica is alive.
type balancer struct {
	ln       net.Listener
	backends []string
	mu       sync.Mutex
	next     int
	conns    map[net.Conn]struct{}
	wg       sync.WaitGroup
}

func startBalancer(t *testing.T, backends ...string) *balancer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &balancer{ln: ln, backends: backends, conns: make(map[net.Conn]struct{})}
	b.wg.Add(1)
	go b.accept()
	t.Cleanup(b.close)
	return b
}

func (b *balancer) base() string { return "http://" + b.ln.Addr().String() }

func (b *balancer) accept() {
	defer b.wg.Done()
	for {
		in, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.wg.Add(1)
		go b.serve(in)
	}
}

func (b *balancer) serve(in net.Conn) {
	defer b.wg.Done()
	out := b.dial()
	if out == nil || !b.track(in, out) {
		_ = in.Close()
		if out != nil {
			_ = out.Close()
		}
		return
	}
	var pipes sync.WaitGroup
	pipe := func(dst, src net.Conn) {
		defer pipes.Done()
		_, _ = io.Copy(dst, src)
		_ = dst.Close()
		_ = src.Close()
	}
	pipes.Add(2)
	go pipe(out, in)
	go pipe(in, out)
	pipes.Wait()
	b.mu.Lock()
	delete(b.conns, in)
	delete(b.conns, out)
	b.mu.Unlock()
}

// setBackends replaces the backends new connections go to; open ones stay where they are.
func (b *balancer) setBackends(backends ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.backends = backends
}

// dial connects to the next backend that answers.
func (b *balancer) dial() net.Conn {
	b.mu.Lock()
	n := len(b.backends)
	b.mu.Unlock()
	for range n {
		b.mu.Lock()
		addr := strings.TrimPrefix(b.backends[b.next%len(b.backends)], "http://")
		b.next++
		b.mu.Unlock()
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			return c
		}
	}
	return nil
}

func (b *balancer) track(in, out net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conns == nil {
		return false
	}
	b.conns[in], b.conns[out] = struct{}{}, struct{}{}
	return true
}

func (b *balancer) close() {
	_ = b.ln.Close()
	b.mu.Lock()
	for c := range b.conns {
		_ = c.Close()
	}
	b.conns = nil
	b.mu.Unlock()
	b.wg.Wait()
}
