package agentclient

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"sync/atomic"
	"testing"

	"github.com/streamspace/streamspace-realtime/agentclient/agenttest"
	"github.com/streamspace/streamspace-realtime/models"
)

// testSessions are the sessions setupTunnels' agent runs (OpenTunnel).
var testSessions = []string{"s1", "s2", "stuck", "gone"}

// setupTunnels starts an agent serving tunnels with h for testSessions against a control
// plane that takes up tunnel/1 when ext, and returns its first connection.
func setupTunnels(t *testing.T, ext bool, h TunnelHandler) (*agenttest.Server, *Agent, *agenttest.Conn) {
	t.Helper()
	cp, a, _ := setup(t, func(c *Config) { c.Tunnels = h })
	cp.UseTunnels(ext)
	for _, s := range testSessions {
		if err := a.OpenTunnel(t.Context(), s); err != nil {
			t.Fatal(err)
		}
	}
	start(t, a)
	c := nextConn(t, cp)
	if c.Features != models.AgentFeatureTunnel {
		t.Fatalf("X-Agent-Features %q, want %q", c.Features, models.AgentFeatureTunnel)
	}
	return cp, a, c
}

// openTunnel sends tunnel_open and waits for tunnel_opened.
func openTunnel(t *testing.T, c *agenttest.Conn, id uint32, session string, viewOnly bool, window int64) models.TunnelOpenedMessage {
	t.Helper()
	if err := c.Send(models.MessageTypeTunnelOpen, models.TunnelOpenMessage{TunnelID: id, SessionID: session, ViewOnly: viewOnly, Window: window}); err != nil {
		t.Fatal(err)
	}
	m := next[models.TunnelOpenedMessage](t, c, models.MessageTypeTunnelOpened)
	if m.TunnelID != id {
		t.Fatalf("tunnel_opened for tunnel %d, want %d", m.TunnelID, id)
	}
	return m
}

// nextData returns the next data frame, which must be tunnel id's.
func nextData(t *testing.T, c *agenttest.Conn, id uint32) []byte {
	t.Helper()
	d, err := c.NextData(waitCtx(t))
	if err != nil {
		t.Fatalf("no data frame: %v", err)
	}
	if d.TunnelID != id {
		t.Fatalf("data frame for tunnel %d, want %d", d.TunnelID, id)
	}
	return d.Data
}

// readData reads data frames of tunnel id until n bytes came.
func readData(t *testing.T, c *agenttest.Conn, id uint32, n int) []byte {
	t.Helper()
	var out []byte
	for len(out) < n {
		out = append(out, nextData(t, c, id)...)
	}
	if len(out) != n {
		t.Fatalf("got %d bytes, want %d", len(out), n)
	}
	return out
}

// echoHandler writes greeting, then echoes what it reads until EOF or "quit". It counts the
// handlers running in live and reports each ending error on ends.
func echoHandler(greeting string, live *atomic.Int32, ends chan<- error) TunnelHandler {
	return func(ctx context.Context, t *Tunnel) error {
		live.Add(1)
		defer live.Add(-1)
		err := func() error {
			if _, err := t.Write([]byte(greeting)); err != nil {
				return err
			}
			buf := make([]byte, 64<<10)
			for {
				n, err := t.Read(buf)
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return err
				}
				if bytes.Equal(buf[:n], []byte("quit")) {
					return nil
				}
				if _, err := t.Write(buf[:n]); err != nil {
					return err
				}
			}
		}()
		if ends != nil {
			ends <- err
		}
		return err
	}
}

// nextVNCData returns the decoded bytes of the next vnc_data, which must be session's.
func nextVNCData(t *testing.T, c *agenttest.Conn, session string) []byte {
	t.Helper()
	m := next[models.VNCDataMessage](t, c, models.MessageTypeVNCData)
	if m.SessionID != session {
		t.Fatalf("vnc_data for session %q, want %q", m.SessionID, session)
	}
	b, err := base64.StdEncoding.DecodeString(m.Data)
	if err != nil {
		t.Fatalf("vnc_data is not base64: %v", err)
	}
	return b
}

func sendVNCData(t *testing.T, c *agenttest.Conn, session string, b []byte) {
	t.Helper()
	if err := c.Send(models.MessageTypeVNCData, models.VNCDataMessage{SessionID: session, Data: base64.StdEncoding.EncodeToString(b)}); err != nil {
		t.Fatal(err)
	}
}

func recvErr(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-waitCtx(t).Done():
		t.Fatal("the tunnel handler did not end")
		return nil
	}
}

// credit grants n bytes of window on tunnel id.
func credit(t *testing.T, c *agenttest.Conn, id uint32, n int64) {
	t.Helper()
	if err := c.Send(models.MessageTypeTunnelCredit, models.TunnelCreditMessage{TunnelID: id, Bytes: n}); err != nil {
		t.Fatal(err)
	}
}

// closesOf returns the tunnel_close frames received so far.
func closesOf(t *testing.T, c *agenttest.Conn) []models.TunnelCloseMessage {
	t.Helper()
	var out []models.TunnelCloseMessage
	for _, f := range c.Frames() {
		if f.Type == models.MessageTypeTunnelClose {
			m, err := agenttest.Decode[models.TunnelCloseMessage](f)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, m)
		}
	}
	return out
}

func agenttestDecodeOpened(f models.AgentMessage) (models.TunnelOpenedMessage, error) {
	return agenttest.Decode[models.TunnelOpenedMessage](f)
}
