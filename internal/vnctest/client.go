package vnctest

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/color"
	"io"
)

// Bounds on what the client accepts from a server, so a broken server fails the test instead
// of exhausting memory.
const (
	maxName      = 64 << 10
	maxCutText   = 1 << 20
	maxDimension = 8192
)

// PixelFormat is RFB's PIXEL_FORMAT, true colour only.
type PixelFormat struct {
	BPP, Depth                      uint8
	BigEndian                       bool
	RedMax, GreenMax, BlueMax       uint16
	RedShift, GreenShift, BlueShift uint8
}

// PixelFormat32 is 32 bpp, depth 24, little-endian, red in bits 16-23: what noVNC asks for.
var PixelFormat32 = PixelFormat{BPP: 32, Depth: 24, RedMax: 255, GreenMax: 255, BlueMax: 255, RedShift: 16, GreenShift: 8, BlueShift: 0}

// PixelFormat16 is 16 bpp RGB565, little-endian.
var PixelFormat16 = PixelFormat{BPP: 16, Depth: 16, RedMax: 31, GreenMax: 63, BlueMax: 31, RedShift: 11, GreenShift: 5, BlueShift: 0}

// Client is a minimal RFB 3.8 client for tests: security None, Raw rectangles, a framebuffer.
// It is not safe for concurrent use.
type Client struct {
	w   io.Writer
	r   *bufio.Reader
	pf  PixelFormat
	fb  *image.RGBA
	buf []byte
	// Name is the desktop's name from ServerInit.
	Name string
}

// NewClient speaks RFB over rw; call Handshake first.
func NewClient(rw io.ReadWriter) *Client {
	return &Client{w: rw, r: bufio.NewReaderSize(rw, 64<<10)}
}

// Handshake runs RFB 3.8 (3.3 with a server that speaks only that) with security None and a
// shared ClientInit, and returns ServerInit's width, height and name.
func (c *Client) Handshake() (width, height int, name string, err error) {
	banner := make([]byte, 12)
	if _, err := io.ReadFull(c.r, banner); err != nil {
		return 0, 0, "", fmt.Errorf("reading protocol version: %w", err)
	}
	if string(banner[:8]) != "RFB 003." {
		return 0, 0, "", fmt.Errorf("not an RFB server: %q", banner)
	}
	if string(banner) == "RFB 003.003\n" {
		// A 3.3 server (TigerVNC answers so when it refuses a blacklisted host) chooses itself.
		if err := c.security33(); err != nil {
			return 0, 0, "", err
		}
	} else if err := c.security38(); err != nil {
		return 0, 0, "", err
	}
	if _, err := c.w.Write([]byte{1}); err != nil {
		return 0, 0, "", fmt.Errorf("writing ClientInit: %w", err)
	}
	var si [24]byte
	if _, err := io.ReadFull(c.r, si[:]); err != nil {
		return 0, 0, "", fmt.Errorf("reading ServerInit: %w", err)
	}
	width, height = int(binary.BigEndian.Uint16(si[0:])), int(binary.BigEndian.Uint16(si[2:]))
	if width > maxDimension || height > maxDimension {
		return 0, 0, "", fmt.Errorf("framebuffer %dx%d too big", width, height)
	}
	c.pf = decodePixelFormat(si[4:20])
	nameLen := binary.BigEndian.Uint32(si[20:])
	if nameLen > maxName {
		return 0, 0, "", fmt.Errorf("desktop name of %d bytes", nameLen)
	}
	nb := make([]byte, nameLen)
	if _, err := io.ReadFull(c.r, nb); err != nil {
		return 0, 0, "", fmt.Errorf("reading desktop name: %w", err)
	}
	c.Name = string(nb)
	c.fb = image.NewRGBA(image.Rect(0, 0, width, height))
	return width, height, c.Name, nil
}

// security38 runs RFB 3.8's security negotiation, choosing None.
func (c *Client) security38() error {
	if _, err := c.w.Write([]byte("RFB 003.008\n")); err != nil {
		return fmt.Errorf("writing protocol version: %w", err)
	}
	n, err := c.r.ReadByte()
	if err != nil {
		return fmt.Errorf("reading security types: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("server refused: %s", c.reason())
	}
	types := make([]byte, n)
	if _, err := io.ReadFull(c.r, types); err != nil {
		return fmt.Errorf("reading security types: %w", err)
	}
	if !containsByte(types, 1) {
		return fmt.Errorf("server does not offer security None: %v", types)
	}
	if _, err := c.w.Write([]byte{1}); err != nil {
		return fmt.Errorf("choosing security: %w", err)
	}
	var result [4]byte
	if _, err := io.ReadFull(c.r, result[:]); err != nil {
		return fmt.Errorf("reading security result: %w", err)
	}
	if binary.BigEndian.Uint32(result[:]) != 0 {
		return fmt.Errorf("security failed: %s", c.reason())
	}
	return nil
}

// security33 runs RFB 3.3's, where the server chooses; only None is accepted.
func (c *Client) security33() error {
	if _, err := c.w.Write([]byte("RFB 003.003\n")); err != nil {
		return fmt.Errorf("writing protocol version: %w", err)
	}
	var sec [4]byte
	if _, err := io.ReadFull(c.r, sec[:]); err != nil {
		return fmt.Errorf("reading security type: %w", err)
	}
	switch t := binary.BigEndian.Uint32(sec[:]); t {
	case 0:
		return fmt.Errorf("server refused: %s", c.reason())
	case 1:
		return nil
	default:
		return fmt.Errorf("server chose security type %d, not None", t)
	}
}

// reason reads a failure reason string (u32 length, text), bounded.
func (c *Client) reason() string {
	var l [4]byte
	if _, err := io.ReadFull(c.r, l[:]); err != nil {
		return "(no reason: " + err.Error() + ")"
	}
	n := min(binary.BigEndian.Uint32(l[:]), 4096)
	b := make([]byte, n)
	if _, err := io.ReadFull(c.r, b); err != nil {
		return "(reason cut: " + err.Error() + ")"
	}
	return string(b)
}

func containsByte(b []byte, v byte) bool {
	for _, x := range b {
		if x == v {
			return true
		}
	}
	return false
}

// SetPixelFormat asks the server for pf; later updates are decoded with it.
func (c *Client) SetPixelFormat(pf PixelFormat) error {
	msg := make([]byte, 20)
	msg[0] = 0
	encodePixelFormat(msg[4:], pf)
	if _, err := c.w.Write(msg); err != nil {
		return fmt.Errorf("writing SetPixelFormat: %w", err)
	}
	c.pf = pf
	return nil
}

// SetPixelFormat32 asks for PixelFormat32.
func (c *Client) SetPixelFormat32() error { return c.SetPixelFormat(PixelFormat32) }

// SetEncodings sends SetEncodings with encs, in order.
func (c *Client) SetEncodings(encs ...int32) error {
	msg := make([]byte, 4, 4+4*len(encs))
	msg[0] = 2
	binary.BigEndian.PutUint16(msg[2:], uint16(len(encs)))
	for _, e := range encs {
		msg = binary.BigEndian.AppendUint32(msg, uint32(e))
	}
	if _, err := c.w.Write(msg); err != nil {
		return fmt.Errorf("writing SetEncodings: %w", err)
	}
	return nil
}

// RequestUpdate sends a FramebufferUpdateRequest.
func (c *Client) RequestUpdate(incremental bool, x, y, w, h int) error {
	msg := []byte{3, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	if incremental {
		msg[1] = 1
	}
	binary.BigEndian.PutUint16(msg[2:], uint16(x))
	binary.BigEndian.PutUint16(msg[4:], uint16(y))
	binary.BigEndian.PutUint16(msg[6:], uint16(w))
	binary.BigEndian.PutUint16(msg[8:], uint16(h))
	if _, err := c.w.Write(msg); err != nil {
		return fmt.Errorf("writing FramebufferUpdateRequest: %w", err)
	}
	return nil
}

// Pointer sends a PointerEvent; mask bit 0 is the left button.
func (c *Client) Pointer(x, y int, mask uint8) error {
	msg := []byte{5, mask, 0, 0, 0, 0}
	binary.BigEndian.PutUint16(msg[2:], uint16(x))
	binary.BigEndian.PutUint16(msg[4:], uint16(y))
	if _, err := c.w.Write(msg); err != nil {
		return fmt.Errorf("writing PointerEvent: %w", err)
	}
	return nil
}

// Key sends a KeyEvent.
func (c *Client) Key(down bool, keysym uint32) error {
	msg := []byte{4, 0, 0, 0, 0, 0, 0, 0}
	if down {
		msg[1] = 1
	}
	binary.BigEndian.PutUint32(msg[4:], keysym)
	if _, err := c.w.Write(msg); err != nil {
		return fmt.Errorf("writing KeyEvent: %w", err)
	}
	return nil
}

// Pixel returns the framebuffer's colour at (x, y), scaled to 8 bits a channel.
func (c *Client) Pixel(x, y int) color.RGBA {
	if c.fb == nil {
		return color.RGBA{}
	}
	return c.fb.RGBAAt(x, y)
}

// Framebuffer returns the client's framebuffer (nil before Handshake); it changes with each
// ReadUpdate.
func (c *Client) Framebuffer() *image.RGBA { return c.fb }

// ReadUpdate reads server messages until a FramebufferUpdate, applies its Raw rectangles and
// returns them. Bell, ServerCutText, SetColourMapEntries, EndOfContinuousUpdates and
// ServerFence are skipped; a DesktopSize pseudo-rectangle resizes the framebuffer.
func (c *Client) ReadUpdate() ([]image.Rectangle, error) {
	if c.fb == nil {
		return nil, errors.New("ReadUpdate before Handshake")
	}
	for {
		t, err := c.r.ReadByte()
		if err != nil {
			return nil, fmt.Errorf("reading server message: %w", err)
		}
		switch t {
		case 0:
			return c.readRects()
		case 1: // SetColourMapEntries: padding, first colour, count, 6 bytes each
			var h [5]byte
			if _, err := io.ReadFull(c.r, h[:]); err != nil {
				return nil, fmt.Errorf("reading SetColourMapEntries: %w", err)
			}
			if err := c.skip(6 * int64(binary.BigEndian.Uint16(h[3:]))); err != nil {
				return nil, err
			}
		case 2: // Bell
		case 3: // ServerCutText: padding, length, text
			var h [7]byte
			if _, err := io.ReadFull(c.r, h[:]); err != nil {
				return nil, fmt.Errorf("reading ServerCutText: %w", err)
			}
			n := int64(int32(binary.BigEndian.Uint32(h[3:])))
			if n < 0 {
				n = -n
			}
			if n > maxCutText {
				return nil, fmt.Errorf("ServerCutText of %d bytes", n)
			}
			if err := c.skip(n); err != nil {
				return nil, err
			}
		case 150: // EndOfContinuousUpdates
		case 248: // ServerFence: padding, flags, length, payload
			var h [8]byte
			if _, err := io.ReadFull(c.r, h[:]); err != nil {
				return nil, fmt.Errorf("reading ServerFence: %w", err)
			}
			if err := c.skip(int64(h[7])); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("unsupported server message type %d", t)
		}
	}
}

func (c *Client) skip(n int64) error {
	if _, err := io.CopyN(io.Discard, c.r, n); err != nil {
		return fmt.Errorf("skipping %d bytes: %w", n, err)
	}
	return nil
}

// readRects reads a FramebufferUpdate after its type byte.
func (c *Client) readRects() ([]image.Rectangle, error) {
	var h [3]byte
	if _, err := io.ReadFull(c.r, h[:]); err != nil {
		return nil, fmt.Errorf("reading FramebufferUpdate: %w", err)
	}
	n := int(binary.BigEndian.Uint16(h[1:]))
	rects := make([]image.Rectangle, 0, n)
	for i := 0; i < n; i++ {
		var rh [12]byte
		if _, err := io.ReadFull(c.r, rh[:]); err != nil {
			return nil, fmt.Errorf("reading rectangle header: %w", err)
		}
		x, y := int(binary.BigEndian.Uint16(rh[0:])), int(binary.BigEndian.Uint16(rh[2:]))
		w, hh := int(binary.BigEndian.Uint16(rh[4:])), int(binary.BigEndian.Uint16(rh[6:]))
		enc := int32(binary.BigEndian.Uint32(rh[8:]))
		r := image.Rect(x, y, x+w, y+hh)
		switch enc {
		case 0:
			if !r.In(c.fb.Rect) {
				return nil, fmt.Errorf("rectangle %v outside the framebuffer %v", r, c.fb.Rect)
			}
			if err := c.readRaw(r); err != nil {
				return nil, err
			}
			rects = append(rects, r)
		case -223: // DesktopSize
			if w > maxDimension || hh > maxDimension {
				return nil, fmt.Errorf("desktop size %dx%d too big", w, hh)
			}
			c.fb = image.NewRGBA(image.Rect(0, 0, w, hh))
		default:
			return nil, fmt.Errorf("unsupported encoding %d", enc)
		}
	}
	return rects, nil
}

func (c *Client) readRaw(r image.Rectangle) error {
	bpp := int(c.pf.BPP) / 8
	row := r.Dx() * bpp
	if cap(c.buf) < row {
		c.buf = make([]byte, row)
	}
	buf := c.buf[:row]
	for y := r.Min.Y; y < r.Max.Y; y++ {
		if _, err := io.ReadFull(c.r, buf); err != nil {
			return fmt.Errorf("reading Raw pixels: %w", err)
		}
		pix := c.fb.Pix[c.fb.PixOffset(r.Min.X, y):c.fb.PixOffset(r.Max.X, y)]
		if c.pf == PixelFormat32 { // bytes B, G, R, unused
			for i := 0; i < len(pix); i += 4 {
				pix[i], pix[i+1], pix[i+2], pix[i+3] = buf[i+2], buf[i+1], buf[i], 255
			}
			continue
		}
		for x := r.Min.X; x < r.Max.X; x++ {
			p := c.pf.decode(buf[(x-r.Min.X)*bpp:])
			i := (x - r.Min.X) * 4
			pix[i], pix[i+1], pix[i+2], pix[i+3] = p.R, p.G, p.B, 255
		}
	}
	return nil
}

func (pf PixelFormat) decode(b []byte) color.RGBA {
	var v uint32
	switch pf.BPP {
	case 8:
		v = uint32(b[0])
	case 16:
		if pf.BigEndian {
			v = uint32(binary.BigEndian.Uint16(b))
		} else {
			v = uint32(binary.LittleEndian.Uint16(b))
		}
	default:
		if pf.BigEndian {
			v = binary.BigEndian.Uint32(b)
		} else {
			v = binary.LittleEndian.Uint32(b)
		}
	}
	scale := func(shift uint8, max uint16) uint8 {
		if max == 0 {
			return 0
		}
		return uint8((v >> shift & uint32(max)) * 255 / uint32(max))
	}
	return color.RGBA{scale(pf.RedShift, pf.RedMax), scale(pf.GreenShift, pf.GreenMax), scale(pf.BlueShift, pf.BlueMax), 255}
}

func decodePixelFormat(b []byte) PixelFormat {
	return PixelFormat{
		BPP: b[0], Depth: b[1], BigEndian: b[2] != 0,
		RedMax: binary.BigEndian.Uint16(b[4:]), GreenMax: binary.BigEndian.Uint16(b[6:]), BlueMax: binary.BigEndian.Uint16(b[8:]),
		RedShift: b[10], GreenShift: b[11], BlueShift: b[12],
	}
}

func encodePixelFormat(b []byte, pf PixelFormat) {
	b[0], b[1] = pf.BPP, pf.Depth
	if pf.BigEndian {
		b[2] = 1
	}
	b[3] = 1 // true colour
	binary.BigEndian.PutUint16(b[4:], pf.RedMax)
	binary.BigEndian.PutUint16(b[6:], pf.GreenMax)
	binary.BigEndian.PutUint16(b[8:], pf.BlueMax)
	b[10], b[11], b[12] = pf.RedShift, pf.GreenShift, pf.BlueShift
}
