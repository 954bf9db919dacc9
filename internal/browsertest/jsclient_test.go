package browsertest

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/websocket"
)

// TestJSClient runs web/static/streamspace-realtime.js in a real Chromium against `serve --dev`:
// backoff and parsing, every message type of PROTOCOL.md dispatched to its listeners, resuming
// with `since` after a network cut, reconnecting at once when the tab becomes visible or the
// network returns, never giving up, and reconnecting with a new token.
func TestJSClient(t *testing.T) {
	secret := strings.Repeat("k", 40)
	srv := startDev(t, "127.0.0.1:0", "sqlite://"+filepath.Join(t.TempDir(), "dev.db"), map[string]string{"STREAMSPACE_JWT_SECRET": secret})
	mint := func(user string, role auth.Role) string {
		tok, err := auth.Mint([]byte(secret), auth.Identity{UserID: user, OrgID: "default-org", Role: role}, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	proxy := newCutProxy(t, srv.host)
	page := newBrowser(t)
	// A page of the server's origin without the dashboard: the module is imported by itself.
	page.do("open a page of the origin", chromedp.Navigate("http://"+proxy.addr()+"/healthz"))
	page.eval(`import("/ui/streamspace-realtime.js").then((m) => { window.rt = m; return true; })`, nil)
	// record(name, client): what a client received, and the states it went through.
	page.eval(`window.record = (name, c) => {
		const r = window[name] = { client: c, messages: [], types: [], states: [], errors: [], closes: [] };
		c.on("message", (m) => { r.messages.push(m); r.types.push(m.type); });
		c.on("state", (s) => r.states.push(s.state));
		c.on("error", (e) => r.errors.push(e));
		c.on("close", (e) => r.closes.push(e.code));
		return true;
	}; true`, nil)

	t.Run("backoff and parsing", func(t *testing.T) {
		var got struct {
			First, FirstMax, Second, Capped, Far int
			Parsed                               int
			Bad                                  []string
		}
		page.eval(`(() => {
			const d = (n, r) => rt.backoffDelay(n, { random: () => r });
			const p = rt.parseFrames('{"type":"a"}\n{"type":"b"}\nnot json\n');
			return { first: d(0, 0), firstMax: d(0, 0.999), second: d(1, 0), capped: d(10, 0.999),
				far: rt.backoffDelay(1000), parsed: p.messages.length, bad: p.bad };
		})()`, &got)
		if got.First < 250 || got.FirstMax >= 1000 || got.Second < 500 || got.Capped > 30000 || got.Capped < 29000 || got.Far > 30000 || got.Far < 15000 {
			t.Fatalf("backoff: %+v, want a first retry under a second, doubling, capped at 30 s", got)
		}
		if got.Parsed != 2 || len(got.Bad) != 1 || got.Bad[0] != "not json" {
			t.Fatalf("parseFrames of joined messages: %+v", got)
		}
	})

	t.Run("every message type", func(t *testing.T) {
		page.eval(fmt.Sprintf(`record("all", new rt.RealtimeClient({ token: %s }).start()) &&
			record("metrics", new rt.RealtimeClient({ token: %[1]s, path: rt.Paths.cluster }).start())`, jsString(mint("ops", "operator"))), nil)
		page.waitFor("connected", `all.types.includes("sessions_update")`, `all`, 10*time.Second)
		// Each of the fourteen session events through the service API, and a broadcast.
		for _, typ := range websocket.EventTypes() {
			srv.publish(t, fmt.Sprintf(`{"orgId":"default-org","type":%q,"sessionId":"js-1","userId":"someone","data":{}}`, typ))
		}
		if status, _ := srv.post(t, "/api/v1/orgs/default-org/broadcast", `{"type":"maintenance","in":"5m"}`); status != http.StatusAccepted {
			t.Fatalf("broadcast: %d", status)
		}
		want := []string{"connected", "sessions_update", "maintenance"}
		for _, typ := range websocket.EventTypes() {
			want = append(want, string(typ))
		}
		page.waitFor("every type dispatched to its own listeners", fmt.Sprintf(`%s.every((t) => all.types.includes(t))`, jsonArray(want)), `all.types`, 10*time.Second)
		// A listener of one type gets that type only, with the position recorded.
		page.eval(`window.idle = []; all.client.on("session.idle", (m) => idle.push(m.type)); true`, nil)
		srv.publish(t, `{"orgId":"default-org","type":"session.idle","sessionId":"js-1","userId":"someone","data":{"idleDuration":60}}`)
		page.waitFor("session.idle listener", `idle.length === 1 && idle[0] === "session.idle" && /:\d+$/.test(all.client.position)`, `({idle, position: all.client.position})`, 5*time.Second)
		page.waitFor("metrics_update", `metrics.types.includes("metrics_update")`, `metrics`, 10*time.Second)

		// log: a session's pod logs relayed by dev-agent.
		srv.startSession(t, "js-logs", "ops", "")
		page.waitFor("js-logs runs", `all.messages.some((m) => m.sessionId === "js-logs" && m.data && m.data.newState === "running")`, `all.types`, 10*time.Second)
		page.eval(fmt.Sprintf(`record("logs", new rt.RealtimeClient({ token: %s, path: rt.Paths.logs("sim-js-logs"), reconnectOnNormalClose: false }).start())`,
			jsString(mint("ops", "operator"))), nil)
		page.waitFor("log lines", `logs.types.filter((t) => t === "log").length >= 100`, `logs.types.length`, 10*time.Second)
		page.eval(`logs.client.close(); true`, nil)

		// log_error: the agent running the session went away.
		bootstrap := testkit.Submatch(t, srv.banner, `--key (\S+)`)
		ghost := start(t, nil, "agent", "--server", "http://"+srv.host, "--id", "ghost", "--platform", "docker", "--key", bootstrap)
		online := func() bool {
			ghost.exitedEarly(t, "before coming online")
			return srv.agentStatus(t, "ghost") == "online"
		}
		if err := testkit.WaitFor(10*time.Second, online); err != nil {
			t.Fatalf("agent ghost never came online:\n%s", ghost.errs.String())
		}
		status, answer := srv.post(t, "/api/v1/admin/agents/ghost/command",
			`{"action":"start_session","sessionId":"ghost-1","payload":{"user":"ops"}}`)
		if status != http.StatusAccepted {
			t.Fatalf("start_session on ghost: %d %v", status, answer)
		}
		page.waitFor("ghost-1 runs", `all.messages.some((m) => m.sessionId === "ghost-1" && m.data && m.data.newState === "running")`, `all.types`, 10*time.Second)
		ghost.stop(t)
		if t.Failed() {
			t.FailNow()
		}
		page.eval(fmt.Sprintf(`record("ghostLogs", new rt.RealtimeClient({ token: %s, path: rt.Paths.logs("sim-ghost-1"), reconnectOnNormalClose: false }).start())`,
			jsString(mint("ops", "operator"))), nil)
		page.waitFor("log_error, then 1011", `ghostLogs.types.includes("log_error") && ghostLogs.closes.includes(1011)`, `ghostLogs`, 15*time.Second)
		page.eval(`ghostLogs.client.close(); metrics.client.close(); all.client.close(); true`, nil)
	})

	t.Run("resume after a network cut, at once when the network returns", func(t *testing.T) {
		// A backoff far longer than the test: only the "online" event can bring it back.
		page.eval(fmt.Sprintf(`record("cut", new rt.RealtimeClient({ token: %s, backoff: { initial: 120000, max: 120000 } }).start())`,
			jsString(mint("ops", "operator"))), nil)
		page.waitFor("open", `cut.types.includes("sessions_update")`, `cut`, 10*time.Second)
		srv.publish(t, `{"orgId":"default-org","type":"session.updated","sessionId":"before-cut","userId":"u","data":{}}`)
		page.waitFor("live event", `cut.messages.some((m) => m.sessionId === "before-cut")`, `cut.types`, 5*time.Second)
		proxy.cut()
		page.waitFor("reconnecting", `cut.client.state === "reconnecting"`, `cut.states`, 10*time.Second)
		for i := range 3 {
			srv.publish(t, fmt.Sprintf(`{"orgId":"default-org","type":"session.updated","sessionId":"missed-%d","userId":"u","data":{}}`, i))
		}
		page.eval(`window.dispatchEvent(new Event("online")); true`, nil)
		page.waitFor("reopened at once, recovered, with the missed events once each in order",
			`cut.messages.filter((m) => m.type === "connected").length === 2 &&
			 cut.messages.filter((m) => m.type === "connected")[1].recovered === true &&
			 cut.messages.filter((m) => /^missed-/.test(m.sessionId)).map((m) => m.sessionId).join() === "missed-0,missed-1,missed-2"`,
			`cut.messages.map((m) => m.type + ":" + (m.sessionId || m.recovered))`, 5*time.Second)
		// Offsets only grow: nothing twice.
		var offsets []int
		page.eval(`cut.messages.filter((m) => m.type.startsWith("session.")).map((m) => m.offset)`, &offsets)
		for i := 1; i < len(offsets); i++ {
			if offsets[i] <= offsets[i-1] {
				t.Fatalf("offsets %v: a duplicate or a reordering", offsets)
			}
		}
	})

	t.Run("at once when the tab becomes visible", func(t *testing.T) {
		proxy.cut()
		page.waitFor("reconnecting", `cut.client.state === "reconnecting"`, `cut.states`, 10*time.Second)
		page.eval(`document.dispatchEvent(new Event("visibilitychange")); true`, nil)
		page.waitFor("reopened", `cut.client.state === "open" && cut.messages.filter((m) => m.type === "connected").length === 3`, `cut.states`, 5*time.Second)
		page.eval(`cut.client.close(); true`, nil)
	})

	t.Run("never gives up", func(t *testing.T) {
		// Nothing listens on port 1: attempt after attempt fails, and the client goes on.
		page.eval(`record("lost", new rt.RealtimeClient({ url: "http://127.0.0.1:1", token: "x", backoff: { initial: 5, max: 20 } }).start())`, nil)
		page.waitFor("20 attempts and still trying", `lost.states.filter((s) => s === "connecting").length >= 20 && lost.client.state !== "closed"`, `lost.states`, 20*time.Second)
		page.eval(`lost.client.close(); true`, nil)
		var state string
		page.eval(`lost.client.state`, &state)
		if state != "closed" {
			t.Fatalf("after close(): %s", state)
		}
	})

	t.Run("token change", func(t *testing.T) {
		page.eval(fmt.Sprintf(`record("tok", new rt.RealtimeClient({ token: %s, backoff: { initial: 120000, max: 120000 } }).start())`, jsString(mint("u1", "user"))), nil)
		page.waitFor("u1 connected", `tok.types.includes("sessions_update")`, `tok`, 10*time.Second)
		// A token the server refuses: the client says why (it asked GET /api/v1/me).
		page.eval(`tok.client.setToken("not-a-jwt"); true`, nil)
		page.waitFor("refusal explained", `tok.errors.some((e) => e.kind === "auth" && e.code === "invalid_token") && tok.client.state === "reconnecting"`, `tok`, 10*time.Second)
		page.eval(fmt.Sprintf(`tok.client.setToken(%s); true`, jsString(mint("u2", "user"))), nil)
		page.waitFor("u2 connected at once", `tok.client.state === "open" && tok.types.filter((t) => t === "connected").length === 2`, `tok.states`, 5*time.Second)
		srv.publish(t, `{"orgId":"default-org","type":"session.created","sessionId":"for-u1","userId":"u1","data":{}}`)
		srv.publish(t, `{"orgId":"default-org","type":"session.created","sessionId":"for-u2","userId":"u2","data":{}}`)
		page.waitFor("u2's event", `tok.messages.some((m) => m.sessionId === "for-u2")`, `tok.types`, 5*time.Second)
		var leaked bool
		page.eval(`tok.messages.some((m) => m.sessionId === "for-u1")`, &leaked)
		if leaked {
			t.Fatal("the client, now u2, received u1's event")
		}
		page.eval(`tok.client.close(); true`, nil)
	})
	page.noProblems()
}

func jsonArray(items []string) string {
	quoted := make([]string, len(items))
	for i, s := range items {
		quoted[i] = jsString(s)
	}
	return "[" + strings.Join(quoted, ",") + "]"
}
