package rfb

import (
	"bytes"
	"testing"
)

// FuzzClientStream feeds arbitrary bytes, split at arbitrary points, under arbitrary options.
// The stream must never panic, never hold more than the largest unit, and what it emits must
// read back as the same units (a rewritten unit is a fixed point of its rewrite).
func FuzzClientStream(f *testing.F) {
	stream, _ := allMessages()
	auth := bytes.Repeat([]byte{1}, 16)
	seeds := [][]byte{
		stream,
		cat(v38, []byte{2}, auth, []byte{0}, mEncodings, mUpdateIncr, mCutExt),
		cat(v37, []byte{1, 0}, mFence, mQEMUFormat),
		cat(v38, []byte{16}, []byte("opaque tight bytes")),
		cat(hs38, []byte{6, 0, 0, 0}, s32(-1<<31)),
		cat(hs38, []byte{2, 0}, u16(1025)),
		cat(hs38, []byte{255, 1}, u16(2), []byte{1}),
		[]byte("GET / HTTP/1.1\r\n"),
	}
	for i, s := range seeds {
		f.Add(uint8(i), uint32(0x0102), s)
	}
	f.Add(uint8(3), uint32(0x02), cat(v33, auth, []byte{1}, mKey))
	f.Fuzz(func(t *testing.T, flags uint8, security uint32, data []byte) {
		opts := Options{ViewOnly: flags&1 != 0, StripContinuousUpdates: flags&2 != 0, MaxClipboard: int(flags>>2) * 4}
		server := cat(v33, u32(security&0x1f))
		bound := max(8+opts.MaxClipboard, 4+4*MaxEncodings, 8+16*MaxScreens, 9+MaxFencePayload)
		if opts.MaxClipboard == 0 {
			bound = max(bound, 8+DefaultMaxClipboard)
		}

		s := NewClientStream(opts)
		s.ServerBytes(server)
		var units []unit
		rest := data
		for step := 0; len(rest) > 0; step++ {
			n := 1 + (step*7+int(flags))%(len(rest)) // split points vary with the input
			err := s.Write(rest[:n], func(m Message) error {
				if len(m.Bytes) == 0 {
					t.Fatalf("empty %v unit", m.Kind)
				}
				units = append(units, unit{m.Kind, m.Incremental, append([]byte(nil), m.Bytes...)})
				return nil
			})
			if h := s.held(); h > bound {
				t.Fatalf("holds %d bytes (bound %d)", h, bound)
			}
			if err != nil {
				break
			}
			rest = rest[n:]
		}

		// The emitted bytes, written again in one piece, are the same units and no error.
		var again []byte
		for _, u := range units {
			again = append(again, u.bytes...)
		}
		got, err := feed(t, opts, server, again)
		if err != nil {
			t.Fatalf("re-reading emitted bytes: %v", err)
		}
		want := joinOpaque(units)
		got = joinOpaque(got)
		if len(got) != len(want) {
			t.Fatalf("re-read %d units, first pass %d", len(got), len(want))
		}
		for i := range want {
			if got[i].kind != want[i].kind || got[i].incr != want[i].incr || !bytes.Equal(got[i].bytes, want[i].bytes) {
				t.Fatalf("unit %d differs: %v %x vs %v %x", i, got[i].kind, got[i].bytes, want[i].kind, want[i].bytes)
			}
		}
	})
}
