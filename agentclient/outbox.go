package agentclient

import "log/slog"

// outboxLimit bounds the frames kept for the next connection.
const outboxLimit = 1024

// outbox holds the frames that must reach the control plane even across reconnects: complete,
// failed and status. The writer of the current connection takes them in order; frames it wrote
// but the control plane has not confirmed (see writer) go back to the front when the connection
// dies. Bounded: when full, the oldest frame is dropped with a log line. Its methods are
// called with Agent.outMu held.
type outbox struct {
	frames [][]byte
	log    *slog.Logger
	// dropped counts frames dropped for lack of room.
	dropped uint64
}

// push appends f, dropping the oldest frame when full.
func (o *outbox) push(f []byte) {
	o.frames = append(o.frames, f)
	o.trim()
}

// pop removes and returns the oldest frame, or nil.
func (o *outbox) pop() []byte {
	if len(o.frames) == 0 {
		return nil
	}
	f := o.frames[0]
	o.frames[0] = nil
	o.frames = o.frames[1:]
	if len(o.frames) == 0 {
		o.frames = nil
	}
	return f
}

// requeue puts frames, older than everything queued, back at the front, in order.
func (o *outbox) requeue(frames [][]byte) {
	if len(frames) == 0 {
		return
	}
	o.frames = append(append(make([][]byte, 0, len(frames)+len(o.frames)), frames...), o.frames...)
	o.trim()
}

func (o *outbox) trim() {
	for len(o.frames) > outboxLimit {
		o.dropped++
		o.log.Warn("agent outbox full: dropping the oldest undelivered frame", "frame", truncate(o.frames[0], 200))
		o.pop()
	}
}

func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "..."
}
