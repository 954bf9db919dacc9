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
type OriginPolicy struct {
	any     bool
	allowed map[string]struct{}
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
	if o.host == normalizeHost(r.Host, o.scheme) {
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
