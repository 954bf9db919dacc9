package websocket

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/internal/testkit"
)

// rawClient is a browser written by hand, to send what gorilla's client never would.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
}

// dialRaw opens a sessions socket with a handshake written by hand.
func dialRaw(t *testing.T, base string, q url.Values) *rawClient {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	fmt.Fprintf(conn, "GET /?%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", q.Encode(), u.Host)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	c := &rawClient{t: t, conn: conn, br: br}
	// The connected frame, then the snapshot: the client is live.
	for _, want := range []string{"connected", "sessions_update"} {
		if op, p := c.read(); op != websocket.TextMessage || !strings.Contains(string(p), `"type":"`+want+`"`) {
			t.Fatalf("got %d %s, want %s", op, p, want)
		}
	}
	return c
}

// frame encodes a client frame: first byte b0, masked unless unmasked.
func clientFrame(b0 byte, payload []byte, unmasked bool) []byte {
	out := []byte{b0}
	maskBit := byte(0x80)
	if unmasked {
		maskBit = 0
	}
	switch n := len(payload); {
	case n <= 125:
		out = append(out, maskBit|byte(n))
	case n <= 0xffff:
		out = append(out, maskBit|126)
		out = binary.BigEndian.AppendUint16(out, uint16(n))
	default:
		out = append(out, maskBit|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	if unmasked {
		return append(out, payload...)
	}
	mask := [4]byte{0x12, 0x34, 0x56, 0x78}
	out = append(out, mask[:]...)
	for i, b := range payload {
		out = append(out, b^mask[i&3])
	}
	return out
}

func (c *rawClient) write(b []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

// read reads one server frame, which must be unmasked and final.
func (c *rawClient) read() (byte, []byte) {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		c.t.Fatalf("read frame: %v", err)
	}
	if h[0]&0xf0 != finBit || h[1]&0x80 != 0 {
		c.t.Fatalf("server frame header %x: want final and unmasked", h)
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		_, _ = io.ReadFull(c.br, b[:])
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		_, _ = io.ReadFull(c.br, b[:])
		n = binary.BigEndian.Uint64(b[:])
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(c.br, p); err != nil {
		c.t.Fatalf("read payload: %v", err)
	}
	return h[0] & 0x0f, p
}

// expectClose reads frames until the close frame and returns its code.
func (c *rawClient) expectClose() int {
	c.t.Helper()
	for {
		op, p := c.read()
		if op != websocket.CloseMessage {
			continue
		}
		if len(p) < 2 {
			return websocket.CloseNoStatusReceived
		}
		return int(binary.BigEndian.Uint16(p))
	}
}

// Frames a browser may not send are answered with 1002, whatever their shape.
func TestRawReaderRefusesBadFrames(t *testing.T) {
	m := startManager(t, nil, Config{})
	base := sessionsServer(t, m)
	ops := params("org", "o", "user", "u")
	closePayload := func(code uint16, reason string) []byte {
		return append(binary.BigEndian.AppendUint16(nil, code), reason...)
	}
	for name, bad := range map[string][]byte{
		"unmasked":                clientFrame(0x81, []byte("hi"), true),
		"reserved bit":            clientFrame(0x80|0x40|1, []byte("hi"), false),
		"fragmented ping":         clientFrame(0x09, nil, false),
		"control longer than 125": clientFrame(0x89, make([]byte, 126), false),
		"lone continuation":       clientFrame(0x80, []byte("x"), false),
		"text inside fragments":   append(clientFrame(0x01, []byte("a"), false), clientFrame(0x81, []byte("b"), false)...),
		"unknown opcode":          clientFrame(0x83, nil, false),
		"one-byte close":          clientFrame(0x88, []byte{3}, false),
		"close code 1005":         clientFrame(0x88, closePayload(1005, ""), false),
		"close reason not UTF-8":  clientFrame(0x88, closePayload(1000, "\xff"), false),
	} {
		t.Run(name, func(t *testing.T) {
			c := dialRaw(t, base, ops)
			c.write(bad)
			if code := c.expectClose(); code != websocket.CloseProtocolError {
				t.Fatalf("close %d, want 1002", code)
			}
		})
	}
	testkit.Eventually(t, 10*time.Second, "every client gone", func() bool { return m.Hub().ClientCount() == 0 })
}

// Frames split anywhere, down to single bytes, are read as sent: a ping is answered with its
// payload, a fragmented message is taken, and a close is echoed with its code.
func TestRawReaderReassemblesSplitFrames(t *testing.T) {
	m := startManager(t, nil, Config{})
	c := dialRaw(t, sessionsServer(t, m), params("org", "o", "user", "u"))
	var stream []byte
	stream = append(stream, clientFrame(0x89, []byte("hello"), false)...)
	stream = append(stream, clientFrame(0x01, []byte(strings.Repeat("a", 300)), false)...) // 16-bit length
	stream = append(stream, clientFrame(0x8a, nil, false)...)                              // a pong between fragments
	stream = append(stream, clientFrame(0x80, []byte("end"), false)...)
	for _, b := range stream {
		c.write([]byte{b})
		time.Sleep(time.Millisecond) // each byte its own read, often
	}
	if op, p := c.read(); op != websocket.PongMessage || string(p) != "hello" {
		t.Fatalf("got %d %q, want the pong of hello", op, p)
	}
	// Still served: a broadcast arrives after all that.
	m.Hub().BroadcastToOrg("o", []byte(`{"type":"after"}`))
	if op, p := c.read(); op != websocket.TextMessage || string(p) != `{"type":"after"}` {
		t.Fatalf("got %d %q", op, p)
	}
	c.write(clientFrame(0x88, binary.BigEndian.AppendUint16(nil, 4321), false))
	if code := c.expectClose(); code != 4321 {
		t.Fatalf("close %d, want the peer's 4321 echoed", code)
	}
}

// The size limit counts a message across its fragments.
func TestRawReaderMessageTooBigAcrossFragments(t *testing.T) {
	m := startManager(t, nil, Config{MaxMessageSize: 4096})
	c := dialRaw(t, sessionsServer(t, m), params("org", "o", "user", "u"))
	c.write(clientFrame(0x01, make([]byte, 3000), false))
	c.write(clientFrame(0x80, make([]byte, 3000), false))
	if code := c.expectClose(); code != websocket.CloseMessageTooBig {
		t.Fatalf("close %d, want 1009", code)
	}
}

// A socket the raw reader cannot read (TLS) is read by gorilla's reader, with the same
// behaviour: deliveries, pongs, the close echoed.
func TestTLSClientsUseGorillaReader(t *testing.T) {
	m := startManager(t, nil, Config{})
	conn := dialTLSSessions(t, m)
	pong := make(chan string, 1)
	conn.SetPongHandler(func(s string) error { pong <- s; return nil })
	if err := conn.WriteControl(websocket.PingMessage, []byte("tls"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	// Each broadcast is a frame to read, and reading is what calls the pong handler.
	for got := ""; got == ""; {
		m.Hub().BroadcastToOrg("o", []byte(`{"type":"over-tls"}`))
		readUntilType(t, conn, "over-tls")
		select {
		case got = <-pong:
			if got != "tls" {
				t.Fatalf("pong %q", got)
			}
		default:
		}
	}
	if err := conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4100, "bye"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if code, _ := expectClose(t, conn, 5*time.Second); code != 4100 {
		t.Fatalf("close %d, want 4100 echoed", code)
	}
	testkit.Eventually(t, 5*time.Second, "the client gone", func() bool { return m.Hub().ClientCount() == 0 })
}

// dialTLSSessions opens a sessions socket of m (org "o", user "u") over TLS, which the raw
// reader cannot read, and returns it once its snapshot has arrived.
func dialTLSSessions(t *testing.T, m *Manager) *websocket.Conn {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := testUpgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		_ = m.ServeSessions(r.Context(), conn, &OrgContext{OrgID: "o", UserID: "u"}, SessionsRequest{})
	}))
	t.Cleanup(srv.Close)
	d := websocket.Dialer{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} // the test server's certificate
	conn, _, err := d.Dial("wss"+strings.TrimPrefix(srv.URL, "https"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	readUntilType(t, conn, "sessions_update")
	return conn
}
