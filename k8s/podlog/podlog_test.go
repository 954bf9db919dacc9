package podlog

import (
	"testing"
	"time"
)

func TestParseLine(t *testing.T) {
	epoch := time.Date(2026, 11, 26, 10, 30, 0, 0, time.UTC)
	for _, tc := range []struct {
		name, line string
		wantTime   time.Time
		wantMsg    string
	}{
		{"nanoseconds", "2026-11-26T10:30:00.123456789Z message here", time.Date(2026, 11, 26, 10, 30, 0, 123456789, time.UTC), "message here"},
		{"whole seconds", "2026-11-26T10:30:00Z hi", epoch, "hi"},
		{"offset", "2026-11-26T11:30:00+01:00 hi", epoch, "hi"},
		{"empty message", "2026-11-26T10:30:00Z ", epoch, ""},
		{"stamp alone", "2026-11-26T10:30:00Z", epoch, ""},
		{"message keeps spaces", "2026-11-26T10:30:00Z  indented  text ", epoch, " indented  text "},
		{"no stamp", "plain line", time.Time{}, "plain line"},
		{"bad stamp", "2026-13-40T10:30:00Z nope", time.Time{}, "2026-13-40T10:30:00Z nope"},
		{"date only", "2026-11-26 text", time.Time{}, "2026-11-26 text"},
		{"empty", "", time.Time{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts, msg := ParseLine(tc.line)
			if !ts.Equal(tc.wantTime) || ts.IsZero() != tc.wantTime.IsZero() || msg != tc.wantMsg {
				t.Errorf("ParseLine(%q) = %v, %q; want %v, %q", tc.line, ts, msg, tc.wantTime, tc.wantMsg)
			}
		})
	}
}
