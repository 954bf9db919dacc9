package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// maxRectBytes bounds the pixels of one rectangle a viewer accepts (a 4096×4096 screen at 32
// bits); beyond it the stream is not one this bench reads.
const maxRectBytes = 4096 * 4096 * bytesPerPixel

// vncViewer is one viewer of the bench: a WebSocket RFB client (subprotocol "binary", as noVNC
// connects) that counts the bytes it receives, asks for a 1×1 update every so often and times
// the answer, and sends a few input messages a second. Its reader parses the server's messages
// only as far as their lengths: no pixel is looked at.
type vncViewer struct {
	ws      *websocket.Conn
	in      *wsStream
	br      *bufio.Reader
	closed  atomic.Bool // the reader ended: the socket closed or the stream broke
	done    chan struct{}
	started bool // start was called: a reader runs
	wg      sync.WaitGroup

	mu       sync.Mutex
	hist     Histogram // request → matching reply
	asked    bool      // a request is outstanding
	want     [2]uint16 // its x, y
	sentAt   time.Time
	seq      uint32
	answered int64
	err      error // why the reader ended
}

// wsStream reads a WebSocket's binary messages as one byte stream, counting the bytes.
type wsStream struct {
	ws    *websocket.Conn
	r     io.Reader
	count atomic.Int64
}

func (s *wsStream) Read(p []byte) (int, error) {
	for {
		if s.r == nil {
			typ, r, err := s.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				return 0, errors.New("a text frame in an RFB stream")
			}
			s.r = r
		}
		n, err := s.r.Read(p)
		s.count.Add(int64(n))
		if err == io.EOF {
			s.r = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

// refusal describes a refused WebSocket handshake by its status and body, which name why.
func refusal(resp *http.Response, err error) error {
	if resp == nil {
		return err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	msg := fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	if strings.Contains(msg, "too_many_tunnels") {
		msg += " (start serve with --vnc-max-per-agent 0 --vnc-max-per-user 0)"
	}
	return errors.New(msg)
}

// dialVNCViewer opens a viewer socket at url and completes the RFB handshake (3.8, security
// None, shared ClientInit). local, when set, is the source address.
func dialVNCViewer(ctx context.Context, url string, local net.Addr) (*vncViewer, error) {
	d := websocket.Dialer{Subprotocols: []string{"binary"}, HandshakeTimeout: 30 * time.Second, ReadBufferSize: 64 << 10, WriteBufferSize: 1024}
	if local != nil {
		d.NetDialContext = (&net.Dialer{LocalAddr: local, Timeout: 30 * time.Second}).DialContext
	}
	ws, resp, err := d.DialContext(ctx, url, nil)
	if err != nil {
		return nil, refusal(resp, err)
	}
	v := &vncViewer{ws: ws, in: &wsStream{ws: ws}, done: make(chan struct{})}
	v.br = bufio.NewReaderSize(v.in, 64<<10)
	_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	if err := v.handshake(); err != nil {
		_ = ws.Close()
		return nil, fmt.Errorf("RFB handshake: %w", err)
	}
	_ = ws.SetReadDeadline(time.Time{})
	return v, nil
}

func (v *vncViewer) send(b []byte) error {
	_ = v.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return v.ws.WriteMessage(websocket.BinaryMessage, b)
}

func (v *vncViewer) handshake() error {
	version := make([]byte, 12)
	if _, err := io.ReadFull(v.br, version); err != nil {
		return fmt.Errorf("read the server's version: %w", err)
	}
	if !strings.HasPrefix(string(version), "RFB 003.00") {
		return fmt.Errorf("not an RFB server: %q", version)
	}
	if err := v.send([]byte("RFB 003.008\n")); err != nil {
		return err
	}
	n, err := v.br.ReadByte()
	if err != nil {
		return err
	}
	types := make([]byte, n)
	if _, err := io.ReadFull(v.br, types); err != nil {
		return err
	}
	if n == 0 || !strings.ContainsRune(string(types), 1) {
		return fmt.Errorf("the server does not offer security None (offers %v)", types)
	}
	if err := v.send([]byte{1}); err != nil {
		return err
	}
	result := make([]byte, 4)
	if _, err := io.ReadFull(v.br, result); err != nil {
		return err
	}
	if binary.BigEndian.Uint32(result) != 0 {
		return errors.New("security handshake failed")
	}
	if err := v.send([]byte{1}); err != nil { // ClientInit, shared
		return err
	}
	init := make([]byte, 24)
	if _, err := io.ReadFull(v.br, init); err != nil {
		return err
	}
	if init[4] != 32 {
		return fmt.Errorf("the server's pixel format has %d bits per pixel; the bench reads 32", init[4])
	}
	_, err = v.br.Discard(int(binary.BigEndian.Uint32(init[20:])))
	return err
}

// start runs the viewer: its reader, and its writer, which asks for the first update at once
// (that starts the source's stream), then a 1×1 update every rtt and an input message every
// input.
func (v *vncViewer) start(rtt, input time.Duration) {
	v.started = true
	go v.read()
	v.wg.Go(func() { v.write(rtt, input) })
}

// write sends a request whenever none is outstanding at a tick of rtt, and input messages
// (pointer, key down, pointer, key up) at ticks of input, until the reader ends.
func (v *vncViewer) write(rtt, input time.Duration) {
	if v.send([]byte{2, 0, 0, 1, 0, 0, 0, 0}) != nil { // SetEncodings: Raw
		return
	}
	asks, inputs := time.NewTicker(rtt), time.NewTicker(input)
	defer asks.Stop()
	defer inputs.Stop()
	var n int
	if v.ask() != nil {
		return
	}
	for {
		select {
		case <-asks.C:
			if v.ask() != nil {
				return
			}
		case <-inputs.C:
			if v.send(inputMessage(n)) != nil {
				return
			}
			n++
		case <-v.done:
			return
		}
	}
}

// ask sends a 1×1 FramebufferUpdateRequest at a position of its own, unless one is
// outstanding.
func (v *vncViewer) ask() error {
	v.mu.Lock()
	if v.asked {
		v.mu.Unlock()
		return nil
	}
	v.seq++
	xy := [2]uint16{uint16(v.seq % sourceWidth), uint16(v.seq / sourceWidth % sourceHeight)}
	v.asked, v.want, v.sentAt = true, xy, time.Now()
	v.mu.Unlock()
	return v.send(updateRequest(xy))
}

// updateRequest is a non-incremental FramebufferUpdateRequest of the 1×1 area at xy.
func updateRequest(xy [2]uint16) []byte {
	b := make([]byte, 10)
	b[0] = 3
	binary.BigEndian.PutUint16(b[2:], xy[0])
	binary.BigEndian.PutUint16(b[4:], xy[1])
	binary.BigEndian.PutUint16(b[6:], 1)
	binary.BigEndian.PutUint16(b[8:], 1)
	return b
}

// inputMessage is the n-th input message: a PointerEvent, a KeyEvent ('a' down), a
// PointerEvent, a KeyEvent ('a' up), and again.
func inputMessage(n int) []byte {
	if n%2 == 0 {
		return []byte{5, 0, 0, byte(n % 200), 0, byte(n % 100)}
	}
	down := byte(0)
	if n%4 == 1 {
		down = 1
	}
	return []byte{4, down, 0, 0, 0, 0, 0, 'a'}
}

// read parses the server's messages until the socket ends, matching 1×1 rectangles to the
// outstanding request.
func (v *vncViewer) read() {
	defer close(v.done)
	err := v.readMessages()
	v.mu.Lock()
	v.err = err
	v.mu.Unlock()
	v.closed.Store(true)
}

func (v *vncViewer) readMessages() error {
	var head [12]byte
	for {
		t, err := v.br.ReadByte()
		if err != nil {
			return err
		}
		switch t {
		case 0: // FramebufferUpdate
			if _, err := io.ReadFull(v.br, head[:3]); err != nil {
				return err
			}
			for range binary.BigEndian.Uint16(head[1:3]) {
				if _, err := io.ReadFull(v.br, head[:]); err != nil {
					return err
				}
				x, y := binary.BigEndian.Uint16(head[0:]), binary.BigEndian.Uint16(head[2:])
				w, h := int(binary.BigEndian.Uint16(head[4:])), int(binary.BigEndian.Uint16(head[6:]))
				if enc := int32(binary.BigEndian.Uint32(head[8:])); enc != 0 {
					return fmt.Errorf("rectangle encoding %d: the bench reads Raw only", enc)
				}
				if w == 1 && h == 1 {
					v.matched([2]uint16{x, y}, time.Now())
				}
				n := w * h * bytesPerPixel
				if n > maxRectBytes {
					return fmt.Errorf("a %dx%d rectangle", w, h)
				}
				if _, err := v.br.Discard(n); err != nil {
					return err
				}
			}
		case 1: // SetColourMapEntries
			if _, err := io.ReadFull(v.br, head[:5]); err != nil {
				return err
			}
			if _, err := v.br.Discard(6 * int(binary.BigEndian.Uint16(head[3:5]))); err != nil {
				return err
			}
		case 2: // Bell
		case 3: // ServerCutText
			if _, err := io.ReadFull(v.br, head[:7]); err != nil {
				return err
			}
			n := binary.BigEndian.Uint32(head[3:7])
			if n > 1<<20 {
				return fmt.Errorf("a clipboard of %d bytes", n)
			}
			if _, err := v.br.Discard(int(n)); err != nil {
				return err
			}
		default:
			return fmt.Errorf("server message type %d: not one the bench reads", t)
		}
	}
}

// matched records the round trip when xy answers the outstanding request.
func (v *vncViewer) matched(xy [2]uint16, at time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.asked && xy == v.want {
		v.asked = false
		v.answered++
		v.hist.Record(at.Sub(v.sentAt))
	}
}

// viewerCounts is what a viewer saw up to now.
type viewerCounts struct {
	bytes    int64
	hist     Histogram
	answered int64
}

// take returns the bytes received so far, and the round trips recorded since the last take.
func (v *vncViewer) take() viewerCounts {
	v.mu.Lock()
	defer v.mu.Unlock()
	c := viewerCounts{bytes: v.in.count.Load(), hist: v.hist, answered: v.answered}
	v.hist, v.answered = Histogram{}, 0
	return c
}

// close ends the viewer with a normal close and waits for its goroutines.
func (v *vncViewer) close() {
	_ = v.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	_ = v.ws.Close()
	v.wg.Wait()
	if v.started {
		<-v.done
	}
}
