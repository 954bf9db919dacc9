package auth

import (
	"errors"
	"net/http/httptest"
	"testing"
)

func TestNewOriginPolicy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		allowed []string
		wantErr bool
	}{
		{name: "nil", allowed: nil},
		{name: "empty entries skipped", allowed: []string{"", "  "}},
		{name: "star", allowed: []string{"*"}},
		{name: "https host", allowed: []string{"https://app.example.com"}},
		{name: "with port", allowed: []string{"http://localhost:3000"}},
		{name: "trailing slash tolerated", allowed: []string{"https://app.example.com/"}},
		{name: "ipv6", allowed: []string{"http://[::1]:3000"}},
		{name: "mixed case", allowed: []string{"HTTPS://App.Example.COM"}},
		{name: "no scheme", allowed: []string{"app.example.com"}, wantErr: true},
		{name: "host:port without scheme", allowed: []string{"localhost:3000"}, wantErr: true},
		{name: "path", allowed: []string{"https://app.example.com/ui"}, wantErr: true},
		{name: "query", allowed: []string{"https://app.example.com?x=1"}, wantErr: true},
		{name: "fragment", allowed: []string{"https://app.example.com#x"}, wantErr: true},
		{name: "user info", allowed: []string{"https://u:p@app.example.com"}, wantErr: true},
		{name: "no host", allowed: []string{"https://"}, wantErr: true},
		{name: "port only", allowed: []string{"https://:443"}, wantErr: true},
		{name: "bad port", allowed: []string{"https://app.example.com:abc"}, wantErr: true},
		{name: "wildcard subdomain", allowed: []string{"https://*.example.com"}, wantErr: true},
		{name: "null", allowed: []string{"null"}, wantErr: true},
		{name: "one bad among good", allowed: []string{"https://ok.example.com", "bad"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := NewOriginPolicy(tt.allowed)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidOrigin) {
					t.Fatalf("err = %v, want ErrInvalidOrigin", err)
				}
				return
			}
			if err != nil || p == nil {
				t.Fatalf("NewOriginPolicy: %v", err)
			}
		})
	}
}

func TestOriginPolicyAllowed(t *testing.T) {
	t.Parallel()
	list := []string{"https://app.example.com", "http://localhost:3000", "https://admin.example.com:443", "http://[::1]:8080"}
	tests := []struct {
		name    string
		allowed []string
		host    string   // r.Host; default "rt.example.com"
		origin  []string // Origin header values; nil = no header
		want    bool
	}{
		// No Origin: non-browser clients.
		{name: "no origin, empty list", want: true},
		{name: "no origin, list", allowed: list, want: true},

		// Same host.
		{name: "same host", origin: []string{"https://rt.example.com"}, want: true},
		{name: "same host http", origin: []string{"http://rt.example.com"}, want: true},
		{name: "same host case", origin: []string{"https://RT.Example.com"}, want: true},
		{name: "same host, request host case", host: "RT.EXAMPLE.COM", origin: []string{"https://rt.example.com"}, want: true},
		{name: "same host with port", host: "localhost:8080", origin: []string{"http://localhost:8080"}, want: true},
		{name: "same host, other port", host: "localhost:8080", origin: []string{"http://localhost:3000"}},
		{name: "same host, origin without port", host: "localhost:8080", origin: []string{"http://localhost"}},
		{name: "same host, default port on request", host: "rt.example.com:443", origin: []string{"https://rt.example.com"}, want: true},
		{name: "same host, explicit default port in origin", origin: []string{"https://rt.example.com:443"}, want: true},
		{name: "same host allowed with list too", allowed: list, origin: []string{"https://rt.example.com"}, want: true},
		{name: "other host, empty list", origin: []string{"https://evil.example"}},
		{name: "suffix host is not same host", origin: []string{"https://rt.example.com.evil.example"}},

		// Allow-list.
		{name: "list hit", allowed: list, origin: []string{"https://app.example.com"}, want: true},
		{name: "list hit, case", allowed: list, origin: []string{"HTTPS://APP.EXAMPLE.COM"}, want: true},
		{name: "list hit, port", allowed: list, origin: []string{"http://localhost:3000"}, want: true},
		{name: "list hit, ipv6", allowed: list, origin: []string{"http://[::1]:8080"}, want: true},
		{name: "list hit, default port normalized", allowed: list, origin: []string{"https://admin.example.com"}, want: true},
		{name: "list hit, explicit default port", allowed: list, origin: []string{"https://app.example.com:443"}, want: true},
		{name: "list miss, other port", allowed: list, origin: []string{"http://localhost:3001"}},
		{name: "list miss, no port", allowed: list, origin: []string{"http://localhost"}},
		{name: "list miss, scheme", allowed: list, origin: []string{"http://app.example.com"}},
		{name: "list miss, subdomain", allowed: list, origin: []string{"https://x.app.example.com"}},
		{name: "list miss, suffix", allowed: list, origin: []string{"https://app.example.com.evil.example"}},
		{name: "list miss, other", allowed: list, origin: []string{"https://evil.example"}},

		// Star.
		{name: "star allows any", allowed: []string{"*"}, origin: []string{"https://evil.example"}, want: true},
		{name: "star with list", allowed: []string{"https://app.example.com", "*"}, origin: []string{"https://other.example"}, want: true},

		// Refused whatever the policy.
		{name: "null", allowed: []string{"*"}, origin: []string{"null"}},
		{name: "null upper case", allowed: []string{"*"}, origin: []string{"NULL"}},
		{name: "empty origin", allowed: []string{"*"}, origin: []string{""}},
		{name: "malformed", allowed: []string{"*"}, origin: []string{"::not a url"}},
		{name: "no scheme", allowed: []string{"*"}, origin: []string{"rt.example.com"}},
		{name: "with path", allowed: list, origin: []string{"https://app.example.com/x"}},
		{name: "trailing slash", allowed: list, origin: []string{"https://app.example.com/"}},
		{name: "user info", allowed: list, origin: []string{"https://u@app.example.com"}},
		{name: "two origin headers", allowed: list, origin: []string{"https://app.example.com", "https://app.example.com"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := NewOriginPolicy(tt.allowed)
			if err != nil {
				t.Fatalf("NewOriginPolicy: %v", err)
			}
			r := httptest.NewRequest("GET", "/api/v1/ws/sessions", nil)
			r.Host = "rt.example.com"
			if tt.host != "" {
				r.Host = tt.host
			}
			for _, o := range tt.origin {
				r.Header.Add("Origin", o)
			}
			if got := p.Allowed(r); got != tt.want {
				t.Errorf("Allowed(Origin %q, Host %q) = %v, want %v", tt.origin, r.Host, got, tt.want)
			}
		})
	}
}

func TestNilOriginPolicyIsSameHost(t *testing.T) {
	t.Parallel()
	var p *OriginPolicy
	r := httptest.NewRequest("GET", "/", nil)
	r.Host = "rt.example.com"
	if !p.Allowed(r) {
		t.Error("nil policy refused a request without Origin")
	}
	r.Header.Set("Origin", "https://rt.example.com")
	if !p.Allowed(r) {
		t.Error("nil policy refused same host")
	}
	r.Header.Set("Origin", "https://evil.example")
	if p.Allowed(r) {
		t.Error("nil policy allowed another host")
	}
}

// A DNS-rebinding page sends Host and Origin both naming the attacker's site. With
// WithLiteralSameHost the same-host rule only counts for a Host no DNS answer can stand for
// (localhost, an IP address); a name passes only when it is listed. The policy it was made
// from keeps the plain rule.
func TestLiteralSameHost(t *testing.T) {
	t.Parallel()
	base, err := NewOriginPolicy([]string{"http://devbox.lan:8080"})
	if err != nil {
		t.Fatal(err)
	}
	p := base.WithLiteralSameHost()
	var nilPolicy *OriginPolicy
	for _, tc := range []struct {
		policy       *OriginPolicy
		host, origin string
		want         bool
	}{
		{p, "evil.example:8080", "http://evil.example:8080", false},
		{p, "evil.example", "https://evil.example", false},
		{p, "localhost.evil.example:8080", "http://localhost.evil.example:8080", false},
		{p, "localhost:8080", "http://localhost:8080", true},
		{p, "LOCALHOST:8080", "http://localhost:8080", true},
		{p, "127.0.0.1:8080", "http://127.0.0.1:8080", true},
		{p, "[::1]:8080", "http://[::1]:8080", true},
		{p, "192.168.1.20:8080", "http://192.168.1.20:8080", true},
		{p, "devbox.lan:8080", "http://devbox.lan:8080", true}, // listed
		{p, "localhost:8080", "http://evil.example:8080", false},
		{p, "evil.example:8080", "", true}, // no Origin: not a browser
		{nilPolicy.WithLiteralSameHost(), "evil.example", "http://evil.example", false},
		{nilPolicy.WithLiteralSameHost(), "localhost", "http://localhost", true},
		{base, "evil.example:8080", "http://evil.example:8080", true},
	} {
		r := httptest.NewRequest("GET", "/api/v1/ws/sessions", nil)
		r.Host = tc.host
		if tc.origin != "" {
			r.Header.Set("Origin", tc.origin)
		}
		if got := tc.policy.Allowed(r); got != tc.want {
			t.Errorf("Allowed(Host %q, Origin %q) = %v, want %v (literal same host: %v)", tc.host, tc.origin, got, tc.want, tc.policy.literalSameHost)
		}
	}
}

func TestLiteralAndLoopbackHost(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		host              string
		literal, loopback bool
	}{
		{"localhost", true, true},
		{"localhost:8080", true, true},
		{"LocalHost:8080", true, true},
		{"127.0.0.1", true, true},
		{"127.1.2.3:80", true, true},
		{"[::1]", true, true},
		{"[::1]:8080", true, true},
		{"10.0.0.5:8080", true, false},
		{"[2001:db8::1]:443", true, false},
		{"0.0.0.0:8080", true, false},
		{"evil.example", false, false},
		{"localhost.evil.example", false, false},
		{"localhost.:8080", false, false},
		{"127.0.0.1.nip.io", false, false},
		{"::1", false, false},
		{"[::1", false, false},
		{"", false, false},
		{":8080", false, false},
	} {
		if got := LiteralHost(tc.host); got != tc.literal {
			t.Errorf("LiteralHost(%q) = %v, want %v", tc.host, got, tc.literal)
		}
		if got := LoopbackHost(tc.host); got != tc.loopback {
			t.Errorf("LoopbackHost(%q) = %v, want %v", tc.host, got, tc.loopback)
		}
	}
}
