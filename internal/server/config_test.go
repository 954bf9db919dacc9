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
		cfg.DefaultOrg != "default-org" || cfg.DefaultNamespace != "streamspace" || cfg.Replica == "" {
		t.Fatalf("config %+v", cfg)
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
		{"redis", nil, map[string]string{"STREAMSPACE_REDIS_URL": "redis://x"}, "STREAMSPACE_REDIS_URL"},
		{"kubernetes", nil, map[string]string{"STREAMSPACE_SESSION_SOURCE": "kubernetes"}, "STREAMSPACE_SESSION_SOURCE"},
		{"log format", nil, map[string]string{"STREAMSPACE_LOG_FORMAT": "xml"}, "STREAMSPACE_LOG_FORMAT"},
		{"stray argument", []string{"extra"}, nil, "unexpected"},
	}
	for _, tc := range bad {
		if _, err := LoadConfig(tc.args, get(tc.env)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want mention of %s", tc.name, err, tc.want)
		}
	}

	dev, err := LoadConfig([]string{"--dev"}, func(string) string { return "" })
	if err != nil || len(dev.JWTSecret) < 32 || dev.ServiceToken == "" {
		t.Fatalf("--dev should generate secrets: %+v %v", dev, err)
	}
}
