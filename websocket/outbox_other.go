//go:build !darwin && !linux && !openbsd

// Without writev(2) in golang.org/x/sys/unix (Windows, the other BSDs, …) there is no
// nonblocking write path: every client is written and read as a TLS client is on Linux.

package websocket

import (
	"net"
	"syscall"
)

// rawConnOf returns nil: no client gets a raw socket here, so writes go through net.Conn
// (writeBlocking) and reads through gorilla (readPump).
func rawConnOf(net.Conn) syscall.RawConn { return nil }

// writeNow leaves everything to the writer goroutine, as for a TLS client.
func (o *outbox) writeNow(bufs [][]byte) ([][]byte, error) { return bufs, nil }
