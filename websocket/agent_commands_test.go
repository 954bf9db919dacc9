package websocket

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/streamspace/streamspace-realtime/cluster"
	"github.com/streamspace/streamspace-realtime/db"
	"github.com/streamspace/streamspace-realtime/models"
)

// The commandBook is tested here without sockets or a database: an in-memory CommandStore with
// the guarded transitions of db's, a fake clock, and a connection's deliveries whose queue the
// test reads. The tests with real WebSockets and databases (agent_hub_test.go) cover the rest.

// memCommands is an in-memory CommandStore: every transition moves a command forward only, as
// db.Database's guarded updates do.
type memCommands struct {
	mu       sync.Mutex
	cmds     map[string]models.AgentCommand
	sessions map[string]models.Session
}

func newMemCommands() *memCommands {
	return &memCommands{cmds: make(map[string]models.AgentCommand), sessions: make(map[string]models.Session)}
}

var _ CommandStore = (*memCommands)(nil)

func (m *memCommands) CreateCommand(_ context.Context, c models.AgentCommand) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.cmds[c.CommandID]; ok {
		return fmt.Errorf("mem: create command %q: %w", c.CommandID, db.ErrConflict)
	}
	c.Status, c.Attempts = models.CommandStatusPending, 0
	c.Payload = maps.Clone(c.Payload)
	m.cmds[c.CommandID] = c
	return nil
}

func (m *memCommands) CreateSessionWithCommand(ctx context.Context, s models.Session, c models.AgentCommand) error {
	m.mu.Lock()
	if _, ok := m.sessions[s.ID]; ok {
		m.mu.Unlock()
		return fmt.Errorf("mem: create session %q: %w", s.ID, db.ErrConflict)
	}
	m.sessions[s.ID] = s
	m.mu.Unlock()
	return m.CreateCommand(ctx, c)
}

func (m *memCommands) GetCommand(_ context.Context, id string) (models.AgentCommand, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.cmds[id]
	if !ok {
		return c, fmt.Errorf("mem: command %q: %w", id, db.ErrNotFound)
	}
	return c, nil
}

func (m *memCommands) ClaimCommands(_ context.Context, agentID string, includeSent bool, limit int, at time.Time) ([]models.AgentCommand, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []models.AgentCommand
	for _, c := range m.cmds {
		waiting := c.Status == models.CommandStatusPending || includeSent && c.Status == models.CommandStatusSent
		if c.AgentID == agentID && waiting && (c.ExpiresAt == nil || c.ExpiresAt.After(at)) {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b models.AgentCommand) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.CommandID, b.CommandID)
	})
	out = out[:min(len(out), limit)]
	for i := range out {
		out[i].Status, out[i].Attempts, out[i].SentAt = models.CommandStatusSent, out[i].Attempts+1, &at
		m.cmds[out[i].CommandID] = out[i]
	}
	return out, nil
}

func (m *memCommands) MarkCommandSent(_ context.Context, id string, at time.Time) (int, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.cmds[id]
	if !ok {
		return 0, false, fmt.Errorf("mem: command %q: %w", id, db.ErrNotFound)
	}
	if c.Status != models.CommandStatusPending && c.Status != models.CommandStatusSent {
		return c.Attempts, false, nil
	}
	c.Status, c.Attempts, c.SentAt = models.CommandStatusSent, c.Attempts+1, &at
	m.cmds[id] = c
	return c.Attempts, true, nil
}

// move applies a transition to the statuses in from; an empty agentID matches any agent.
func (m *memCommands) move(agentID, id string, from []string, apply func(*models.AgentCommand)) (db.Transition, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.cmds[id]
	if !ok || agentID != "" && c.AgentID != agentID {
		return db.Transition{}, fmt.Errorf("mem: command %q: %w", id, db.ErrNotFound)
	}
	if !slices.Contains(from, c.Status) {
		return db.Transition{Status: c.Status, Command: c}, nil
	}
	apply(&c)
	m.cmds[id] = c
	return db.Transition{Applied: true, Status: c.Status, Command: c}, nil
}

var unfinished = []string{models.CommandStatusPending, models.CommandStatusSent, models.CommandStatusAck}

func (m *memCommands) AckCommand(_ context.Context, agentID, id string, at time.Time) (db.Transition, error) {
	return m.move(agentID, id, unfinished[:2], func(c *models.AgentCommand) {
		c.Status, c.AcknowledgedAt = models.CommandStatusAck, &at
	})
}

func (m *memCommands) CompleteCommand(_ context.Context, agentID, id string, result map[string]any, at time.Time) (db.Transition, error) {
	return m.move(agentID, id, unfinished, func(c *models.AgentCommand) {
		c.Status, c.Result, c.CompletedAt = models.CommandStatusCompleted, result, &at
	})
}

func (m *memCommands) FailCommand(_ context.Context, agentID, id, errText string, at time.Time) (db.Transition, error) {
	return m.move(agentID, id, unfinished, func(c *models.AgentCommand) {
		c.Status, c.ErrorMessage, c.CompletedAt = models.CommandStatusFailed, models.OptionalString(errText), &at
	})
}

func (m *memCommands) ExpireCommands(_ context.Context, now time.Time) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var n int64
	for id, c := range m.cmds {
		if slices.Contains(unfinished, c.Status) && c.ExpiresAt != nil && !c.ExpiresAt.After(now) {
			c.Status, c.CompletedAt = models.CommandStatusExpired, &now
			m.cmds[id] = c
			n++
		}
	}
	return n, nil
}

func (m *memCommands) AgentsWithPendingCommands(context.Context) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ids []string
	for _, c := range m.cmds {
		if c.Status == models.CommandStatusPending && !slices.Contains(ids, c.AgentID) {
			ids = append(ids, c.AgentID)
		}
	}
	return ids, nil
}

// bookHarness is a commandBook on memCommands and a fake clock, with one connection's
// deliveries for agent a1 attached; frames the dispatcher queues wait in out.
type bookHarness struct {
	t     *testing.T
	book  *commandBook
	store *memCommands
	clock *clockwork.FakeClock
	d     *deliveries
	out   chan []byte
	done  chan struct{}
	// attached is whether the registry the book asks holds d's connection.
	attached atomic.Bool
}

func newBookHarness(t *testing.T, cfg AgentHubConfig) *bookHarness {
	t.Helper()
	h := &bookHarness{t: t, store: newMemCommands(), clock: clockwork.NewFakeClock(),
		out: make(chan []byte, 64), done: make(chan struct{})}
	cfg.Clock, cfg.Replica = h.clock, "r1"
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg = cfg.withDefaults()
	link := &replicaLink{dir: cluster.NewMemoryDirectory("r1"), logger: cfg.Logger}
	h.d = newDeliveries(t.Context(), "a1", h.out, h.done)
	h.attached.Store(true)
	h.book = newCommandBook(h.store, cfg, newAgentMetrics(nil), link, func(agentID string) *deliveries {
		if agentID == h.d.agentID && h.attached.Load() {
			return h.d
		}
		return nil
	})
	t.Cleanup(func() {
		select {
		case <-h.done:
		default:
			close(h.done)
		}
		h.d.stop()
	})
	return h
}

func (h *bookHarness) submit(cmd models.AgentCommand) models.AgentCommand {
	h.t.Helper()
	if cmd.AgentID == "" {
		cmd.AgentID = "a1"
	}
	stored, connected, err := h.book.submit(h.t.Context(), cmd, nil)
	if err != nil {
		h.t.Fatalf("submit: %v", err)
	}
	if connected != (cmd.AgentID == "a1") {
		h.t.Fatalf("submit of %s: connected %v", cmd.AgentID, connected)
	}
	return stored
}

// pass runs one delivery pass of the dispatcher and returns the command frames it queued.
func (h *bookHarness) pass(first bool) []models.CommandMessage {
	h.t.Helper()
	if !h.book.deliverPass(h.d, first) {
		h.t.Fatal("delivery pass failed")
	}
	var got []models.CommandMessage
	for {
		select {
		case f := <-h.out:
			got = append(got, decodeCommandFrame(h.t, f))
		default:
			return got
		}
	}
}

// written tells the ack timer every queued frame reached the socket.
func (h *bookHarness) written() {
	for h.d.flight.written.Load() < h.d.flight.queued.Load() {
		h.d.flight.frameWritten()
	}
}

func (h *bookHarness) stored(id string) models.AgentCommand {
	h.t.Helper()
	c, err := h.store.GetCommand(h.t.Context(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

func decodeCommandFrame(t *testing.T, frame []byte) models.CommandMessage {
	t.Helper()
	var f struct {
		Type    string                `json:"type"`
		Payload models.CommandMessage `json:"payload"`
	}
	if err := json.Unmarshal(frame, &f); err != nil || f.Type != models.MessageTypeCommand {
		t.Fatalf("frame %s: %v", frame, err)
	}
	return f.Payload
}

func TestCommandBookSubmitClaimAckComplete(t *testing.T) {
	h := newBookHarness(t, AgentHubConfig{CommandTTL: time.Hour})
	cmd := h.submit(models.AgentCommand{Action: models.ActionStartSession, SessionID: models.OptionalString("s1")})
	if !strings.HasPrefix(cmd.CommandID, "cmd-") || cmd.Status != models.CommandStatusPending ||
		cmd.Payload["sessionId"] != "s1" || cmd.ExpiresAt == nil || !cmd.ExpiresAt.Equal(h.clock.Now().Add(time.Hour)) {
		t.Fatalf("submitted %+v", cmd)
	}
	select {
	case <-h.d.wake:
	default:
		t.Fatal("the dispatcher was not woken")
	}

	got := h.pass(true)
	if len(got) != 1 || got[0].CommandID != cmd.CommandID || got[0].Attempt != 1 || got[0].Payload["sessionId"] != "s1" {
		t.Fatalf("delivered %+v", got)
	}
	if s := h.stored(cmd.CommandID); s.Status != models.CommandStatusSent || s.Attempts != 1 {
		t.Fatalf("after delivery: %s, %d attempts", s.Status, s.Attempts)
	}
	if h.d.flight.command(cmd.CommandID) == nil {
		t.Fatal("delivered command not in flight")
	}

	if err := h.book.ack(t.Context(), h.d, cmd.CommandID, h.clock.Now()); err != nil {
		t.Fatalf("ack: %v", err)
	}
	if s := h.stored(cmd.CommandID); s.Status != models.CommandStatusAck {
		t.Fatalf("after ack: %s", s.Status)
	}
	if h.d.flight.command(cmd.CommandID) != nil {
		t.Fatal("acknowledged command still in flight")
	}
	result := map[string]any{"pod": "p1"}
	if err := h.book.finish(t.Context(), h.d, cmd.CommandID, models.CommandStatusCompleted, result, "", h.clock.Now()); err != nil {
		t.Fatalf("complete: %v", err)
	}
	if s := h.stored(cmd.CommandID); s.Status != models.CommandStatusCompleted || s.Result["pod"] != "p1" {
		t.Fatalf("after complete: %+v", s)
	}
	// A finished command is not delivered again, even to a new connection.
	if got := h.pass(true); len(got) != 0 {
		t.Fatalf("delivered again: %+v", got)
	}
}

// The dispatcher goroutine delivers what submit wakes it for, in order, and ends with the
// connection.
func TestCommandBookDispatcherDeliversInOrder(t *testing.T) {
	h := newBookHarness(t, AgentHubConfig{})
	served := make(chan struct{})
	go func() {
		defer close(served)
		h.book.serve(h.d)
	}()
	var ids []string
	for i := range 3 {
		ids = append(ids, h.submit(models.AgentCommand{Action: fmt.Sprint("act-", i)}).CommandID)
	}
	for i, id := range ids {
		select {
		case f := <-h.out:
			if c := decodeCommandFrame(t, f); c.CommandID != id {
				t.Fatalf("frame %d: %s, want %s", i, c.CommandID, id)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("frame %d not delivered", i)
		}
	}
	close(h.done)
	select {
	case <-served:
	case <-time.After(5 * time.Second):
		t.Fatal("the dispatcher did not end with the connection")
	}
	if h.d.ctx.Err() == nil {
		t.Fatal("the dispatcher's context outlived it")
	}
}

func TestCommandBookAgentFails(t *testing.T) {
	h := newBookHarness(t, AgentHubConfig{})
	cmd := h.submit(models.AgentCommand{Action: models.ActionStopSession})
	h.pass(true)
	if err := h.book.finish(t.Context(), h.d, cmd.CommandID, models.CommandStatusFailed, nil, "no such pod", h.clock.Now()); err != nil {
		t.Fatalf("fail: %v", err)
	}
	if s := h.stored(cmd.CommandID); s.Status != models.CommandStatusFailed || s.GetErrorMessage() != "no such pod" {
		t.Fatalf("after failed: %+v", s)
	}
	// Not this agent's, or no command at all: unknown.
	other := h.submit(models.AgentCommand{AgentID: "a2", Action: models.ActionStopSession})
	for _, id := range []string{other.CommandID, "cmd-nope"} {
		if err := h.book.ack(t.Context(), h.d, id, h.clock.Now()); !errors.Is(err, errUnknownCommand) {
			t.Errorf("ack of %s: %v", id, err)
		}
		if err := h.book.finish(t.Context(), h.d, id, models.CommandStatusCompleted, nil, "", h.clock.Now()); !errors.Is(err, errUnknownCommand) {
			t.Errorf("complete of %s: %v", id, err)
		}
	}
}

// An ack that does not come in time brings a resend (attempt+1), until MaxAttempts deliveries;
// then the command fails. A frame still queued is not late.
func TestCommandBookAckTimeoutResendsThenFails(t *testing.T) {
	const timeout = 30 * time.Second
	h := newBookHarness(t, AgentHubConfig{AckTimeout: timeout, MaxAttempts: 3})
	cmd := h.submit(models.AgentCommand{Action: models.ActionWakeSession})
	if got := h.pass(true); len(got) != 1 || got[0].Attempt != 1 {
		t.Fatalf("first delivery %+v", got)
	}
	// Queued, not yet written: the timeout starts again.
	h.clock.Advance(2 * timeout)
	h.book.sweep(t.Context(), h.d, h.clock.Now())
	if got := h.pass(false); len(got) != 0 {
		t.Fatalf("resent a frame still queued: %+v", got)
	}
	h.written()
	for attempt := 2; attempt <= 3; attempt++ {
		h.clock.Advance(timeout - time.Second)
		h.book.sweep(t.Context(), h.d, h.clock.Now())
		if h.d.flight.hasResends() {
			t.Fatalf("attempt %d: resend before the timeout", attempt)
		}
		h.clock.Advance(time.Second)
		h.book.sweep(t.Context(), h.d, h.clock.Now())
		got := h.pass(false)
		if len(got) != 1 || got[0].CommandID != cmd.CommandID || got[0].Attempt != attempt {
			t.Fatalf("attempt %d: delivered %+v", attempt, got)
		}
		if s := h.stored(cmd.CommandID); s.Attempts != attempt || s.Status != models.CommandStatusSent {
			t.Fatalf("attempt %d: stored %s, %d attempts", attempt, s.Status, s.Attempts)
		}
		h.written()
	}
	h.clock.Advance(timeout)
	h.book.sweep(t.Context(), h.d, h.clock.Now())
	if got := h.pass(false); len(got) != 0 {
		t.Fatalf("delivered past MaxAttempts: %+v", got)
	}
	s := h.stored(cmd.CommandID)
	if s.Status != models.CommandStatusFailed || s.GetErrorMessage() != "not acknowledged after 3 deliveries" {
		t.Fatalf("after the last timeout: %s %q", s.Status, s.GetErrorMessage())
	}
	if h.d.flight.command(cmd.CommandID) != nil {
		t.Fatal("failed command still in flight")
	}

	// An acknowledged command is never resent.
	acked := h.submit(models.AgentCommand{Action: models.ActionWakeSession})
	h.pass(false)
	h.written()
	if err := h.book.ack(t.Context(), h.d, acked.CommandID, h.clock.Now()); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(4 * timeout)
	h.book.sweep(t.Context(), h.d, h.clock.Now())
	if got := h.pass(false); len(got) != 0 {
		t.Fatalf("resent an acknowledged command: %+v", got)
	}
}

// A command past its deadline expires, and is never delivered.
func TestCommandBookExpiry(t *testing.T) {
	h := newBookHarness(t, AgentHubConfig{CommandTTL: time.Minute})
	offline := h.submit(models.AgentCommand{AgentID: "a2", Action: models.ActionStartSession})
	deadline := h.clock.Now().Add(10 * time.Second)
	own := h.submit(models.AgentCommand{Action: models.ActionStartSession, ExpiresAt: &deadline})
	if !own.ExpiresAt.Equal(deadline) {
		t.Fatalf("deadline %v, want %v", own.ExpiresAt, deadline)
	}
	h.clock.Advance(10 * time.Second)
	// Due: not claimed, and expired by the sweep.
	if got := h.pass(true); len(got) != 0 {
		t.Fatalf("delivered a command at its deadline: %+v", got)
	}
	h.book.expire(t.Context(), h.clock.Now())
	if s := h.stored(own.CommandID); s.Status != models.CommandStatusExpired {
		t.Fatalf("own deadline: %s", s.Status)
	}
	if s := h.stored(offline.CommandID); s.Status != models.CommandStatusPending {
		t.Fatalf("before the TTL: %s", s.Status)
	}
	h.clock.Advance(50 * time.Second)
	h.book.expire(t.Context(), h.clock.Now())
	if s := h.stored(offline.CommandID); s.Status != models.CommandStatusExpired {
		t.Fatalf("after the TTL: %s", s.Status)
	}
	// Expired is final: a late result is a replay.
	var final alreadyFinal
	if err := h.book.finish(t.Context(), h.d, own.CommandID, models.CommandStatusCompleted, nil, "", h.clock.Now()); !errors.As(err, &final) || final.status != models.CommandStatusExpired {
		t.Fatalf("result after expiry: %v", err)
	}
}

// Resubmitting a command id for the same agent and action returns the stored command; any other
// use of the id is ErrCommandConflict.
func TestCommandBookResubmit(t *testing.T) {
	h := newBookHarness(t, AgentHubConfig{})
	first := h.submit(models.AgentCommand{CommandID: "cmd-1", Action: models.ActionStartSession})
	h.pass(true)
	again := h.submit(models.AgentCommand{CommandID: "cmd-1", Action: models.ActionStartSession})
	if again.CommandID != first.CommandID || again.Status != models.CommandStatusSent || again.Attempts != 1 {
		t.Fatalf("resubmitted: %+v", again)
	}
	for _, cmd := range []models.AgentCommand{
		{CommandID: "cmd-1", AgentID: "a1", Action: models.ActionStopSession},
		{CommandID: "cmd-1", AgentID: "a2", Action: models.ActionStartSession},
	} {
		if _, _, err := h.book.submit(t.Context(), cmd, nil); !errors.Is(err, ErrCommandConflict) {
			t.Errorf("%s for %s: %v, want ErrCommandConflict", cmd.Action, cmd.AgentID, err)
		}
	}
	// With a session, the id is never taken for a resubmission.
	s := &models.Session{ID: "s9", OrgID: "o1", UserID: "u1", AgentID: "a1"}
	if _, _, err := h.book.submit(t.Context(), models.AgentCommand{CommandID: "cmd-1", AgentID: "a1", Action: models.ActionStartSession}, s); !errors.Is(err, db.ErrConflict) {
		t.Errorf("with a session: %v, want the store's conflict", err)
	}
	if _, _, err := h.book.submit(t.Context(), models.AgentCommand{AgentID: "a1", Action: " "}, nil); err == nil {
		t.Error("a command without an action was stored")
	}
}

// The session a command acts on is settled from either of its two places; the library API may
// name two (the payload goes to the agent as it is); a payload sessionId must be a string.
func TestCommandBookSettlesTheSession(t *testing.T) {
	h := newBookHarness(t, AgentHubConfig{})
	fromPayload := h.submit(models.AgentCommand{Action: "x", Payload: map[string]any{"sessionId": "s1"}})
	if fromPayload.GetSessionID() != "s1" {
		t.Errorf("SessionID %q, want s1 from the payload", fromPayload.GetSessionID())
	}
	both := h.submit(models.AgentCommand{Action: "x", SessionID: models.OptionalString("s1"), Payload: map[string]any{"sessionId": "s2"}})
	if both.GetSessionID() != "s1" || both.Payload["sessionId"] != "s2" {
		t.Errorf("two sessions: %q and payload %v", both.GetSessionID(), both.Payload["sessionId"])
	}
	_, _, err := h.book.submit(t.Context(), models.AgentCommand{AgentID: "a1", Action: "x", Payload: map[string]any{"sessionId": 7}}, nil)
	if !errors.Is(err, models.ErrSessionIDNotString) {
		t.Errorf("numeric payload sessionId: %v", err)
	}
}

// After a redelivery the agent may complete a command twice: the replay is answered as such
// and changes nothing; a late ack is a harmless duplicate.
func TestCommandBookReplayedCompleteAfterRedelivery(t *testing.T) {
	const timeout = 10 * time.Second
	h := newBookHarness(t, AgentHubConfig{AckTimeout: timeout, MaxAttempts: 5})
	cmd := h.submit(models.AgentCommand{Action: models.ActionWakeSession})
	h.pass(true)
	h.written()
	h.clock.Advance(timeout)
	h.book.sweep(t.Context(), h.d, h.clock.Now())
	if got := h.pass(false); len(got) != 1 || got[0].Attempt != 2 {
		t.Fatalf("redelivery %+v", got)
	}
	first := map[string]any{"n": 1}
	if err := h.book.finish(t.Context(), h.d, cmd.CommandID, models.CommandStatusCompleted, first, "", h.clock.Now()); err != nil {
		t.Fatal(err)
	}
	var final alreadyFinal
	err := h.book.finish(t.Context(), h.d, cmd.CommandID, models.CommandStatusCompleted, map[string]any{"n": 2}, "", h.clock.Now())
	if !errors.As(err, &final) || final.status != models.CommandStatusCompleted || err.Error() != "command is already completed" {
		t.Fatalf("replayed complete: %v", err)
	}
	if err := h.book.ack(t.Context(), h.d, cmd.CommandID, h.clock.Now()); err != nil {
		t.Fatalf("late ack: %v", err)
	}
	if s := h.stored(cmd.CommandID); s.Status != models.CommandStatusCompleted || s.Result["n"] != 1 {
		t.Fatalf("after the replay: %+v", s)
	}
	// Nothing left to time out.
	h.clock.Advance(10 * timeout)
	h.book.sweep(t.Context(), h.d, h.clock.Now())
	if got := h.pass(false); len(got) != 0 {
		t.Fatalf("delivered after completion: %+v", got)
	}
}

// A dispatcher whose pass failed is woken by the sweep; one with nothing to do is not. Agents
// with pending commands are woken by wakeWaiting (a wake-up lost between replicas).
func TestCommandBookSweepWakes(t *testing.T) {
	h := newBookHarness(t, AgentHubConfig{})
	drain := func() bool {
		select {
		case <-h.d.wake:
			return true
		default:
			return false
		}
	}
	h.book.sweep(t.Context(), h.d, h.clock.Now())
	if drain() {
		t.Fatal("woken with nothing to do")
	}
	h.d.retry.Store(true)
	h.book.sweep(t.Context(), h.d, h.clock.Now())
	if !drain() {
		t.Fatal("a failed pass was not retried")
	}
	h.d.retry.Store(false)
	h.submit(models.AgentCommand{Action: "x"})
	drain()
	h.book.wakeWaiting(t.Context())
	if !drain() {
		t.Fatal("an agent with a pending command was not woken")
	}
	h.attached.Store(false) // the connection is gone from the registry
	if _, connected, _ := h.book.submit(t.Context(), models.AgentCommand{AgentID: "a1", Action: "x"}, nil); connected || drain() {
		t.Fatal("a detached dispatcher was woken")
	}
}
