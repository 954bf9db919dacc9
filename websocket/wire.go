package websocket

import (
	"encoding/binary"

	"github.com/gorilla/websocket"
)

// A browser connection's outbound frames are encoded here, once per message, rather than by
// gorilla's writer on every connection: a broadcast to N clients shares one encoded frame, and
// a client's writer can hand several queued frames to one writev(2) without joining their
// messages (PROTOCOL.md 1: one message per frame). Server frames are never masked and this
// package never compresses, so the frame of a message is the same bytes for every receiver.

// frameHeaderRoom is the longest header of an unmasked frame.
const frameHeaderRoom = 10

const (
	finBit     = 0x80
	opText     = websocket.TextMessage
	opClose    = websocket.CloseMessage
	opPing     = websocket.PingMessage
	opPong     = websocket.PongMessage
	len16      = 126
	len64      = 127
	maxLen7Bit = 125
)

// pingFrame is every ping this package sends: a ping with no payload.
var pingFrame = []byte{finBit | opPing, 0}

// textFrame returns payload as one final, unmasked text frame.
func textFrame(payload []byte) []byte {
	return encodeFrame(opText, payload)
}

// controlFrame returns a close, ping or pong frame carrying payload (at most 125 bytes).
func controlFrame(op int, payload []byte) []byte {
	if len(payload) > maxLen7Bit {
		payload = payload[:maxLen7Bit]
	}
	return encodeFrame(op, payload)
}

func encodeFrame(op int, payload []byte) []byte {
	out := make([]byte, frameHeaderRoom, frameHeaderRoom+len(payload))
	return sealFrame(op, append(out, payload...))
}

// sealFrame writes the header of a frame whose payload follows frameHeaderRoom reserved bytes
// in buf, and returns the frame: builders that append a payload behind the room get a frame
// with one allocation.
func sealFrame(op int, buf []byte) []byte {
	n := len(buf) - frameHeaderRoom
	var start int
	switch {
	case n <= maxLen7Bit:
		start = frameHeaderRoom - 2
		buf[start+1] = byte(n)
	case n <= 0xffff:
		start = frameHeaderRoom - 4
		buf[start+1] = len16
		binary.BigEndian.PutUint16(buf[start+2:], uint16(n))
	default:
		start = 0
		buf[1] = len64
		binary.BigEndian.PutUint64(buf[2:], uint64(n))
	}
	buf[start] = finBit | byte(op)
	return buf[start:]
}
