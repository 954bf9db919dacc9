package browsertest

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/internal/auth"
	"github.com/streamspace/streamspace-realtime/internal/testkit"
)

// The built-in desktop (internal/desktop) as the dev agent serves it: colour bars over the top
// three fifths, a clock, and a marker of this colour where each button press lands.
const (
	markerRGB = "255,20,147"
	// canvasJS is noVNC's canvas in the viewer panel.
	canvasJS = `document.querySelector("#viewer-screen canvas")`
	// viewerState explains a viewer wait that failed.
	viewerState = `({state: document.querySelector("#conn-viewer").innerText, note: document.querySelector("#viewer-note").innerText,
		session: document.querySelector("#viewer-session").innerText,
		canvas: (() => { const c = document.querySelector("#viewer-screen canvas"); if (!c) return "none";
			const px = (x, y) => [...c.getContext("2d").getImageData(x, y, 1, 1).data].slice(0, 3).join(",");
			return c.width + "x" + c.height + " " + px(c.width / 16, c.height / 4) + " " + px(c.width * 3 / 16, c.height / 4) + " " + px(10, c.height - 10); })(),
		rfb: (() => { const r = document.querySelector("#viewer-screen").rfb; if (!r) return null; const d = r._display;
			const b = d && d._backbuffer ? [...d._backbuffer.getContext("2d").getImageData(64, 100, 1, 1).data].join(",") + " top " + [...d._backbuffer.getContext("2d").getImageData(64, 10, 1, 1).data].join(",") : "";
			return {state: r._rfbConnectionState, init: r._rfbInitState, fb: r._fbWidth + "x" + r._fbHeight, back: b, canvases: document.querySelectorAll("canvas").length, q: d && d._renderQ ? d._renderQ.length : -1}; })()})`
)

// pixelJS is an expression for the canvas pixel at framebuffer (x, y), "r,g,b".
func pixelJS(x, y string) string {
	return fmt.Sprintf(`(() => { const c = %s; const d = c.getContext("2d").getImageData(Math.floor(%s), Math.floor(%s), 1, 1).data; return d[0] + "," + d[1] + "," + d[2]; })()`, canvasJS, x, y)
}

// markersNearJS counts marker-coloured pixels within 16 pixels of framebuffer (fx*w, fy*h).
func markersNearJS(fx, fy float64) string {
	return fmt.Sprintf(`(() => { const c = %s; const x = Math.floor(c.width * %g), y = Math.floor(c.height * %g);
		const d = c.getContext("2d").getImageData(x - 16, y - 16, 33, 33).data; let n = 0;
		for (let i = 0; i < d.length; i += 4) if (d[i] + "," + d[i+1] + "," + d[i+2] === %q) n++; return n; })()`, canvasJS, fx, fy, markerRGB)
}

// clickCanvas clicks the canvas at the fraction (fx, fy) of its displayed size.
func (p *browserPage) clickCanvas(fx, fy float64) {
	p.t.Helper()
	var at []float64
	// The point is scrolled into the middle of the window first: a click outside it lands nowhere.
	p.eval(fmt.Sprintf(`(() => { const c = %s; let r = c.getBoundingClientRect();
		window.scrollBy(0, r.top + r.height * %g - window.innerHeight / 2); r = c.getBoundingClientRect();
		return [r.left + r.width * %g, r.top + r.height * %g]; })()`, canvasJS, fy, fx, fy), &at)
	p.do("click the desktop", chromedp.MouseClickXY(at[0], at[1]))
}

// openViewerOf clicks a running session's view button and waits for its desktop to show.
func (p *browserPage) openViewerOf(session string) {
	p.t.Helper()
	p.waitFor(session+" has a view button", fmt.Sprintf(`document.querySelector('#sessions tr[data-session=%q] button.action-view')`, session), pageState, 15*time.Second)
	p.do("view "+session, chromedp.Click(chromedp.CSS(fmt.Sprintf(`#sessions tr[data-session=%q] button.action-view`, session))))
	p.awaitDesktop()
}

// awaitDesktop waits for the viewer panel to connect and show the built-in desktop's picture.
func (p *browserPage) awaitDesktop() {
	p.t.Helper()
	p.waitFor("the viewer connects", `document.querySelector("#conn-viewer").innerText === "open"`, viewerState, 20*time.Second)
	// The colour bars: white first, yellow second (eight bars across).
	if err := testkit.WaitFor(20*time.Second, func() bool {
		var ok bool
		p.eval(pixelJS(canvasJS+".width / 16", canvasJS+".height / 4")+` === "255,255,255"`, &ok)
		return ok
	}); err != nil {
		p.noProblems() // what noVNC reported explains a picture that never came
	}
	p.waitFor("the desktop's picture arrives", pixelJS(canvasJS+".width / 16", canvasJS+".height / 4")+` === "255,255,255" && `+
		pixelJS(canvasJS+".width * 3 / 16", canvasJS+".height / 4")+` === "255,255,0"`, viewerState, 20*time.Second)
}

// TestViewerShowsTheDesktop opens a running session's desktop from the dashboard of serve
// --dev, whose agent serves the built-in desktop: the canvas shows its picture, the clock
// moves, a click of a user with control reaches the desktop, and one of a view-only share does
// not, even when the page is made to send it (the server drops it).
func TestViewerShowsTheDesktop(t *testing.T) {
	secret := strings.Repeat("v", 40)
	dbURL := "sqlite://" + filepath.Join(t.TempDir(), "dev.db")
	srv := startDev(t, "127.0.0.1:0", dbURL, map[string]string{"STREAMSPACE_JWT_SECRET": secret})
	mint := func(user string, role auth.Role) string {
		tok, err := auth.Mint([]byte(secret), auth.Identity{UserID: user, Username: user, OrgID: "default-org", Role: role}, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	srv.startSession(t, "vnc-1", "alice", "")

	owner := newBrowser(t)
	owner.do("open as the owner", chromedp.Navigate("http://"+srv.host+"/#token="+mint("alice", auth.RoleUser)))
	owner.waitFor("the owner connects", pageConnected, pageState, 15*time.Second)
	owner.waitFor("vnc-1 runs", sessionState("vnc-1")+` === "running"`, pageState, 15*time.Second)
	owner.openViewerOf("vnc-1")
	var viewOnly bool
	owner.eval(`document.querySelector("#viewer-screen").rfb.viewOnly`, &viewOnly)
	if viewOnly {
		t.Fatal("the owner's viewer is view-only")
	}

	// The clock: the picture changes by itself.
	var before string
	owner.eval(canvasJS+`.toDataURL()`, &before)
	owner.waitFor("the clock moves", canvasJS+`.toDataURL() !== `+jsString(before), viewerState, 10*time.Second)

	// The owner's click draws a marker where it lands.
	owner.clickCanvas(0.85, 0.9)
	owner.waitFor("the owner's click reaches the desktop", markersNearJS(0.85, 0.9)+` > 20`, viewerState, 10*time.Second)
	owner.screenshot("viewer-owner.png")

	// A view-only share: the page does not send input, and when made to, the server drops it.
	database, err := db.Open(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	err = database.ShareSession(context.Background(), "vnc-1", "vera", []string{"view"})
	_ = database.Close()
	if err != nil {
		t.Fatal(err)
	}
	watcher := newBrowser(t)
	// A session shared with vera is not in her own list: she follows a link to its desktop.
	watcher.do("open a link to the desktop as a view-only share", chromedp.Navigate("http://"+srv.host+"/#token="+mint("vera", auth.RoleUser)+"&view=vnc-1"))
	watcher.waitFor("vera connects", pageConnected, pageState, 15*time.Second)
	watcher.awaitDesktop()
	watcher.eval(`document.querySelector("#viewer-screen").rfb.viewOnly`, &viewOnly)
	if !viewOnly {
		t.Fatal("a view-only share's viewer sends input")
	}
	if s := watcher.text("#viewer-session"); !strings.Contains(s, "view only") {
		t.Fatalf("the viewer panel says %q, want view only", s)
	}
	watcher.eval(`document.querySelector("#viewer-screen").rfb.viewOnly = false; true`, nil)
	watcher.clickCanvas(0.15, 0.9)
	// Then the owner clicks elsewhere: once vera sees that marker, a click of hers that had
	// been forwarded would show too.
	owner.clickCanvas(0.5, 0.9)
	watcher.waitFor("vera sees the owner's later click", markersNearJS(0.5, 0.9)+` > 20`, viewerState, 10*time.Second)
	var stray int
	watcher.eval(markersNearJS(0.15, 0.9), &stray)
	if stray != 0 {
		t.Fatalf("a view-only share's click reached the desktop (%d marker pixels)", stray)
	}
	owner.eval(markersNearJS(0.15, 0.9), &stray)
	if stray != 0 {
		t.Fatalf("the owner sees a view-only share's click (%d marker pixels)", stray)
	}
	watcher.screenshot("viewer-view-only.png")

	// Closing the panel ends the viewer.
	owner.do("close the viewer", chromedp.Click(chromedp.CSS("#viewer-close")))
	owner.waitFor("the panel closes", `document.querySelector("#viewer-card").hidden && document.querySelector("#conn-viewer").innerText === "idle"`, viewerState, 10*time.Second)
	owner.noProblems()
	watcher.noProblems()
}
