package vnctest

import (
	"io"
	"net"
	"sync"
	"testing"
)

// ServeTCP runs a TCP server on a loopback port for the test, handling each connection with
// handle in a goroutine of its own, and returns its address. The test's cleanup closes the
// listener and waits for every handler: a handler ends when its peer closes.
func ServeTCP(tb testing.TB, handle func(net.Conn)) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	tb.Cleanup(func() { _ = l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				handle(c)
			})
		}
	})
	return l.Addr().String()
}

// Echo sends back what it reads: the far end of a tunnel where a VNC server would be.
func Echo(c net.Conn) { _, _ = io.Copy(c, c) }
