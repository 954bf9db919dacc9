// Package desktop is the built-in desktop: a small RFB (VNC) server written for this project,
// since no maintained Go RFB server library exists. It shows a test pattern (colour bars), the
// title, a clock that changes every second, a click counter and a marker where each button
// press lands, so a viewer can see both the picture and its own input arrive. It speaks RFB 3.8
// (and answers 3.3 and 3.7 clients) with security None and Raw encoding only, in any true-colour
// pixel format of 8, 16 or 32 bits. Many viewers may share one Desktop; all see the same picture.
package desktop

import (
	"context"
	"errors"
	"fmt"
	"image"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/jonboulle/clockwork"
)

// Size bounds for Options.
const (
	DefaultWidth, DefaultHeight = 1024, 768
	MinWidth, MinHeight         = 320, 240
	MaxWidth, MaxHeight         = 4096, 4096
)

// Options configure a Desktop.
type Options struct {
	Width, Height int // DefaultWidth x DefaultHeight when zero; clamped to the Min and Max sizes
	Clock         clockwork.Clock
	Logger        *slog.Logger
}

// Desktop is the shared picture and its state; Serve serves one viewer of it.
type Desktop struct {
	clock  clockwork.Clock
	log    *slog.Logger
	layout layout

	mu      sync.Mutex
	clicks  int
	markers []image.Point
	changed chan struct{} // closed and replaced on every click
	cache   *image.RGBA   // the picture for cacheKey
	cacheAt int64         // Unix second of cache
	cacheV  int           // clicks of cache
}

// New returns a desktop of the given size.
func New(opts Options) *Desktop {
	w, h := opts.Width, opts.Height
	if w == 0 && h == 0 {
		w, h = DefaultWidth, DefaultHeight
	}
	w, h = min(max(w, MinWidth), MaxWidth), min(max(h, MinHeight), MaxHeight)
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Desktop{clock: opts.Clock, log: opts.Logger, layout: newLayout(w, h), changed: make(chan struct{})}
}

// Size returns the framebuffer's width and height.
func (d *Desktop) Size() (int, int) { return d.layout.size.Dx(), d.layout.size.Dy() }

// Clicks counts the button presses of every viewer.
func (d *Desktop) Clicks() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.clicks
}

// ClockRect is where the clock is drawn, so tests and viewers know what changes each second.
func (d *Desktop) ClockRect() image.Rectangle { return d.layout.clockRect() }

// click records a button press at p.
func (d *Desktop) click(p image.Point) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.clicks++
	d.markers = append(d.markers, p)
	if len(d.markers) > maxMarkers {
		d.markers = append(d.markers[:0], d.markers[len(d.markers)-maxMarkers:]...)
	}
	close(d.changed)
	d.changed = make(chan struct{})
}

// picture returns the picture now (shared and read-only) and a channel closed at the next click.
func (d *Desktop) picture() (*image.RGBA, <-chan struct{}) {
	now := d.clock.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cache == nil || d.cacheAt != now.Unix() || d.cacheV != d.clicks {
		d.cache = d.layout.render(now, d.clicks, d.markers)
		d.cacheAt, d.cacheV = now.Unix(), d.clicks
	}
	return d.cache, d.changed
}

// Serve serves one viewer on conn until it leaves, breaks the protocol or ctx ends; it closes
// conn. A viewer that hangs up is not an error.
func (d *Desktop) Serve(ctx context.Context, conn net.Conn) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()

	v := newViewer(d, conn)
	var wg sync.WaitGroup
	var writeErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		writeErr = v.writeLoop(ctx)
		if writeErr != nil {
			conn.Close() // ends the read loop
		}
	}()
	readErr := v.readLoop()
	cancel()
	wg.Wait()
	for _, err := range []error{readErr, writeErr} {
		if err != nil && !isClosed(err) {
			d.log.Info("built-in desktop: viewer closed", "remote", conn.RemoteAddr().String(), "err", err)
			return err
		}
	}
	return nil
}

// isClosed reports errors that only say the connection ended.
func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, io.ErrClosedPipe) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// nextSecond is how long until the clock shows another second.
func (d *Desktop) nextSecond() time.Duration {
	now := d.clock.Now()
	return now.Truncate(time.Second).Add(time.Second).Sub(now)
}

func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}

// ServeListener serves every viewer that connects to ln until ctx ends or ln fails, then closes
// ln and returns once every viewer's Serve has; the error is nil when ctx ended it.
func (d *Desktop) ServeListener(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer ln.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return wrap("accepting viewers", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = d.Serve(ctx, conn) // Serve logs what ended a viewer
		}()
	}
}
