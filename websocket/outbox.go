package websocket

import (
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// outbox is a browser client's bounded queue of encoded frames and the
// ownership of its socket's writing side.
//
// At most one goroutine owns the writing side at a time (writing). A frame
// queued while nobody owns it makes the caller the owner: it writes all that
// is queued with nonblocking writev(2) calls, each carrying every frame
// queued so far (never joined into one frame), and gives ownership up when
// the queue is empty. If the socket cannot take everything at once, the
// rest and the ownership pass to a writer goroutine, which writes with
// deadlines until the queue is empty and then ends. So a delivery to a
// client with room in its socket buffer costs one system call and no
// goroutine switch, a burst to a client costs one system call for all that
// was queued meanwhile, and an idle client has no writer goroutine at all.
type outbox struct {
	c       *Client
	netConn net.Conn
	raw     syscall.RawConn // nil when the socket cannot be written without blocking (TLS)

	mu      sync.Mutex
	queue   [][]byte
	spare   [][]byte      // the batch being written, whose array becomes the next queue
	writing bool          // a goroutine owns the writing side
	closing bool          // the client is closing: nothing more is queued
	room    chan struct{} // made while pushWait waits for room; signalled when a batch is taken
	// The reader's end, which the closer waits for (briefly): readerWait is made only then.
	readerGone bool
	readerWait chan struct{}
}

// readerDone records that the client's reader returned.
func (o *outbox) readerDone() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.readerGone = true
	if o.readerWait != nil {
		close(o.readerWait)
	}
}

// awaitReader waits up to grace for the reader to return: after its close frame the closer
// gives the reader that long to see the peer's, so the socket is not reset under data the
// peer is still sending.
func (o *outbox) awaitReader(grace time.Duration) {
	o.mu.Lock()
	if o.readerGone {
		o.mu.Unlock()
		return
	}
	if o.readerWait == nil {
		o.readerWait = make(chan struct{})
	}
	wait := o.readerWait
	o.mu.Unlock()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-wait:
	case <-t.C:
	}
}

func (o *outbox) init(c *Client, conn *websocket.Conn) {
	o.c = c
	if conn == nil {
		return
	}
	o.netConn = conn.NetConn()
	o.raw = rawConnOf(o.netConn)
}

// preload queues frame before the client starts; flushPreloaded writes it.
func (o *outbox) preload(frame []byte) {
	o.mu.Lock()
	o.queue = append(o.queue, frame)
	o.mu.Unlock()
}

// flushPreloaded writes what was queued before the client started.
func (o *outbox) flushPreloaded() {
	o.mu.Lock()
	own := len(o.queue) > 0 && !o.writing && !o.closing
	if own {
		o.writing = true
	}
	o.mu.Unlock()
	if own {
		o.flush()
	}
}

// offer queues a control frame (a ping, a pong) when there is room and drops it when there is
// none: a queue that is full is being written, so the connection shows life anyway, and a
// keepalive must not close a client that a replay or a burst has filled within its write wait.
func (o *outbox) offer(frame []byte) {
	if ok, _, flush := o.tryPush(frame); ok && flush {
		o.flush()
	}
}

// pushLater is push for a caller that flushes later: when flush is true the
// caller has become the owner of the writing side and must call flush.
func (o *outbox) pushLater(frame []byte) (ok, flush bool) {
	ok, room, flush := o.tryPush(frame)
	if !ok && room != nil {
		o.c.overflow()
	}
	return ok, flush
}

// tryPush queues frame if there is room, and reports whether the caller
// became the owner (then it must flush). When there is no room, it returns a
// channel signalled when room may have been made; it returns neither when
// the client is closing.
func (o *outbox) tryPush(frame []byte) (ok bool, room <-chan struct{}, flush bool) {
	o.mu.Lock()
	if o.closing {
		o.mu.Unlock()
		return false, nil, false
	}
	if len(o.queue) >= o.c.hub.cfg.QueueSize {
		if o.room == nil {
			o.room = make(chan struct{}, 1)
		}
		room := o.room
		o.mu.Unlock()
		return false, room, false
	}
	o.queue = append(o.queue, frame)
	own := !o.writing
	o.writing = true
	o.mu.Unlock()
	return true, nil, own
}

// close stops the queue and has the client finished by whoever owns the
// writing side, or by a goroutine started for it when nobody does.
func (o *outbox) close() {
	o.mu.Lock()
	o.closing = true
	own := !o.writing
	o.writing = true
	o.signalRoom()
	o.mu.Unlock()
	if own {
		go o.writer(nil)
	}
}

// take hands the owner what is queued. With nothing queued (and the client
// not closing) it gives ownership up and returns nil.
func (o *outbox) take() (batch [][]byte, closing bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closing {
		batch, o.queue = o.queue, nil
		return batch, true
	}
	if len(o.queue) == 0 {
		o.writing = false
		if cap(o.queue) > 64 { // a burst's array is not kept by an idle client
			o.queue, o.spare = nil, nil
		}
		return nil, false
	}
	batch = o.queue
	o.queue = o.spare[:0]
	o.spare = batch
	o.signalRoom()
	return batch, false
}

func (o *outbox) signalRoom() {
	if o.room != nil {
		select {
		case o.room <- struct{}{}:
		default:
		}
	}
}

// flush is the owner's loop on the caller's goroutine: nonblocking writes
// while the socket takes everything, then a writer goroutine for the rest.
func (o *outbox) flush() {
	for {
		batch, closing := o.take()
		if closing {
			go o.c.finish(batch)
			return
		}
		if batch == nil {
			return
		}
		rest, err := o.writeNow(batch)
		if err != nil {
			o.c.closeWith(websocket.CloseGoingAway, "write failed", "write_error")
			go o.writer(nil)
			return
		}
		if len(rest) > 0 {
			go o.writer(rest)
			return
		}
		clear(batch)
	}
}

// writer is the owner's loop on its own goroutine: rest first, then batches
// until the queue is empty, with blocking writes bounded by the write wait.
// When the client is closing it finishes it.
func (o *outbox) writer(rest [][]byte) {
	wait := o.c.hub.cfg.WriteWait
	if err := o.writeBlocking(rest, wait); err != nil {
		o.c.closeWith(websocket.CloseGoingAway, "write failed", "write_error")
	}
	for {
		batch, closing := o.take()
		if closing {
			o.c.finish(batch)
			return
		}
		if batch == nil {
			return
		}
		if err := o.writeBlocking(batch, wait); err != nil {
			o.c.closeWith(websocket.CloseGoingAway, "write failed", "write_error")
		}
		clear(batch)
	}
}

// writeBlocking writes bufs with writev(2) within wait.
func (o *outbox) writeBlocking(bufs [][]byte, wait time.Duration) error {
	if len(bufs) == 0 {
		return nil
	}
	if err := o.netConn.SetWriteDeadline(time.Now().Add(wait)); err != nil {
		return err
	}
	nb := net.Buffers(bufs)
	_, err := nb.WriteTo(o.netConn)
	// A deadline left in the past would fail the next nonblocking write.
	if derr := o.netConn.SetWriteDeadline(time.Time{}); err == nil {
		err = derr
	}
	return err
}

// consume drops the first n written bytes from bufs.
func consume(bufs [][]byte, n int) [][]byte {
	for n > 0 && len(bufs) > 0 {
		if n < len(bufs[0]) {
			bufs[0] = bufs[0][n:]
			return bufs
		}
		n -= len(bufs[0])
		bufs[0] = nil
		bufs = bufs[1:]
	}
	return bufs
}
