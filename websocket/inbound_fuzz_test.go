package websocket

import (
	"encoding/binary"
	"testing"
)

// The frame parser takes whatever a browser sends, split anywhere: it must never panic, and
// it reports a protocol error or a close at most once per stream it stops on.
func FuzzParseClientFrames(f *testing.F) {
	closeFrame := clientFrame(0x88, binary.BigEndian.AppendUint16(nil, 1000), false)
	for _, seed := range [][]byte{
		clientFrame(0x81, []byte("hello"), false),
		clientFrame(0x89, []byte("ping"), false),
		append(clientFrame(0x01, make([]byte, 200), false), clientFrame(0x80, []byte("end"), false)...),
		clientFrame(0x82, make([]byte, 70000), false),
		closeFrame,
		clientFrame(0x81, []byte("x"), true),
		{0x81, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4},
		{0x88, 0x81, 0, 0, 0, 0, 7},
	} {
		f.Add(seed, uint8(3))
	}
	f.Fuzz(func(t *testing.T, data []byte, split uint8) {
		h := NewHubWithConfig(Config{MaxMessageSize: 4096, QueueSize: 1 << 10})
		c := newClient(h, nil, clientSpec{id: "fuzz", org: OrgContext{OrgID: "o"}})
		holdWriter(c) // answers (pongs) stay queued: there is no socket
		step := int(split)%16 + 1
		for len(data) > 0 {
			n := min(step, len(data))
			done, err := c.parse(data[:n])
			data = data[n:]
			if done || err != nil {
				return
			}
		}
	})
}
