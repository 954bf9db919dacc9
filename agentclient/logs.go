package agentclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/models"
)

// onLogs starts a log stream for a "logs" request. A stream belongs to the connection it was
// asked on: it ends with it, with "logs_stop", or when the Agent stops.
func (c *conn) onLogs(p json.RawMessage) {
	h := c.a.logs()
	if h == nil {
		c.a.stats.unknown.Add(1)
		c.a.log.Debug("logs request ignored: no LogsHandler")
		return
	}
	var req models.LogsRequest
	if err := json.Unmarshal(p, &req); err != nil || req.RequestID == "" {
		c.a.stats.unknown.Add(1)
		c.a.log.Warn("malformed logs request ignored", "payload", truncate(p, 200))
		return
	}
	ctx, cancel := context.WithCancel(c.ctx)
	c.logsMu.Lock()
	_, dup := c.logStreams[req.RequestID]
	if !dup {
		c.logStreams[req.RequestID] = cancel
	}
	c.logsMu.Unlock()
	if dup {
		cancel()
		return
	}
	c.a.work.Go(func() { c.streamLogs(ctx, cancel, h, req) })
}

// onLogsStop ends the stream of a request.
func (c *conn) onLogsStop(p json.RawMessage) {
	var m models.LogsStop
	if err := json.Unmarshal(p, &m); err != nil {
		c.a.stats.unknown.Add(1)
		return
	}
	c.logsMu.Lock()
	cancel := c.logStreams[m.RequestID]
	c.logsMu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// streamLogs runs the LogsHandler of one request and ends the stream with "log_end", carrying
// the handler's error unless the stream was stopped.
func (c *conn) streamLogs(ctx context.Context, cancel context.CancelFunc, h LogsHandler, req models.LogsRequest) {
	defer func() {
		c.logsMu.Lock()
		delete(c.logStreams, req.RequestID)
		c.logsMu.Unlock()
		cancel()
	}()
	emit := func(line string, at time.Time) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		m := models.LogLine{RequestID: req.RequestID, Namespace: req.Namespace, Pod: req.Pod, Line: line}
		if !at.IsZero() {
			u := at.UTC()
			m.Timestamp = &u
		}
		return c.enqueueText(ctx, models.MessageTypeLog, m)
	}
	err := c.runLogs(ctx, h, req, emit)
	end := models.LogEnd{RequestID: req.RequestID}
	if err != nil && ctx.Err() == nil && !errors.Is(err, errConnClosed) {
		end.Error = err.Error()
	}
	b, encErr := c.a.encode(models.MessageTypeLogEnd, end)
	if encErr != nil {
		return
	}
	// Queued even after logs_stop or while the Agent stops, as long as the connection lives.
	_ = c.enqueue(context.Background(), outFrame{kind: websocket.TextMessage, data: b})
}

// runLogs calls h, turning a panic into an error.
func (c *conn) runLogs(ctx context.Context, h LogsHandler, req models.LogsRequest, emit func(string, time.Time) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			c.a.log.Error("logs handler panicked", "request_id", req.RequestID, "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("logs handler panicked: %v", r)
		}
	}()
	return h(ctx, req, emit)
}
