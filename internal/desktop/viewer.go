package desktop

import (
	"context"
	"encoding/binary"
	"fmt"
	"image"
	"image/draw"
	"net"
	"sync"
	"time"

	"github.com/streamspace/streamspace-realtime/internal/rfb"
)

// writeTimeout bounds one update's write, so a viewer that stopped reading cannot hold a
// goroutine forever.
const writeTimeout = 30 * time.Second

// request is the pending FramebufferUpdateRequest; a newer one merges into it, so a viewer has
// at most one update waiting and one in flight.
type request struct {
	area        image.Rectangle
	incremental bool
}

// viewer is one RFB connection to the desktop.
type viewer struct {
	d    *Desktop
	conn net.Conn

	mu      sync.Mutex
	pf      pixelFormat
	pending *request
	kick    chan struct{} // a request arrived (buffered 1)

	minor   int         // the RFB minor version the viewer speaks (read loop only)
	buttons uint8       // the pointer's last button mask (read loop only)
	sent    *image.RGBA // what the viewer has been sent (write loop only)
	out     []byte      // the update being written (write loop only)
}

func newViewer(d *Desktop, conn net.Conn) *viewer {
	return &viewer{d: d, conn: conn, pf: defaultFormat, kick: make(chan struct{}, 1)}
}

// readLoop runs the handshake and reads the viewer's messages through rfb.ClientStream, which
// validates each message and bounds what it holds.
func (v *viewer) readLoop() error {
	banner := []byte("RFB 003.008\n")
	s := rfb.NewClientStream(rfb.Options{}) // clipboard bounded by rfb.DefaultMaxClipboard
	s.ServerBytes(banner)
	if err := v.write(banner); err != nil {
		return err
	}
	step := 0
	emit := func(m rfb.Message) error {
		if m.Kind == rfb.KindHandshake {
			step++
			return v.handshake(s, step, m.Bytes)
		}
		return v.message(m)
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := v.conn.Read(buf)
		if n > 0 {
			if werr := s.Write(buf[:n], emit); werr != nil {
				return werr
			}
		}
		if err != nil {
			return wrap("reading from the viewer", err)
		}
	}
}

// handshake answers the viewer's handshake units: version, security type (3.7 and 3.8 only),
// ClientInit.
func (v *viewer) handshake(s *rfb.ClientStream, step int, b []byte) error {
	switch {
	case step == 1: // ProtocolVersion
		switch {
		case b[10] >= '8':
			v.minor = 8
		case b[10] == '7':
			v.minor = 7
		default:
			v.minor = 3
			sec := binary.BigEndian.AppendUint32(nil, 1) // 3.3: the server chooses None
			s.ServerBytes(sec)
			return v.write(sec)
		}
		return v.write([]byte{1, 1}) // one security type: None
	case step == 2 && v.minor != 3: // the chosen security type
		if b[0] != 1 {
			if v.minor == 8 {
				reason := "security type None only"
				msg := binary.BigEndian.AppendUint32([]byte{0, 0, 0, 1}, uint32(len(reason)))
				_ = v.write(append(msg, reason...))
			}
			return fmt.Errorf("viewer chose security type %d; only None (1) is offered", b[0])
		}
		if v.minor == 8 {
			return v.write([]byte{0, 0, 0, 0}) // SecurityResult OK
		}
		return nil
	default: // ClientInit: every viewer shares the desktop, whatever it asks
		w, h := v.d.Size()
		msg := make([]byte, 24, 24+len(Title))
		binary.BigEndian.PutUint16(msg[0:], uint16(w))
		binary.BigEndian.PutUint16(msg[2:], uint16(h))
		defaultFormat.encode(msg[4:20])
		binary.BigEndian.PutUint32(msg[20:], uint32(len(Title)))
		return v.write(append(msg, Title...))
	}
}

// message acts on one client message after the handshake.
func (v *viewer) message(m rfb.Message) error {
	b := m.Bytes
	switch m.Kind {
	case rfb.KindSetPixelFormat:
		pf, err := parsePixelFormat(b[4:])
		if err != nil {
			return err
		}
		v.mu.Lock()
		v.pf = pf
		v.mu.Unlock()
	case rfb.KindUpdateRequest:
		var r image.Rectangle
		r.Min = image.Pt(int(binary.BigEndian.Uint16(b[2:])), int(binary.BigEndian.Uint16(b[4:])))
		r.Max = r.Min.Add(image.Pt(int(binary.BigEndian.Uint16(b[6:])), int(binary.BigEndian.Uint16(b[8:]))))
		v.request(request{area: r.Intersect(v.d.layout.size), incremental: m.Incremental})
	case rfb.KindPointer:
		mask := b[1]
		if mask&^v.buttons != 0 { // a button went down
			v.d.click(image.Pt(int(binary.BigEndian.Uint16(b[2:])), int(binary.BigEndian.Uint16(b[4:]))))
		}
		v.buttons = mask
	}
	// SetEncodings: Raw is always used. Keys, clipboard, fences and the rest change nothing here.
	return nil
}

// request merges r into the pending request and wakes the write loop.
func (v *viewer) request(r request) {
	v.mu.Lock()
	if p := v.pending; p != nil { // a new value: the write loop may be reading the old one
		r = request{area: p.area.Union(r.area), incremental: p.incremental && r.incremental}
	}
	v.pending = &r
	v.mu.Unlock()
	select {
	case v.kick <- struct{}{}:
	default:
	}
}

// writeLoop answers requests: a non-incremental one at once with the whole area, an
// incremental one with what changed, once something has (an idle desktop sends nothing).
func (v *viewer) writeLoop(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-v.kick:
		}
		for {
			v.mu.Lock()
			req, pf := v.pending, v.pf
			v.mu.Unlock()
			if req == nil {
				break
			}
			pic, changed := v.d.picture()
			rects := []image.Rectangle{req.area}
			if req.incremental {
				rects = changedTiles(pic, v.sent, req.area)
			}
			if len(rects) > 0 || req.area.Empty() {
				v.mu.Lock()
				if v.pending == req {
					v.pending = nil
				}
				v.mu.Unlock()
				if err := v.update(pic, pf, rects); err != nil {
					return err
				}
				continue
			}
			// Nothing changed: wait for the clock, a click, a newer request or the end.
			t := v.d.clock.NewTimer(v.d.nextSecond())
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.Chan():
			case <-changed:
			case <-v.kick:
			}
			t.Stop()
		}
	}
}

// update sends one FramebufferUpdate of rects from pic, Raw, and remembers what was sent.
func (v *viewer) update(pic *image.RGBA, pf pixelFormat, rects []image.Rectangle) error {
	var nonEmpty []image.Rectangle
	for _, r := range rects {
		if !r.Empty() {
			nonEmpty = append(nonEmpty, r)
		}
	}
	out := append(v.out[:0], 0, 0, 0, 0)
	binary.BigEndian.PutUint16(out[2:], uint16(len(nonEmpty)))
	if v.sent == nil {
		v.sent = image.NewRGBA(pic.Rect)
		draw.Draw(v.sent, v.sent.Rect, image.Transparent, image.Point{}, draw.Src)
	}
	for _, r := range nonEmpty {
		for _, n := range []int{r.Min.X, r.Min.Y, r.Dx(), r.Dy()} {
			out = binary.BigEndian.AppendUint16(out, uint16(n))
		}
		out = binary.BigEndian.AppendUint32(out, 0) // Raw
		out = pf.appendRaw(out, pic, r)
		draw.Draw(v.sent, r, pic, r.Min, draw.Src)
	}
	if cap(out) > 1<<20 {
		v.out = nil // a whole screen's buffer is not kept between updates
	} else {
		v.out = out
	}
	return v.write(out)
}

func (v *viewer) write(b []byte) error {
	if err := v.conn.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return wrap("writing to the viewer", err)
	}
	if _, err := v.conn.Write(b); err != nil {
		return wrap("writing to the viewer", err)
	}
	return nil
}
