package websocket

import (
	"bytes"
	"encoding/base64"
	"errors"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/streamspace/streamspace-realtime/internal/testkit"
	"github.com/streamspace/streamspace-realtime/models"
)

// A StreamSpace tunnel has no window, so it is paced through RFB (PROTOCOL.md 6.4): the
// ContinuousUpdates pseudo-encoding is stripped from the viewer's SetEncodings, and while more
// than PaceBacklog waits for the browser its update request is held back, while its other
// messages go on; once the browser has caught up, the held request reaches the agent.
func TestVNCStreamSpacePacing(t *testing.T) {
	r := newVNCRig(t, AgentHubConfig{VNC: VNCConfig{PaceBacklog: 64 << 10, MaxBacklog: 64 << 20}})
	r.addSession("a1", "s1")
	a := r.dialAgent("a1", false, 0)
	a.send(models.MessageTypeVNCReady, models.VNCReadyMessage{SessionID: "s1"})
	var v *websocket.Conn
	var tun *Tunnel
	testkit.Eventually(t, 5*time.Second, "tunnel ready", func() bool {
		sess, _ := r.db.GetSession(t.Context(), "s1")
		var err error
		if tun, err = r.hub.OpenTunnel(t.Context(), TunnelRequest{Session: sess, UserID: "u1"}); err != nil {
			return false
		}
		v = newSlowViewer(t, func(c *websocket.Conn) { _ = tun.Serve(t.Context(), c) })
		return true
	})
	// toAgent collects the RFB bytes the agent receives until want is among them.
	var got []byte
	toAgent := func(want []byte) {
		t.Helper()
		for !bytes.Contains(got, want) {
			m := a.expect(models.MessageTypeVNCData)
			p, err := base64.StdEncoding.DecodeString(decodeAs[models.VNCDataMessage](t, m).Data)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, p...)
		}
	}
	send := func(p []byte) {
		t.Helper()
		if err := v.WriteMessage(websocket.BinaryMessage, p); err != nil {
			t.Fatal(err)
		}
	}

	a.vncData("s1", []byte("RFB 003.008\n"))
	readViewer(t, v, 12)
	send([]byte("RFB 003.008\n"))
	send([]byte{1})                                              // security None
	send([]byte{1})                                              // ClientInit, shared
	send([]byte{2, 0, 0, 2, 0, 0, 0, 0, 0xff, 0xff, 0xfe, 0xc7}) // SetEncodings Raw, ContinuousUpdates (-313)
	toAgent([]byte{2, 0, 0, 1, 0, 0, 0, 0})
	if bytes.Contains(got, []byte{0xff, 0xff, 0xfe, 0xc7}) {
		t.Fatalf("ContinuousUpdates reached the agent: % x", got)
	}

	// The VNC server sends 8 MiB the browser does not read: more than the kernel's buffers hold.
	chunk := bytes.Repeat([]byte{7}, 32<<10)
	for range 256 {
		a.vncData("s1", chunk)
	}
	testkit.Eventually(t, 10*time.Second, "the browser's backlog passes the pace", func() bool {
		_, _, backlog := tunnelState(tun)
		return backlog > 64<<10
	})
	update := []byte{3, 1, 0, 0, 0, 0, 4, 0, 3, 0} // incremental, 1024x768
	key := []byte{4, 1, 0, 0, 0, 0, 0, 0x61}       // 'a' down
	send(update)
	send(key)
	toAgent(key)
	if bytes.Contains(got, update) {
		t.Fatal("an update request reached the agent while the browser was behind")
	}

	// The browser reads it all; then the held request goes.
	_ = v.SetReadDeadline(time.Now().Add(30 * time.Second))
	for read := 0; read < 256*len(chunk); {
		_, p, err := v.ReadMessage()
		if err != nil {
			t.Fatalf("browser read after %d bytes: %v", read, err)
		}
		read += len(p)
	}
	toAgent(update)
	if i, j := bytes.Index(got, key), bytes.Index(got, update); i > j {
		t.Fatalf("the held request went before the key event that followed it (%d, %d)", i, j)
	}
}

// The per-user limit counts a user of one organization only: user ids are unique within an
// organization, and another tenant's user of the same id keeps its own places.
func TestVNCUserLimitIsPerOrganization(t *testing.T) {
	r := newVNCRig(t, AgentHubConfig{VNC: VNCConfig{MaxPerUser: 1}})
	r.addSession("a1", "s1") // org o1, user u1
	if err := r.db.CreateSession(t.Context(), models.Session{ID: "s2", OrgID: "o2", UserID: "u1", AgentID: "a1", State: models.SessionStateRunning}); err != nil {
		t.Fatal(err)
	}
	r.dialAgent("a1", true, 0)
	open := func(id string) (*Tunnel, error) {
		t.Helper()
		sess, err := r.db.GetSession(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		return r.hub.OpenTunnel(t.Context(), TunnelRequest{Session: sess, UserID: "u1"})
	}
	var first *Tunnel
	testkit.Eventually(t, 5*time.Second, "the agent's tunnels open", func() bool {
		var err error
		first, err = open("s1")
		return err == nil
	})
	defer first.Close()
	if _, err := open("s1"); !errors.Is(err, ErrTooManyTunnels) {
		t.Fatalf("o1's u1 past its limit: %v, want ErrTooManyTunnels", err)
	}
	other, err := open("s2")
	if err != nil {
		t.Fatalf("o2's u1, while o1's u1 is at its limit: %v", err)
	}
	other.Close()
}

// vnc_ready costs a database read, so it counts toward the agent's frame rate limit: a flood
// of them closes the agent as any flood does, where vnc_data (bounded by its tunnel) would not.
func TestVNCReadyFloodIsRateLimited(t *testing.T) {
	r := newVNCRig(t, AgentHubConfig{MessageRate: 5, MessageBurst: 5})
	r.addSession("a1", "s1")
	a := r.dialAgent("a1", false, 0)
	go func() { // drain what the agent is sent, so its reader never stalls the test
		for range a.msgs {
		}
	}()
	for range 50 {
		a.send(models.MessageTypeVNCReady, models.VNCReadyMessage{SessionID: "s1"})
	}
	testkit.Eventually(t, 10*time.Second, "the flooding agent is closed", func() bool {
		return testutil.ToFloat64(r.hub.metrics.refused.WithLabelValues("rate_limited")) >= 1
	})
}
