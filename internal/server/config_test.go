package server

import (
	"net"
	"strings"
	"testing"
	"time"
)

func TestLoadConfig(t *testing.T) {
	base := map[string]string{
		"STREAMSPACE_JWT_SECRET":      strings.Repeat("k", 32),
		"STREAMSPACE_SERVICE_TOKEN":   "svc",
		"STREAMSPACE_ADDR":            ":9000",
		"STREAMSPACE_CLIENT_QUEUE":    "64",
		"STREAMSPACE_ALLOWED_ORIGINS": "https://a.example, https://b.example",
		"STREAMSPACE_PING_INTERVAL":   "20s",
	}
	get := func(over map[string]string) func(string) string {
		return func(k string) string {
			if v, ok := over[k]; ok {
				return v
			}
			return base[k]
		}
	}
	cfg, err := LoadConfig([]string{"--addr", ":9100"}, get(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != ":9100" || cfg.ClientQueue != 64 || cfg.PingInterval != 20*time.Second || cfg.PongWait != 60*time.Second ||
		len(cfg.AllowedOrigins) != 2 || cfg.AllowedOrigins[1] != "https://b.example" || cfg.DatabaseURL != DefaultDatabaseURL ||
		cfg.DefaultOrg != "default-org" || cfg.DefaultNamespace != "streamspace" || cfg.Replica == "" ||
		cfg.DBTablePrefix != "ssrt_" {
		t.Fatalf("config %+v", cfg)
	}
	if c, err := LoadConfig([]string{"--db-table-prefix", "rt_"}, get(map[string]string{"STREAMSPACE_DB_TABLE_PREFIX": "env_"})); err != nil || c.DBTablePrefix != "rt_" {
		t.Fatalf("--db-table-prefix over the environment: %q, %v", c.DBTablePrefix, err)
	}

	bad := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"short secret", nil, map[string]string{"STREAMSPACE_JWT_SECRET": "short"}, "STREAMSPACE_JWT_SECRET"},
		{"no service token", nil, map[string]string{"STREAMSPACE_SERVICE_TOKEN": ""}, "STREAMSPACE_SERVICE_TOKEN"},
		{"bad duration", nil, map[string]string{"STREAMSPACE_PONG_WAIT": "soon"}, "STREAMSPACE_PONG_WAIT"},
		{"negative queue", []string{"--client-queue", "-1"}, nil, "client-queue"},
		{"ownership ttl", nil, map[string]string{"STREAMSPACE_REDIS_URL": "redis://x", "STREAMSPACE_AGENT_OWNERSHIP_TTL": "10ms"}, "STREAMSPACE_AGENT_OWNERSHIP_TTL"},
		{"session source", nil, map[string]string{"STREAMSPACE_SESSION_SOURCE": "etcd"}, "STREAMSPACE_SESSION_SOURCE"},
		{"log format", nil, map[string]string{"STREAMSPACE_LOG_FORMAT": "xml"}, "STREAMSPACE_LOG_FORMAT"},
		{"table prefix", nil, map[string]string{"STREAMSPACE_DB_TABLE_PREFIX": "Bad-Prefix"}, "STREAMSPACE_DB_TABLE_PREFIX"},
		{"table prefix flag", []string{"--db-table-prefix", "noUnderscore"}, nil, "STREAMSPACE_DB_TABLE_PREFIX"},
		{"stray argument", []string{"extra"}, nil, "unexpected"},
	}
	for _, tc := range bad {
		if _, err := LoadConfig(tc.args, get(tc.env)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want mention of %s", tc.name, err, tc.want)
		}
	}

	dev, err := LoadConfig([]string{"--dev"}, func(string) string { return "" })
	if err != nil || len(dev.JWTSecret) < 32 || dev.ServiceToken == "" || len(dev.AgentBootstrapKey) < 32 || !dev.AgentAutoApprove {
		t.Fatalf("--dev should generate secrets and approve agents: %+v %v", dev, err)
	}
	if cfg.AgentBootstrapKey != "" || cfg.AgentAutoApprove {
		t.Fatalf("without --dev agents need an admin: bootstrap key %q, auto-approve %v", cfg.AgentBootstrapKey, cfg.AgentAutoApprove)
	}
}

// TestLoadConfigDevAgents checks that --dev fills in the agent settings it needs and keeps
// those the user chose, by flag or by environment.
func TestLoadConfigDevAgents(t *testing.T) {
	for _, tc := range []struct {
		name        string
		args        []string
		env         map[string]string
		wantKey     string // "" for a generated one
		wantApprove bool
	}{
		{"defaults", []string{"--dev"}, nil, "", true},
		{"key from env", []string{"--dev"}, map[string]string{"STREAMSPACE_AGENT_BOOTSTRAP_KEY": "mine"}, "mine", true},
		{"auto-approve off by env", []string{"--dev"}, map[string]string{"STREAMSPACE_AGENT_AUTO_APPROVE": "false"}, "", false},
		{"auto-approve off by flag", []string{"--dev", "--agent-auto-approve=false"}, nil, "", false},
		{"auto-approve on by env", []string{"--dev"}, map[string]string{"STREAMSPACE_AGENT_AUTO_APPROVE": "true"}, "", true},
	} {
		cfg, err := LoadConfig(tc.args, func(k string) string { return tc.env[k] })
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if tc.wantKey != "" && cfg.AgentBootstrapKey != tc.wantKey || tc.wantKey == "" && len(cfg.AgentBootstrapKey) != 64 {
			t.Errorf("%s: bootstrap key %q", tc.name, cfg.AgentBootstrapKey)
		}
		if cfg.AgentAutoApprove != tc.wantApprove {
			t.Errorf("%s: auto-approve %v, want %v", tc.name, cfg.AgentAutoApprove, tc.wantApprove)
		}
	}
	noEnv := func(string) string { return "" }
	a, errA := LoadConfig([]string{"--dev"}, noEnv)
	b, errB := LoadConfig([]string{"--dev"}, noEnv)
	if errA != nil || errB != nil || a.AgentBootstrapKey == b.AgentBootstrapKey {
		t.Fatalf("two dev starts: same bootstrap key %q (%v, %v)", a.AgentBootstrapKey, errA, errB)
	}
}

// The peer link's settings: defaults, the advertised address's choice, the secret derived
// from the JWT secret (the same on every replica, and not the JWT secret), and clear refusals.
func TestLoadConfigPeer(t *testing.T) {
	base := map[string]string{
		"STREAMSPACE_JWT_SECRET":    strings.Repeat("k", 32),
		"STREAMSPACE_SERVICE_TOKEN": "svc",
	}
	load := func(args []string, env map[string]string) (Config, error) {
		return LoadConfig(args, func(k string) string {
			if v, ok := env[k]; ok {
				return v
			}
			return base[k]
		})
	}
	cfg, err := load(nil, map[string]string{"POD_IP": "10.1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PeerAddr != ":8090" || cfg.PeerAdvertiseAddr != "10.1.2.3:8090" {
		t.Errorf("defaults: listen %q, advertise %q; want :8090 and the pod's IP", cfg.PeerAddr, cfg.PeerAdvertiseAddr)
	}
	if len(cfg.PeerSecret) < 32 || cfg.PeerSecret == cfg.JWTSecret {
		t.Errorf("derived secret %q: want 32 bytes or more, other than the JWT secret", cfg.PeerSecret)
	}
	again, err := load(nil, nil)
	if err != nil || again.PeerSecret != cfg.PeerSecret {
		t.Errorf("another replica derives %q (%v), want the same secret", again.PeerSecret, err)
	}
	other, err := load(nil, map[string]string{"STREAMSPACE_JWT_SECRET": strings.Repeat("j", 32)})
	if err != nil || other.PeerSecret == cfg.PeerSecret {
		t.Errorf("another JWT secret derives the same peer secret (%v)", err)
	}

	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"the listener's host", []string{"--peer-addr", "192.0.2.7:9000"}, nil, "192.0.2.7:9000"},
		{"the pod's IP first", []string{"--peer-addr", "192.0.2.7:9000"}, map[string]string{"POD_IP": "10.0.0.9"}, "10.0.0.9:9000"},
		{"IPv6 pod", nil, map[string]string{"POD_IP": "fd00::5"}, "[fd00::5]:8090"},
		{"explicit", nil, map[string]string{"STREAMSPACE_PEER_ADVERTISE_ADDR": "peer-0.rt.svc:7000", "POD_IP": "10.0.0.9"}, "peer-0.rt.svc:7000"},
		{"explicit flag", []string{"--peer-advertise-addr", "198.51.100.1:8090"}, nil, "198.51.100.1:8090"},
	} {
		c, err := load(tc.args, tc.env)
		if err != nil || c.PeerAdvertiseAddr != tc.want {
			t.Errorf("%s: advertise %q (%v), want %q", tc.name, c.PeerAdvertiseAddr, err, tc.want)
		}
	}
	// No host anywhere: an address of this machine's interfaces, or loopback, never empty.
	c, err := load(nil, nil)
	if host, port, splitErr := net.SplitHostPort(c.PeerAdvertiseAddr); err != nil || splitErr != nil || host == "" || port != "8090" || net.ParseIP(host) == nil {
		t.Errorf("guessed advertise address %q (%v)", c.PeerAdvertiseAddr, err)
	}
	if c, err := load(nil, map[string]string{"STREAMSPACE_PEER_SECRET": strings.Repeat("s", 40)}); err != nil || c.PeerSecret != strings.Repeat("s", 40) {
		t.Errorf("explicit secret: %q (%v)", c.PeerSecret, err)
	}

	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"short secret", nil, map[string]string{"STREAMSPACE_PEER_SECRET": "short"}, "STREAMSPACE_PEER_SECRET must be at least 32 bytes"},
		{"listen address without port", []string{"--peer-addr", "10.0.0.1"}, nil, "STREAMSPACE_PEER_ADDR"},
		{"listen port not a number", []string{"--peer-addr", ":http-alt"}, nil, "STREAMSPACE_PEER_ADDR"},
		{"advertise without port", nil, map[string]string{"STREAMSPACE_PEER_ADVERTISE_ADDR": "10.0.0.1"}, "STREAMSPACE_PEER_ADVERTISE_ADDR"},
		{"advertise without host", nil, map[string]string{"STREAMSPACE_PEER_ADVERTISE_ADDR": ":8090"}, "STREAMSPACE_PEER_ADVERTISE_ADDR"},
		{"advertise port 0", []string{"--peer-advertise-addr", "10.0.0.1:0"}, nil, "STREAMSPACE_PEER_ADVERTISE_ADDR"},
		{"advertise port too big", []string{"--peer-advertise-addr", "10.0.0.1:70000"}, nil, "STREAMSPACE_PEER_ADVERTISE_ADDR"},
	} {
		if _, err := load(tc.args, tc.env); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want mention of %s", tc.name, err, tc.want)
		}
	}
}
