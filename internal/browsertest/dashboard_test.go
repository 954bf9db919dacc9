package browsertest

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
)

const (
	// pageConnected is true once the page's events socket is open.
	pageConnected = `document.querySelector("#conn-sessions").className === "state open"`
	// pageState explains a wait that failed: what the page shows.
	pageState = `({sessions: document.querySelector("#conn-sessions").innerText, metrics: document.querySelector("#conn-metrics").innerText,
		who: document.querySelector("#whoami").innerText, authError: document.querySelector("#auth-error").innerText,
		rows: [...document.querySelectorAll("#sessions tbody tr")].map(r => r.innerText),
		events: [...document.querySelectorAll("#events li")].slice(0, 5).map(l => l.innerText)})`
)

// sessionState is an expression for the state shown in a session's row.
func sessionState(id string) string {
	return fmt.Sprintf(`((document.querySelector('#sessions tr[data-session=%q] td.state') || {}).innerText || "")`, id)
}

// TestDashboard opens the dashboard of `serve --dev` in a real headless Chromium, as an
// operator would: the page fills in the development token, shows dev-agent online, shows a
// session started through the API appear and change state (highlighted), starts and stops one
// with its own buttons, tails a session's logs and follows the metrics; then the server
// restarts (with a new secret, so a new token) and the page reconnects by itself and shows
// what happened after the restart.
func TestDashboard(t *testing.T) {
	addr := freeAddr(t)
	dbURL := "sqlite://" + filepath.Join(t.TempDir(), "dev.db")
	srv := startDev(t, addr, dbURL, nil)
	page := newBrowser(t)

	// The banner's dashboard line, opened as printed.
	dashboardURL := testkit.Submatch(t, srv.banner, `dashboard:\s+(http://\S+/)\s`)
	if dashboardURL != "http://"+srv.host+"/" {
		t.Fatalf("the banner's dashboard line names %s, want http://%s/", dashboardURL, srv.host)
	}
	page.do("open the dashboard", chromedp.Navigate(dashboardURL))
	page.waitFor("the page connects with the development token", pageConnected+` && document.body.dataset.ready === "true"`, pageState, 15*time.Second)
	if who := page.text("#whoami"); !strings.Contains(who, "admin of default-org") {
		t.Fatalf("whoami %q, want the dev admin of default-org", who)
	}
	page.waitFor("metrics connect", `document.querySelector("#conn-metrics").className === "state open"`, pageState, 10*time.Second)
	page.waitFor("dev-agent is listed online with a heartbeat",
		`(document.querySelector('#agents tr[data-agent="dev-agent"] td.status') || {}).innerText === "online" &&
		 !/never/.test(document.querySelector('#agents tr[data-agent="dev-agent"] td.heartbeat').innerText)`, pageState, 10*time.Second)
	// Rows that flash: recorded with the state they flashed for.
	page.eval(`window.flashes = []; new MutationObserver((ms) => { for (const m of ms) {
		const tr = m.target; if (tr.classList && tr.classList.contains("changed")) window.flashes.push(tr.dataset.session + ":" + (tr.querySelector("td.state") || {}).innerText);
	} }).observe(document.querySelector("#sessions tbody"), {attributes: true, attributeFilter: ["class"], subtree: true, childList: true}); true`, nil)

	// A session started through the API appears, then runs; its row flashes on the change.
	srv.startSession(t, "e2e-1", "dev-user", "")
	page.waitFor("e2e-1 runs on the page", sessionState("e2e-1")+` === "running"`, pageState, 10*time.Second)
	page.waitFor("the feed shows e2e-1's state change",
		`[...document.querySelectorAll("#events li")].some(li => li.innerText.includes("e2e-1: pending → running"))`, pageState, 5*time.Second)
	page.waitFor("e2e-1's row flashed when it began to run", `window.flashes.includes("e2e-1:running")`, `window.flashes`, 5*time.Second)
	page.waitFor("the metrics count it", `document.querySelector("#metric-running").innerText === "1" &&
		document.querySelector("#metric-agents").innerText === "1/1"`, `document.querySelector(".metrics").innerText`, 15*time.Second)

	// The page's own buttons: start a session on dev-agent, then stop it.
	page.waitFor("dev-agent is offered for new sessions", `[...document.querySelectorAll("#start-agent option")].some(o => o.value === "dev-agent")`, pageState, 10*time.Second)
	page.do("start a session from the page",
		chromedp.SetValue(chromedp.CSS("#start-session"), "e2e-2"),
		chromedp.Click(chromedp.CSS("#start")))
	page.waitFor("e2e-2 runs", sessionState("e2e-2")+` === "running"`, pageState, 10*time.Second)
	page.do("stop it from the page", chromedp.Click(chromedp.CSS(`#sessions tr[data-session="e2e-2"] button.action-stop_session`)))
	page.waitFor("e2e-2 stops", sessionState("e2e-2")+` === "stopped"`, pageState, 10*time.Second)
	// The command line follows the command to its end.
	page.waitFor("the stop command shown completed",
		`/^stop_session e2e-2: command cmd-\S+ completed$/.test(document.querySelector("#command-result").innerText)`,
		`document.querySelector("#command-result").innerText`, 10*time.Second)

	// The log tail of e2e-1: the last 100 lines, then followed ones, relayed by dev-agent.
	page.do("open e2e-1's logs", chromedp.Click(chromedp.CSS(`#sessions tr[data-session="e2e-1"] button.action-logs`)))
	page.waitFor("101 log lines of sim-e2e-1",
		`document.querySelectorAll("#log-lines div").length >= 101 && document.querySelector("#log-lines div").innerText.includes("sim-e2e-1")`,
		`document.querySelector("#log-lines").innerText.slice(0, 300)`, 15*time.Second)
	// In order, each once: lines 1, 2, 3… (the sim numbers them).
	page.waitFor("the log lines in order, none twice", `(() => {
		const n = [...document.querySelectorAll("#log-lines div")].map(d => +(/line (\d+)$/.exec(d.innerText) || [])[1]);
		return n.length >= 101 && n.every((v, i) => v === i + 1);
	})()`, `document.querySelector("#log-lines").innerText.slice(-300)`, 5*time.Second)
	if pod := page.text("#logs-pod"); pod != "sim-e2e-1" {
		t.Fatalf("logs of %q, want sim-e2e-1", pod)
	}
	shot := page.screenshot("dashboard.png")
	if os.Getenv("STREAMSPACE_UPDATE_SCREENSHOT") == "1" {
		data, err := os.ReadFile(shot)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("..", "..", "docs", "dashboard.png"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// The server restarts with a new secret: the page notices the old token is refused, takes
	// the new development token, reconnects, and shows what happens after the restart.
	var oldToken string
	page.eval(`document.querySelector("#token").value`, &oldToken)
	srv.stop()
	page.waitFor("the page shows it is reconnecting", `/reconnecting|connecting/.test(document.querySelector("#conn-sessions").className)`, pageState, 10*time.Second)
	page.screenshot("dashboard-server-down.png")
	srv = startDev(t, addr, dbURL, nil)
	page.waitFor("the page reconnects after the restart", pageConnected, pageState, 30*time.Second)
	var newToken string
	page.eval(`document.querySelector("#token").value`, &newToken)
	if newToken == oldToken || newToken == "" {
		t.Fatalf("the page kept the token of the stopped server")
	}
	srv.startSession(t, "e2e-3", "dev-user", "")
	page.waitFor("e2e-3, started after the restart, runs on the page", sessionState("e2e-3")+` === "running"`, pageState, 15*time.Second)
	page.waitFor("metrics resume", `document.querySelector("#conn-metrics").className === "state open"`, pageState, 15*time.Second)
	page.noProblems()
}

// TestDashboardOrgIsolation opens the dashboard as admins of two organizations and as a plain
// user, each in its own browser, and sends each organization sessions, events and a broadcast:
// each page shows its own and never the other's.
func TestDashboardOrgIsolation(t *testing.T) {
	secret := strings.Repeat("s", 40)
	srv := startDev(t, "127.0.0.1:0", "sqlite://"+filepath.Join(t.TempDir(), "dev.db"), map[string]string{"STREAMSPACE_JWT_SECRET": secret})
	mint := func(user, org string, role auth.Role) string {
		tok, err := auth.Mint([]byte(secret), auth.Identity{UserID: user, Username: user, OrgID: org, Role: role}, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	pages := map[string]*browserPage{}
	for name, tok := range map[string]string{
		"a":    mint("alice", "default-org", auth.RoleAdmin),
		"b":    mint("bob", "org-b", auth.RoleAdmin),
		"user": mint("carol", "default-org", auth.RoleUser),
	} {
		p := newBrowser(t)
		p.do("open "+name, chromedp.Navigate("http://"+srv.host+"/#token="+tok))
		p.waitFor(name+" connects", pageConnected, pageState, 15*time.Second)
		pages[name] = p
	}
	if hash := pages["a"].text("#whoami"); !strings.Contains(hash, "alice · admin of default-org") {
		t.Fatalf("a is %q", hash)
	}
	var loc string
	pages["a"].eval(`location.href`, &loc)
	if strings.Contains(loc, "token") {
		t.Fatalf("the token stayed in the address: %s", loc)
	}

	// Organization B's things first, then A's; each page must show its own.
	srv.startSession(t, "b-secret-session", "bob", "org-b")
	srv.publish(t, `{"orgId":"org-b","type":"session.error","sessionId":"b-secret-session","userId":"bob","data":{"error":"b-secret-error"}}`)
	status, _ := srv.post(t, "/api/v1/orgs/org-b/broadcast", `{"type":"notice","text":"b-secret-broadcast"}`)
	if status != http.StatusAccepted {
		t.Fatalf("broadcast to org-b: %d", status)
	}
	srv.startSession(t, "a-session", "alice", "")
	srv.publish(t, `{"orgId":"default-org","type":"session.created","sessionId":"carol-session","userId":"carol","data":{"template":"a-template"}}`)
	status, _ = srv.post(t, "/api/v1/orgs/default-org/broadcast", `{"type":"notice","text":"a-broadcast"}`)
	if status != http.StatusAccepted {
		t.Fatalf("broadcast to default-org: %d", status)
	}

	body := `document.body.innerText`
	pages["b"].waitFor("b sees its session run", sessionState("b-secret-session")+` === "running"`, pageState, 10*time.Second)
	pages["b"].waitFor("b sees its error and broadcast", body+`.includes("b-secret-broadcast") && `+body+`.includes("session.error")`, pageState, 10*time.Second)
	pages["a"].waitFor("a sees its session run", sessionState("a-session")+` === "running"`, pageState, 10*time.Second)
	pages["a"].waitFor("a sees carol's session and its broadcast", body+`.includes("carol-session") && `+body+`.includes("a-broadcast")`, pageState, 10*time.Second)
	pages["user"].waitFor("carol sees her own session and the broadcast", body+`.includes("carol-session") && `+body+`.includes("a-broadcast")`, pageState, 10*time.Second)
	// Let a whole session-list check (every 3 s) run before looking for leaks: default-org and
	// org-b have listeners, so each check counts 2 and 3 more means one began after this point.
	checks := srv.listChecks(t)
	testkit.Eventually(t, 15*time.Second, "a session-list check of both organizations", func() bool { return srv.listChecks(t) >= checks+3 })

	for name, p := range pages {
		var text string
		p.eval(body, &text)
		leaks := []string{"a-session", "carol-session", "a-broadcast"}
		switch name {
		case "a":
			leaks = []string{"b-secret"}
		case "user":
			leaks = []string{"b-secret", "a-session"} // alice's session: carol is a plain user
		}
		for _, leak := range leaks {
			if strings.Contains(text, leak) {
				t.Errorf("page %s shows %q:\n%s", name, leak, text)
			}
		}
		p.noProblems()
	}
	pages["user"].screenshot("dashboard-user.png")
	if note := pages["user"].text("#metrics-note"); !strings.Contains(note, "operators and admins") {
		t.Errorf("carol's metrics note %q", note)
	}
	for name, canCommand := range map[string]bool{"a": true, "b": true, "user": false} {
		var shown bool
		pages[name].eval(`getComputedStyle(document.querySelector("#start-form")).display !== "none"`, &shown)
		if shown != canCommand {
			t.Errorf("page %s: the start form shown %v, want %v (admins only)", name, shown, canCommand)
		}
	}
	if pages["user"].text("#agents tbody") != "" {
		t.Errorf("carol sees agents: %q", pages["user"].text("#agents tbody"))
	}

	// A token the server refuses is shown as refused, with the reason, not as a network error.
	p := newBrowser(t)
	p.do("open with a token of another secret", chromedp.Navigate("http://"+srv.host+"/#token="+mintWith(t, strings.Repeat("x", 40))))
	p.waitFor("the refusal is shown", `/Token refused: .*invalid_token/.test(document.querySelector("#auth-error").innerText)`, pageState, 10*time.Second)
	p.screenshot("dashboard-refused.png")
	p.noProblems()
}

// mintWith mints an admin token of default-org signed with secret.
func mintWith(t *testing.T, secret string) string {
	t.Helper()
	tok, err := auth.Mint([]byte(secret), auth.Identity{UserID: "mallory", OrgID: "default-org", Role: auth.RoleAdmin}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
