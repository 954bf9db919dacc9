package db

import (
	"testing"
	"time"
)

func TestRebind(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"SELECT 1":          "SELECT 1",
		"a = ? AND b = ?":   "a = $1 AND b = $2",
		"x = '?' AND y = ?": "x = '?' AND y = $1",
		`"we?ird" = ? -- why?` + "\n" + `AND z = ?`: `"we?ird" = $1 -- why?` + "\n" + `AND z = $2`,
		"/* ? */ CAST(? AS jsonb)":                  "/* ? */ CAST($1 AS jsonb)",
		"x = 'it''s?' OR y = ?":                     "x = 'it''s?' OR y = $1",
		"unterminated '?":                           "unterminated '?",
	}
	for in, want := range cases {
		if got := rebind(in); got != want {
			t.Errorf("rebind(%q) = %q, want %q", in, got, want)
		}
	}
	if got := rebind("(?,?,?,?,?,?,?,?,?,?,?)"); got != "($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)" {
		t.Errorf("rebind of 11 placeholders = %q", got)
	}
}

func TestSQLiteTimeTextSortsAsTime(t *testing.T) {
	t.Parallel()
	d := &Database{dialect: SQLite}
	zone := time.FixedZone("x", -7*3600)
	times := []time.Time{
		time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 1, 1, 0, 0, 0, 1000, time.UTC),
		time.Date(2026, 1, 1, 0, 0, 0, 100000000, time.UTC),
		time.Date(2026, 1, 1, 0, 0, 1, 0, time.UTC),
		time.Date(2025, 12, 31, 18, 0, 2, 0, zone), // 2026-01-01T01:00:02Z
	}
	for i := 1; i < len(times); i++ {
		a, b := d.timeArg(times[i-1]).(string), d.timeArg(times[i]).(string)
		if len(a) != len(b) || !(a < b) {
			t.Errorf("text %q !< %q although %v < %v", a, b, times[i-1], times[i])
		}
		var back time.Time
		if err := (timeDest{&back}).Scan(b); err != nil || !back.Equal(times[i]) || back.Location() != time.UTC {
			t.Errorf("Scan(%q) = %v, %v; want %v UTC", b, back, err, times[i])
		}
	}
	if got := d.timeArg(time.Date(2026, 1, 1, 0, 0, 0, 999, time.UTC)); got != "2026-01-01T00:00:00.000000Z" {
		t.Errorf("sub-microsecond digits not truncated: %v", got)
	}
	if d.nullTimeArg(time.Time{}) != nil {
		t.Error("nullTimeArg(zero) != nil")
	}
}

func TestTimeDestScan(t *testing.T) {
	t.Parallel()
	want := time.Date(2026, 11, 26, 10, 30, 0, 123456000, time.UTC)
	for _, v := range []any{nil, want.In(time.FixedZone("y", 3600)), "2026-11-26T10:30:00.123456Z", []byte("2026-11-26T11:30:00.123456+01:00")} {
		var got time.Time
		if err := (timeDest{&got}).Scan(v); err != nil {
			t.Fatalf("Scan(%v): %v", v, err)
		}
		if v == nil {
			if !got.IsZero() {
				t.Errorf("Scan(nil) = %v", got)
			}
			continue
		}
		if !got.Equal(want) || got.Location() != time.UTC {
			t.Errorf("Scan(%v) = %v", v, got)
		}
	}
	var got time.Time
	if err := (timeDest{&got}).Scan("yesterday"); err == nil {
		t.Error("Scan(garbage) succeeded")
	}
	if err := (timeDest{&got}).Scan(42); err == nil {
		t.Error("Scan(int) succeeded")
	}
}

func TestJSONColumns(t *testing.T) {
	t.Parallel()
	if s, err := jsonObjectArg(nil); err != nil || s != "{}" {
		t.Errorf("jsonObjectArg(nil) = %q, %v", s, err)
	}
	if s, _ := jsonObjectArg(map[string]any{"maxSessions": 5}); s != `{"maxSessions":5}` {
		t.Errorf("jsonObjectArg = %q", s)
	}
	if _, err := jsonObjectArg(map[string]any{"bad": func() {}}); err == nil {
		t.Error("jsonObjectArg(func) succeeded")
	}
	if s := jsonListArg(nil); s != "[]" {
		t.Errorf("jsonListArg(nil) = %q", s)
	}
	var m map[string]any
	for _, v := range []any{nil, "", []byte(nil)} {
		if err := (jsonDest{&m}).Scan(v); err != nil || m != nil {
			t.Errorf("Scan(%#v) = %v, %v", v, m, err)
		}
	}
	if err := (jsonDest{&m}).Scan(`{"a":1}`); err != nil || m["a"] != float64(1) {
		t.Errorf("Scan(object) = %v, %v", m, err)
	}
	if err := (jsonDest{&m}).Scan([]byte(`{nope`)); err == nil {
		t.Error("Scan(bad JSON) succeeded")
	}
}
