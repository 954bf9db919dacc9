package web

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func get(t *testing.T, h *Handler, path, remote string, header http.Header) *http.Response {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.RemoteAddr = remote
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	if path == "/" {
		h.ServePage(rec, req)
	} else if !h.ServeFile(rec, req) {
		rec.WriteHeader(http.StatusNotFound)
	}
	return rec.Result()
}

func TestPageAndFiles(t *testing.T) {
	h, err := New()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, contentType, contains string }{
		{"/", "text/html", `<script type="module" src="/ui/dashboard.js">`},
		{"/ui/dashboard.js", "text/javascript", `from "./streamspace-realtime.js"`},
		{"/ui/streamspace-realtime.js", "text/javascript", "export class RealtimeClient"},
		{"/ui/dashboard.css", "text/css", "@keyframes flash"},
	} {
		resp := get(t, h, tc.path, "10.1.2.3:4000", nil)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), tc.contentType) ||
			!strings.Contains(string(body), tc.contains) {
			t.Fatalf("%s: %d %q, %d bytes", tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Fatalf("%s: Content-Security-Policy %q", tc.path, csp)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("Cache-Control") != "no-cache" {
			t.Fatalf("%s: headers %v", tc.path, resp.Header)
		}
		// Revalidation with the ETag costs no body.
		etag := resp.Header.Get("ETag")
		again := get(t, h, tc.path, "10.1.2.3:4000", http.Header{"If-None-Match": {etag}})
		if etag == "" || again.StatusCode != http.StatusNotModified {
			t.Fatalf("%s: ETag %q, revalidation %d", tc.path, etag, again.StatusCode)
		}
	}
	for _, path := range []string{"/ui/", "/ui/nothing.js", "/ui/static/index.html", "/dashboard.js", "/u"} {
		if resp := get(t, h, path, "127.0.0.1:1", nil); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("%s: %d, want 404", path, resp.StatusCode)
		}
	}
}

func TestConfigHandsTheDevTokenToLoopbackOnly(t *testing.T) {
	h, err := New()
	if err != nil {
		t.Fatal(err)
	}
	devToken := func(remote, host string) string {
		req := httptest.NewRequest(http.MethodGet, "/ui/config.json", nil)
		req.RemoteAddr, req.Host = remote, host
		rec := httptest.NewRecorder()
		h.ServeFile(rec, req)
		resp := rec.Result()
		var c struct{ DevToken string }
		if err := json.NewDecoder(resp.Body).Decode(&c); err != nil || resp.StatusCode != http.StatusOK || resp.Header.Get("Cache-Control") != "no-store" {
			t.Fatalf("config from %s: %d %v", remote, resp.StatusCode, err)
		}
		return c.DevToken
	}
	if tok := devToken("127.0.0.1:5000", "localhost:8080"); tok != "" {
		t.Fatalf("without a dev token: %q", tok)
	}
	h.SetDevToken("dev-jwt")
	for remote, want := range map[string]string{
		"127.0.0.1:5000": "dev-jwt", "[::1]:5000": "dev-jwt",
		"192.168.1.20:5000": "", "[2001:db8::1]:5000": "", "garbage": "",
	} {
		if got := devToken(remote, "localhost:8080"); got != want {
			t.Errorf("config from %s: devToken %q, want %q", remote, got, want)
		}
	}
	// From loopback, the Host must name this machine too: a page of another site whose name
	// resolves to 127.0.0.1 (DNS rebinding) sends its own name.
	for host, want := range map[string]string{
		"localhost": "dev-jwt", "localhost:8080": "dev-jwt", "LocalHost:8080": "dev-jwt",
		"127.0.0.1:8080": "dev-jwt", "127.9.8.7": "dev-jwt", "[::1]:8080": "dev-jwt", "[::1]": "dev-jwt",
		"evil.example": "", "evil.example:8080": "", "localhost.evil.example:8080": "", "localhost.:8080": "",
		"127.0.0.1.nip.io:8080": "", "192.168.1.20:8080": "", "[2001:db8::1]:8080": "", "::1": "", "": "",
	} {
		if got := devToken("127.0.0.1:5000", host); got != want {
			t.Errorf("config for Host %q: devToken %q, want %q", host, got, want)
		}
	}
}
