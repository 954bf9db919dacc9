package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/internal/auth"
)

// publishAccepted posts body to path and returns the position of the accepted entry.
func (ts *testServer) publishAccepted(t *testing.T, path, bearer, body string) string {
	t.Helper()
	status, raw := ts.postRaw(t, path, bearer, body)
	var a accepted
	if status != http.StatusAccepted || json.Unmarshal(raw, &a) != nil {
		t.Fatalf("post %s: %d %s", path, status, raw)
	}
	return fmt.Sprintf("%s:%d", a.Epoch, a.Offset)
}

// An org admin's broadcasts are bounded in size (413 past STREAMSPACE_MAX_BROADCAST_BYTES,
// well under the general body limit), and its organization's history in bytes: resuming from
// before a megabyte of broadcasts is not recovered while resuming from the last few is, and
// another organization's browser still recovers what it missed.
func TestBroadcastSizeAndHistoryBytes(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dialect string) {
		ts := startServer(t, dialect, func(c *Config) { c.HistoryOrgBytes = 256 << 10 })
		admin := mint(t, "root", "org-a", auth.RoleAdmin, time.Hour)
		bob := mint(t, "bob", "org-b", auth.RoleUser, time.Hour)
		bobSince := ts.publishAccepted(t, "/api/v1/events", testService, `{"orgId":"org-b","type":"session.updated","sessionId":"b1","userId":"bob"}`)

		pad := func(n int) string { return `{"type":"notice","pad":"` + strings.Repeat("p", n) + `"}` }
		for _, n := range []int{DefaultMaxBroadcastBytes, 1<<20 - 100} {
			status, eb := ts.post(t, "/api/v1/orgs/org-a/broadcast", admin, pad(n))
			if status != http.StatusRequestEntityTooLarge || eb.Error != "body_too_large" {
				t.Fatalf("broadcast of %d bytes: %d %+v, want 413 body_too_large", n, status, eb)
			}
		}
		var positions []string
		for range 20 {
			positions = append(positions, ts.publishAccepted(t, "/api/v1/orgs/org-a/broadcast", admin, pad(60<<10)))
		}
		ts.publishAccepted(t, "/api/v1/events", testService, `{"orgId":"org-b","type":"session.updated","sessionId":"b2","userId":"bob"}`)

		resume := func(token, since string) (*gorilla.Conn, wsFrame) {
			conn, status, code := ts.dialWS(t, "/api/v1/ws/sessions?since="+since+"&token="+token, nil)
			if status != http.StatusSwitchingProtocols {
				t.Fatalf("resume from %s: %d %s", since, status, code)
			}
			return conn, readWS(t, conn)
		}
		if _, hello := resume(admin, positions[0]); hello["recovered"] != false {
			t.Fatalf("resumed from before a megabyte of broadcasts: %v, want recovered false", hello)
		}
		r, hello := resume(admin, positions[16])
		if hello["recovered"] != true {
			t.Fatalf("resumed from the last broadcasts: %v, want recovered true", hello)
		}
		for i := range 3 {
			if f := readWS(t, r); f.str("type") != "notice" || fmt.Sprintf("%s:%.0f", f.str("epoch"), f["offset"]) != positions[17+i] {
				t.Fatalf("replayed %s %v %v, want the broadcast at %s", f.str("type"), f["epoch"], f["offset"], positions[17+i])
			}
		}
		r, hello = resume(bob, bobSince)
		if hello["recovered"] != true {
			t.Fatalf("another organization's browser: %v, want recovered true", hello)
		}
		if f := readWS(t, r); f.str("sessionId") != "b2" {
			t.Fatalf("another organization's replay: %v", f)
		}
	})
}
