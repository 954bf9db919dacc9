// Package vnctest helps tests that need RFB: the address of the machine's real VNC server, a
// minimal RFB client that keeps a framebuffer, a net.Conn-like view of a viewer's WebSocket, and
// a fake StreamSpace k8s-agent that relays a session's VNC server as that agent does.
package vnctest

import (
	"bytes"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// AddrEnv names the environment variable with the test VNC server's address.
const AddrEnv = "STREAMSPACE_TEST_VNC_ADDR"

// DefaultAddr is where scripts/services.sh starts Xvnc.
const DefaultAddr = "127.0.0.1:5951"

// Addr returns the real VNC server's address, failing the test (never skipping: a missing
// server is a broken machine, not an optional feature) when it does not answer with an RFB
// banner.
func Addr(t testing.TB) string {
	t.Helper()
	addr := os.Getenv(AddrEnv)
	if addr == "" {
		addr = DefaultAddr
	}
	if err := probe(addr); err != nil {
		if strings.Contains(err.Error(), "Too many security failures") {
			t.Fatalf("the VNC server at %s (%s) refuses this host after connections that ended before authenticating: %v; "+
				"restart it with -UseBlacklist=0, as scripts/services.sh starts Xvnc", addr, AddrEnv, err)
		}
		t.Fatalf("no VNC server at %s (%s): %v; run scripts/services.sh to start Xvnc", addr, AddrEnv, err)
	}
	return addr
}

// probe dials addr and runs a whole handshake before hanging up: TigerVNC counts a connection
// that ends before authenticating as a failed attempt and, after a few, refuses the host for a
// while, which would break the tests that follow.
func probe(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return err
	}
	banner := make([]byte, 12)
	if _, err := io.ReadFull(conn, banner); err != nil {
		return err
	}
	if !bytes.HasPrefix(banner, []byte("RFB ")) {
		return &bannerError{banner}
	}
	c := NewClient(struct {
		io.Reader
		io.Writer
	}{io.MultiReader(bytes.NewReader(banner), conn), conn})
	_, _, _, err = c.Handshake()
	return err
}

type bannerError struct{ got []byte }

func (e *bannerError) Error() string {
	return "not an RFB banner: " + string(bytes.ToValidUTF8(e.got, []byte("?")))
}
