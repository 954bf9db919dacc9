package bench

import (
	"errors"
	"image"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/internal/vnctest"
)

// startSource serves a VNCSource on a loopback port until the test ends.
func startSource(t *testing.T, cfg VNCSourceConfig) (*VNCSource, string) {
	t.Helper()
	src := NewVNCSource(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- src.Serve(ln) }()
	t.Cleanup(func() {
		_ = src.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return src, ln.Addr().String()
}

// dialSource connects an RFB client (the project's test client, independent of the bench's
// viewer) and completes the handshake.
func dialSource(t *testing.T, addr string) (*vnctest.Client, net.Conn) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	c := vnctest.NewClient(conn)
	w, h, name, err := c.Handshake()
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if w != sourceWidth || h != sourceHeight || name == "" {
		t.Fatalf("ServerInit %dx%d %q", w, h, name)
	}
	return c, conn
}

// A client that asks gets its 1×1 answer at the position it asked for before anything else;
// then the stream flows in whole 128×32 Raw rectangles, and every later request is answered,
// in order, between them. Input messages sent before a request are counted by the time its
// answer arrives.
func TestVNCSourceAnswersRequestsBetweenStreamRectangles(t *testing.T) {
	src, addr := startSource(t, VNCSourceConfig{})
	c, _ := dialSource(t, addr)
	if err := c.SetPixelFormat32(); err != nil {
		t.Fatal(err)
	}
	if err := c.SetEncodings(0); err != nil {
		t.Fatal(err)
	}
	if err := c.Pointer(3, 4, 1); err != nil {
		t.Fatal(err)
	}
	if err := c.Key(true, 'a'); err != nil {
		t.Fatal(err)
	}
	if err := c.RequestUpdate(false, 17, 23, 1, 1); err != nil {
		t.Fatal(err)
	}
	rects, err := c.ReadUpdate()
	if err != nil {
		t.Fatal(err)
	}
	if len(rects) != 1 || rects[0] != image.Rect(17, 23, 18, 24) {
		t.Fatalf("first update %v, want the 1×1 answer at 17,23", rects)
	}
	if s := src.Stats(); s.Inputs != 2 || s.Requests != 1 || s.Connections != 1 {
		t.Fatalf("stats after the first answer %+v, want 2 inputs, 1 request, 1 connection", s)
	}
	// Three more requests; the answers come in order, each a 1×1 among whole tiles.
	asked := []image.Point{{5, 6}, {700, 500}, {1023, 767}}
	for _, p := range asked {
		if err := c.RequestUpdate(true, p.X, p.Y, 1, 1); err != nil {
			t.Fatal(err)
		}
	}
	var answers []image.Point
	tiles := 0
	for len(answers) < len(asked) {
		rects, err := c.ReadUpdate()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rects {
			switch r.Dx() {
			case 1:
				if r.Dy() != 1 {
					t.Fatalf("answer %v is not 1×1", r)
				}
				answers = append(answers, r.Min)
			case tileWidth:
				if r.Dy() != tileHeight || r.Min.X%tileWidth != 0 || r.Min.Y%tileHeight != 0 || !r.In(image.Rect(0, 0, sourceWidth, sourceHeight)) {
					t.Fatalf("stream rectangle %v", r)
				}
				tiles++
			default:
				t.Fatalf("unexpected rectangle %v", r)
			}
		}
	}
	for i, p := range asked {
		if answers[i] != p {
			t.Fatalf("answers %v, want %v in order", answers, asked)
		}
	}
	if tiles == 0 {
		t.Fatal("no stream rectangle arrived: the stream did not start with the first request")
	}
	if got := src.Stats().StreamBytes; got < int64(tiles)*(updateHeaderLen+tilePixelBytes) {
		t.Fatalf("the source counts %d stream bytes, the client read %d tiles", got, tiles)
	}
}

// A client that never asks is sent nothing after ServerInit, however long another client's
// stream flows; a rate-limited stream is whole messages of the same shape.
func TestVNCSourceIdleClientGetsNothing(t *testing.T) {
	src, addr := startSource(t, VNCSourceConfig{Rate: 4 << 20})
	_, idle := dialSource(t, addr)
	busy, _ := dialSource(t, addr)
	if err := busy.RequestUpdate(false, 0, 0, 1, 1); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if _, err := busy.ReadUpdate(); err != nil {
			t.Fatal(err)
		}
	}
	// A correct source never writes to the idle connection, so a short wait cannot flake.
	_ = idle.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	var b [1]byte
	n, err := idle.Read(b[:])
	var ne net.Error
	if n != 0 || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("the idle client read %d bytes (%v)", n, err)
	}
	if s := src.Stats(); s.Connections != 2 || s.Requests != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// A client that does not speak RFB 3.x, or chooses a security type the source does not
// offer, is disconnected; Close ends every connection and goroutine.
func TestVNCSourceRefusesBadHandshakesAndCloses(t *testing.T) {
	base := testkit.SteadyGoroutines()
	src := NewVNCSource(VNCSourceConfig{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- src.Serve(ln) }()
	addr := ln.Addr().String()

	expectClosed := func(what string, send []byte) {
		t.Helper()
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
		banner := make([]byte, 12)
		if _, err := io.ReadFull(conn, banner); err != nil || string(banner) != "RFB 003.008\n" {
			t.Fatalf("%s: banner %q %v", what, banner, err)
		}
		if _, err := conn.Write(send); err != nil {
			t.Fatal(err)
		}
		// The source's end of the connection closes (EOF, or a reset): never the deadline.
		if _, err := io.Copy(io.Discard, conn); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("%s: the source kept the connection open", what)
		}
	}
	expectClosed("not RFB", []byte("HTTP/1.1 200\n"))
	expectClosed("security type 2", append([]byte("RFB 003.008\n"), 2))

	// An open, streaming connection ends with Close.
	c, _ := dialSource(t, addr)
	if err := c.RequestUpdate(false, 1, 1, 1, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadUpdate(); err != nil {
		t.Fatal(err)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve after Close: %v", err)
	}
	for {
		if _, err := c.ReadUpdate(); err != nil {
			break
		}
	}
	testkit.GoroutinesBackTo(t, 10*time.Second, base)
	if s := src.Stats(); s.Connections != 1 {
		t.Fatalf("stats %+v: the refused handshakes are not connections", s)
	}
}
