package websocket

import (
	"encoding/binary"
	"errors"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// A browser sends almost nothing: pongs, now and then a close. Waiting for those in gorilla's
// reader parks a goroutine deep in its call chain with a 4 KiB stack and a read buffer, per
// connection, for the connection's whole life. A browser client on a plain TCP socket is
// therefore read here instead: on Linux one poller goroutine per hub waits for all such
// sockets (inbound_poll_linux.go), elsewhere each waits in the runtime's poller on a goroutine
// of its own with no buffer and a shallow stack (inbound_unix.go); what arrived is read into a
// pooled buffer and the frames (RFC 6455 5, client to server) are parsed with a small state
// machine. gorilla still does the handshake, and reads connections this cannot (TLS).

// maxControlPayload is the largest payload of a control frame (RFC 6455 5.5).
const maxControlPayload = 125

// errRateExceeded is a browser sending more frames than Config.ClientMessageRate allows; it
// is answered with 1008.
var errRateExceeded = errors.New("message rate exceeded")

// errProtocol is a frame a browser may not send; it is answered with 1002.
type errProtocol string

func (e errProtocol) Error() string { return string(e) }

// inbound is the state of a raw reader between reads: the frame being parsed. Its fields are
// packed: every idle browser connection holds one.
type inbound struct {
	// The header being assembled (at most 14 bytes: 2, 8 of length, 4 of mask).
	hdr    [14]byte
	hdrLen uint8
	// The frame whose payload is being read.
	inFrame bool
	op      byte
	fin     bool
	maskPos uint8 // index into mask of the next payload byte, modulo 4
	// fragmented: a data message spans frames and more are to come.
	fragmented bool
	mask       [4]byte
	remaining  uint64
	msgLen     uint64 // the data message's length so far
	control    []byte // a control frame's payload, unmasked
	rate       frameRate
	pollState  // where a poller reads the socket (inbound_poll_linux.go)
}

// frameRate counts a connection's frames in the current second (a fixed window: cheaper than
// a token bucket, and a browser that sends nothing, as browsers here do, never nears it).
type frameRate struct {
	second uint32 // Unix time, modulo 2^32
	frames uint32
}

// exceeded counts one frame at now and reports whether the second's count passed limit
// (limit ≤ 0: never).
func (f *frameRate) exceeded(now time.Time, limit int) bool {
	if limit <= 0 {
		return false
	}
	if sec := uint32(now.Unix()); sec != f.second {
		f.second, f.frames = sec, 0
	}
	f.frames++
	return f.frames > uint32(limit)
}

// parse consumes data: headers, then payloads, which are discarded but for control frames'.
func (c *Client) parse(data []byte) (done bool, err error) {
	in := &c.in
	for len(data) > 0 {
		if !in.inFrame {
			if in.hdrLen < 2 {
				k := copy(in.hdr[in.hdrLen:2], data)
				in.hdrLen += uint8(k)
				data = data[k:]
				if in.hdrLen < 2 {
					continue
				}
				if in.hdr[1]&0x80 == 0 {
					return false, errProtocol("client frame not masked")
				}
			}
			want := headerSize(in.hdr[1])
			k := copy(in.hdr[in.hdrLen:want], data)
			in.hdrLen += uint8(k)
			data = data[k:]
			if int(in.hdrLen) < want {
				continue
			}
			if err := c.startFrame(); err != nil {
				return false, err
			}
			if in.remaining > 0 {
				continue
			}
		} else {
			k := min(uint64(len(data)), in.remaining)
			if in.op >= websocket.CloseMessage {
				for _, b := range data[:k] {
					in.control = append(in.control, b^in.mask[in.maskPos&3])
					in.maskPos++
				}
			}
			data = data[k:]
			in.remaining -= k
			if in.remaining > 0 {
				continue
			}
		}
		if done, err := c.endFrame(); done || err != nil {
			return done, err
		}
	}
	return false, nil
}

// headerSize is the size of a masked frame's header given its second byte.
func headerSize(b1 byte) int {
	switch b1 & 0x7f {
	case len16:
		return 2 + 2 + 4
	case len64:
		return 2 + 8 + 4
	default:
		return 2 + 4
	}
}

// startFrame decodes a complete header and checks it against RFC 6455 5.2.
func (c *Client) startFrame() error {
	in := &c.in
	b0, b1 := in.hdr[0], in.hdr[1]
	in.hdrLen = 0
	if b0&0x70 != 0 {
		return errProtocol("reserved bits set")
	}
	in.op, in.fin = b0&0x0f, b0&finBit != 0
	// Messages, pings and pongs count (a close never does; continuations are bounded by the
	// message size).
	if in.op != 0 && in.op != websocket.CloseMessage {
		c.hub.metrics.messagesIn.Inc()
		if in.rate.exceeded(time.Now(), c.hub.cfg.ClientMessageRate) {
			return errRateExceeded
		}
	}
	var length uint64
	rest := in.hdr[2:]
	switch n := b1 & 0x7f; n {
	case len16:
		length, rest = uint64(binary.BigEndian.Uint16(rest)), rest[2:]
	case len64:
		length, rest = binary.BigEndian.Uint64(rest), rest[8:]
		if length>>63 != 0 {
			return errProtocol("frame length too large")
		}
	default:
		length = uint64(n)
	}
	copy(in.mask[:], rest[:4])
	in.maskPos, in.remaining, in.inFrame = 0, length, true
	switch in.op {
	case websocket.CloseMessage, websocket.PingMessage, websocket.PongMessage:
		if !in.fin || length > maxControlPayload {
			return errProtocol("control frame fragmented or longer than 125 bytes")
		}
		if length > 0 {
			in.control = make([]byte, 0, length)
		}
	case 0: // continuation
		if !in.fragmented {
			return errProtocol("continuation frame outside a message")
		}
		c.messageBytes(length)
		in.fragmented = !in.fin
	case websocket.TextMessage, websocket.BinaryMessage:
		if in.fragmented {
			return errProtocol("new message inside a fragmented message")
		}
		in.msgLen = 0
		c.messageBytes(length)
		in.fragmented = !in.fin
	default:
		return errProtocol("unknown opcode")
	}
	return nil
}

// messageBytes counts a data frame's payload against the message size limit.
func (c *Client) messageBytes(n uint64) {
	in := &c.in
	in.msgLen += n
	if in.msgLen > uint64(c.hub.cfg.MaxMessageSize) {
		c.closeWith(websocket.CloseMessageTooBig, "message too big", "too_big")
	}
}

// endFrame acts on a frame whose payload has been read: pings are answered, a close frame is
// echoed and ends the reading.
func (c *Client) endFrame() (done bool, err error) {
	in := &c.in
	in.inFrame = false
	defer func() { in.control = nil }() // an idle client keeps no payload
	switch in.op {
	case websocket.PingMessage:
		c.out.offer(controlFrame(opPong, in.control))
	case websocket.CloseMessage:
		code, text := websocket.CloseNoStatusReceived, ""
		switch len(in.control) {
		case 0:
		case 1:
			return false, errProtocol("close frame with a one-byte payload")
		default:
			code, text = int(binary.BigEndian.Uint16(in.control)), string(in.control[2:])
			if !validCloseCode(code) {
				return false, errProtocol("invalid close code")
			}
			if !utf8.ValidString(text) {
				return false, errProtocol("close reason is not UTF-8")
			}
		}
		c.closeWith(code, "", "client_closed") // the peer's code is echoed (RFC 6455 5.5.1)
		return true, nil
	}
	return false, nil
}

// validCloseCode reports whether a peer may send code (RFC 6455 7.4).
func validCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	default:
		return code >= 3000 && code <= 4999
	}
}
