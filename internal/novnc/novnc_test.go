package novnc

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

type entry struct {
	name, body string
	typ        byte
}

func tarball(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		hdr := &tar.Header{Name: e.name, Typeflag: typ, Mode: 0o644, Size: int64(len(e.body))}
		if typ != tar.TypeReg {
			hdr.Size = 0
			hdr.Linkname = "/etc/passwd"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func integrity(b []byte) string {
	sum := sha512.Sum512(b)
	return "sha512-" + base64.StdEncoding.EncodeToString(sum[:])
}

// serveTarball serves body and counts the requests.
func serveTarball(t *testing.T, body []byte) (string, *atomic.Int32) {
	t.Helper()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/novnc.tgz", &hits
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func goodTarball(t *testing.T) []byte {
	return tarball(t,
		entry{name: "package/", typ: tar.TypeDir},
		entry{name: "package/core/rfb.js", body: "export default class RFB {}\n"},
		entry{name: "package/vnc.html", body: "<html></html>"},
	)
}

// leftovers lists what a download left in dir besides want.
func leftovers(t *testing.T, dir string, want ...string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if !strings.Contains(strings.Join(want, "\x00"), e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestResolveDownloadsOnceAndVerifies(t *testing.T) {
	t.Parallel()
	body := goodTarball(t)
	url, hits := serveTarball(t, body)
	cache := t.TempDir()
	o := Options{System: filepath.Join(t.TempDir(), "none"), Download: true, CacheDir: cache,
		Fetch: Source{URL: url, Integrity: integrity(body)}, Logger: quiet}
	dir, err := Resolve(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if dir != filepath.Join(cache, "novnc-"+Version) || !Valid(dir) {
		t.Fatalf("dir %s, valid %v", dir, Valid(dir))
	}
	if b, err := os.ReadFile(filepath.Join(dir, "vnc.html")); err != nil || string(b) != "<html></html>" {
		t.Fatalf("vnc.html = %q, %v", b, err)
	}
	if extra := leftovers(t, cache, "novnc-"+Version); len(extra) != 0 {
		t.Fatalf("left behind: %v", extra)
	}
	if again, err := Resolve(context.Background(), o); err != nil || again != dir {
		t.Fatalf("second Resolve: %s, %v", again, err)
	}
	if n := hits.Load(); n != 1 {
		t.Fatalf("%d downloads, want 1 (the cache serves the second)", n)
	}
}

// A tarball that does not match its digest is refused before anything is unpacked, and
// nothing is left behind; so is one with a path leaving the directory, a link, or no noVNC.
func TestDownloadRefusals(t *testing.T) {
	t.Parallel()
	good := goodTarball(t)
	other := tarball(t, entry{name: "package/core/rfb.js", body: "tampered"})
	cases := []struct {
		name string
		body []byte
		sri  string
		want string
	}{
		{"bad digest", other, integrity(good), "does not match"},
		{"not sha512", good, "sha256-abc", "not sha512"},
		{"path escape", tarball(t, entry{name: "package/../../evil.js", body: "x"}, entry{name: "package/core/rfb.js", body: "x"}), "", "leaves the directory"},
		{"absolute", tarball(t, entry{name: "/etc/evil", body: "x"}), "", "not a relative"},
		{"outside package", tarball(t, entry{name: "other/core/rfb.js", body: "x"}), "", "not below"},
		{"symlink", tarball(t, entry{name: "package/core/rfb.js", typ: tar.TypeSymlink}), "", "only files and directories"},
		{"no rfb.js", tarball(t, entry{name: "package/vnc.html", body: "x"}), "", "no core/rfb.js"},
		{"not gzip", []byte("plain text"), "", "gzip"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			url, _ := serveTarball(t, c.body)
			sri := c.sri
			if sri == "" {
				sri = integrity(c.body)
			}
			parent := t.TempDir()
			dest := filepath.Join(parent, "novnc")
			err := Download(context.Background(), http.DefaultClient, Source{URL: url, Integrity: sri}, dest, quiet)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
			if extra := leftovers(t, parent); len(extra) != 0 {
				t.Fatalf("left behind: %v", extra)
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(parent), "evil.js")); err == nil {
				t.Fatal("a file escaped the directory")
			}
		})
	}
}

func TestResolveOrder(t *testing.T) {
	t.Parallel()
	mk := func() string {
		d := t.TempDir()
		if err := os.MkdirAll(filepath.Join(d, "core"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "core", "rfb.js"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		return d
	}
	configured, system, empty := mk(), mk(), t.TempDir()
	ctx := context.Background()
	if d, err := Resolve(ctx, Options{Dir: configured, System: system}); err != nil || d != configured {
		t.Errorf("configured: %s, %v", d, err)
	}
	if _, err := Resolve(ctx, Options{Dir: empty, System: system}); err == nil || !strings.Contains(err.Error(), "not a noVNC directory") {
		t.Errorf("configured without noVNC: %v", err)
	}
	if d, err := Resolve(ctx, Options{System: system}); err != nil || d != system {
		t.Errorf("system: %s, %v", d, err)
	}
	if _, err := Resolve(ctx, Options{System: empty}); !errors.Is(err, ErrNotFound) {
		t.Errorf("nothing, no download: %v", err)
	}
}

func TestHandlerServesFilesWithoutListings(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "core"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "core", "rfb.js"), []byte("export default 1;"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(Handler(dir))
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL + "/novnc/core/rfb.js")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "export default 1;" || !strings.Contains(resp.Header.Get("Content-Type"), "javascript") {
		t.Fatalf("rfb.js: %d %q %s", resp.StatusCode, b, resp.Header.Get("Content-Type"))
	}
	for _, p := range []string{"/novnc/core/", "/novnc/../novnc_test.go", "/novnc/missing.js"} {
		resp, err := http.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", p, resp.StatusCode)
		}
	}
}
