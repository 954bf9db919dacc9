package desktop

import (
	"context"
	"encoding/binary"
	"errors"
	"image"
	"image/color"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/streamspace/streamspace-realtime/internal/rfb"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/internal/vnctest"
)

const safety = 30 * time.Second

// noVNCEncodings is what noVNC sends: real encodings and many pseudo-encodings.
var noVNCEncodings = []int32{7, 16, 5, 2, 1, 0, -256, -223, -224, -239, -307, -308, -309, -312, -313, -258, -261, 0x574d5664, -1063131698}

type harness struct {
	d     *Desktop
	clock *clockwork.FakeClock
	addr  string
	errs  chan error
}

func start(t *testing.T) *harness {
	t.Helper()
	clock := clockwork.NewFakeClockAt(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	h := &harness{d: New(Options{Clock: clock, Logger: slog.New(slog.DiscardHandler)}), clock: clock, errs: make(chan error, 16)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); h.errs <- h.d.Serve(ctx, c) }()
		}
	}()
	t.Cleanup(func() { cancel(); ln.Close(); wg.Wait() })
	return h
}

func (h *harness) dial(t *testing.T) (*vnctest.Client, net.Conn) {
	t.Helper()
	conn, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(safety))
	return vnctest.NewClient(conn), conn
}

// viewer connects, handshakes, asks for noVNC's format and encodings and reads the whole screen.
func (h *harness) viewer(t *testing.T) (*vnctest.Client, net.Conn) {
	t.Helper()
	c, conn := h.dial(t)
	w, hh, name, err := c.Handshake()
	if err != nil {
		t.Fatal(err)
	}
	if w != DefaultWidth || hh != DefaultHeight || name != Title {
		t.Fatalf("ServerInit %dx%d %q", w, hh, name)
	}
	must(t, c.SetPixelFormat32())
	must(t, c.SetEncodings(noVNCEncodings...))
	full(t, c)
	return c, conn
}

func full(t *testing.T, c *vnctest.Client) {
	t.Helper()
	must(t, c.RequestUpdate(false, 0, 0, DefaultWidth, DefaultHeight))
	rects, err := c.ReadUpdate()
	must(t, err)
	if len(rects) != 1 || rects[0] != image.Rect(0, 0, DefaultWidth, DefaultHeight) {
		t.Fatalf("full update %v", rects)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func checkPattern(t *testing.T, c *vnctest.Client) {
	t.Helper()
	bw := DefaultWidth / len(Bars)
	for i, want := range Bars {
		if got := c.Pixel(i*bw+bw/2, 100); got != want {
			t.Errorf("bar %d: %v, want %v", i, got, want)
		}
	}
	if got := c.Pixel(DefaultWidth-1, DefaultHeight-1); got != Background {
		t.Errorf("background %v", got)
	}
}

func countColour(c *vnctest.Client, r image.Rectangle, want color.RGBA) int {
	n := 0
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			if c.Pixel(x, y) == want {
				n++
			}
		}
	}
	return n
}

func TestPatternAndTitle(t *testing.T) {
	h := start(t)
	base := testkit.SteadyGoroutines()
	c, conn := h.viewer(t)
	checkPattern(t, c)
	l := h.d.layout
	if countColour(c, l.textRect(l.title, len(Title)), TextColour) == 0 {
		t.Error("no title text")
	}
	if countColour(c, h.d.ClockRect(), TextColour) == 0 {
		t.Error("no clock text")
	}
	// A partial non-incremental request gets exactly that area.
	must(t, c.RequestUpdate(false, 10, 20, 30, 40))
	rects, err := c.ReadUpdate()
	must(t, err)
	if len(rects) != 1 || rects[0] != image.Rect(10, 20, 40, 60) {
		t.Fatalf("partial update %v", rects)
	}
	conn.Close()
	if err := <-h.errs; err != nil {
		t.Fatalf("a viewer hanging up is not an error: %v", err)
	}
	testkit.GoroutinesBackTo(t, safety, base)
}

func TestClockTicksAndIdleSendsNothing(t *testing.T) {
	h := start(t)
	c, _ := h.viewer(t)
	before := clone(c.Framebuffer())
	must(t, c.RequestUpdate(true, 0, 0, DefaultWidth, DefaultHeight))
	// The request is held: the viewer waits for the clock, having sent nothing.
	ctx, cancel := context.WithTimeout(context.Background(), safety)
	defer cancel()
	must(t, h.clock.BlockUntilContext(ctx, 1))
	h.clock.Advance(time.Second)
	rects, err := c.ReadUpdate()
	must(t, err)
	area := image.Rectangle{}
	for _, r := range rects {
		area = area.Union(r)
	}
	clock := h.d.ClockRect()
	if !area.Overlaps(clock) || area.Dy() > 2*clock.Dy()+32 || area.Dx() > clock.Dx()+32 {
		t.Fatalf("incremental update %v (union %v), clock at %v", rects, area, clock)
	}
	changed := 0
	for y := clock.Min.Y; y < clock.Max.Y; y++ {
		for x := clock.Min.X; x < clock.Max.X; x++ {
			if c.Pixel(x, y) != before.RGBAAt(x, y) {
				changed++
			}
		}
	}
	if changed == 0 {
		t.Fatal("the clock did not change")
	}
	checkPattern(t, c)
}

func clone(img *image.RGBA) *image.RGBA {
	out := image.NewRGBA(img.Rect)
	copy(out.Pix, img.Pix)
	return out
}

func TestClickDrawsMarkerForEveryViewer(t *testing.T) {
	h := start(t)
	c, _ := h.viewer(t)
	must(t, c.RequestUpdate(true, 0, 0, DefaultWidth, DefaultHeight))
	must(t, c.Pointer(100, 200, 0)) // a move is not a click
	must(t, c.Pointer(100, 200, 1))
	rects, err := c.ReadUpdate()
	must(t, err)
	if len(rects) == 0 {
		t.Fatal("empty update")
	}
	if got := c.Pixel(100, 200); got != MarkerColour {
		t.Fatalf("marker pixel %v", got)
	}
	if got := c.Pixel(100+MarkerSize/2, 200+MarkerSize/2); got != MarkerColour {
		t.Fatalf("marker corner %v", got)
	}
	if got := c.Pixel(100+MarkerSize/2+1, 200); got == MarkerColour {
		t.Fatal("marker wider than its size")
	}
	must(t, c.Pointer(110, 200, 1)) // held: no new press
	must(t, c.Pointer(110, 200, 0))
	must(t, c.Pointer(300, 100, 4)) // another button's press counts
	testkit.Eventually(t, safety, "two clicks", func() bool { return h.d.Clicks() == 2 })

	// A second viewer sees the same picture, markers included.
	c2, _ := h.viewer(t)
	for _, p := range []image.Point{{100, 200}, {300, 100}} {
		if got := c2.Pixel(p.X, p.Y); got != MarkerColour {
			t.Fatalf("second viewer at %v: %v", p, got)
		}
	}
	if c2.Pixel(110, 200) == MarkerColour && c2.Pixel(110+MarkerSize, 200) == MarkerColour {
		t.Fatal("a held button drew a marker")
	}
}

func TestPixelFormats(t *testing.T) {
	formats := map[string]vnctest.PixelFormat{
		"noVNC's":           {BPP: 32, Depth: 24, RedMax: 255, GreenMax: 255, BlueMax: 255, RedShift: 0, GreenShift: 8, BlueShift: 16},
		"16 bpp":            vnctest.PixelFormat16,
		"16 bpp big-endian": {BPP: 16, Depth: 16, BigEndian: true, RedMax: 31, GreenMax: 63, BlueMax: 31, RedShift: 11, GreenShift: 5},
		"32 bpp big-endian": {BPP: 32, Depth: 24, BigEndian: true, RedMax: 255, GreenMax: 255, BlueMax: 255, RedShift: 0, GreenShift: 8, BlueShift: 16},
		"8 bpp bgr233":      {BPP: 8, Depth: 8, RedMax: 7, GreenMax: 7, BlueMax: 3, RedShift: 0, GreenShift: 3, BlueShift: 6},
	}
	h := start(t)
	for name, pf := range formats {
		t.Run(name, func(t *testing.T) {
			c, _ := h.dial(t)
			_, _, _, err := c.Handshake()
			must(t, err)
			must(t, c.SetPixelFormat(pf))
			full(t, c)
			checkPatternBars(t, c)
		})
	}
}

// checkPatternBars checks the bars, whose channels are all 0 or 255 and so exact in any format.
func checkPatternBars(t *testing.T, c *vnctest.Client) {
	t.Helper()
	bw := DefaultWidth / len(Bars)
	for i, want := range Bars {
		if got := c.Pixel(i*bw+bw/2, 100); got != want {
			t.Errorf("bar %d: %v, want %v", i, got, want)
		}
	}
}

func TestBadClientClosesOnlyThatViewer(t *testing.T) {
	h := start(t)
	good, _ := h.viewer(t)
	cases := []struct {
		name string
		msg  []byte
		want error
	}{
		{"unknown message type", []byte{7, 0, 0, 0}, rfb.ErrUnsupportedMessage},
		{"colour map", append([]byte{0, 0, 0, 0, 8, 8, 0, 0}, make([]byte, 12)...), errColourMap},
		{"24 bpp", append([]byte{0, 0, 0, 0, 24, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0}, 0, 0, 0), nil},
	}
	for _, tc := range cases {
		bad, conn := h.viewer(t)
		_ = bad
		_, err := conn.Write(tc.msg)
		must(t, err)
		if _, err := io.ReadAll(conn); err != nil {
			t.Fatalf("%s: the viewer's connection did not end cleanly: %v", tc.name, err)
		}
		serveErr := <-h.errs
		if serveErr == nil || (tc.want != nil && !errors.Is(serveErr, tc.want)) {
			t.Fatalf("%s: Serve returned %v, want %v", tc.name, serveErr, tc.want)
		}
	}
	// The other viewer goes on.
	must(t, good.Pointer(50, 50, 1))
	must(t, good.RequestUpdate(true, 0, 0, DefaultWidth, DefaultHeight))
	_, err := good.ReadUpdate()
	must(t, err)
	if good.Pixel(50, 50) != MarkerColour {
		t.Fatal("the good viewer stopped getting updates")
	}
}

// TestOlderClients runs RFB 3.3 and 3.7 handshakes by hand.
func TestOlderClients(t *testing.T) {
	h := start(t)
	read := func(conn net.Conn, n int) []byte {
		b := make([]byte, n)
		if _, err := io.ReadFull(conn, b); err != nil {
			t.Fatal(err)
		}
		return b
	}
	serverInit := func(conn net.Conn) {
		si := read(conn, 24)
		if binary.BigEndian.Uint16(si) != DefaultWidth || int(binary.BigEndian.Uint32(si[20:])) != len(Title) {
			t.Fatalf("ServerInit %x", si)
		}
		if string(read(conn, len(Title))) != Title {
			t.Fatal("name")
		}
	}
	for _, tc := range []struct {
		version string
		sec     []byte // what the server offers
		result  bool   // whether a SecurityResult follows the client's choice
	}{
		{"RFB 003.003\n", []byte{0, 0, 0, 1}, false},
		{"RFB 003.007\n", []byte{1, 1}, false},
		{"RFB 003.008\n", []byte{1, 1}, true},
	} {
		_, conn := h.dial(t)
		if string(read(conn, 12)) != "RFB 003.008\n" {
			t.Fatal("banner")
		}
		_, _ = conn.Write([]byte(tc.version))
		if got := read(conn, len(tc.sec)); string(got) != string(tc.sec) {
			t.Fatalf("%q: security %x, want %x", tc.version, got, tc.sec)
		}
		if len(tc.sec) == 2 {
			_, _ = conn.Write([]byte{1})
		}
		if tc.result && binary.BigEndian.Uint32(read(conn, 4)) != 0 {
			t.Fatal("security result")
		}
		_, _ = conn.Write([]byte{0}) // ClientInit, not shared: shared all the same
		serverInit(conn)
		conn.Close()
		if err := <-h.errs; err != nil {
			t.Fatalf("%q: %v", tc.version, err)
		}
	}
	// A client choosing VNC authentication is refused with a reason.
	_, conn := h.dial(t)
	read(conn, 12)
	_, _ = conn.Write([]byte("RFB 003.008\n"))
	read(conn, 2)
	_, _ = conn.Write([]byte{2})
	if binary.BigEndian.Uint32(read(conn, 4)) != 1 {
		t.Fatal("security accepted")
	}
	if n := binary.BigEndian.Uint32(read(conn, 4)); n == 0 || n > 100 {
		t.Fatalf("reason length %d", n)
	}
	if err := <-h.errs; err == nil {
		t.Fatal("Serve accepted VNC authentication")
	}
}

func TestServeEndsWithContext(t *testing.T) {
	base := testkit.SteadyGoroutines()
	d := New(Options{Width: 640, Height: 480, Logger: slog.New(slog.DiscardHandler)})
	a, b := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx, a) }()
	c := vnctest.NewClient(b)
	w, hh, _, err := c.Handshake()
	must(t, err)
	if w != 640 || hh != 480 {
		t.Fatalf("%dx%d", w, hh)
	}
	must(t, c.RequestUpdate(false, 0, 0, w, hh))
	_, err = c.ReadUpdate()
	must(t, err)
	must(t, c.RequestUpdate(true, 0, 0, w, hh)) // held, with a real clock
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve after cancel: %v", err)
	}
	b.Close()
	testkit.GoroutinesBackTo(t, safety, base)
}

func TestServeListener(t *testing.T) {
	base := testkit.SteadyGoroutines()
	d := New(Options{Logger: slog.New(slog.DiscardHandler)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.ServeListener(ctx, ln) }()
	h := &harness{d: d, addr: ln.Addr().String()}
	c, _ := h.viewer(t) // with the real clock
	checkPattern(t, c)
	must(t, c.RequestUpdate(true, 0, 0, DefaultWidth, DefaultHeight))
	cancel() // ends the listener and the viewer it serves
	if err := <-done; err != nil {
		t.Fatalf("ServeListener: %v", err)
	}
	for { // a clock tick may have been answered before the end
		_, err := c.ReadUpdate()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("the viewer outlived ServeListener")
		}
		if err != nil {
			break
		}
	}
	testkit.GoroutinesBackTo(t, safety, base)
}
