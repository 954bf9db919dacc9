//go:build darwin || linux || openbsd

// The raw reader (see inbound.go) on the systems with the nonblocking write path
// (outbox_unix.go); elsewhere inbound_other.go leaves every client to gorilla's reader.

package websocket

import (
	"errors"
	"io"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/sys/unix"
)

// rawRead is one nonblocking read in progress, borrowed from a pool with its buffer, so an
// idle client holds neither.
type rawRead struct {
	buf [4096]byte
	n   int
	err error
	fn  func(fd uintptr) bool
}

var rawReadPool = sync.Pool{New: func() any {
	r := &rawRead{}
	r.fn = r.read
	return r
}}

// readRaw is the reader of a client on a raw socket when no poller reads it (see
// startRawReader): a goroutine of its own that waits for data holding no buffer. It reads and
// discards browser messages (the sessions socket takes no commands), answers pings and close
// frames through the queue, and enforces the size limit and the pong deadline. After a
// too-big message it keeps discarding until the peer answers the close frame or the closer
// gives up on the handshake.
func (c *Client) readRaw() {
	defer c.pumpDone()
	defer c.out.readerDone()
	netConn, raw := c.out.netConn, c.out.raw
	pongWait := c.hub.cfg.PongWait
	_ = netConn.SetReadDeadline(time.Now().Add(pongWait))
	for {
		// Wait for data holding no buffer.
		if err := raw.Read(waitReadable); err != nil {
			c.closeWith(readCloseCode(err))
			return
		}
		r := rawReadPool.Get().(*rawRead)
		done, err := c.readAvailable(r)
		rawReadPool.Put(r)
		if err != nil {
			c.readFailed(err)
			return
		}
		if done {
			return // the peer's close frame
		}
		_ = netConn.SetReadDeadline(time.Now().Add(pongWait))
	}
}

// readFailed closes the client for what ended its reading: a frame it may not send (1002), a
// frame rate over the limit (1008), or the socket's error.
func (c *Client) readFailed(err error) {
	var perr errProtocol
	switch {
	case errors.As(err, &perr):
		c.closeWith(websocket.CloseProtocolError, string(perr), "protocol_error")
	case errors.Is(err, errRateExceeded):
		c.closeWith(websocket.ClosePolicyViolation, err.Error(), "rate_limited")
	default:
		c.closeWith(readCloseCode(err))
	}
}

// maxReadsPerWake bounds what one wake reads from one socket (16 reads of 4 KiB): a peer that
// keeps its socket full is read again at its next wake, after the others.
const maxReadsPerWake = 16

// readAvailable reads and parses what the socket holds (at most maxReadsPerWake reads),
// without waiting. done reports the peer's close frame.
func (c *Client) readAvailable(r *rawRead) (done bool, err error) {
	for range maxReadsPerWake {
		err := c.out.raw.Read(r.fn)
		n, rerr := r.n, r.err
		r.err = nil
		switch {
		case err != nil:
			return false, err
		case errors.Is(rerr, unix.EAGAIN):
			return false, nil
		case rerr != nil:
			return false, rerr
		case n == 0:
			return false, io.EOF
		}
		if done, err := c.parse(r.buf[:n]); done || err != nil {
			return done, err
		}
		if n < len(r.buf) {
			return false, nil
		}
	}
	return false, nil
}

// waitReadable reports whether the socket has data (or an error or end of stream) to read:
// returning false parks the reader in the poller until it does. It holds no state, so a
// parked reader costs its goroutine and nothing else.
func waitReadable(fd uintptr) bool {
	fds := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds[:], 0)
	return n > 0 || (err != nil && err != unix.EINTR)
}

// read makes one nonblocking read into r.buf.
func (r *rawRead) read(fd uintptr) bool {
	for {
		r.n, r.err = unix.Read(int(fd), r.buf[:])
		if r.err != unix.EINTR {
			break
		}
	}
	if r.err != nil {
		r.n = 0
	}
	return true
}
