package browsertest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/streamspace/streamspace-realtime/internal/testkit"
)

// The servers and agents run in processes of their own; what leaks here is the tests' own.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// process is the server's static binary running one command in a process of its own, with its
// output kept for the test's messages. It is interrupted, as Ctrl-C does, when the test ends.
type process struct {
	name      string
	cmd       *exec.Cmd
	out, errs testkit.LockedBuffer
	exited    chan struct{}
	err       error // how it ended, once exited is closed
	stopOnce  sync.Once
}

// start runs the binary with args and only the environment environ of its own settings
// (STREAMSPACE_*), as the command did in-process before with a getenv of environ alone.
func start(t *testing.T, environ map[string]string, args ...string) *process {
	t.Helper()
	p := &process{name: args[0], exited: make(chan struct{})}
	p.cmd = exec.Command(testkit.StaticBinary(t), args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "STREAMSPACE_") {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	for k, v := range environ {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.errs
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// stop interrupts the process and fails the test unless it exits cleanly (status 0) within
// 15 s. Only the first call does anything.
func (p *process) stop(t *testing.T) {
	t.Helper()
	p.stopOnce.Do(func() {
		_ = p.cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.exited:
			if p.err != nil {
				t.Errorf("%s ended with %v after an interrupt; stderr:\n%s", p.name, p.err, p.errs.String())
			}
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
			t.Errorf("%s did not stop within 15 s of an interrupt", p.name)
		}
	})
}

// exitedEarly fails the test if the process has already ended.
func (p *process) exitedEarly(t *testing.T, waiting string) {
	t.Helper()
	select {
	case <-p.exited:
		p.stopOnce.Do(func() {}) // nothing left to stop
		t.Fatalf("%s ended (%v) %s; stdout:\n%s\nstderr:\n%s", p.name, p.err, waiting, p.out.String(), p.errs.String())
	default:
	}
}

// freeAddr is a loopback address nothing listens on, for a server that must come back on the
// same address after a restart.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// devServer is one run of `serve --dev`.
type devServer struct {
	banner, host, serviceToken string
	stop                       func()
}

func startDev(t *testing.T, addr, dbURL string, environ map[string]string) devServer {
	t.Helper()
	p := start(t, environ, "serve", "--dev", "--addr", addr, "--database-url", dbURL)
	printed := func() bool {
		p.exitedEarly(t, "before printing its banner")
		return strings.Contains(p.out.String(), "auto-approval is")
	}
	if err := testkit.WaitFor(20*time.Second, printed); err != nil {
		t.Fatalf("serve --dev printed no banner; stdout:\n%s\nstderr:\n%s", p.out.String(), p.errs.String())
	}
	banner := p.out.String()
	if !strings.Contains(banner, "dev-agent (docker, shared, simulated) runs in this process and is connected") {
		t.Fatalf("dev-agent is not connected:\n%s\nstderr:\n%s", banner, p.errs.String())
	}
	return devServer{
		banner:       banner,
		host:         testkit.Submatch(t, banner, `on http://(\S+)`),
		serviceToken: testkit.Submatch(t, banner, `service token: (\S+)`),
		stop:         func() { p.stop(t) },
	}
}

// startSession asks dev-agent for a session through the admin API, as the banner shows.
func (d devServer) startSession(t *testing.T, id, user, org string) {
	t.Helper()
	payload := fmt.Sprintf(`{"user":%q,"template":"firefox-browser"`, user)
	if org != "" {
		payload += fmt.Sprintf(`,"orgId":%q`, org)
	}
	status, answer := d.post(t, "/api/v1/admin/agents/dev-agent/command",
		fmt.Sprintf(`{"action":"start_session","sessionId":%q,"payload":%s}}`, id, payload))
	if status != http.StatusAccepted {
		t.Fatalf("start_session %s: %d %v", id, status, answer)
	}
}

// publish posts a session event through the service API.
func (d devServer) publish(t *testing.T, body string) {
	t.Helper()
	status, answer := d.post(t, "/api/v1/events", body)
	if status != http.StatusAccepted {
		t.Fatalf("publish %s: %d %v", body, status, answer)
	}
}

// post sends a JSON body to the server with the service token, and returns the status and
// the decoded answer.
func (d devServer) post(t *testing.T, path, body string) (int, map[string]any) {
	t.Helper()
	var answer map[string]any
	status := d.call(t, http.MethodPost, path, body, &answer)
	return status, answer
}

// agentStatus is the status the server lists for an agent ("" when it does not list it).
func (d devServer) agentStatus(t *testing.T, id string) string {
	t.Helper()
	var list struct {
		Agents []struct{ AgentID, Status string }
	}
	if status := d.call(t, http.MethodGet, "/api/v1/agents", "", &list); status != http.StatusOK {
		t.Fatalf("list agents: %d", status)
	}
	for _, a := range list.Agents {
		if a.AgentID == id {
			return a.Status
		}
	}
	return ""
}

// listChecks is how many periodic session-list checks the server has made (its
// streamspace_session_list_checks_total counter).
func (d devServer) listChecks(t *testing.T) int {
	t.Helper()
	resp, err := http.Get("http://" + d.host + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	text, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	n, err := strconv.Atoi(testkit.Submatch(t, string(text), `(?m)^streamspace_session_list_checks_total (\d+)$`))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// call sends a request with the service token and decodes a JSON answer into out.
func (d devServer) call(t *testing.T, method, path, body string, out any) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+d.host+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+d.serviceToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	_ = json.NewDecoder(resp.Body).Decode(out)
	return resp.StatusCode
}
