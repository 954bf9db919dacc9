package websocket

import (
	"bytes"
	"encoding/base64"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
)

// tunnelOf returns the tunnel/1 tunnel id of agentID's connection, under the lock.
func tunnelOf(h *AgentHub, agentID string, id uint32) *Tunnel {
	c := h.GetConnection(agentID)
	if c == nil {
		return nil
	}
	c.tunnels.mu.Lock()
	defer c.tunnels.mu.Unlock()
	return c.tunnels.byID[id]
}

// tunnelState reads a tunnel's queues under its lock.
func tunnelState(t *Tunnel) (toAgent int, recvWindow, viewerBytes int64) {
	t.set.mu.Lock()
	defer t.set.mu.Unlock()
	return len(t.toAgent), t.recvWindow, t.viewerBytes
}

// TestVNCThroughXvnc relays a viewer to the machine's real VNC server through a tunnel/1
// agent: the server's banner reaches the viewer, the viewer's answer reaches the server (its
// security types come back), and after everything closes no goroutine is left.
func TestVNCThroughXvnc(t *testing.T) {
	base := testkit.SteadyGoroutines()
	t.Cleanup(func() { testkit.GoroutinesBackTo(t, 10*time.Second, base) })
	if c, err := net.DialTimeout("tcp", vncAddr(), 5*time.Second); err != nil {
		t.Skipf("no VNC server at %s: %v", vncAddr(), err)
	} else {
		_ = c.Close()
	}
	r := newVNCRig(t, AgentHubConfig{})
	r.addSession("a1", "s1")
	a := r.dialAgent("a1", true, 0)
	if a.features != models.AgentFeatureTunnel {
		t.Fatalf("101 answered X-Agent-Features %q, want tunnel/1", a.features)
	}
	a.relayTo(vncAddr(), models.DefaultTunnelWindow)
	v, code := r.viewer("s1", "u1", false)
	if code != http.StatusSwitchingProtocols {
		t.Fatalf("viewer got %d", code)
	}
	banner := readViewer(t, v, 12)
	if string(banner) != "RFB 003.008\n" {
		// TigerVNC answers 3.3 and a reason while it blacklists this address after other
		// clients' failed handshakes: the relay worked, the server refused.
		if strings.HasPrefix(string(banner), "RFB 003.003") {
			t.Skipf("the VNC server refuses this address for now: %q", banner)
		}
		t.Fatalf("banner %q", banner)
	}
	if err := v.WriteMessage(websocket.BinaryMessage, []byte("RFB 003.008\n")); err != nil {
		t.Fatal(err)
	}
	sec := readViewer(t, v, 2)
	if sec[0] == 0 || !bytes.Contains(sec[1:], []byte{1}) {
		t.Fatalf("security types %v, want None among them", sec)
	}
	if n := int(sec[0]) + 1; len(sec) < n {
		readViewer(t, v, n-len(sec))
	}
	// None, then ClientInit (shared): the server's ServerInit names the desktop.
	if err := v.WriteMessage(websocket.BinaryMessage, []byte{1}); err != nil {
		t.Fatal(err)
	}
	if res := readViewer(t, v, 4); !bytes.Equal(res[:4], []byte{0, 0, 0, 0}) {
		t.Fatalf("security result %v", res)
	}
	if err := v.WriteMessage(websocket.BinaryMessage, []byte{1}); err != nil {
		t.Fatal(err)
	}
	if si := readViewer(t, v, 24); si[0] == 0 && si[1] == 0 {
		t.Fatalf("ServerInit %v has no width", si[:4])
	}
	testkit.Eventually(t, 5*time.Second, "one tunnel open", func() bool {
		return testutil.ToFloat64(r.hub.metrics.vnc.open.WithLabelValues(protoTunnel1)) == 1
	})
	_ = v.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	if err := <-r.serveErrs; err != nil {
		t.Fatalf("Serve after the viewer left: %v", err)
	}
	testkit.Eventually(t, 5*time.Second, "tunnel released", func() bool { return tunnelOf(r.hub, "a1", 1) == nil })
}

// TestVNCStreamSpaceMessages runs StreamSpace's message set: vnc_ready only for a session
// placed on the agent, early bytes kept for the first viewer, one viewer at a time, vnc_close
// client_disconnect when it leaves, and the refusals of 6.2 closing only the tunnel.
func TestVNCStreamSpaceMessages(t *testing.T) {
	r := newVNCRig(t, AgentHubConfig{})
	r.addSession("a1", "s1")
	r.addSession("a2", "s-elsewhere")
	a := r.dialAgent("a1", false, 0)
	if a.features != "" {
		t.Fatalf("101 answered X-Agent-Features %q to an agent that offered none", a.features)
	}
	conn := r.hub.GetConnection("a1")

	if _, code := r.viewer("s1", "u1", false); code != http.StatusServiceUnavailable {
		t.Fatalf("viewer before vnc_ready got %d, want 503", code)
	}
	for _, sid := range []string{"s-elsewhere", "s-unknown"} {
		a.send(models.MessageTypeVNCReady, models.VNCReadyMessage{SessionID: sid, VNCPort: 5900})
		e := decodeAs[models.ErrorMessage](t, a.expect(models.MessageTypeError))
		if e.SessionID != sid || e.Message != "session is not placed on this agent" {
			t.Fatalf("vnc_ready for %s answered %+v", sid, e)
		}
	}
	a.send(models.MessageTypeVNCReady, models.VNCReadyMessage{SessionID: "s1", VNCPort: 5900})
	banner := []byte("RFB 003.008\n\x01\x01")
	a.vncData("s1", banner)
	var v *websocket.Conn
	testkit.Eventually(t, 5*time.Second, "tunnel ready", func() bool {
		c, code := r.viewer("s1", "u1", false)
		v = c
		return code == http.StatusSwitchingProtocols
	})
	if got := readViewer(t, v, len(banner)); !bytes.Equal(got, banner) {
		t.Fatalf("early bytes %q, want %q", got, banner)
	}
	if _, code := r.viewer("s1", "u2", false); code != http.StatusConflict {
		t.Fatalf("second viewer got %d, want 409", code)
	}
	answer := []byte("RFB 003.008\n\x01")
	if err := v.WriteMessage(websocket.BinaryMessage, answer); err != nil {
		t.Fatal(err)
	}
	var got []byte
	for len(got) < len(answer) {
		d := decodeAs[models.VNCDataMessage](t, a.expect(models.MessageTypeVNCData))
		b, err := base64.StdEncoding.DecodeString(d.Data)
		if err != nil || d.SessionID != "s1" {
			t.Fatalf("vnc_data %+v", d)
		}
		got = append(got, b...)
	}
	if !bytes.Equal(got, answer) {
		t.Fatalf("agent got %q, want %q", got, answer)
	}
	a.vncData("s1", []byte("\x00\x00\x00\x00"))
	if got := readViewer(t, v, 4); !bytes.Equal(got, []byte{0, 0, 0, 0}) {
		t.Fatalf("viewer got %q", got)
	}
	_ = v.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	cl := decodeAs[models.VNCCloseMessage](t, a.expect(models.MessageTypeVNCClose))
	if cl.SessionID != "s1" || cl.Reason != "client_disconnect" {
		t.Fatalf("vnc_close %+v", cl)
	}
	if _, code := r.viewer("s1", "u1", false); code != http.StatusServiceUnavailable {
		t.Fatalf("viewer after the tunnel closed got %d, want 503", code)
	}

	// Invalid base64 closes the tunnel only.
	a.send(models.MessageTypeVNCReady, models.VNCReadyMessage{SessionID: "s1", VNCPort: 5900})
	testkit.Eventually(t, 5*time.Second, "tunnel ready again", func() bool {
		c, code := r.viewer("s1", "u1", false)
		v = c
		return code == http.StatusSwitchingProtocols
	})
	a.send(models.MessageTypeVNCData, models.VNCDataMessage{SessionID: "s1", Data: "not base64!"})
	if e := decodeAs[models.ErrorMessage](t, a.expect(models.MessageTypeError)); e.SessionID != "s1" {
		t.Fatalf("error %+v", e)
	}
	if cl := decodeAs[models.VNCCloseMessage](t, a.expect(models.MessageTypeVNCClose)); cl.Reason != "invalid data" {
		t.Fatalf("vnc_close %+v", cl)
	}
	if code, reason := viewerClosed(t, v); code != websocket.CloseInternalServerErr || reason != "tunnel protocol violation" {
		t.Fatalf("viewer closed %d %q", code, reason)
	}
	// Data for no tunnel: an error frame, the socket kept.
	a.vncData("s1", []byte("late"))
	if e := decodeAs[models.ErrorMessage](t, a.expect(models.MessageTypeError)); e.SessionID != "s1" {
		t.Fatalf("error %+v", e)
	}
	a.send(models.MessageTypeHeartbeat, models.HeartbeatMessage{Status: models.AgentStatusDraining})
	testkit.Eventually(t, 5*time.Second, "heartbeat handled", func() bool { return conn.Status() == models.AgentStatusDraining })
	if r.hub.GetConnection("a1") != conn || conn.closing() {
		t.Fatal("the refusals closed the agent's socket")
	}
	if n := testutil.ToFloat64(r.hub.metrics.refused.WithLabelValues("malformed")); n != 0 {
		t.Fatalf("%v refusals counted as malformed", n)
	}
}
