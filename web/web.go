// Package web is the dashboard served at / and the JavaScript client it is built on. Both are
// plain files embedded in the binary: nothing is built or downloaded to run them.
//
// The client, streamspace-realtime.js, is an ES module with no dependencies; other pages can
// import it from /ui/streamspace-realtime.js or copy it.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"path"
	"strings"
	"sync/atomic"
	"time"

	"github.com/streamspace/streamspace-realtime/internal/auth"
)

//go:embed static
var static embed.FS

// Prefix is the path under which the dashboard's files are served; the page itself is at /.
const Prefix = "/ui/"

// contentSecurityPolicy lets the page load only its own files and talk only to its own origin
// (WebSockets included): a token in the page is worth stealing.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// asset is one embedded file with what its answers need, computed once.
type asset struct {
	name string
	body []byte
	etag string
}

// Handler serves the dashboard: GET / (the page), GET /ui/<file> and GET /ui/config.json.
type Handler struct {
	assets   map[string]asset // by path below Prefix; "index.html" is the page
	devToken atomic.Pointer[string]
	novnc    atomic.Pointer[string]
}

// New returns the dashboard's handler.
func New() (*Handler, error) {
	files, err := fs.Sub(static, "static")
	if err != nil {
		return nil, fmt.Errorf("web: embedded files: %w", err)
	}
	h := &Handler{assets: map[string]asset{}}
	err = fs.WalkDir(files, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(files, name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		h.assets[name] = asset{name: name, body: body, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("web: read embedded files: %w", err)
	}
	if _, ok := h.assets["index.html"]; !ok {
		return nil, fmt.Errorf("web: index.html is not embedded")
	}
	return h, nil
}

// ServePage answers GET / with the dashboard.
func (h *Handler) ServePage(w http.ResponseWriter, r *http.Request) {
	h.serveAsset(w, r, h.assets["index.html"])
}

// ServeFile answers GET /ui/{file}; it reports false when there is no such file, so that the
// caller answers 404 in its own way.
func (h *Handler) ServeFile(w http.ResponseWriter, r *http.Request) bool {
	rest, ok := strings.CutPrefix(r.URL.Path, Prefix)
	if !ok {
		return false
	}
	name := strings.TrimPrefix(path.Clean("/"+rest), "/")
	if name == "config.json" {
		h.serveConfig(w, r)
		return true
	}
	a, found := h.assets[name]
	if !found {
		return false
	}
	h.serveAsset(w, r, a)
	return true
}

// serveAsset answers with one file. The ETag lets browsers revalidate cheaply; no-cache makes
// them do so, so a new binary's dashboard is seen at once.
func (h *Handler) serveAsset(w http.ResponseWriter, r *http.Request, a asset) {
	header := w.Header()
	setPageHeaders(header)
	header.Set("Cache-Control", "no-cache")
	header.Set("ETag", a.etag)
	http.ServeContent(w, r, a.name, time.Time{}, bytes.NewReader(a.body))
}

// SetDevToken gives the page the token `serve --dev` printed. The page pre-fills it, and takes
// the new one when a restarted development server minted another. It is handed only to
// requests from loopback addresses: a development server listening on every address still
// gives its admin token to its own developer's browser only. And only to requests whose Host
// names this machine ("localhost", 127.0.0.0/8 or [::1], with any port): a page of another
// site whose name was pointed at 127.0.0.1 (DNS rebinding) arrives from loopback too, but with
// its own name as Host.
func (h *Handler) SetDevToken(token string) { h.devToken.Store(&token) }

// SetNoVNC tells the page where noVNC is served (e.g. "/novnc/"), for its desktop viewer;
// empty means it is not, and the viewer says how to get it.
func (h *Handler) SetNoVNC(base string) { h.novnc.Store(&base) }

// config is what the page learns from the server before it connects.
type config struct {
	DevToken string `json:"devToken,omitempty"`
	// NoVNC is where noVNC is served; absent when it is not.
	NoVNC string `json:"novnc,omitempty"`
}

func (h *Handler) serveConfig(w http.ResponseWriter, r *http.Request) {
	var c config
	if t := h.devToken.Load(); t != nil && fromLoopback(r) && auth.LoopbackHost(r.Host) {
		c.DevToken = *t
	}
	if b := h.novnc.Load(); b != nil {
		c.NoVNC = *b
	}
	header := w.Header()
	setPageHeaders(header)
	header.Set("Cache-Control", "no-store")
	header.Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(c)
}

func setPageHeaders(header http.Header) {
	header.Set("Content-Security-Policy", contentSecurityPolicy)
	header.Set("X-Content-Type-Options", "nosniff")
	header.Set("Referrer-Policy", "no-referrer")
}

// fromLoopback reports whether the request's peer is this machine.
func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
