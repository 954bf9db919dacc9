package server

import (
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
