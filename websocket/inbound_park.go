//go:build darwin || openbsd

package websocket

// Here each raw client is read by a goroutine of its own (readRaw), whose read deadline keeps
// the pong deadline; inbound_poll_linux.go reads them all from one goroutine instead.

// poller has nothing to wait for where clients read on goroutines of their own.
type poller struct{}

func (*poller) wait() {}

// pollState is empty: no client is polled.
type pollState struct{}

func (c *Client) startRawReader() { go c.readRaw() }

// stopRawReader does nothing: closing the socket ends readRaw.
func (c *Client) stopRawReader() {}

func (c *Client) pongOverdue(int64) bool { return false }

func (c *Client) closePongOverdue() {}
