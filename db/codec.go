package db

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/streamspace/streamspace-realtime/models"
)

// Timestamps are stored with microsecond precision in UTC on both dialects (PostgreSQL's
// TIMESTAMPTZ resolution), so a value reads back the same whichever engine stored it.
//
// On SQLite they are text in sqliteTimeLayout: fixed width with a literal Z, so comparing and
// sorting the text compares and sorts the instants. Never let the driver format a time.Time
// for SQLite: its default layout has variable width and a numeric offset, and would not sort.
const sqliteTimeLayout = "2006-01-02T15:04:05.000000Z07:00"

// timeArg encodes t as a statement argument for a NOT NULL timestamp column.
func (d *Database) timeArg(t time.Time) any {
	t = t.UTC().Truncate(time.Microsecond)
	if d.dialect == SQLite {
		return t.Format(sqliteTimeLayout)
	}
	return t
}

// nullTimeArg encodes t for a nullable timestamp column: the zero time becomes NULL.
func (d *Database) nullTimeArg(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return d.timeArg(t)
}

// timeDest scans a timestamp column of either dialect into a UTC time.Time; NULL scans as
// the zero time.
type timeDest struct{ dst *time.Time }

func (s timeDest) Scan(v any) error {
	switch x := v.(type) {
	case nil:
		*s.dst = time.Time{}
	case time.Time:
		*s.dst = x.UTC()
	case string:
		return s.parse(x)
	case []byte:
		return s.parse(string(x))
	default:
		return fmt.Errorf("db: cannot scan %T into a timestamp", v)
	}
	return nil
}

func (s timeDest) parse(text string) error {
	t, err := time.Parse(time.RFC3339Nano, text)
	if err != nil {
		return fmt.Errorf("db: bad stored timestamp %q: %w", text, err)
	}
	*s.dst = t.UTC()
	return nil
}

// nullTimePtrArg encodes an optional timestamp of the models (LastHeartbeat, ExpiresAt): nil
// and the zero time become NULL.
func (d *Database) nullTimePtrArg(t *time.Time) any {
	if t == nil {
		return nil
	}
	return d.nullTimeArg(*t)
}

// timePtrDest scans a nullable timestamp into the models' optional form: NULL leaves a nil
// pointer, so "never happened" is absent on the wire rather than a zero time.
type timePtrDest struct{ dst **time.Time }

func (s timePtrDest) Scan(v any) error {
	if v == nil {
		*s.dst = nil
		return nil
	}
	var t time.Time
	if err := (timeDest{&t}).Scan(v); err != nil {
		return err
	}
	*s.dst = &t
	return nil
}

// jsonObjectArg encodes a map column (capacity, metadata, payload, result) as JSON text. A
// nil map stores "{}", so readers never meet the literal null.
func jsonObjectArg(m map[string]any) (string, error) {
	if m == nil {
		return "{}", nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("db: encode JSON column: %w", err)
	}
	return string(b), nil
}

// jsonListArg encodes a list column (permissions) as JSON text; nil stores "[]".
func jsonListArg(l []string) string {
	if l == nil {
		return "[]"
	}
	b, _ := json.Marshal(l) // a []string always encodes
	return string(b)
}

// jsonDest scans JSON text into dst (a pointer to a map or slice). NULL and the empty string
// leave dst at its zero value.
// optionalTextDest scans a NOT NULL text column whose "" means none into a *string field:
// nil for "" (and NULL), a pointer to the text otherwise.
type optionalTextDest struct{ dst **string }

func (s optionalTextDest) Scan(v any) error {
	var text string
	switch x := v.(type) {
	case nil:
	case string:
		text = x
	case []byte:
		text = string(x)
	default:
		return fmt.Errorf("db: cannot scan %T into a text column", v)
	}
	*s.dst = models.OptionalString(text)
	return nil
}

type jsonDest struct{ dst any }

func (s jsonDest) Scan(v any) error {
	var b []byte
	switch x := v.(type) {
	case nil:
		return nil
	case string:
		b = []byte(x)
	case []byte:
		b = x
	default:
		return fmt.Errorf("db: cannot scan %T into a JSON column", v)
	}
	if len(b) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, s.dst); err != nil {
		return fmt.Errorf("db: bad stored JSON: %w", err)
	}
	return nil
}
