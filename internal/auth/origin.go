package auth

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// OriginPolicy decides which browser Origins may open a WebSocket, so a page
// on another site cannot ride a user's query-string token or cookies.
// It is immutable after construction and safe for concurrent use; a nil
// policy behaves like an empty allow-list.
//
// Rules, in order: no Origin header is allowed (non-browser clients cannot
// be protected by Origin anyway); a malformed, repeated or "null" Origin is
// refused, even with "*" ("null" is what sandboxed frames and file: pages
// send); an Origin whose host equals the request's Host is allowed; then
// "*" allows any Origin, else it must be in the allow-list. Comparison is
// case-insensitive and treats :80 on http and :443 on https as absent.
//
// DNS rebinding: a page of evil.example whose name the attacker points at
// the server's address sends Host and Origin both naming evil.example, so
// the same-host rule alone cannot tell it from the server's own page. In
// production that buys the page nothing, since browser tokens are never
// ambient (no cookies: a header or query the page must already hold), and a
// deployment reached by any name keeps working without listing it. A policy
// made WithLiteralSameHost, the one of `serve --dev`, whose loopback
// listener hands out a token, counts the same-host rule only for a Host no
// DNS name can stand for ("localhost" or an IP address, see LiteralHost);
// other names must be in the allow-list.
type OriginPolicy struct {
	any     bool
	allowed map[string]struct{}
	// literalSameHost limits the same-host rule to LiteralHost Hosts.
	literalSameHost bool
}

// NewOriginPolicy builds a policy from entries of the form
// scheme://host[:port] (a trailing "/" is tolerated) or "*". Empty entries
// are skipped; an empty list allows same-host Origins only.
func NewOriginPolicy(allowed []string) (*OriginPolicy, error) {
	p := &OriginPolicy{allowed: make(map[string]struct{}, len(allowed))}
	for _, entry := range allowed {
		entry = strings.TrimSpace(entry)
		switch {
		case entry == "":
			continue
		case entry == "*":
			p.any = true
			continue
		case strings.Contains(entry, "*"):
			return nil, fmt.Errorf("%w %q: wildcards other than a lone \"*\" are not supported", ErrInvalidOrigin, entry)
		case strings.EqualFold(entry, "null"):
			return nil, fmt.Errorf("%w %q: the null origin cannot be allowed", ErrInvalidOrigin, entry)
		}
		o, err := parseOrigin(strings.TrimSuffix(entry, "/"))
		if err != nil {
			return nil, fmt.Errorf("%w %q: want scheme://host[:port]: %s", ErrInvalidOrigin, entry, err)
		}
		p.allowed[o.String()] = struct{}{}
	}
	return p, nil
}

// WithLiteralSameHost returns a copy of p whose same-host rule only counts
// when the request's Host is LiteralHost; a nil p is the empty allow-list.
func (p *OriginPolicy) WithLiteralSameHost() *OriginPolicy {
	q := &OriginPolicy{allowed: map[string]struct{}{}, literalSameHost: true}
	if p != nil {
		q.any, q.allowed = p.any, p.allowed // never written after construction
	}
	return q
}

// LiteralHost reports whether hostport (a Host header: host[:port], an
// IPv6 address in brackets) names its address literally: an IP address or
// "localhost", which browsers resolve to loopback themselves. No DNS answer
// can make such a Host reach another server, so a rebinding page never
// sends one.
func LiteralHost(hostport string) bool {
	host, ok := hostOf(hostport)
	if !ok {
		return false
	}
	return strings.EqualFold(host, "localhost") || net.ParseIP(host) != nil
}

// LoopbackHost reports whether hostport (as in LiteralHost) names this
// machine: "localhost", an address of 127.0.0.0/8 or ::1.
func LoopbackHost(hostport string) bool {
	host, ok := hostOf(hostport)
	if !ok {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// hostOf strips the port, and an IPv6 address's brackets, from a Host
// header; ok is false for what no valid Host looks like.
func hostOf(hostport string) (host string, ok bool) {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h, h != ""
	}
	if rest, found := strings.CutPrefix(hostport, "["); found {
		h, closed := strings.CutSuffix(rest, "]")
		return h, closed && h != ""
	}
	if hostport == "" || strings.Contains(hostport, ":") {
		return "", false // empty, or an IPv6 address without brackets
	}
	return hostport, true
}

// Allowed reports whether r's Origin passes the policy. Its signature fits
// websocket.Upgrader.CheckOrigin.
func (p *OriginPolicy) Allowed(r *http.Request) bool {
	values := r.Header.Values("Origin")
	switch len(values) {
	case 0:
		return true
	case 1:
	default:
		return false
	}
	o, err := parseOrigin(values[0])
	if err != nil {
		return false
	}
	if o.host == normalizeHost(r.Host, o.scheme) && (p == nil || !p.literalSameHost || LiteralHost(r.Host)) {
		return true
	}
	if p == nil {
		return false
	}
	if p.any {
		return true
	}
	_, ok := p.allowed[o.String()]
	return ok
}

// origin is a normalized scheme and host[:port], both lower case, with the
// scheme's default port removed.
type origin struct {
	scheme string
	host   string
}

func (o origin) String() string { return o.scheme + "://" + o.host }

// parseOrigin accepts exactly scheme://host[:port]; anything else (path,
// query, fragment, user info, "null") is an error.
func parseOrigin(s string) (origin, error) {
	if strings.EqualFold(s, "null") {
		return origin{}, errors.New("null origin")
	}
	u, err := url.Parse(s)
	if err != nil {
		return origin{}, errors.New("does not parse as a URL")
	}
	switch {
	case u.Scheme == "" || u.Opaque != "":
		return origin{}, errors.New("missing scheme://")
	case u.User != nil:
		return origin{}, errors.New("has user info")
	case u.Path != "" || u.RawPath != "":
		return origin{}, errors.New("has a path")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return origin{}, errors.New("has a query or fragment")
	case u.Hostname() == "":
		return origin{}, errors.New("missing host")
	}
	scheme := strings.ToLower(u.Scheme)
	return origin{scheme: scheme, host: normalizeHost(u.Host, scheme)}, nil
}

// normalizeHost lower-cases host[:port] and drops the port that is the
// default for scheme, so "example.com:443" and "example.com" compare equal
// for https.
func normalizeHost(hostport, scheme string) string {
	hostport = strings.ToLower(hostport)
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return hostport // no port
	}
	if port == "" || (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		if strings.Contains(host, ":") {
			return "[" + host + "]"
		}
		return host
	}
	return hostport
}
