//go:build !darwin && !linux && !openbsd

package websocket

// readRaw is never called here: rawConnOf gives no client a raw socket, so every client is
// read by readPump.
func (c *Client) readRaw() { panic("websocket: raw reads need a unix socket") }

// poller has nothing to wait for: no client is read raw here.
type poller struct{}

func (*poller) wait() {}

// pollState is empty: no client is polled.
type pollState struct{}

func (c *Client) startRawReader() { c.readRaw() }

func (c *Client) stopRawReader() {}

func (c *Client) pongOverdue(int64) bool { return false }

func (c *Client) closePongOverdue() {}
