package auth

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// FuzzRequest checks what a browser's upgrade request brings before any token is verified: the
// query string, the Authorization header, the Origin and the Host. Nothing may panic; a token
// found is non-empty and trimmed, the header's winning over the query's; an Origin that parses
// normalizes to itself, and OriginPolicy.Allowed agrees with parseOrigin. The corpus is in
// testdata/fuzz/FuzzRequest.
func FuzzRequest(f *testing.F) {
	for _, seed := range []struct{ query, authorization, origin, host string }{
		{"token=a.b.c", "", "https://app.example.com", "app.example.com"},
		{"token=qry&since=e:1", "Bearer hdr", "https://app.example.com:443", "app.example.com"},
		{"token=%20a%2Eb%20&token=x", "bearer  hdr  ", "http://localhost:8080", "localhost:8080"},
		{"token=", "Basic dXNlcjpwYXNz", "null", "example.com"},
		{"token=%zz;token=a", "Bearer", "https://user@example.com", "example.com"},
		{";;&&==", "BEARER\tx", "http://[::1]:80", "[::1]"},
		{"token=a+b", "Bearer \x00", "HTTPS://EXAMPLE.COM/", "example.com"},
		{"", "", "https://example.com:", "example.com"},
		{"t%6Fken=x", "Bearer x y", "ws://example.com?x", "example.com"},
		{"token=x#frag", "", "https://%65xample.com", "example.com"},
		{"token=\xff", "Bearer \xff", "https://\xff", "\xff"},
	} {
		f.Add(seed.query, seed.authorization, seed.origin, seed.host)
	}
	policies := []*OriginPolicy{nil, mustPolicy(f, "*"), mustPolicy(f, "https://app.example.com", "http://localhost:3000")}
	f.Fuzz(func(t *testing.T, query, authorization, origin, host string) {
		r := &http.Request{
			Method: http.MethodGet,
			URL:    &url.URL{Path: "/api/v1/ws/sessions", RawQuery: query},
			Header: http.Header{"Authorization": {authorization}, "Origin": {origin}},
			Host:   host,
		}
		bearer, hasBearer := BearerToken(r)
		if hasBearer && (bearer == "" || bearer != strings.TrimSpace(bearer)) {
			t.Fatalf("bearer token %q from %q", bearer, authorization)
		}
		token, err := TokenFromRequest(r)
		switch {
		case err != nil:
			if !errors.Is(err, ErrMissingToken) || token != "" || hasBearer {
				t.Fatalf("TokenFromRequest: %q, %v (bearer %q)", token, err, bearer)
			}
		case token == "" || token != strings.TrimSpace(token):
			t.Fatalf("token %q is blank or untrimmed", token)
		case hasBearer && token != bearer:
			t.Fatalf("token %q, but the header's %q comes first", token, bearer)
		}
		o, perr := parseOrigin(origin)
		if perr == nil {
			if o.scheme == "" || o.host == "" || o.scheme != strings.ToLower(o.scheme) || o.host != strings.ToLower(o.host) {
				t.Fatalf("origin %q normalized to %+v", origin, o)
			}
			if again, err := parseOrigin(o.String()); err != nil || again != o {
				t.Fatalf("origin %q normalized to %q, which reads back as %+v, %v", origin, o, again, err)
			}
		}
		for _, p := range policies {
			allowed := p.Allowed(r)
			switch {
			case perr != nil && allowed:
				t.Fatalf("policy %+v allowed the malformed origin %q", p, origin)
			case perr == nil && o.host == normalizeHost(host, o.scheme) && !allowed:
				t.Fatalf("policy %+v refused the same-host origin %q on %q", p, origin, host)
			case perr == nil && p != nil && p.any && !allowed:
				t.Fatalf("policy \"*\" refused the origin %q", origin)
			}
		}
	})
}

func mustPolicy(f *testing.F, allowed ...string) *OriginPolicy {
	p, err := NewOriginPolicy(allowed)
	if err != nil {
		f.Fatal(err)
	}
	return p
}
