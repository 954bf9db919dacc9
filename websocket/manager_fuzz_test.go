package websocket

import (
	"testing"

	"github.com/streamspace/streamspace-realtime/cluster"
)

// FuzzParseSince checks the `since` parser against the way positions are written
// (cluster.Position.String, "<epoch>:<offset>"): it never panics, what it accepts reads back
// the same after being written again, what it refuses comes with an error and no position, and
// every position the server can write is accepted as itself. The corpus is in
// testdata/fuzz/FuzzParseSince.
func FuzzParseSince(f *testing.F) {
	for _, seed := range []struct {
		since, epoch string
		offset       uint64
	}{
		{"3f9a1c0e5d7b2a64:42", "3f9a1c0e5d7b2a64", 42},
		{"1764150000123-0:0", "1764150000123-0", 0},
		{"local-ab12:18446744073709551615", "local-ab12", 1<<64 - 1},
		{"e:18446744073709551616", "a:b", 7},
		{"e:007", "e", 1},
		{"e:-1", "", 0},
		{"e:+1", "x y", 3},
		{":5", ":", 5},
		{"e:", "é", 9},
		{"nocolon", "\x00", 0},
		{"", "e", 0},
	} {
		f.Add(seed.since, seed.epoch, seed.offset)
	}
	f.Fuzz(func(t *testing.T, since, epoch string, offset uint64) {
		pos, err := ParseSince(since)
		if err != nil {
			if pos != (cluster.Position{}) {
				t.Fatalf("%q refused (%v) but gave %+v", since, err, pos)
			}
			if err.Error() == "" {
				t.Fatalf("%q refused without a reason", since)
			}
		} else {
			if pos.Epoch == "" {
				t.Fatalf("%q accepted with an empty epoch", since)
			}
			again, err := ParseSince(pos.String())
			if err != nil || again != pos {
				t.Fatalf("%q read as %+v, written as %q, read back as %+v, %v", since, pos, pos.String(), again, err)
			}
		}
		// What the server writes, it reads back: any non-empty epoch, any offset.
		if epoch == "" {
			return
		}
		want := cluster.Position{Epoch: epoch, Offset: offset}
		if got, err := ParseSince(want.String()); err != nil || got != want {
			t.Fatalf("position %+v written as %q read back as %+v, %v", want, want.String(), got, err)
		}
	})
}
