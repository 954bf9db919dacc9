package vnctest

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

const safety = 30 * time.Second

func dialVNC(t *testing.T) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", Addr(t), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(safety))
	return conn
}

// fullUpdate runs a client through the handshake and one whole-screen update.
func fullUpdate(t *testing.T, c *Client) (int, int) {
	t.Helper()
	w, h, name, err := c.Handshake()
	if err != nil {
		t.Fatal(err)
	}
	if w <= 0 || h <= 0 || name == "" {
		t.Fatalf("ServerInit %dx%d %q", w, h, name)
	}
	if err := c.SetPixelFormat32(); err != nil {
		t.Fatal(err)
	}
	if err := c.SetEncodings(0); err != nil {
		t.Fatal(err)
	}
	if err := c.RequestUpdate(false, 0, 0, w, h); err != nil {
		t.Fatal(err)
	}
	area := 0
	for area < w*h {
		rects, err := c.ReadUpdate()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rects {
			area += r.Dx() * r.Dy()
		}
		if area < w*h {
			if err := c.RequestUpdate(false, 0, 0, w, h); err != nil {
				t.Fatal(err)
			}
		}
	}
	return w, h
}

func TestClientAgainstXvnc(t *testing.T) {
	c := NewClient(dialVNC(t))
	w, h := fullUpdate(t, c)
	if c.Framebuffer().Bounds().Dx() != w || c.Framebuffer().Bounds().Dy() != h {
		t.Fatalf("framebuffer %v for %dx%d", c.Framebuffer().Bounds(), w, h)
	}
	if p := c.Pixel(0, 0); p.A != 255 {
		t.Fatalf("pixel not decoded: %v", p)
	}
	if err := c.Pointer(10, 10, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Key(true, 0xffe1); err != nil {
		t.Fatal(err)
	}
	if err := c.Key(false, 0xffe1); err != nil {
		t.Fatal(err)
	}
	// The server still answers after input: another whole update.
	if err := c.RequestUpdate(false, 0, 0, 16, 16); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadUpdate(); err != nil {
		t.Fatal(err)
	}
}

func TestClientRejectsNonRFB(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() { _, _ = b.Write([]byte("HTTP/1.1 400")) }()
	if _, _, _, err := NewClient(a).Handshake(); err == nil || !strings.Contains(err.Error(), "not an RFB server") {
		t.Fatalf("got %v", err)
	}
}

// fatalRecorder stands in for a test to see what Addr reports.
type fatalRecorder struct {
	testing.TB
	mu  sync.Mutex
	msg string
}

func (f *fatalRecorder) Helper() {}
func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.msg = strings.TrimSpace(fmt.Sprintf(format, args...))
	f.mu.Unlock()
	runtime.Goexit()
}

func TestAddrFailsWithAHint(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		_, _ = c.Write([]byte("SSH-2.0-Open\r\n"))
		c.Close()
	}()
	t.Setenv(AddrEnv, ln.Addr().String())
	rec := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() { defer close(done); Addr(rec) }()
	<-done
	wg.Wait()
	if !strings.Contains(rec.msg, "scripts/services.sh") || !strings.Contains(rec.msg, "not an RFB banner") {
		t.Fatalf("message %q", rec.msg)
	}
}

func TestAddrDefault(t *testing.T) {
	want := os.Getenv(AddrEnv)
	if want == "" {
		want = DefaultAddr
	}
	if got := Addr(t); got != want {
		t.Fatalf("Addr %q, want %q", got, want)
	}
}

// TestWSConnRelay runs the client over a WebSocket relayed to Xvnc, as a viewer socket is.
func TestWSConnRelay(t *testing.T) {
	vnc := Addr(t)
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		v, err := net.Dial("tcp", vnc)
		if err != nil {
			ws.Close()
			return
		}
		wc := WSConn(ws)
		go func() { _, _ = io.Copy(wc, v); wc.Close() }()
		_, _ = io.Copy(v, wc)
		v.Close()
	}))
	defer srv.Close()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(safety))
	conn := WSConn(ws)
	defer conn.Close()
	fullUpdate(t, NewClient(conn))
}

func TestWSConnRefusesText(t *testing.T) {
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		_ = ws.WriteMessage(websocket.TextMessage, []byte("hi"))
		_, _, _ = ws.ReadMessage()
	}))
	defer srv.Close()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	conn := WSConn(ws)
	defer conn.Close()
	if _, err := conn.Read(make([]byte, 8)); err == nil || !strings.Contains(err.Error(), "want binary") {
		t.Fatalf("got %v", err)
	}
}
