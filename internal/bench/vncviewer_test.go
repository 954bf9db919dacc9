package bench

import (
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/internal/testkit"
)

var testUpgrader = websocket.Upgrader{Subprotocols: []string{"binary"}, CheckOrigin: func(*http.Request) bool { return true }}

// serveWS runs handle for each WebSocket upgraded by a test HTTP server and returns its ws://
// URL; the server closes when the test ends.
func serveWS(t *testing.T, handle func(*websocket.Conn)) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := testUpgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		handle(ws)
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/"
}

// relayTo is a minimal websockify for the tests: each socket's binary messages go to a TCP
// connection to target and its bytes come back as binary messages.
func relayTo(target string) func(*websocket.Conn) {
	return func(ws *websocket.Conn) {
		c, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		defer c.Close()
		done := make(chan struct{})
		go func() {
			defer close(done)
			buf := make([]byte, 32<<10)
			for {
				n, err := c.Read(buf)
				if n > 0 && ws.WriteMessage(websocket.BinaryMessage, buf[:n]) != nil {
					return
				}
				if err != nil {
					return
				}
			}
		}()
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				break
			}
			if _, err := c.Write(b); err != nil {
				break
			}
		}
		_ = c.Close()
		<-done
	}
}

// Through a relay to the source, a viewer streams, times the answers to its requests and sends
// input; closing it waits for its goroutines.
func TestVNCViewerThroughARelay(t *testing.T) {
	src, addr := startSource(t, VNCSourceConfig{Rate: 8 << 20})
	v, err := dialVNCViewer(t.Context(), serveWS(t, relayTo(addr)), nil)
	if err != nil {
		t.Fatal(err)
	}
	v.start(2*time.Millisecond, 2*time.Millisecond)
	var got viewerCounts
	testkit.Eventually(t, 20*time.Second, "10 answered requests, stream bytes and input at the source", func() bool {
		c := v.take()
		got.hist.Merge(&c.hist)
		got.answered += c.answered
		got.bytes = c.bytes
		return got.answered >= 10 && got.bytes > 100<<10 && src.Stats().Inputs >= 4
	})
	if got.hist.Count() != uint64(got.answered) || got.hist.Max() <= 0 || v.closed.Load() {
		t.Fatalf("%d round trips recorded for %d answers (max %v), closed %v", got.hist.Count(), got.answered, got.hist.Max(), v.closed.Load())
	}
	// Every answer matched one request: the source saw at least as many.
	if s := src.Stats(); s.Requests < got.answered {
		t.Fatalf("%d answers matched for %d requests", got.answered, s.Requests)
	}
	v.close() // returns once the viewer's reader and writer have ended
	if !v.closed.Load() {
		t.Fatal("the reader did not end with close")
	}
}

// The viewer reads every server message the bench may meet, counts every byte, and records a
// round trip only for a 1×1 rectangle at the position it asked for, once.
func TestVNCViewerMatchesOnlyItsOwnAnswer(t *testing.T) {
	sent := make(chan int, 1)
	url := serveWS(t, func(ws *websocket.Conn) {
		total := 0
		write := func(b []byte) {
			total += len(b)
			_ = ws.WriteMessage(websocket.BinaryMessage, b)
		}
		read := func(n int) []byte {
			_, b, err := ws.ReadMessage()
			if err != nil || len(b) != n {
				t.Errorf("read %d bytes (%v), want %d", len(b), err, n)
			}
			return b
		}
		write([]byte("RFB 003.008\n"))
		read(12)
		write([]byte{1, 1})
		read(1)
		write([]byte{0, 0, 0, 0})
		read(1)
		write(serverInit())
		read(8) // SetEncodings
		req := read(10)
		x, y := binary.BigEndian.Uint16(req[2:]), binary.BigEndian.Uint16(req[4:])
		var msgs []byte
		msgs = append(msgs, 2)                                           // Bell
		msgs = append(msgs, 1, 0, 0, 0, 0, 2)                            // SetColourMapEntries, 2 colours
		msgs = append(msgs, make([]byte, 12)...)                         // their values
		msgs = append(msgs, 3, 0, 0, 0, 0, 0, 0, 2, 'h', 'i')            // ServerCutText "hi"
		msgs = append(msgs, 0, 0, 0, 3)                                  // an update of three rectangles:
		msgs = append(msgs, updateHeader(int(x)+1, int(y), 1, 1)[4:]...) // 1×1 elsewhere
		msgs = append(msgs, make([]byte, 4)...)
		msgs = append(msgs, updateHeader(int(x), int(y), 2, 2)[4:]...) // at the place, not 1×1
		msgs = append(msgs, make([]byte, 16)...)
		msgs = append(msgs, updateHeader(int(x), int(y), 1, 1)[4:]...) // the answer
		msgs = append(msgs, make([]byte, 4)...)
		msgs = appendReply(msgs, [2]uint16{x, y}) // the same again: not a second answer
		for len(msgs) > 0 {                       // cut at odd places: the viewer reads a byte stream
			n := min(7, len(msgs))
			write(msgs[:n])
			msgs = msgs[n:]
		}
		sent <- total
		_, _, _ = ws.ReadMessage() // until the viewer leaves
	})
	v, err := dialVNCViewer(t.Context(), url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer v.close()
	v.start(time.Hour, time.Hour)
	total := <-sent
	var c viewerCounts
	testkit.Eventually(t, 10*time.Second, "every byte the server sent counted", func() bool {
		got := v.take()
		c.answered += got.answered
		c.hist.Merge(&got.hist)
		c.bytes = got.bytes
		return c.bytes == int64(total)
	})
	if c.answered != 1 || c.hist.Count() != 1 || v.closed.Load() {
		t.Fatalf("answers %d, round trips %d, closed %v (%v): want exactly one", c.answered, c.hist.Count(), v.closed.Load(), v.readErr())
	}
}

// A server that is not RFB, or whose stream the bench cannot read, fails the viewer with a
// reason.
func TestVNCViewerRefusesWhatItCannotRead(t *testing.T) {
	notRFB := serveWS(t, func(ws *websocket.Conn) {
		_ = ws.WriteMessage(websocket.BinaryMessage, []byte("SSH-2.0-OpenSSH\n"))
		_, _, _ = ws.ReadMessage()
	})
	if _, err := dialVNCViewer(t.Context(), notRFB, nil); err == nil || !strings.Contains(err.Error(), "not an RFB server") {
		t.Fatalf("err %v", err)
	}
	refused := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = io.WriteString(w, `{"error":"too_many_tunnels","message":"agent limit"}`)
	}))
	defer refused.Close()
	_, err := dialVNCViewer(t.Context(), "ws"+strings.TrimPrefix(refused.URL, "http")+"/", nil)
	if err == nil || !strings.Contains(err.Error(), "429") || !strings.Contains(err.Error(), "--vnc-max-per-agent 0") {
		t.Fatalf("err %v", err)
	}
	badEncoding := serveWS(t, func(ws *websocket.Conn) {
		for _, b := range [][]byte{[]byte("RFB 003.008\n"), {1, 1}, {0, 0, 0, 0}, serverInit()} {
			_ = ws.WriteMessage(websocket.BinaryMessage, b)
			if len(b) != 24+len("streamspace bench source") {
				_, _, _ = ws.ReadMessage()
			}
		}
		_, _, _ = ws.ReadMessage()
		msg := append([]byte{0, 0, 0, 1}, updateHeader(0, 0, 4, 4)[4:]...)
		binary.BigEndian.PutUint32(msg[len(msg)-4:], 16) // ZRLE
		_ = ws.WriteMessage(websocket.BinaryMessage, msg)
		_, _, _ = ws.ReadMessage()
	})
	v, err := dialVNCViewer(t.Context(), badEncoding, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer v.close()
	v.start(time.Hour, time.Hour)
	testkit.Eventually(t, 10*time.Second, "the viewer stops at the ZRLE rectangle", v.closed.Load)
	if err := v.readErr(); err == nil || !strings.Contains(err.Error(), "encoding 16") {
		t.Fatalf("err %v", err)
	}
}

func TestParseByteRate(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "250000": 250000, "1MB": 1e6, "1mb": 1e6, "1.5MB/s": 1.5e6, "512KiB": 512 << 10,
		"2 MiB": 2 << 20, "1GB": 1e9, "100B": 100, "3KB": 3000,
	} {
		got, err := ParseByteRate(in)
		if err != nil || got != want {
			t.Errorf("ParseByteRate(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "fast", "-1MB", "1TB", "MB"} {
		if _, err := ParseByteRate(bad); err == nil {
			t.Errorf("ParseByteRate(%q) accepted", bad)
		}
	}
}

// The table shows medians and the server's ratio to websockify.
func TestVNCReportTable(t *testing.T) {
	rep := VNCReport{Viewers: 2, Rate: 1e6, Seconds: 5}
	for _, mbps := range []float64{1, 4, 3} {
		rep.Websockify = append(rep.Websockify, VNCTargetReport{Target: TargetWebsockify, TunnelMinMBps: mbps, RoundTripP99Ms: 1})
		rep.Server = append(rep.Server, VNCTargetReport{Target: TargetServer, TunnelMinMBps: mbps / 2, RoundTripP99Ms: 1.5,
			IdleTunnels: 10, KiBPerIdleTunnel: 40, CommandIdleP99Ms: 2, CommandBusyP99Ms: 3})
	}
	table := rep.Table()
	for _, want := range []string{
		"2 viewers, 1.00 MB/s each, 5s, one replica; medians of 3 runs",
		"per-tunnel MB/s, min                        3.000        1.500    0.50×\n",
		"added p99 round trip over websockify   0.500 ms",
		"server KiB per idle tunnel           40.0 (run 1, 10 idle viewers",
		"command round trip p99 idle / busy   2.00 / 3.00 ms (1.50×)",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	if strings.Contains(table, TargetWebsockifyHop) {
		t.Errorf("a report without the two-hop floor shows its column:\n%s", table)
	}
	quiet := VNCReport{Viewers: 1, Websockify: rep.Websockify, Server: []VNCTargetReport{{Target: TargetServer, TunnelMinMBps: 1}}}
	if table := quiet.Table(); strings.Contains(table, "command round trip") {
		t.Errorf("runs without commands show a command round trip:\n%s", table)
	}

	// With the two-hop floor: its column and the server's ratio to it.
	for _, mbps := range []float64{2, 1, 3} {
		rep.WebsockifyHop = append(rep.WebsockifyHop, VNCTargetReport{Target: TargetWebsockifyHop, TunnelMinMBps: mbps, RoundTripP99Ms: 1.25})
	}
	table = rep.Table()
	for _, want := range []string{
		"websockify       server    ratio  websockify+hop    ratio\n",
		"per-tunnel MB/s, min                        3.000        1.500    0.50×           2.000    0.75×\n",
		"added p99 round trip over websockify+hop 0.250 ms",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
}
