package agenttest

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/models"
)

// Conn is one agent connection accepted by a Server: it records every frame the agent sends
// and sends frames to it.
//
// Concurrency contract: safe for concurrent use. Its reader runs in the Server's HTTP handler
// and ends when the connection does; sends are serialized by a mutex.
type Conn struct {
	// AgentID and Key are the agent_id and API key the agent connected with.
	AgentID string
	Key     string
	// Features is the X-Agent-Features header the agent connected with; Tunnels whether the
	// Server took up tunnel/1 on this connection (Server.UseTunnels).
	Features string
	Tunnels  bool

	ws  *websocket.Conn
	wmu sync.Mutex

	mu        sync.Mutex
	frames    []models.AgentMessage
	cursors   map[string]int // Next's position per type: index into frames
	changed   chan struct{}  // closed and replaced on each frame and at the end
	malformed int
	data      []DataFrame
	dataNext  int // NextData's cursor into data
	done      chan struct{}
	closeCode int

	pace     <-chan struct{} // when set, one token per frame read (Server.PaceReads)
	stopOnce sync.Once
	stopped  chan struct{} // closed by Close and Kill: a paced reader stops waiting
}

func newConn(id, key string, ws *websocket.Conn) *Conn {
	return &Conn{
		AgentID: id, Key: key, ws: ws,
		cursors: make(map[string]int),
		changed: make(chan struct{}),
		done:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
}

func (c *Conn) readLoop() {
	defer func() {
		_ = c.ws.Close()
		c.mu.Lock()
		close(c.done)
		close(c.changed)
		c.mu.Unlock()
	}()
	for {
		if c.pace != nil {
			select {
			case <-c.pace:
			case <-c.stopped:
				return
			}
		}
		kind, data, err := c.ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				c.mu.Lock()
				c.closeCode = ce.Code
				c.mu.Unlock()
			}
			return
		}
		if kind == websocket.BinaryMessage {
			c.recordData(data)
			continue
		}
		var m models.AgentMessage
		err = json.Unmarshal(data, &m)
		c.mu.Lock()
		if err != nil || m.Type == "" {
			c.malformed++
			m = models.AgentMessage{Payload: json.RawMessage(data)}
		}
		c.frames = append(c.frames, m)
		close(c.changed)
		c.changed = make(chan struct{})
		c.mu.Unlock()
	}
}

// DataFrame is one binary frame of the agent (PROTOCOL.md 6.3): a tunnel id and RFB bytes.
// After is how many JSON frames (Frames) had arrived before it, which orders it among them.
type DataFrame struct {
	TunnelID uint32
	Data     []byte
	After    int
}

// recordData records a binary frame; one shorter than its tunnel id is recorded with id 0 and
// the whole frame as Data.
func (c *Conn) recordData(b []byte) {
	d := DataFrame{Data: b}
	if len(b) >= models.TunnelDataHeader {
		d.TunnelID = binary.BigEndian.Uint32(b)
		d.Data = b[models.TunnelDataHeader:]
	}
	c.mu.Lock()
	d.After = len(c.frames)
	c.data = append(c.data, d)
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// NextData returns the next binary frame NextData has not returned yet, waiting for it until
// ctx ends or the connection does (ErrClosed).
func (c *Conn) NextData(ctx context.Context) (DataFrame, error) {
	for {
		c.mu.Lock()
		if c.dataNext < len(c.data) {
			d := c.data[c.dataNext]
			c.dataNext++
			c.mu.Unlock()
			return d, nil
		}
		changed, done := c.changed, c.done
		c.mu.Unlock()
		select {
		case <-done:
			c.mu.Lock()
			more := c.dataNext < len(c.data)
			c.mu.Unlock()
			if !more {
				return DataFrame{}, fmt.Errorf("waiting for a data frame: %w", ErrClosed)
			}
		case <-changed:
		case <-ctx.Done():
			return DataFrame{}, fmt.Errorf("agenttest: waiting for a data frame: %w", ctx.Err())
		}
	}
}

// DataFrames returns the binary frames received so far, in order.
func (c *Conn) DataFrames() []DataFrame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]DataFrame(nil), c.data...)
}

// SendData sends RFB bytes on a tunnel: one binary frame, the tunnel id then data.
func (c *Conn) SendData(tunnelID uint32, data []byte) error {
	b := make([]byte, models.TunnelDataHeader+len(data))
	binary.BigEndian.PutUint32(b, tunnelID)
	copy(b[models.TunnelDataHeader:], data)
	return c.SendBinary(b)
}

// SendBinary sends data as one binary frame.
func (c *Conn) SendBinary(data []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := c.ws.WriteMessage(websocket.BinaryMessage, data); err != nil {
		return fmt.Errorf("agenttest: send binary: %w", err)
	}
	return nil
}

// Send sends one frame {"type", "timestamp", "payload"}.
func (c *Conn) Send(typ string, payload any) error {
	p, err := json.Marshal(payload)
	if err != nil {
		return fmt.Errorf("agenttest: encode %s: %w", typ, err)
	}
	b, err := json.Marshal(models.AgentMessage{Type: typ, Timestamp: time.Now().UTC(), Payload: p})
	if err != nil {
		return fmt.Errorf("agenttest: encode %s: %w", typ, err)
	}
	return c.SendRaw(b)
}

// SendRaw sends data as one text frame.
func (c *Conn) SendRaw(data []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := c.ws.WriteMessage(websocket.TextMessage, data); err != nil {
		return fmt.Errorf("agenttest: send: %w", err)
	}
	return nil
}

// SendCommand sends a command frame.
func (c *Conn) SendCommand(id, action string, payload map[string]any, attempt int) error {
	return c.Send(models.MessageTypeCommand, models.CommandMessage{CommandID: id, Action: action, Payload: payload, Attempt: attempt})
}

// Next returns the next frame of type typ that Next has not returned yet, waiting for it until
// ctx ends or the connection does (ErrClosed).
func (c *Conn) Next(ctx context.Context, typ string) (models.AgentMessage, error) {
	for {
		c.mu.Lock()
		for i := c.cursors[typ]; i < len(c.frames); i++ {
			if c.frames[i].Type == typ {
				c.cursors[typ] = i + 1
				m := c.frames[i]
				c.mu.Unlock()
				return m, nil
			}
		}
		c.cursors[typ] = len(c.frames)
		changed, done := c.changed, c.done
		c.mu.Unlock()
		select {
		case <-done:
			// The last frames were recorded before done closed: one more look.
			c.mu.Lock()
			more := c.cursors[typ] < len(c.frames)
			c.mu.Unlock()
			if !more {
				return models.AgentMessage{}, fmt.Errorf("waiting for %q: %w", typ, ErrClosed)
			}
		case <-changed:
		case <-ctx.Done():
			return models.AgentMessage{}, fmt.Errorf("agenttest: waiting for %q: %w", typ, ctx.Err())
		}
	}
}

// Frames returns the frames received so far, in order. Malformed frames (not one JSON object
// with a type) have an empty Type and the raw frame as Payload.
func (c *Conn) Frames() []models.AgentMessage {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]models.AgentMessage(nil), c.frames...)
}

// Malformed returns how many frames were not one JSON object with a type.
func (c *Conn) Malformed() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.malformed
}

// Close sends a close frame with code and reason, waits up to a second for the agent's answer,
// then closes the connection.
func (c *Conn) Close(code int, reason string) error {
	defer c.stop()
	err := c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
	select {
	case <-c.done:
	case <-time.After(time.Second):
	}
	_ = c.ws.Close()
	return err
}

// Kill closes the TCP connection without a close frame, as a crashed server or a broken
// network would.
func (c *Conn) Kill() error {
	c.stop()
	return c.ws.NetConn().Close()
}

func (c *Conn) stop() { c.stopOnce.Do(func() { close(c.stopped) }) }

// Done is closed when the connection has ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

// CloseCode returns the code of the close frame the agent sent, 0 if none (so far).
func (c *Conn) CloseCode() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeCode
}

// Decode decodes the payload of a frame.
func Decode[T any](m models.AgentMessage) (T, error) {
	var v T
	if err := json.Unmarshal(m.Payload, &v); err != nil {
		return v, fmt.Errorf("agenttest: decode %s payload: %w", m.Type, err)
	}
	return v, nil
}
