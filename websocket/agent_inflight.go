package websocket

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/streamspace/streamspace-realtime/models"
)

// inflight is the ack-timing of one connection: the commands delivered on it and not yet
// acknowledged, and what tells a late ack from an agent still reading its backlog (which
// frames reached the socket, which the agent answered, and how long the reader spent on
// frames instead of reading). The zero value is ready to use.
type inflight struct {
	// queued numbers the frames queued on the connection, written counts those the writer
	// wrote: a command's ack timeout runs from when its frame reached the socket, not from
	// when it joined a queue that a slow agent may take long to drain.
	queued, written atomic.Uint64
	// The reader's time spent handling frames (database work) rather than reading: a
	// command's ack timeout leaves it out, since the agent's answers wait in the socket
	// meanwhile. handlingSince is when the frame under way began (Unix nanoseconds on the
	// hub's clock, 0 between frames); handled sums the frames done.
	handlingSince, handled atomic.Int64

	// Guarded by mu: commands delivered and not yet acknowledged, and the ones the check loop
	// wants sent again.
	mu     sync.Mutex
	cmds   map[string]inflightCommand
	resend []string
	// reachedFrame is the highest frame number of a command the agent answered (ack,
	// complete, failed), at lastAnswer: frames arrive in order, so the agent has read every
	// frame up to it, and is still reading towards those after it.
	reachedFrame  uint64
	lastAnswer    time.Time
	answerStalled time.Duration // stalled() at lastAnswer
}

// inflightCommand is a delivered command waiting for its ack.
type inflightCommand struct {
	cmd     models.AgentCommand
	attempt int
	sentAt  time.Time     // when its frame was queued, then when it was seen written
	stalled time.Duration // the connection's stalled() at sentAt
	frame   uint64        // its frame's number among the queued frames
}

// frameQueued counts a frame put on the connection's queue, frameWritten one the writer wrote.
func (f *inflight) frameQueued()  { f.queued.Add(1) }
func (f *inflight) frameWritten() { f.written.Add(1) }

// nextFrame is the number the next frame queued will have.
func (f *inflight) nextFrame() uint64 { return f.queued.Load() + 1 }

// handlingStarted and handlingEnded bracket the reader's handling of one frame.
func (f *inflight) handlingStarted(at time.Time) { f.handlingSince.Store(at.UnixNano()) }
func (f *inflight) handlingEnded(took time.Duration) {
	f.handled.Add(int64(took))
	f.handlingSince.Store(0)
}

// stalled is how long, up to now, the reader spent handling this agent's frames instead of
// reading the next ones. Read while a frame is under way it may count that frame twice, which
// only makes a timeout a little longer.
func (f *inflight) stalled(now time.Time) time.Duration {
	d := time.Duration(f.handled.Load())
	if since := f.handlingSince.Load(); since != 0 {
		d += now.Sub(time.Unix(0, since))
	}
	return d
}

func (f *inflight) track(cmd models.AgentCommand, attempt int, at time.Time, frame uint64) {
	stalled := f.stalled(at)
	f.mu.Lock()
	if f.cmds == nil {
		f.cmds = make(map[string]inflightCommand)
	}
	f.cmds[cmd.CommandID] = inflightCommand{cmd: cmd, attempt: attempt, sentAt: at, stalled: stalled, frame: frame}
	f.mu.Unlock()
}

// answered records that the agent answered command id at now: it has read the command's
// frame, and every frame before it.
func (f *inflight) answered(id string, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.cmds[id]; ok && c.frame > f.reachedFrame {
		f.reachedFrame = c.frame
	}
	if now.After(f.lastAnswer) {
		f.lastAnswer = now
		f.answerStalled = f.stalled(now)
	}
}

func (f *inflight) untrack(id string) {
	f.mu.Lock()
	delete(f.cmds, id)
	f.mu.Unlock()
}

// command returns the delivered command id, or nil when it was acknowledged meanwhile.
func (f *inflight) command(id string) *models.AgentCommand {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.cmds[id]
	if !ok {
		return nil
	}
	return &c.cmd
}

func (f *inflight) hasResends() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.resend) > 0
}

func (f *inflight) takeResends() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := f.resend
	f.resend = nil
	return ids
}

// overdue sorts the commands whose ack is late: those with deliveries left are queued for a
// resend, the others are returned to be failed. A queued resend counts as sent now, so a check
// that runs before the dispatcher gets to it does not queue it twice. A command whose frame
// still waits in the queue is not late: its timeout starts again, so that an agent busy
// reading a backlog is not sent the backlog a second time. Nor does the time the reader spent
// on this agent's frames count (a slow database): the agent's answers were waiting for it.
func (f *inflight) overdue(now time.Time, ackTimeout time.Duration, maxAttempts int) (exhausted []inflightCommand) {
	written := f.written.Load()
	stalled := f.stalled(now)
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, c := range f.cmds {
		if c.frame > written {
			c.sentAt, c.stalled = now, stalled
			f.cmds[id] = c
			continue
		}
		// Past the last command the agent answered, the agent is still reading: its timeout
		// runs from that answer, so an agent working through a backlog is not sent it twice.
		// A command before it was read and left unanswered: it is late from its own delivery.
		since, stalledSince := c.sentAt, c.stalled
		if c.frame > f.reachedFrame && f.lastAnswer.After(since) {
			since, stalledSince = f.lastAnswer, f.answerStalled
		}
		if now.Sub(since)-(stalled-stalledSince) < ackTimeout {
			continue
		}
		if c.attempt >= maxAttempts {
			exhausted = append(exhausted, c)
			delete(f.cmds, id)
			continue
		}
		c.sentAt, c.stalled = now, stalled
		f.cmds[id] = c
		f.resend = append(f.resend, id)
	}
	return exhausted
}
