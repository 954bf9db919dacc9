package auth

import (
	"net/http/httptest"
	"regexp"
	"testing"
)

func TestNewAgentKey(t *testing.T) {
	t.Parallel()
	hex64 := regexp.MustCompile(`^[0-9a-f]{64}$`)
	seen := map[string]bool{}
	for range 100 {
		k := NewAgentKey()
		if !hex64.MatchString(k) {
			t.Fatalf("key %q is not 64 hex digits", k)
		}
		if seen[k] {
			t.Fatalf("key %q issued twice", k)
		}
		seen[k] = true
	}
}

func TestAgentKeyMatches(t *testing.T) {
	t.Parallel()
	key := NewAgentKey()
	stored := HashAgentKey(key)
	if stored == key || !regexp.MustCompile(`^sha256:[0-9a-f]{64}$`).MatchString(stored) {
		t.Fatalf("stored hash %q: want sha256:<64 hex>, never the key", stored)
	}
	cases := []struct {
		key, stored string
		want        bool
	}{
		{key, stored, true},
		{key + "0", stored, false},
		{NewAgentKey(), stored, false},
		{"", stored, false},
		{key, "", false},
		{"", "", false},
		{stored, stored, false}, // the hash itself is not a key
	}
	for _, c := range cases {
		if got := AgentKeyMatches(c.key, c.stored); got != c.want {
			t.Errorf("AgentKeyMatches(%q, %q) = %v, want %v", c.key, c.stored, got, c.want)
		}
	}
}

func TestBootstrapKeyMatches(t *testing.T) {
	t.Parallel()
	if !BootstrapKeyMatches("boot", "boot") {
		t.Error("bootstrap key refused")
	}
	for _, c := range [][2]string{{"boot", ""}, {"", ""}, {"", "boot"}, {"bootx", "boot"}} {
		if BootstrapKeyMatches(c[0], c[1]) {
			t.Errorf("BootstrapKeyMatches(%q, %q) = true", c[0], c[1])
		}
	}
}

func TestAgentKeyFromRequest(t *testing.T) {
	t.Parallel()
	r := httptest.NewRequest("GET", "/", nil)
	if got := AgentKeyFromRequest(r); got != "" {
		t.Errorf("no header: %q", got)
	}
	r.Header.Set("Authorization", "Bearer b")
	if got := AgentKeyFromRequest(r); got != "b" {
		t.Errorf("bearer: %q", got)
	}
	r.Header.Set(AgentKeyHeader, " k ")
	if got := AgentKeyFromRequest(r); got != "k" {
		t.Errorf("header wins over bearer: %q", got)
	}
}
