//go:build darwin || linux || openbsd

// The nonblocking write path: the systems whose golang.org/x/sys/unix has writev(2) (ios and
// android build as darwin and linux). Elsewhere outbox_other.go writes through net.Conn.

package websocket

import (
	"errors"
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// maxIovecs is the most buffers one writev(2) takes (IOV_MAX on Linux).
const maxIovecs = 1024

// rawConnOf returns the socket under netConn for nonblocking reads and writes, or nil when
// there is none (TLS): that client is written and read through net.Conn and gorilla.
func rawConnOf(netConn net.Conn) syscall.RawConn {
	if sc, ok := netConn.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			return raw
		}
	}
	return nil
}

// rawWrite is one nonblocking write in progress. Writes borrow it from a pool, so a client
// holds no write state between writes and no closure is made per write.
type rawWrite struct {
	iov [][]byte
	n   int
	err error
	fn  func(fd uintptr) bool
}

var rawWritePool = sync.Pool{New: func() any {
	w := &rawWrite{}
	w.fn = w.write
	return w
}}

// writeNow writes as much of bufs as the socket takes without blocking and
// returns what is left. Without a raw socket (TLS) everything is left.
func (o *outbox) writeNow(bufs [][]byte) ([][]byte, error) {
	if o.raw == nil {
		return bufs, nil
	}
	w := rawWritePool.Get().(*rawWrite)
	defer rawWritePool.Put(w)
	for len(bufs) > 0 {
		w.iov = bufs[:min(len(bufs), maxIovecs)]
		want := 0
		for _, b := range w.iov {
			want += len(b)
		}
		err := o.raw.Write(w.fn)
		n, werr := w.n, w.err
		w.iov, w.err = nil, nil
		switch {
		case err != nil:
			return bufs, err
		case errors.Is(werr, unix.EAGAIN):
			return bufs, nil
		case werr != nil:
			return bufs, werr
		}
		bufs = consume(bufs, n)
		if n < want {
			return bufs, nil
		}
	}
	return nil, nil
}

// write makes one nonblocking write(2) or writev(2) of w.iov; returning
// true tells the poller not to wait for the socket.
func (w *rawWrite) write(fd uintptr) bool {
	for {
		if len(w.iov) == 1 {
			w.n, w.err = unix.Write(int(fd), w.iov[0])
		} else {
			w.n, w.err = unix.Writev(int(fd), w.iov)
		}
		if w.err != unix.EINTR {
			break
		}
	}
	if w.err != nil {
		w.n = 0
	}
	return true
}
