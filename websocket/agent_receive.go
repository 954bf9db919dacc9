package websocket

import (
	"errors"
	"fmt"
	"time"
)

// The embedder's side of an agent connection: the frames the hub leaves to it arrive on
// Receive, and the frames it makes go out through Enqueue.

// ErrAgentQueueFull: Enqueue found the agent's outbound queue full. The frame was not queued;
// the connection stays open.
var ErrAgentQueueFull = errors.New("websocket: agent's outbound queue is full")

// Enqueue queues a frame the embedder made (StreamSpace's vnc_data or vnc_close, say) to the
// agent as one text frame, after the frames already queued, without blocking. It returns
// ErrAgentQueueFull when the queue has no room, ErrAgentNotConnected when the connection is
// not registered or is closing. Use it rather than sending on Send: the hub counts what it
// queues to time command acks from when the agent could read them.
func (c *AgentConnection) Enqueue(frame []byte) error {
	if !c.registered.Load() || c.done == nil || c.closing() {
		return fmt.Errorf("websocket: enqueue to agent %q: %w", c.AgentID, ErrAgentNotConnected)
	}
	if !c.tryQueue(frame) {
		return fmt.Errorf("websocket: enqueue to agent %q: %w", c.AgentID, ErrAgentQueueFull)
	}
	return nil
}

// offer hands a frame the hub left to the embedder to Receive, from the reader, so in the
// order the agent sent them: at once when there is room, else waiting up to ReceiveTimeout
// while the connection is open. A frame that finds no room in time is dropped and counted, and
// the connection's first drop is logged; nothing is offered once the connection is closing.
func (c *AgentConnection) offer(frameType string, data []byte) {
	if c.closing() {
		return
	}
	select {
	case c.Receive <- data:
		return
	default:
	}
	timeout := c.hub.cfg.ReceiveTimeout
	timer := time.NewTimer(timeout) // wall time, as the reader's deadlines
	defer timer.Stop()
	select {
	case c.Receive <- data:
		return
	case <-c.done:
		return
	case <-timer.C:
	}
	c.hub.metrics.receiveDropped(frameType)
	if c.receiveWarned.CompareAndSwap(false, true) {
		c.hub.cfg.Logger.Warn("agent frame for Receive dropped: nobody took it in time (later drops of this connection are only counted)",
			"agent_id", c.AgentID, "type", frameType, "timeout", timeout)
	}
}
