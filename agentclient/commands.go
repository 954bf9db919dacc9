package agentclient

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"

	"github.com/streamspace/streamspace-realtime/models"
)

// dispatch acknowledges a command (ack) and runs it, unless its id is already known: a
// redelivery is not run again, and if its result is known that result is sent again. The run
// is counted before the ack goes out, so a stop that follows the ack waits for the result. It
// never blocks the reader: the handler waits for a slot in its own goroutine.
func (a *Agent) dispatch(ctx context.Context, cm models.CommandMessage, ack func()) {
	a.memMu.Lock()
	e, fresh := a.mem.add(cm.CommandID)
	var known []byte
	if !fresh {
		known = e.result
	}
	a.memMu.Unlock()
	if !fresh {
		ack()
		a.stats.duplicates.Add(1)
		a.log.Debug("command delivered again: acknowledged, not run again",
			"command_id", cm.CommandID, "attempt", cm.Attempt, "result_known", known != nil)
		if known != nil {
			a.pushReliable(known)
		}
		return
	}
	a.work.add()
	ack()
	go func() {
		defer a.work.done()
		a.runCommand(ctx, cm)
	}()
}

// resultKnown reports whether the outcome of command id was already produced.
func (a *Agent) resultKnown(id string) bool {
	a.memMu.Lock()
	defer a.memMu.Unlock()
	e, ok := a.mem.entries[id]
	return ok && e.result != nil
}

// resultFrame returns the complete or failed frame of a remembered command, or nil.
func (a *Agent) resultFrame(id string) []byte {
	a.memMu.Lock()
	defer a.memMu.Unlock()
	if e, ok := a.mem.entries[id]; ok {
		return e.result
	}
	return nil
}

// runCommand waits for a handler slot, runs the command, and queues its complete or failed.
func (a *Agent) runCommand(ctx context.Context, cm models.CommandMessage) {
	cmd := Command{ID: cm.CommandID, Action: cm.Action, Payload: cm.Payload, Attempt: cm.Attempt}
	var (
		result map[string]any
		err    error
	)
	select {
	case a.slots <- struct{}{}:
		if ctx.Err() != nil {
			err = fmt.Errorf("agent stopped before running the command: %w", ctx.Err())
		} else {
			result, err = a.call(ctx, cmd)
		}
		<-a.slots
	case <-ctx.Done():
		err = fmt.Errorf("agent stopped before running the command: %w", ctx.Err())
	}

	frame, encErr := a.outcome(cmd, result, err)
	if encErr != nil {
		a.log.Error("cannot encode a command's outcome; nothing sent", "command_id", cmd.ID, "err", encErr)
		return
	}
	a.memMu.Lock()
	a.mem.finish(cmd.ID, frame)
	a.memMu.Unlock()
	a.pushReliable(frame)
}

// outcome encodes the complete or failed frame of a command and counts it. A result that
// cannot be encoded fails the command.
func (a *Agent) outcome(cmd Command, result map[string]any, err error) ([]byte, error) {
	if err == nil {
		frame, encErr := a.encode(models.MessageTypeComplete, models.CompleteMessage{CommandID: cmd.ID, Result: result})
		if encErr == nil {
			a.stats.completed.Add(1)
			a.log.Debug("command completed", "command_id", cmd.ID, "action", cmd.Action)
			return frame, nil
		}
		err = fmt.Errorf("agentclient: encode result: %w", encErr)
	}
	a.stats.failed.Add(1)
	a.log.Info("command failed", "command_id", cmd.ID, "action", cmd.Action, "attempt", cmd.Attempt, "err", err)
	return a.encode(models.MessageTypeFailed, models.FailedMessage{CommandID: cmd.ID, Error: err.Error()})
}

// errUnknownAction is the failure of a command no Handler is registered for.
var errUnknownAction = errors.New("unknown action")

// call runs the command's handler, turning a panic into an error.
func (a *Agent) call(ctx context.Context, cmd Command) (result map[string]any, err error) {
	h := a.handler(cmd.Action)
	if h == nil {
		return nil, fmt.Errorf("%w: %s", errUnknownAction, cmd.Action)
	}
	defer func() {
		if r := recover(); r != nil {
			a.log.Error("command handler panicked", "command_id", cmd.ID, "action", cmd.Action, "panic", r, "stack", string(debug.Stack()))
			result, err = nil, fmt.Errorf("handler panicked: %v", r)
		}
	}()
	return h(ctx, cmd)
}
