package rfb

import (
	"encoding/binary"
	"fmt"
	"sync"
)

// state is where the client stream is in the protocol.
type state uint8

const (
	stVersion    state = iota // the 12-byte ProtocolVersion
	stSecType                 // 3.7/3.8: the security type the client chose (1 byte)
	stSec33                   // 3.3: the server chooses; waiting for it through ServerBytes
	stVNCAuth                 // VNC authentication's 16-byte response
	stClientInit              // the 1-byte ClientInit
	stMessages                // client-to-server messages
	stOpaque                  // a security type the stream cannot read: passthrough
	stEnded                   // the server refused the connection; the client has nothing more to say
)

// serverHandshake is how many of the server's bytes are looked at: its ProtocolVersion (12)
// and, for RFB 3.3, the security type it chose (4).
const serverHandshake = 16

// retainLimit caps the capacity of the unit buffer kept between units, so one big clipboard
// does not pin a megabyte for the stream's life.
const retainLimit = 64 << 10

// ClientStream reads a viewer's RFB stream unit by unit. Write must be called from one
// goroutine at a time; ServerBytes may be called from another.
type ClientStream struct {
	opts Options

	// Written only by Write (writeMu serializes concurrent callers).
	writeMu sync.Mutex
	st      state
	buf     []byte // bytes of the current unit, when it arrived split
	scratch []byte // rewritten units
	err     error  // final error

	srvMu  sync.Mutex
	srv    [serverHandshake]byte
	srvLen int
}

// NewClientStream starts reading a viewer's stream at its ProtocolVersion.
func NewClientStream(opts Options) *ClientStream {
	if opts.MaxClipboard <= 0 {
		opts.MaxClipboard = DefaultMaxClipboard
	}
	return &ClientStream{opts: opts}
}

// ServerBytes shows the stream what the server sent the viewer, in order; it is read only during
// the handshake (an RFB 3.3 server chooses the security type itself) and ignored after. Call it
// before the bytes reach the viewer, so the stream knows the server's choice by the time the
// viewer answers it.
func (s *ClientStream) ServerBytes(p []byte) {
	s.srvMu.Lock()
	defer s.srvMu.Unlock()
	if s.srvLen < serverHandshake {
		s.srvLen += copy(s.srv[s.srvLen:], p)
	}
}

// serverSecurity returns the RFB 3.3 server's chosen security type, once it has been seen.
func (s *ClientStream) serverSecurity() (uint32, bool) {
	s.srvMu.Lock()
	defer s.srvMu.Unlock()
	if s.srvLen < serverHandshake {
		return 0, false
	}
	return binary.BigEndian.Uint32(s.srv[12:16]), true
}

// Write parses p, the viewer's next bytes, calling emit for each complete unit in order; a unit
// split across writes is held until complete (never more than one unit's bytes). An error,
// from parsing or from emit, is final. Safe for ServerBytes and Write from two goroutines.
func (s *ClientStream) Write(p []byte, emit func(Message) error) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.err != nil {
		return s.err
	}
	if err := s.write(p, emit); err != nil {
		s.err = err
		s.buf = nil
		return err
	}
	return nil
}

func (s *ClientStream) write(p []byte, emit func(Message) error) error {
	for len(p) > 0 {
		if err := s.enterSec33(); err != nil {
			return err
		}
		if s.st == stOpaque {
			return emit(Message{Kind: KindOpaque, Bytes: p})
		}
		if len(s.buf) == 0 {
			n, err := s.unitLen(p)
			if err != nil {
				return err
			}
			if n > 0 && n <= len(p) {
				if err := s.handle(p[:n], emit); err != nil {
					return err
				}
				p = p[n:]
				continue
			}
		}
		// The unit is split: gather it in buf, learning its length from its header first.
		n, err := s.unitLen(s.buf)
		if err != nil {
			return err
		}
		for n == 0 && len(p) > 0 {
			s.buf = append(s.buf, p[0])
			p = p[1:]
			if n, err = s.unitLen(s.buf); err != nil {
				return err
			}
		}
		if n == 0 {
			return nil
		}
		take := min(n-len(s.buf), len(p))
		s.buf = append(s.buf, p[:take]...)
		p = p[take:]
		if len(s.buf) < n {
			return nil
		}
		err = s.handle(s.buf, emit)
		if cap(s.buf) > retainLimit {
			s.buf = nil
		} else {
			s.buf = s.buf[:0]
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// enterSec33 moves an RFB 3.3 stream past the server's security choice once it is known.
func (s *ClientStream) enterSec33() error {
	if s.st != stSec33 {
		return nil
	}
	sec, ok := s.serverSecurity()
	if !ok {
		return fmt.Errorf("%w: client bytes before the RFB 3.3 server chose a security type", ErrInvalidHandshake)
	}
	return s.afterSecurity(sec)
}

// afterSecurity moves the stream past the chosen security type.
func (s *ClientStream) afterSecurity(sec uint32) error {
	switch sec {
	case 0:
		s.st = stEnded
	case 1:
		s.st = stClientInit
	case 2:
		s.st = stVNCAuth
	default:
		if s.opts.ViewOnly {
			return fmt.Errorf("%w: %d", ErrUnsupportedSecurity, sec)
		}
		s.st = stOpaque
	}
	return nil
}

// unitLen returns the length of the unit that b starts, or 0 when b is too short to tell.
// It rejects what cannot be read as soon as the header shows it, before any payload is held.
func (s *ClientStream) unitLen(b []byte) (int, error) {
	switch s.st {
	case stVersion:
		return 12, nil
	case stSecType, stClientInit:
		return 1, nil
	case stVNCAuth:
		return 16, nil
	case stEnded:
		return 0, fmt.Errorf("%w: client bytes after the server refused the connection", ErrInvalidHandshake)
	case stMessages:
		return s.messageLen(b)
	}
	return 0, fmt.Errorf("%w: unexpected state %d", ErrInvalidHandshake, s.st)
}

// messageLen returns the length of the client message b starts, or 0 when b is too short.
func (s *ClientStream) messageLen(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	switch t := b[0]; t {
	case msgSetPixelFormat:
		return 20, nil
	case msgSetEncodings:
		if len(b) < 4 {
			return 0, nil
		}
		n := int(binary.BigEndian.Uint16(b[2:4]))
		if n > MaxEncodings {
			return 0, fmt.Errorf("%w: SetEncodings with %d encodings (at most %d)", ErrTooLong, n, MaxEncodings)
		}
		return 4 + 4*n, nil
	case msgUpdateRequest, msgContinuousUpdates:
		return 10, nil
	case msgKey:
		return 8, nil
	case msgPointer:
		return 6, nil
	case msgCutText:
		if len(b) < 8 {
			return 0, nil
		}
		n := int64(int32(binary.BigEndian.Uint32(b[4:8])))
		if n < 0 {
			n = -n // the extended form: the length's absolute value
		}
		if n > int64(s.opts.MaxClipboard) {
			return 0, fmt.Errorf("%w: ClientCutText of %d bytes (at most %d)", ErrTooLong, n, s.opts.MaxClipboard)
		}
		return 8 + int(n), nil
	case msgFence:
		if len(b) < 9 {
			return 0, nil
		}
		n := int(b[8])
		if n > MaxFencePayload {
			return 0, fmt.Errorf("%w: ClientFence payload of %d bytes (at most %d)", ErrTooLong, n, MaxFencePayload)
		}
		return 9 + n, nil
	case msgXvp:
		return 4, nil
	case msgSetDesktopSize:
		if len(b) < 8 {
			return 0, nil
		}
		n := int(b[6])
		if n > MaxScreens {
			return 0, fmt.Errorf("%w: SetDesktopSize with %d screens (at most %d)", ErrTooLong, n, MaxScreens)
		}
		return 8 + 16*n, nil
	case msgQEMU:
		return qemuLen(b)
	default:
		return 0, fmt.Errorf("%w: message type %d", ErrUnsupportedMessage, t)
	}
}

// qemuLen sizes QEMU's client messages: extended key events and audio control.
func qemuLen(b []byte) (int, error) {
	if len(b) < 2 {
		return 0, nil
	}
	switch b[1] {
	case 0: // extended key event
		return 12, nil
	case 1: // audio: a u16 operation; operation 2 (set format) carries 6 more bytes
		if len(b) < 4 {
			return 0, nil
		}
		if binary.BigEndian.Uint16(b[2:4]) == 2 {
			return 10, nil
		}
		return 4, nil
	}
	return 0, fmt.Errorf("%w: QEMU submessage %d", ErrUnsupportedMessage, b[1])
}

// handle checks one complete unit, moves the state on and emits it.
func (s *ClientStream) handle(u []byte, emit func(Message) error) error {
	switch s.st {
	case stVersion:
		minor, err := parseVersion(u)
		if err != nil {
			return err
		}
		if minor >= 7 {
			s.st = stSecType
		} else {
			s.st = stSec33
		}
		return emit(Message{Kind: KindHandshake, Bytes: u})
	case stSecType:
		if u[0] == 0 {
			return fmt.Errorf("%w: security type 0 chosen", ErrInvalidHandshake)
		}
		if err := s.afterSecurity(uint32(u[0])); err != nil {
			return err
		}
		return emit(Message{Kind: KindHandshake, Bytes: u})
	case stVNCAuth:
		s.st = stClientInit
		return emit(Message{Kind: KindHandshake, Bytes: u})
	case stClientInit:
		s.st = stMessages
		if s.opts.ViewOnly && u[0] != 1 {
			s.scratch = append(s.scratch[:0], 1)
			return emit(Message{Kind: KindHandshake, Bytes: s.scratch})
		}
		return emit(Message{Kind: KindHandshake, Bytes: u})
	}
	return s.handleMessage(u, emit)
}

// parseVersion reads "RFB 003.00x\n" and returns x: 3 to 6 speak 3.3 (RFC 6143 7.1.1), 7 is
// 3.7 and 8 or 9 speak 3.8.
func parseVersion(u []byte) (int, error) {
	if string(u[:10]) != "RFB 003.00" || u[11] != '\n' || u[10] < '3' || u[10] > '9' {
		return 0, fmt.Errorf("%w: protocol version %q", ErrInvalidHandshake, u)
	}
	return int(u[10] - '0'), nil
}

// handleMessage emits one complete client message, rewritten when the options ask for it.
func (s *ClientStream) handleMessage(u []byte, emit func(Message) error) error {
	m := Message{Bytes: u}
	switch u[0] {
	case msgSetPixelFormat:
		m.Kind = KindSetPixelFormat
	case msgSetEncodings:
		m.Kind = KindSetEncodings
		if s.opts.StripContinuousUpdates {
			m.Bytes = s.stripContinuous(u)
		}
	case msgUpdateRequest:
		m.Kind = KindUpdateRequest
		m.Incremental = u[1] != 0
	case msgKey:
		m.Kind = KindKey
	case msgPointer:
		m.Kind = KindPointer
	case msgCutText:
		m.Kind = KindClipboard
	case msgContinuousUpdates:
		m.Kind = KindContinuousUpdates
	case msgFence:
		m.Kind = KindFence
	case msgXvp:
		m.Kind = KindXvp
	case msgSetDesktopSize:
		m.Kind = KindSetDesktopSize
	case msgQEMU:
		m.Kind = KindQEMU
	}
	return emit(m)
}

// stripContinuous returns SetEncodings u without the ContinuousUpdates pseudo-encoding; u itself
// when it does not list it.
func (s *ClientStream) stripContinuous(u []byte) []byte {
	const cu = uint32(0xFFFFFEC7) // -313 as a u32
	found := false
	for i := 4; i+4 <= len(u); i += 4 {
		if binary.BigEndian.Uint32(u[i:]) == cu {
			found = true
			break
		}
	}
	if !found {
		return u
	}
	out := append(s.scratch[:0], u[:4]...)
	for i := 4; i+4 <= len(u); i += 4 {
		if binary.BigEndian.Uint32(u[i:]) != cu {
			out = append(out, u[i:i+4]...)
		}
	}
	binary.BigEndian.PutUint16(out[2:4], uint16((len(out)-4)/4))
	s.scratch = out
	return out
}

// held is how many bytes of an incomplete unit the stream holds (for tests).
func (s *ClientStream) held() int {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	return len(s.buf)
}
