package browsertest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/streamspace/streamspace-realtime/internal/testkit"
)

// The browser tests drive Debian's Chromium (scripts/tools.sh installs it) with chromedp.
// STREAMSPACE_CHROMIUM names another binary; STREAMSPACE_ARTIFACTS a directory for
// screenshots (default: a directory under the system's temporary directory, logged);
// STREAMSPACE_UPDATE_SCREENSHOT=1 also writes docs/dashboard.png.

// chromiumPath is the browser the tests run, failing the test with what to do when it is
// missing: the suite's command (make test) installs it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	path := os.Getenv("STREAMSPACE_CHROMIUM")
	if path == "" {
		path = "/usr/bin/chromium"
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the browser tests need Chromium at %s (%v): run scripts/tools.sh, or set STREAMSPACE_CHROMIUM", path, err)
	}
	return path
}

// browserPage is one tab of a headless Chromium with its own profile (storage, cookies), and
// the problems the page reported: uncaught exceptions, console errors and violations of the
// page's Content-Security-Policy.
type browserPage struct {
	ctx context.Context
	t   *testing.T

	mu       sync.Mutex
	problems []string
}

// newBrowser starts a headless Chromium with a fresh profile and returns its first tab. The
// browser is stopped when the test ends. Each call is a separate browser, so two pages never
// share storage.
func newBrowser(t *testing.T) *browserPage {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Headless,
		chromedp.NoSandbox, // the tests run as root in CI
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1000),
		// This machine's network is closed: without these Chromium tries Google's hosts.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-dev-shm-usage", true),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	p := &browserPage{ctx: ctx, t: t}
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		cancel()
		cancelAlloc()
		t.Fatalf("start chromium: %v", err)
	}
	messages := chromedp.Console(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for m, err := range messages {
			if err != nil {
				return
			}
			switch {
			case m.IsException():
				p.problem("exception: " + m.String())
			case m.Source == "" && m.Type == chromedp.ConsoleError:
				p.problem("console.error: " + m.String())
			case strings.Contains(m.Text, "Content Security Policy"):
				// A refused connection (a server restarting) is logged as an error too;
				// what must never happen is a load the page's policy blocks.
				p.problem("csp: " + m.String())
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
		<-watched
	})
	return p
}

func (p *browserPage) problem(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.problems = append(p.problems, s)
}

// noProblems fails the test if the page reported an exception, a console error or a blocked
// load.
func (p *browserPage) noProblems() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.problems) > 0 {
		p.t.Fatalf("the page reported problems:\n%s", strings.Join(p.problems, "\n"))
	}
}

// do runs chromedp actions with a bound, failing the test on error.
func (p *browserPage) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression, awaiting a promise, and decodes its value into out
// (nil: ignored).
func (p *browserPage) eval(expr string, out any) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[json.RawMessage](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		p.t.Fatalf("evaluate %s: %v", shorten(expr), err)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			p.t.Fatalf("evaluate %s: decode %s: %v", shorten(expr), raw, err)
		}
	}
}

// waitFor polls a JavaScript expression until it is true, failing with the value of explain
// (another expression) when it is not within bound.
func (p *browserPage) waitFor(what, expr, explain string, bound time.Duration) {
	p.t.Helper()
	var err error
	holds := func() bool {
		ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
		defer cancel()
		var ok bool
		ok, err = chromedp.Run(ctx, chromedp.Evaluate[bool]("Boolean("+expr+")"))
		return err == nil && ok
	}
	if testkit.WaitFor(bound, holds) != nil {
		var state json.RawMessage
		if explain != "" {
			ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
			state, _ = chromedp.Run(ctx, chromedp.Evaluate[json.RawMessage](explain))
			cancel()
		}
		p.t.Fatalf("%s: not within %v (evaluate error %v); page says: %s", what, bound, err, state)
	}
}

// text is the visible text of the first element matching a CSS selector ("" when none).
func (p *browserPage) text(selector string) string {
	p.t.Helper()
	var s string
	p.eval(fmt.Sprintf(`(document.querySelector(%s) || {}).innerText || ""`, jsString(selector)), &s)
	return s
}

// screenshot saves a PNG of the whole page in the test's artifacts directory, and returns
// its path.
func (p *browserPage) screenshot(name string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Fatalf("screenshot: %v", err)
	}
	dir := os.Getenv("STREAMSPACE_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "streamspace-realtime-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		p.t.Fatalf("artifacts: %v", err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Fatalf("save screenshot: %v", err)
	}
	p.t.Logf("screenshot: %s", path)
	return path
}

func shorten(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// cutProxy forwards TCP connections to a server and can cut every one of them at once, as a
// network failure does: the browser sees its socket drop with no close frame.
type cutProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = in.Close()
			continue
		}
		p.mu.Lock()
		p.conns[in], p.conns[out] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(in, out)
		go p.pipe(out, in)
	}
}

func (p *cutProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	_ = dst.Close()
	_ = src.Close()
}

// cut closes every connection through the proxy; new ones are still accepted.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
		delete(p.conns, c)
	}
}

func (p *cutProxy) close() {
	_ = p.ln.Close()
	p.cut()
	p.wg.Wait()
}
