package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/streamspace/streamspace-realtime/internal/rfb"
)

// The source's screen and the tiles its stream is made of. A tile of 128×32 pixels at 32 bits
// is 16 KiB: a small reply waits behind at most one of them.
const (
	sourceWidth     = 1024
	sourceHeight    = 768
	tileWidth       = 128
	tileHeight      = 32
	bytesPerPixel   = 4
	tilePixelBytes  = tileWidth * tileHeight * bytesPerPixel
	updateHeaderLen = 4 + 12 // FramebufferUpdate header and one rectangle header
	// replyLen is the answer to a FramebufferUpdateRequest: one 1×1 Raw rectangle.
	replyLen = updateHeaderLen + bytesPerPixel
	// pendingReplies bounds the requests a connection holds unanswered; beyond it the reader
	// waits, and TCP slows the client.
	pendingReplies = 64
	// catchUp bounds the burst a rate-limited stream may send after it fell behind.
	catchUp = 100 * time.Millisecond
)

// VNCSourceConfig shapes a VNCSource.
type VNCSourceConfig struct {
	// Rate is each connection's stream in bytes a second; 0 sends as fast as the connection
	// takes it.
	Rate int64
	// HandshakeTimeout bounds a client's handshake (default 10s).
	HandshakeTimeout time.Duration
}

// VNCSourceStats counts what a source did over its life.
type VNCSourceStats struct {
	Connections int64 // handshakes completed
	Requests    int64 // FramebufferUpdateRequests received
	Inputs      int64 // KeyEvents and PointerEvents received
	StreamBytes int64 // bytes of the framebuffer stream written (replies not counted)
}

// VNCSource is a VNC-like server for the load generator: it speaks enough RFB 3.8 for
// noVNC-style clients (ProtocolVersion, security None, ClientInit/ServerInit with a 32-bit
// true-colour format), then, from a connection's first FramebufferUpdateRequest on, sends it a
// framebuffer stream at the configured rate: FramebufferUpdate messages of one 128×32 Raw
// rectangle each, cut from pixel data generated once. Each FramebufferUpdateRequest is
// answered at once, between two stream messages, by a 1×1 update whose x and y are the
// request's own, so a client can match replies to its requests. A connection that never asks
// is sent nothing after ServerInit, as a real VNC server would: an idle viewer.
type VNCSource struct {
	cfg    VNCSourceConfig
	pixels []byte   // one tile's pixels, shared by every message
	heads  [][]byte // the update and rectangle headers of each tile of the screen

	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
	ctx    context.Context
	cancel context.CancelFunc

	connections, requests, inputs, streamBytes atomic.Int64
}

// NewVNCSource returns a source that serves nothing until Serve.
func NewVNCSource(cfg VNCSourceConfig) *VNCSource {
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	s := &VNCSource{cfg: cfg, conns: make(map[net.Conn]struct{}), pixels: make([]byte, tilePixelBytes)}
	for i := range s.pixels { // a gradient, so the picture is not one colour
		s.pixels[i] = byte(i * 7)
	}
	for y := 0; y < sourceHeight; y += tileHeight {
		for x := 0; x < sourceWidth; x += tileWidth {
			s.heads = append(s.heads, updateHeader(x, y, tileWidth, tileHeight))
		}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// updateHeader is a FramebufferUpdate of one Raw rectangle, up to its pixels.
func updateHeader(x, y, w, h int) []byte {
	b := make([]byte, updateHeaderLen)
	b[0] = 0 // FramebufferUpdate
	binary.BigEndian.PutUint16(b[2:], 1)
	binary.BigEndian.PutUint16(b[4:], uint16(x))
	binary.BigEndian.PutUint16(b[6:], uint16(y))
	binary.BigEndian.PutUint16(b[8:], uint16(w))
	binary.BigEndian.PutUint16(b[10:], uint16(h))
	binary.BigEndian.PutUint32(b[12:], 0) // Raw
	return b
}

// Stats returns the source's counts so far.
func (s *VNCSource) Stats() VNCSourceStats {
	return VNCSourceStats{
		Connections: s.connections.Load(), Requests: s.requests.Load(),
		Inputs: s.inputs.Load(), StreamBytes: s.streamBytes.Load(),
	}
}

// Serve accepts connections on ln until Close (then it returns nil) or ln fails.
func (s *VNCSource) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = ln.Close()
		return nil
	}
	s.ln = ln
	s.mu.Unlock()
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("vnc source: accept: %w", err)
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = c.Close()
			return nil
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.serveConn(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// Close stops accepting, closes every connection and waits for their goroutines.
func (s *VNCSource) Close() error {
	s.mu.Lock()
	s.closed = true
	s.cancel()
	if s.ln != nil {
		_ = s.ln.Close()
	}
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// sourceConn is one client of the source: its reader parses the client's messages, its writer
// sends the stream and the replies, and nothing else writes to the connection.
type sourceConn struct {
	src     *VNCSource
	c       net.Conn
	replies chan [2]uint16 // x, y of each request to answer
	done    chan struct{}  // closed when the reader ends
	wdone   chan struct{}  // closed when the writer ends
}

func (s *VNCSource) serveConn(c net.Conn) {
	defer c.Close()
	sc := &sourceConn{src: s, c: c, replies: make(chan [2]uint16, pendingReplies),
		done: make(chan struct{}), wdone: make(chan struct{})}
	stream := rfb.NewClientStream(rfb.Options{})
	_ = c.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	if err := sc.handshake(stream); err != nil {
		return
	}
	_ = c.SetDeadline(time.Time{})
	s.connections.Add(1)
	var wg sync.WaitGroup
	wg.Go(sc.writeLoop)
	sc.readLoop(stream)
	close(sc.done)
	_ = c.Close() // unblocks a writer stuck in Write
	wg.Wait()
}

// handshake runs the server's side of RFB 3.7/3.8 with security None (3.3 clients get the
// None type chosen for them), feeding the client's bytes through stream so that it reads the
// messages that follow.
func (sc *sourceConn) handshake(stream *rfb.ClientStream) error {
	banner := []byte("RFB 003.008\n")
	if _, err := sc.c.Write(banner); err != nil {
		return err
	}
	stream.ServerBytes(banner)
	feed := func(b []byte) error { return stream.Write(b, func(rfb.Message) error { return nil }) }
	version := make([]byte, 12)
	if _, err := io.ReadFull(sc.c, version); err != nil {
		return err
	}
	if err := feed(version); err != nil {
		return err
	}
	if version[10] < '7' { // RFB 3.3: the server chooses the type
		none := []byte{0, 0, 0, 1}
		stream.ServerBytes(none)
		if _, err := sc.c.Write(none); err != nil {
			return err
		}
	} else {
		if _, err := sc.c.Write([]byte{1, 1}); err != nil { // one type: None
			return err
		}
		chosen := make([]byte, 1)
		if _, err := io.ReadFull(sc.c, chosen); err != nil {
			return err
		}
		if chosen[0] != 1 {
			_, _ = sc.c.Write([]byte{0, 0, 0, 1})
			return fmt.Errorf("vnc source: security type %d chosen", chosen[0])
		}
		if err := feed(chosen); err != nil {
			return err
		}
		if _, err := sc.c.Write([]byte{0, 0, 0, 0}); err != nil { // SecurityResult OK
			return err
		}
	}
	clientInit := make([]byte, 1)
	if _, err := io.ReadFull(sc.c, clientInit); err != nil {
		return err
	}
	if err := feed(clientInit); err != nil {
		return err
	}
	_, err := sc.c.Write(serverInit())
	return err
}

// serverInit is the ServerInit message: the screen's size, a 32-bit true-colour pixel format
// (little-endian, red at bit 16) and the desktop's name.
func serverInit() []byte {
	name := "streamspace bench source"
	b := make([]byte, 24+len(name))
	binary.BigEndian.PutUint16(b[0:], sourceWidth)
	binary.BigEndian.PutUint16(b[2:], sourceHeight)
	copy(b[4:20], []byte{32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0})
	binary.BigEndian.PutUint32(b[20:], uint32(len(name)))
	copy(b[24:], name)
	return b
}

// readLoop reads the client's messages until the connection ends or a message cannot be read.
func (sc *sourceConn) readLoop(stream *rfb.ClientStream) {
	buf := make([]byte, 4096)
	emit := func(m rfb.Message) error {
		switch m.Kind {
		case rfb.KindUpdateRequest:
			sc.src.requests.Add(1)
			xy := [2]uint16{binary.BigEndian.Uint16(m.Bytes[2:]), binary.BigEndian.Uint16(m.Bytes[4:])}
			select {
			case sc.replies <- xy:
			case <-sc.wdone:
				return net.ErrClosed
			}
		case rfb.KindKey, rfb.KindPointer:
			sc.src.inputs.Add(1)
		}
		return nil
	}
	for {
		n, err := sc.c.Read(buf)
		if n > 0 {
			if werr := stream.Write(buf[:n], emit); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// writeLoop answers requests as they come and, once the client has asked once, sends the
// stream at the configured rate; a reply never waits behind more than one stream message.
func (sc *sourceConn) writeLoop() {
	defer close(sc.wdone)
	defer sc.c.Close() // the reader's Read fails: a connection that cannot be written is done
	var (
		batch     []byte
		streaming bool
		start     time.Time
		sent      int64
		tile      int
		timer     = time.NewTimer(time.Hour)
	)
	timer.Stop()
	defer timer.Stop()
	rate := sc.src.cfg.Rate
	take := func(xy [2]uint16) {
		if !streaming {
			streaming, start = true, time.Now()
		}
		batch = appendReply(batch, xy)
	}
	for {
		// Every reply waiting goes first, in one write.
		for more := true; more; {
			select {
			case xy := <-sc.replies:
				take(xy)
			default:
				more = false
			}
		}
		if len(batch) > 0 {
			if _, err := sc.c.Write(batch); err != nil {
				return
			}
			batch = batch[:0]
			continue
		}
		wait := time.Duration(-1) // no stream yet: wait for a request
		if streaming {
			wait = 0
			if rate > 0 {
				due := start.Add(time.Duration(float64(sent) / float64(rate) * float64(time.Second)))
				now := time.Now()
				if behind := now.Sub(due); behind > catchUp { // a stall is not made up in one burst
					start = start.Add(behind - catchUp)
				}
				wait = max(due.Sub(now), 0)
			}
		}
		if wait != 0 {
			var tick <-chan time.Time
			if wait > 0 {
				timer.Reset(wait)
				tick = timer.C
			}
			select {
			case xy := <-sc.replies:
				take(xy)
			case <-tick:
			case <-sc.done:
				return
			}
			if tick != nil && !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
			continue
		}
		bufs := net.Buffers{sc.src.heads[tile], sc.src.pixels}
		n, err := bufs.WriteTo(sc.c)
		sc.src.streamBytes.Add(n)
		if err != nil {
			return
		}
		sent += n
		tile = (tile + 1) % len(sc.src.heads)
	}
}

// appendReply appends the answer to a request at x, y: a 1×1 Raw update at the same place.
func appendReply(b []byte, xy [2]uint16) []byte {
	var m [replyLen]byte
	binary.BigEndian.PutUint16(m[2:], 1)
	binary.BigEndian.PutUint16(m[4:], xy[0])
	binary.BigEndian.PutUint16(m[6:], xy[1])
	binary.BigEndian.PutUint16(m[8:], 1)
	binary.BigEndian.PutUint16(m[10:], 1)
	return append(b, m[:]...)
}
