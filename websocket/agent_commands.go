package websocket

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/models"
)

// SendCommandToAgent stores the command and delivers it to the agent as a "command" frame.
// An empty CommandID is filled in; resubmitting a CommandID already stored for the same agent
// and action is harmless. The command is never lost: when the agent is not connected the
// error wraps ErrAgentNotConnected, and the command waits for the agent's next connection.
func (h *AgentHub) SendCommandToAgent(agentID string, command *models.AgentCommand) error {
	if command == nil {
		return errors.New("websocket: send command: nil command")
	}
	ctx, cancel := context.WithTimeout(h.ctx, defaultStoreCallTimeout)
	defer cancel()
	cmd := *command
	cmd.AgentID = agentID
	stored, connected, err := h.commands.submit(ctx, cmd, nil)
	if err != nil {
		return err
	}
	*command = stored
	if !connected {
		return fmt.Errorf("websocket: command %s stored for agent %q: %w", stored.CommandID, agentID, ErrAgentNotConnected)
	}
	return nil
}

// SubmitCommand stores cmd (status pending) and wakes the agent's dispatcher if the agent is
// connected here. With session set, the session row is created in the same transaction (the
// start_session of the admin API) and session.created is published. Defaults: a new
// time-ordered "cmd-<uuid>" id, the payload's "sessionId" and cmd.SessionID filled from each other, the
// CommandTTL deadline. A CommandID already stored for the same agent and action returns that
// command; for anything else it is ErrCommandConflict.
func (h *AgentHub) SubmitCommand(ctx context.Context, cmd models.AgentCommand, session *models.Session) (models.AgentCommand, error) {
	stored, _, err := h.commands.submit(ctx, cmd, session)
	return stored, err
}

// CommandStore is the queue of record of agent commands: the part of AgentStore the
// command life uses. *db.Database implements it; every state change is a guarded update, so a
// late or duplicated call never moves a command backwards.
type CommandStore interface {
	CreateCommand(ctx context.Context, c models.AgentCommand) error
	CreateSessionWithCommand(ctx context.Context, s models.Session, c models.AgentCommand) error
	GetCommand(ctx context.Context, id string) (models.AgentCommand, error)
	ClaimCommands(ctx context.Context, agentID string, includeSent bool, limit int, at time.Time) ([]models.AgentCommand, error)
	MarkCommandSent(ctx context.Context, id string, at time.Time) (attempt int, ok bool, err error)
	AckCommand(ctx context.Context, agentID, id string, at time.Time) (db.Transition, error)
	CompleteCommand(ctx context.Context, agentID, id string, result map[string]any, at time.Time) (db.Transition, error)
	FailCommand(ctx context.Context, agentID, id, errText string, at time.Time) (db.Transition, error)
	ExpireCommands(ctx context.Context, now time.Time) (int64, error)
	AgentsWithPendingCommands(ctx context.Context) ([]string, error)
}

// errUnknownCommand is commandBook's answer to an agent's answer about no command of its own.
var errUnknownCommand = errors.New("unknown command")

// alreadyFinal is finish's answer to a result for a command that is already final: results
// are sent at least once, so after a redelivery a replay is expected.
type alreadyFinal struct{ status string }

func (e alreadyFinal) Error() string { return "command is already " + e.status }

// commandBook is the one home of a command's life on this replica: it stores a submitted
// command, wakes the dispatcher of the agent's connection (here, or through the cluster on the
// replica that holds it), runs the dispatchers that claim, deliver and resend commands, records
// the agent's acks, results and failures, and sweeps for late acks and past deadlines. The
// database is the queue of record; the book keeps only what this replica's connections have
// in flight.
type commandBook struct {
	store   CommandStore
	cfg     AgentHubConfig // Clock, Logger, AckTimeout, MaxAttempts, CommandTTL
	metrics *agentMetrics
	events  sessionEvents
	link    *replicaLink
	// local returns the dispatcher of the agent's connection on this replica, or nil: the
	// registry's own lookup, so the book keeps no second map of connections.
	local func(agentID string) *deliveries
}

func newCommandBook(store CommandStore, cfg AgentHubConfig, metrics *agentMetrics, link *replicaLink, local func(agentID string) *deliveries) *commandBook {
	return &commandBook{
		store: store, cfg: cfg, metrics: metrics, link: link, local: local,
		events: sessionEvents{pub: cfg.Events, logger: cfg.Logger},
	}
}

// submit stores cmd (status pending) and wakes the agent's dispatcher; it also reports whether
// some replica holds the agent (the wake-up looked it up anyway). Defaults: a new time-ordered
// "cmd-<uuid>" id, the session settled from cmd.SessionID and the payload's "sessionId" (both
// may differ: the caller is trusted), the CommandTTL deadline. With session set, the session
// row is created in the same transaction and session.created is published. A CommandID already
// stored for the same agent and action returns that command; for anything else it is
// ErrCommandConflict.
func (b *commandBook) submit(ctx context.Context, cmd models.AgentCommand, session *models.Session) (models.AgentCommand, bool, error) {
	if cmd.AgentID == "" || strings.TrimSpace(cmd.Action) == "" {
		return cmd, false, errors.New("websocket: submit command: agent id and action are required")
	}
	now := b.cfg.Clock.Now()
	if cmd.CommandID == "" {
		// Version 7 ids grow with time, so commands created in the same instant are still
		// delivered in the order they were submitted (ties on created_at sort by id).
		cmd.CommandID = "cmd-" + uuid.Must(uuid.NewV7()).String()
	}
	if err := models.SettleCommandSession(&cmd, true); err != nil {
		return cmd, false, fmt.Errorf("websocket: submit command %q: %w", cmd.CommandID, err)
	}
	cmd.Status, cmd.Attempts, cmd.CreatedAt = models.CommandStatusPending, 0, now
	if cmd.ExpiresAt == nil && b.cfg.CommandTTL > 0 {
		deadline := now.Add(b.cfg.CommandTTL)
		cmd.ExpiresAt = &deadline
	}
	var err error
	if session != nil {
		err = b.store.CreateSessionWithCommand(ctx, *session, cmd)
	} else {
		err = b.store.CreateCommand(ctx, cmd)
	}
	if errors.Is(err, db.ErrConflict) && session == nil {
		existing, gerr := b.store.GetCommand(ctx, cmd.CommandID)
		if gerr == nil && existing.AgentID == cmd.AgentID && existing.Action == cmd.Action {
			return existing, b.wake(ctx, cmd.AgentID), nil
		}
		return cmd, false, fmt.Errorf("websocket: submit command %q: %w", cmd.CommandID, ErrCommandConflict)
	}
	if err != nil {
		return cmd, false, fmt.Errorf("websocket: submit command %q: %w", cmd.CommandID, err)
	}
	b.metrics.commands.WithLabelValues(models.CommandStatusPending).Inc()
	if session != nil {
		b.events.publish(ctx, session.OrgID, SessionEvent{
			Type: EventSessionCreated, SessionID: session.ID, UserID: session.UserID, Timestamp: now,
			Data: map[string]any{"state": session.State, "template": session.Template, "agentId": cmd.AgentID},
		})
	}
	return cmd, b.wake(ctx, cmd.AgentID), nil
}

// wake starts a delivery pass for the agent on the replica that holds it, and reports whether
// some replica does. Nothing is lost when the wake-up is: the command waits in the database for
// the next pass or connection.
func (b *commandBook) wake(ctx context.Context, agentID string) bool {
	if b.wakeLocal(agentID) {
		return true
	}
	return b.link.wake(ctx, agentID)
}

// wakeLocal wakes the dispatcher of the agent's connection on this replica, if it has one.
func (b *commandBook) wakeLocal(agentID string) bool {
	d := b.local(agentID)
	if d != nil {
		d.wakeUp()
	}
	return d != nil
}

// serve is a connection's dispatcher: it delivers the agent's commands until the connection
// closes. Its first pass sends every command waiting for the agent, the unacknowledged ones of
// earlier connections included, in creation order; later passes, woken by new commands or by
// the check loop, send what is pending and what the check loop wants sent again. One goroutine
// per connection keeps deliveries in order.
func (b *commandBook) serve(d *deliveries) {
	defer d.stop()
	first := true
	for {
		if b.deliverPass(d, first) {
			first = false
			d.retry.Store(false)
		} else {
			d.retry.Store(true)
		}
		select {
		case <-d.wake:
		case <-d.done:
			return
		}
	}
}

// deliverPass sends resends, then waiting commands, until none are left. It reports false when
// the database failed, so the check loop wakes the dispatcher again later.
func (b *commandBook) deliverPass(d *deliveries, includeSent bool) bool {
	for _, id := range d.flight.takeResends() {
		if !b.resendOne(d, d.flight.command(id)) {
			return false
		}
	}
	for {
		limit := deliverBatch
		if includeSent {
			limit = firstPassLimit
		}
		now := b.cfg.Clock.Now()
		// Claiming marks the batch sent (attempt+1) in one statement; a command claimed and
		// then lost with the connection is claimed again by the next one.
		cmds, err := b.store.ClaimCommands(d.ctx, d.agentID, includeSent, limit, now)
		if err != nil {
			if !d.closing() {
				b.cfg.Logger.Warn("claiming waiting commands failed", "agent_id", d.agentID, "err", err)
			}
			return false
		}
		for _, cmd := range cmds {
			if !b.send(d, cmd, cmd.Attempts, now) {
				return false
			}
		}
		if len(cmds) < limit {
			return true
		}
		// Unacknowledged commands past the first firstPassLimit wait for the next connection;
		// pending ones keep coming in batches.
		includeSent = false
	}
}

// resendOne marks a late command sent once more and queues it. A command that moved on
// meanwhile (acknowledged, finished) is skipped: the guarded update refuses it.
func (b *commandBook) resendOne(d *deliveries, cmd *models.AgentCommand) bool {
	if cmd == nil {
		return true // acknowledged since the check loop asked
	}
	now := b.cfg.Clock.Now()
	attempt, ok, err := b.store.MarkCommandSent(d.ctx, cmd.CommandID, now)
	if err != nil {
		if !d.closing() {
			b.cfg.Logger.Warn("marking command sent failed", "agent_id", d.agentID,
				"command_id", cmd.CommandID, "err", err)
		}
		return false
	}
	if !ok {
		d.flight.untrack(cmd.CommandID)
		return true
	}
	return b.send(d, *cmd, attempt, now)
}

// send tracks a command as delivered and queues its frame. Only the connection's dispatcher
// sends commands, so the frame's number is the one after those queued so far (frames of
// other kinds queued meanwhile only make the ack timeout start a little later).
func (b *commandBook) send(d *deliveries, cmd models.AgentCommand, attempt int, now time.Time) bool {
	d.flight.track(cmd, attempt, now, d.flight.nextFrame())
	if attempt > 1 {
		b.metrics.commands.WithLabelValues("resent").Inc()
	} else {
		b.metrics.commands.WithLabelValues(models.CommandStatusSent).Inc()
	}
	if !d.queue(commandFrame(cmd, attempt, now)) {
		return false
	}
	b.metrics.framesOut.Inc()
	return true
}

// ack moves the command to ack. An ack for a command that already moved on is a harmless
// duplicate (nil); one for a command that is not this agent's is errUnknownCommand.
func (b *commandBook) ack(ctx context.Context, d *deliveries, id string, now time.Time) error {
	d.flight.answered(id, now)
	tr, err := b.store.AckCommand(ctx, d.agentID, id, now)
	if errors.Is(err, db.ErrNotFound) {
		return errUnknownCommand
	}
	if err != nil {
		return err
	}
	d.flight.untrack(id)
	if tr.Applied {
		b.metrics.commands.WithLabelValues(models.CommandStatusAck).Inc()
	}
	return nil
}

// finish records a command's result (status completed) or error (failed). A replay on a
// command that is already final changes nothing and is an alreadyFinal, so the agent can be
// told; a command that is not this agent's is errUnknownCommand.
func (b *commandBook) finish(ctx context.Context, d *deliveries, id, status string, result map[string]any, errText string, now time.Time) error {
	d.flight.answered(id, now)
	var (
		tr  db.Transition
		err error
	)
	if status == models.CommandStatusCompleted {
		tr, err = b.store.CompleteCommand(ctx, d.agentID, id, result, now)
	} else {
		tr, err = b.store.FailCommand(ctx, d.agentID, id, errText, now)
	}
	if errors.Is(err, db.ErrNotFound) {
		return errUnknownCommand
	}
	if err != nil {
		return err
	}
	d.flight.untrack(id)
	if !tr.Applied {
		return alreadyFinal{status: tr.Status}
	}
	b.metrics.commands.WithLabelValues(status).Inc()
	return nil
}

// sweep handles a connection's late acks: resends are queued for the commands with deliveries
// left, the others fail; a dispatcher whose last pass failed, or that has resends, is woken.
func (b *commandBook) sweep(ctx context.Context, d *deliveries, now time.Time) {
	for _, f := range d.flight.overdue(now, b.cfg.AckTimeout, b.cfg.MaxAttempts) {
		b.failUnacknowledged(ctx, d.agentID, f, now)
	}
	if d.retry.Load() || d.flight.hasResends() {
		d.wakeUp()
	}
}

// failUnacknowledged fails a command whose deliveries are used up without an ack.
func (b *commandBook) failUnacknowledged(ctx context.Context, agentID string, f inflightCommand, now time.Time) {
	ctx, cancel := context.WithTimeout(ctx, defaultStoreCallTimeout)
	defer cancel()
	reason := fmt.Sprintf("not acknowledged after %d deliveries", f.attempt)
	tr, err := b.store.FailCommand(ctx, "", f.cmd.CommandID, reason, now)
	if err != nil {
		b.cfg.Logger.Warn("failing unacknowledged command failed", "agent_id", agentID,
			"command_id", f.cmd.CommandID, "err", err)
		return
	}
	if tr.Applied {
		b.metrics.commands.WithLabelValues(models.CommandStatusFailed).Inc()
		b.cfg.Logger.Warn("command failed: no ack", "agent_id", agentID,
			"command_id", f.cmd.CommandID, "attempts", f.attempt)
	}
}

// wakeWaiting starts a delivery pass for this replica's agents that have commands waiting: a
// wake-up lost between replicas (Redis away at that moment) delays a command by one check
// interval at most.
func (b *commandBook) wakeWaiting(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, defaultStoreCallTimeout)
	defer cancel()
	ids, err := b.store.AgentsWithPendingCommands(ctx)
	if err != nil {
		b.cfg.Logger.Warn("listing agents with waiting commands failed", "err", err)
		return
	}
	for _, id := range ids {
		b.wakeLocal(id)
	}
}

// expire moves the commands past their deadline to expired.
func (b *commandBook) expire(ctx context.Context, now time.Time) {
	ctx, cancel := context.WithTimeout(ctx, defaultStoreCallTimeout)
	defer cancel()
	n, err := b.store.ExpireCommands(ctx, now)
	if err != nil {
		b.cfg.Logger.Warn("expiring commands failed", "err", err)
	} else if n > 0 {
		b.metrics.commands.WithLabelValues(models.CommandStatusExpired).Add(float64(n))
		b.cfg.Logger.Info("commands expired", "count", n)
	}
}

// deliveries is one connection's part of the command life: the wake-up of its dispatcher, the
// commands delivered on it and not yet acknowledged, and the timing of their acks (flight).
// The commandBook runs the dispatcher (serve) and records the agent's answers; the connection
// only reports the frames it queues and writes and the time its reader spends on frames.
type deliveries struct {
	agentID string
	out     chan<- []byte   // the connection's Send
	done    <-chan struct{} // closed when the connection starts closing
	// ctx bounds the dispatcher's database calls; stop cancels it, so a pass blocked on the
	// database ends with the connection.
	ctx    context.Context
	cancel context.CancelFunc
	wake   chan struct{} // capacity 1: the dispatcher has work
	retry  atomic.Bool   // the last delivery pass failed; the check loop wakes it again
	flight inflight
}

func newDeliveries(parent context.Context, agentID string, out chan<- []byte, done <-chan struct{}) *deliveries {
	d := &deliveries{agentID: agentID, out: out, done: done, wake: make(chan struct{}, 1)}
	d.ctx, d.cancel = context.WithCancel(parent)
	return d
}

// wakeUp asks the dispatcher for a delivery pass; wake-ups while one is pending merge.
func (d *deliveries) wakeUp() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// stop ends the dispatcher's database calls; the connection calls it when it starts closing.
func (d *deliveries) stop() { d.cancel() }

func (d *deliveries) closing() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// queue puts a command frame on the connection's queue, waiting for room while the connection
// lives: a slow agent slows its own deliveries, never anyone else's, and loses none.
func (d *deliveries) queue(frame []byte) bool {
	select {
	case d.out <- frame:
		d.flight.frameQueued()
		return true
	case <-d.done:
		return false
	}
}

// commandFrame is the "command" frame delivering c to its agent, its attempt-th time.
func commandFrame(c models.AgentCommand, attempt int, at time.Time) []byte {
	payload := c.Payload
	if payload == nil {
		payload = map[string]any{}
	}
	return outbound(models.MessageTypeCommand, at, models.CommandMessage{
		CommandID: c.CommandID, Action: c.Action, Payload: payload, Attempt: attempt,
	})
}
