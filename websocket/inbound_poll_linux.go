//go:build linux

package websocket

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/sys/unix"
)

// An idle browser connection's largest cost was its reader goroutine: a stack of 2 to 4 KiB
// (the runtime sizes new stacks after the average it last saw, and during a burst of
// connections that average includes the handshakes' deep stacks), more than the connection's
// whole live heap. Here one goroutine per hub waits for all of its clients' raw sockets in an
// epoll(7) set of its own, which the runtime's poller watches like any socket (so the wait
// holds no thread), and reads a socket when it becomes readable. A connection then costs its
// heap state alone. The pong deadline, which the goroutine kept with a read deadline, is
// checked by the hub's pinger (checkPongDeadlines).
//
// A client whose socket cannot be added to the set (the set could not be made: too many
// open files) falls back to a reader goroutine of its own (readRaw).

// poller is a hub's epoll reader. Its goroutine runs while at least one client is in the set:
// started by the first add, ended by the remove that leaves the set empty (the set's file is
// closed, which wakes the goroutine), so an idle hub holds no goroutine and no descriptor.
type poller struct {
	mu      sync.Mutex
	set     *pollSet           // nil while no client is in the set
	clients map[uint64]*Client // by token, the epoll event's data
	next    uint64             // the last token given
	running sync.WaitGroup     // the poll goroutines (an ending one and its successor may overlap)
}

// pollSet is one epoll instance, and its file in the runtime's poller.
type pollSet struct {
	file *os.File
	rc   syscall.RawConn
}

// pollEvents is how many ready sockets one wait returns at most.
const pollEvents = 128

func newPollSet() (*pollSet, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	// Nonblocking, so that os.NewFile hands it to the runtime's poller.
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("epoll set nonblocking: %w", err)
	}
	file := os.NewFile(uintptr(fd), "websocket-epoll")
	rc, err := file.SyscallConn()
	if err != nil {
		_ = file.Close()
		return nil, fmt.Errorf("epoll raw conn: %w", err)
	}
	return &pollSet{file: file, rc: rc}, nil
}

// ctl runs epoll_ctl on the set for the client's socket.
func (s *pollSet) ctl(op int, c *Client, token uint64) error {
	var ctlErr error
	err := s.rc.Control(func(epfd uintptr) {
		ctlErr = c.out.raw.Control(func(fd uintptr) {
			ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(uint32(token)), Pad: int32(uint32(token >> 32))}
			ctlErr = unix.EpollCtl(int(epfd), op, int(fd), &ev)
		})
	})
	if err != nil {
		return err
	}
	return ctlErr
}

// add puts c's socket in the set, starting the poll goroutine if none runs. The socket is
// watched level-triggered: what a wake leaves unread wakes the poller again.
func (p *poller) add(c *Client) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	started := false
	if p.set == nil {
		set, err := newPollSet()
		if err != nil {
			return err
		}
		p.set, p.clients, started = set, make(map[uint64]*Client), true
	}
	p.next++
	token := p.next
	// Indexed before the socket is in the set, so its first event finds it.
	p.clients[token] = c
	c.in.token = token
	c.in.polled.Store(true)
	if err := p.set.ctl(unix.EPOLL_CTL_ADD, c, token); err != nil {
		delete(p.clients, token)
		c.in.polled.Store(false)
		if started {
			_ = p.set.file.Close()
			p.set, p.clients = nil, nil
		}
		return fmt.Errorf("epoll add: %w", err)
	}
	if started {
		p.running.Add(1)
		go p.run(p.set)
	}
	return nil
}

// remove takes c's socket out of the set (a socket already closed has left it by itself), and
// closes the set when it was the last.
func (p *poller) remove(c *Client) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.set == nil || p.clients[c.in.token] != c {
		return
	}
	delete(p.clients, c.in.token)
	_ = p.set.ctl(unix.EPOLL_CTL_DEL, c, c.in.token)
	if len(p.clients) == 0 {
		_ = p.set.file.Close() // ends run's wait
		p.set, p.clients = nil, nil
	}
}

// lookup returns the client of token, nil when it has left.
func (p *poller) lookup(token uint64) *Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.clients[token]
}

// wait waits for the poll goroutines to end (after the last client left).
func (p *poller) wait() { p.running.Wait() }

// run is the poll goroutine of set: it waits in the runtime's poller until the set has ready
// sockets, reads each (readReady), and ends when the set is closed.
func (p *poller) run(set *pollSet) {
	defer p.running.Done()
	events := make([]unix.EpollEvent, pollEvents)
	for {
		var n int
		err := set.rc.Read(func(epfd uintptr) bool {
			var werr error
			n, werr = unix.EpollWait(int(epfd), events, 0)
			if werr != nil {
				n = 0 // EINTR: wait again
			}
			return n > 0
		})
		if err != nil {
			return // closed: no client is left
		}
		for _, ev := range events[:n] {
			token := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if c := p.lookup(token); c != nil {
				c.readReady()
			}
		}
		clear(events[:n])
	}
}

// startRawReader has the hub's poller read c, or a goroutine of its own when the poller
// cannot take it.
func (c *Client) startRawReader() {
	c.in.lastRead.Store(monoMillis())
	if err := c.hub.poller.add(c); err != nil {
		c.hub.cfg.Logger.Warn("browser connection read by a goroutine of its own", "client_id", c.id, "err", err)
		go c.readRaw()
	}
}

// readReady reads what c's socket holds, on the poll goroutine; a close frame, an error or a
// frame the client may not send ends its reading.
func (c *Client) readReady() {
	r := rawReadPool.Get().(*rawRead)
	done, err := c.readAvailable(r)
	rawReadPool.Put(r)
	switch {
	case err != nil:
		c.readFailed(err)
	case !done:
		c.in.lastRead.Store(monoMillis())
		return
	}
	c.stopRawReader()
}

// stopRawReader ends a polled client's reading: out of the set, and the reader's part of the
// client's end reported, once. The closer calls it before closing the socket; a client read
// by its own goroutine is ended by that close instead.
func (c *Client) stopRawReader() {
	if c.in.polled.CompareAndSwap(true, false) {
		c.hub.poller.remove(c)
		c.out.readerDone()
		c.pumpDone()
	}
}

// pongOverdue reports whether a polled client has sent nothing for longer than PongWait (at
// now, from monoNow): the pinger then closes it as a read deadline would.
func (c *Client) pongOverdue(now int64) bool {
	if !c.in.polled.Load() {
		return false
	}
	// A read after now was taken gives a negative difference: not overdue.
	silent := int32(uint32(now/int64(time.Millisecond)) - c.in.lastRead.Load())
	return time.Duration(silent)*time.Millisecond > c.hub.cfg.PongWait
}

// closePongOverdue closes a client whose peer stopped answering pings.
func (c *Client) closePongOverdue() {
	c.closeWith(websocket.CloseGoingAway, "pong timeout", "pong_timeout")
	c.stopRawReader()
}

// pollState is the part of a client's reader state the poller keeps (16 bytes: a Client
// stays within its size class).
type pollState struct {
	polled atomic.Bool // in the hub's poller set, its reading not ended
	// lastRead is when the last read found data, in milliseconds of monoNow modulo 2^32:
	// compared by difference, it holds any pong wait under 24 days.
	lastRead atomic.Uint32
	token    uint64 // its key in the poller, fixed while polled
}

func monoMillis() uint32 { return uint32(monoNow() / int64(time.Millisecond)) }
