package agentclient

import (
	"net/http"
	"sync"
	"testing"

	"github.com/streamspace/streamspace-realtime/models"
)

func TestRegister201SwitchesKey(t *testing.T) {
	var mu sync.Mutex
	var issued []string
	cp, a, _ := setup(t, func(c *Config) {
		c.OnAPIKey = func(key string) {
			mu.Lock()
			defer mu.Unlock()
			issued = append(issued, key)
		}
	})
	cp.IssueKey("own-key")
	cp.QueueRegisterAnswers(http.StatusCreated)
	start(t, a)

	c1 := nextConn(t, cp)
	if c1.Key != "own-key" {
		t.Fatalf("connected with key %q, want the issued own-key", c1.Key)
	}
	mu.Lock()
	if len(issued) != 1 || issued[0] != "own-key" {
		t.Fatalf("OnAPIKey calls %v, want [own-key]", issued)
	}
	mu.Unlock()

	// Connect answered 401, the server's answer for an agent it does not know: the agent
	// registers again, with its own key, then connects.
	cp.QueueConnectAnswers(http.StatusUnauthorized)
	if err := c1.Close(1001, "server shutting down"); err != nil {
		t.Fatal(err)
	}
	c2 := nextConn(t, cp)
	regs := cp.Registrations()
	if len(regs) != 2 || regs[0].Key != "k1" || regs[1].Key != "own-key" {
		t.Fatalf("registrations %+v, want k1 then own-key", regs)
	}
	if c2.Key != "own-key" {
		t.Fatalf("reconnected with key %q", c2.Key)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(issued) != 1 {
		t.Fatalf("OnAPIKey called %d times, want once", len(issued))
	}
}

func TestRegisterPendingThenApproved(t *testing.T) {
	cp, a, logs := setup(t, func(c *Config) {
		c.Region = "eu-west"
		c.OrgID = "o1"
		c.Capacity = map[string]any{"maxSessions": 7}
		c.Metadata = map[string]any{"host": "h1"}
	})
	cp.QueueRegisterAnswers(http.StatusAccepted, http.StatusAccepted, http.StatusAccepted)
	res, err := a.Register(waitCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK || res.ApprovalStatus != models.ApprovalApproved || res.AgentID != "agent-1" || res.APIKey != "" {
		t.Fatalf("result %+v", res)
	}
	if res.Agent["agentId"] != "agent-1" {
		t.Fatalf("agent object %v", res.Agent)
	}
	regs := cp.Registrations()
	if len(regs) != 4 {
		t.Fatalf("%d registrations, want 4 (three pending, then approved)", len(regs))
	}
	b := regs[0].Body
	if b.AgentID != "agent-1" || b.Platform != "docker" || b.Region != "eu-west" || b.OrgID != "o1" ||
		b.Capacity["maxSessions"] != float64(7) || b.Metadata["host"] != "h1" {
		t.Fatalf("registration body %+v", b)
	}
	if n := countOf(logs.String(), "registration pending"); n != 1 {
		t.Fatalf("pending logged %d times, want once per state change:\n%s", n, logs.String())
	}
	if n := countOf(logs.String(), "registration approved"); n != 1 {
		t.Fatalf("approval logged %d times, want once", n)
	}
}

func TestRegisterRejected(t *testing.T) {
	cp, a, _ := setup(t, nil)
	cp.QueueRegisterAnswers(http.StatusForbidden)
	if _, err := a.Register(waitCtx(t)); !isErr(err, ErrRejected) {
		t.Fatalf("Register: %v, want ErrRejected", err)
	}
	cp.QueueRegisterAnswers(http.StatusForbidden)
	if err := start(t, a).wait(t); !isErr(err, ErrRejected) {
		t.Fatalf("Run: %v, want ErrRejected", err)
	}
	if cp.ConnCount() != 0 {
		t.Fatal("a rejected agent connected")
	}
}

func TestRegisterUnauthorized(t *testing.T) {
	_, a, _ := setup(t, func(c *Config) { c.APIKey = "wrong" })
	if _, err := a.Register(waitCtx(t)); !isErr(err, ErrUnauthorized) {
		t.Fatalf("Register: %v, want ErrUnauthorized", err)
	}
}

func TestRunRetriesFailedRegistration(t *testing.T) {
	cp, a, _ := setup(t, nil)
	cp.QueueRegisterAnswers(http.StatusInternalServerError, http.StatusUnauthorized)
	start(t, a)
	nextConn(t, cp)
	if n := len(cp.Registrations()); n != 3 {
		t.Fatalf("%d registrations, want 3", n)
	}
}

func TestConnectRefusals(t *testing.T) {
	cp, a, _ := setup(t, nil)
	// 401 (the server's answer for an agent it does not know, as for a wrong key) and 403
	// register again; 503 is retried after backoff without registering again.
	cp.QueueConnectAnswers(http.StatusUnauthorized, http.StatusForbidden, http.StatusServiceUnavailable)
	start(t, a)
	nextConn(t, cp)
	if n := len(cp.Registrations()); n != 3 {
		t.Fatalf("%d registrations, want 3 (first, then after the 401 and after the 403)", n)
	}
}

func TestNewValidates(t *testing.T) {
	ok := Config{ServerURL: "https://cp.example.com/base/", AgentID: "a", Platform: "vm"}
	a, err := New(ok)
	if err != nil {
		t.Fatal(err)
	}
	if a.httpURL != "https://cp.example.com/base" || a.wsURL != "wss://cp.example.com/base" {
		t.Fatalf("urls %q %q", a.httpURL, a.wsURL)
	}
	if a.cfg.HeartbeatInterval != DefaultHeartbeatInterval || a.cfg.BackoffMin != DefaultBackoffMin ||
		a.cfg.BackoffMax != DefaultBackoffMax || a.cfg.MaxConcurrent != DefaultMaxConcurrent {
		t.Fatalf("defaults not applied: %+v", a.cfg)
	}
	if a, err = New(Config{ServerURL: "ws://h:1", AgentID: "a", Platform: "cloud"}); err != nil || a.httpURL != "http://h:1" {
		t.Fatalf("ws:// server: %v %v", a, err)
	}
	for name, mutate := range map[string]func(*Config){
		"no id":            func(c *Config) { c.AgentID = "" },
		"no server":        func(c *Config) { c.ServerURL = "" },
		"no platform":      func(c *Config) { c.Platform = "" },
		"bad platform":     func(c *Config) { c.Platform = "mainframe" },
		"bad scheme":       func(c *Config) { c.ServerURL = "ftp://h" },
		"no host":          func(c *Config) { c.ServerURL = "http://" },
		"query":            func(c *Config) { c.ServerURL = "http://h/?x=1" },
		"negative":         func(c *Config) { c.HeartbeatInterval = -1 },
		"min above max":    func(c *Config) { c.BackoffMin, c.BackoffMax = 2e9, 1e9 },
		"negative workers": func(c *Config) { c.MaxConcurrent = -1 },
	} {
		c := ok
		mutate(&c)
		if _, err := New(c); !isErr(err, ErrInvalidConfig) {
			t.Errorf("%s: %v, want ErrInvalidConfig", name, err)
		}
	}
}
