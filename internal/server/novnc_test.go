package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The configured noVNC directory is served at /novnc/ and named in the page's config; a
// directory without noVNC is refused at start.
func TestNoVNCServedAndAnnounced(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "core"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "core", "rfb.js"), []byte("export default class RFB {}"), 0o644); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, "sqlite", func(c *Config) { c.NoVNCDir = dir })
	resp, err := http.Get(ts.base + "/novnc/core/rfb.js")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "export default class RFB {}" || !strings.Contains(resp.Header.Get("Content-Type"), "javascript") {
		t.Fatalf("rfb.js: %d %q %s", resp.StatusCode, body, resp.Header.Get("Content-Type"))
	}
	resp, err = http.Get(ts.base + "/ui/config.json")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		NoVNC string `json:"novnc"`
	}
	err = json.NewDecoder(resp.Body).Decode(&cfg)
	_ = resp.Body.Close()
	if err != nil || cfg.NoVNC != "/novnc/" {
		t.Fatalf("config.json novnc = %q, %v", cfg.NoVNC, err)
	}

	bad := testConfig(t, "sqlite", nil)
	bad.NoVNCDir = t.TempDir()
	if srv, err := New(context.Background(), bad, nil); err == nil {
		_ = srv.Shutdown(context.Background())
		t.Fatal("a noVNC directory without core/rfb.js was accepted")
	}
}
