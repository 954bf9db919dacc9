package rfb

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
)

// unit is what a test expects one emitted Message to be.
type unit struct {
	kind  Kind
	incr  bool
	bytes []byte
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func u16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
func s32(v int32) []byte  { return u32(uint32(v)) }
func zeros(n int) []byte  { return make([]byte, n) }

var (
	v38 = []byte("RFB 003.008\n")
	v37 = []byte("RFB 003.007\n")
	v33 = []byte("RFB 003.003\n")
	// A 3.8 handshake with security None and a shared ClientInit.
	hs38 = cat(v38, []byte{1}, []byte{1})
)

func hsUnits(shared byte) []unit {
	return []unit{{KindHandshake, false, v38}, {KindHandshake, false, []byte{1}}, {KindHandshake, false, []byte{shared}}}
}

// Every client message, with its exact bytes.
var (
	mPixelFormat = cat([]byte{0, 0, 0, 0}, []byte{32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0}, zeros(3))
	mEncodings   = cat([]byte{2, 0}, u16(3), s32(0), s32(-223), s32(EncodingContinuousUpdates))
	mEncNoCU     = cat([]byte{2, 0}, u16(2), s32(0), s32(-223))
	mUpdateFull  = cat([]byte{3, 0}, u16(0), u16(0), u16(1024), u16(768))
	mUpdateIncr  = cat([]byte{3, 1}, u16(0), u16(0), u16(1024), u16(768))
	mKey         = cat([]byte{4, 1, 0, 0}, u32(0xff0d))
	mPointer     = cat([]byte{5, 1}, u16(10), u16(20))
	mCut         = cat([]byte{6, 0, 0, 0}, s32(5), []byte("hello"))
	mCutExt      = cat([]byte{6, 0, 0, 0}, s32(-8), u32(0x10000001), []byte("abcd"))
	mCU          = cat([]byte{150, 1}, u16(0), u16(0), u16(640), u16(480))
	mFence       = cat([]byte{248, 0, 0, 0}, u32(0x80000003), []byte{4}, []byte("ping"))
	mXvp         = []byte{250, 0, 1, 2}
	mDesktopSize = cat([]byte{251, 0}, u16(800), u16(600), []byte{2, 0}, zeros(32))
	mQEMUKey     = cat([]byte{255, 0}, u16(1), u32(0x61), u32(30))
	mQEMUAudio   = cat([]byte{255, 1}, u16(0))
	mQEMUFormat  = cat([]byte{255, 1}, u16(2), []byte{3, 2}, u32(44100))
)

func allMessages() ([]byte, []unit) {
	msgs := []unit{
		{KindSetPixelFormat, false, mPixelFormat},
		{KindSetEncodings, false, mEncodings},
		{KindUpdateRequest, false, mUpdateFull},
		{KindUpdateRequest, true, mUpdateIncr},
		{KindKey, false, mKey},
		{KindPointer, false, mPointer},
		{KindClipboard, false, mCut},
		{KindClipboard, false, mCutExt},
		{KindContinuousUpdates, false, mCU},
		{KindFence, false, mFence},
		{KindXvp, false, mXvp},
		{KindSetDesktopSize, false, mDesktopSize},
		{KindQEMU, false, mQEMUKey},
		{KindQEMU, false, mQEMUAudio},
		{KindQEMU, false, mQEMUFormat},
	}
	stream := append([]byte(nil), hs38...)
	for _, m := range msgs {
		stream = append(stream, m.bytes...)
	}
	return stream, append(hsUnits(1), msgs...)
}

// feed writes chunks to a new stream and returns the units it emitted and its error.
func feed(t *testing.T, opts Options, server []byte, chunks ...[]byte) ([]unit, error) {
	t.Helper()
	s := NewClientStream(opts)
	s.ServerBytes(server)
	var got []unit
	for _, c := range chunks {
		err := s.Write(c, func(m Message) error {
			got = append(got, unit{m.Kind, m.Incremental, append([]byte(nil), m.Bytes...)})
			return nil
		})
		if err != nil {
			return got, err
		}
	}
	return got, nil
}

func sameUnits(t *testing.T, got, want []unit) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d units %v, want %d %v", len(got), got, len(want), want)
	}
	for i := range want {
		if got[i].kind != want[i].kind || got[i].incr != want[i].incr || !bytes.Equal(got[i].bytes, want[i].bytes) {
			t.Fatalf("unit %d: got %v %v %x, want %v %v %x", i, got[i].kind, got[i].incr, got[i].bytes, want[i].kind, want[i].incr, want[i].bytes)
		}
	}
}

func TestEveryMessageWhole(t *testing.T) {
	stream, want := allMessages()
	got, err := feed(t, Options{}, nil, stream)
	if err != nil {
		t.Fatal(err)
	}
	sameUnits(t, got, want)
}

func TestEveryMessageSplitAtEveryByte(t *testing.T) {
	stream, want := allMessages()
	for cut := 1; cut < len(stream); cut++ {
		got, err := feed(t, Options{}, nil, stream[:cut], stream[cut:])
		if err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		sameUnits(t, got, want)
	}
	// One byte at a time: held bytes never exceed the unit being gathered.
	s := NewClientStream(Options{})
	var got []unit
	for i := range stream {
		if err := s.Write(stream[i:i+1], func(m Message) error {
			got = append(got, unit{m.Kind, m.Incremental, append([]byte(nil), m.Bytes...)})
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if h := s.held(); h >= len(mDesktopSize) {
			t.Fatalf("holds %d bytes at %d", h, i)
		}
	}
	sameUnits(t, got, want)
}

func TestHandshakeVersions(t *testing.T) {
	auth := bytes.Repeat([]byte{0xAB}, 16)
	tests := []struct {
		name   string
		server []byte
		in     []byte
		want   []unit
	}{
		{"3.7 none", nil, cat(v37, []byte{1, 0}, mPointer), []unit{{KindHandshake, false, v37}, {KindHandshake, false, []byte{1}}, {KindHandshake, false, []byte{0}}, {KindPointer, false, mPointer}}},
		{"3.8 vnc auth", nil, cat(v38, []byte{2}, auth, []byte{1}, mKey), []unit{{KindHandshake, false, v38}, {KindHandshake, false, []byte{2}}, {KindHandshake, false, auth}, {KindHandshake, false, []byte{1}}, {KindKey, false, mKey}}},
		{"3.3 none", cat(v38, u32(1)), cat(v33, []byte{1}, mXvp), []unit{{KindHandshake, false, v33}, {KindHandshake, false, []byte{1}}, {KindXvp, false, mXvp}}},
		{"3.3 vnc auth", cat(v33, u32(2)), cat(v33, auth, []byte{0}), []unit{{KindHandshake, false, v33}, {KindHandshake, false, auth}, {KindHandshake, false, []byte{0}}}},
		{"3.889 apple reads as 3.8", nil, cat([]byte("RFB 003.009\n"), []byte{1, 1}), []unit{{KindHandshake, false, []byte("RFB 003.009\n")}, {KindHandshake, false, []byte{1}}, {KindHandshake, false, []byte{1}}}},
		{"3.8 tight security passes through", nil, cat(v38, []byte{16}, []byte{1, 2, 3, 250, 99}), []unit{{KindHandshake, false, v38}, {KindHandshake, false, []byte{16}}, {KindOpaque, false, []byte{1, 2, 3, 250, 99}}}},
		{"3.3 VeNCrypt-like server choice passes through", cat(v33, u32(19)), cat(v33, []byte{7, 7}), []unit{{KindHandshake, false, v33}, {KindOpaque, false, []byte{7, 7}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for cut := 0; cut <= len(tc.in); cut++ {
				got, err := feed(t, Options{}, tc.server, tc.in[:cut], tc.in[cut:])
				if err != nil {
					t.Fatalf("cut %d: %v", cut, err)
				}
				// Opaque bytes may come in pieces; join them before comparing.
				sameUnits(t, joinOpaque(got), tc.want)
			}
		})
	}
}

func joinOpaque(us []unit) []unit {
	var out []unit
	for _, u := range us {
		if u.kind == KindOpaque && len(out) > 0 && out[len(out)-1].kind == KindOpaque {
			out[len(out)-1].bytes = append(out[len(out)-1].bytes, u.bytes...)
			continue
		}
		out = append(out, u)
	}
	return out
}

func TestViewOnly(t *testing.T) {
	in := cat(v38, []byte{1}, []byte{0}, mEncodings, mUpdateIncr)
	got, err := feed(t, Options{ViewOnly: true, StripContinuousUpdates: true}, nil, in)
	if err != nil {
		t.Fatal(err)
	}
	want := append(hsUnits(1), unit{KindSetEncodings, false, mEncNoCU}, unit{KindUpdateRequest, true, mUpdateIncr})
	sameUnits(t, got, want)

	// Without stripping, SetEncodings passes unchanged; ClientInit stays as sent.
	got, err = feed(t, Options{}, nil, cat(v38, []byte{1}, []byte{0}, mEncodings))
	if err != nil {
		t.Fatal(err)
	}
	sameUnits(t, got, append(hsUnits(0), unit{KindSetEncodings, false, mEncodings}))

	for _, sec := range []byte{5, 16, 19, 30} {
		_, err := feed(t, Options{ViewOnly: true}, nil, cat(v38, []byte{sec}))
		if !errors.Is(err, ErrUnsupportedSecurity) {
			t.Errorf("security %d: got %v, want ErrUnsupportedSecurity", sec, err)
		}
	}
	_, err = feed(t, Options{ViewOnly: true}, cat(v33, u32(16)), cat(v33, []byte{1}))
	if !errors.Is(err, ErrUnsupportedSecurity) {
		t.Errorf("3.3 server choice 16: got %v, want ErrUnsupportedSecurity", err)
	}
}

func TestErrors(t *testing.T) {
	big := cat([]byte{6, 0, 0, 0}, s32(11))
	tests := []struct {
		name   string
		opts   Options
		server []byte
		in     []byte
		want   error
	}{
		{"bad version", Options{}, nil, []byte("HTTP/1.1 200"), ErrInvalidHandshake},
		{"version 3.2", Options{}, nil, []byte("RFB 003.002\n"), ErrInvalidHandshake},
		{"version without newline", Options{}, nil, []byte("RFB 003.008 "), ErrInvalidHandshake},
		{"security 0", Options{}, nil, cat(v38, []byte{0}), ErrInvalidHandshake},
		{"3.3 before the server chose", Options{}, v33, cat(v33, []byte{1}), ErrInvalidHandshake},
		{"3.3 after the server refused", Options{}, cat(v33, u32(0)), cat(v33, []byte{1}), ErrInvalidHandshake},
		{"unknown message", Options{}, nil, cat(hs38, []byte{7}), ErrUnsupportedMessage},
		{"unknown qemu submessage", Options{}, nil, cat(hs38, []byte{255, 9}), ErrUnsupportedMessage},
		{"clipboard over the limit", Options{MaxClipboard: 10}, nil, cat(hs38, big), ErrTooLong},
		{"extended clipboard over the limit", Options{MaxClipboard: 10}, nil, cat(hs38, []byte{6, 0, 0, 0}, s32(-11)), ErrTooLong},
		{"clipboard of MinInt32", Options{}, nil, cat(hs38, []byte{6, 0, 0, 0}, s32(-1<<31)), ErrTooLong},
		{"default clipboard limit", Options{}, nil, cat(hs38, []byte{6, 0, 0, 0}, s32(1<<20+1)), ErrTooLong},
		{"too many encodings", Options{}, nil, cat(hs38, []byte{2, 0}, u16(1025)), ErrTooLong},
		{"too many screens", Options{}, nil, cat(hs38, []byte{251, 0}, u16(1), u16(1), []byte{65, 0}), ErrTooLong},
		{"fence payload over 64", Options{}, nil, cat(hs38, []byte{248, 0, 0, 0}, u32(0), []byte{65}), ErrTooLong},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := NewClientStream(tc.opts)
			s.ServerBytes(tc.server)
			err := s.Write(tc.in, func(Message) error { return nil })
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			// Final: the next write fails the same way, emitting nothing.
			err2 := s.Write(mPointer, func(Message) error { t.Fatal("emitted after an error"); return nil })
			if !errors.Is(err2, tc.want) {
				t.Fatalf("second write: got %v, want %v", err2, tc.want)
			}
		})
	}
	// Limits hold as soon as the header shows them, before the payload arrives.
	s := NewClientStream(Options{})
	ok := func(Message) error { return nil }
	if err := s.Write(cat(hs38, []byte{2, 0}), ok); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(u16(2000), ok); !errors.Is(err, ErrTooLong) {
		t.Fatalf("split SetEncodings header: got %v", err)
	}
	// Extremes that are allowed.
	maxEnc := cat([]byte{2, 0}, u16(MaxEncodings), zeros(4*MaxEncodings))
	maxScreens := cat([]byte{251, 0}, u16(1), u16(1), []byte{MaxScreens, 0}, zeros(16*MaxScreens))
	maxFence := cat([]byte{248, 0, 0, 0}, u32(0), []byte{MaxFencePayload}, zeros(MaxFencePayload))
	got, err := feed(t, Options{MaxClipboard: 3}, nil, cat(hs38, maxEnc, maxScreens, maxFence, []byte{6, 0, 0, 0}, s32(3), []byte("abc")))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 7 {
		t.Fatalf("got %d units", len(got))
	}
}

func TestEmitErrorIsFinal(t *testing.T) {
	s := NewClientStream(Options{})
	boom := errors.New("boom")
	calls := 0
	err := s.Write(hs38, func(Message) error { calls++; return boom })
	if !errors.Is(err, boom) || calls != 1 {
		t.Fatalf("got %v after %d calls", err, calls)
	}
	if err := s.Write(mPointer, func(Message) error { return nil }); !errors.Is(err, boom) {
		t.Fatalf("second write: %v", err)
	}
}

func TestKind(t *testing.T) {
	names := map[Kind]string{KindHandshake: "handshake", KindOpaque: "opaque", KindSetPixelFormat: "set_pixel_format",
		KindSetEncodings: "set_encodings", KindUpdateRequest: "update_request", KindKey: "key", KindPointer: "pointer",
		KindClipboard: "clipboard", KindContinuousUpdates: "continuous_updates", KindFence: "fence",
		KindSetDesktopSize: "set_desktop_size", KindXvp: "xvp", KindQEMU: "qemu", Kind(200): "unknown"}
	for k, n := range names {
		if k.String() != n {
			t.Errorf("%d: %q, want %q", k, k.String(), n)
		}
	}
	input := map[Kind]bool{KindKey: true, KindPointer: true, KindClipboard: true, KindSetDesktopSize: true, KindXvp: true, KindQEMU: true}
	for k := KindHandshake; k <= KindQEMU; k++ {
		if k.Input() != input[k] {
			t.Errorf("%v.Input() = %v", k, k.Input())
		}
	}
}

func TestServerBytesConcurrent(t *testing.T) {
	// ServerBytes from another goroutine while Write blocks in emit must not wait for it.
	s := NewClientStream(Options{})
	inEmit := make(chan struct{})
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.Write(v38, func(Message) error { close(inEmit); <-release; return nil })
	}()
	<-inEmit
	s.ServerBytes(v38) // would deadlock if it shared Write's lock
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func ExampleClientStream() {
	s := NewClientStream(Options{ViewOnly: true})
	in := cat(hs38, mPointer, mUpdateIncr)
	_ = s.Write(in, func(m Message) error {
		if m.Kind.Input() {
			return nil // a view-only viewer's input is dropped
		}
		fmt.Println(m.Kind, len(m.Bytes))
		return nil
	})
	// Output:
	// handshake 12
	// handshake 1
	// handshake 1
	// update_request 10
}
