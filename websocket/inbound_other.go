//go:build !darwin && !linux && !openbsd

package websocket

// readRaw is never called here: rawConnOf gives no client a raw socket, so every client is
// read by readPump.
func (c *Client) readRaw() { panic("websocket: raw reads need a unix socket") }
