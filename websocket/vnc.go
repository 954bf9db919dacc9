package websocket

import (
	"context"
	"errors"
	"fmt"

	"github.com/gorilla/websocket"

	"github.com/streamspace/streamspace-realtime/models"
)

// Errors of AgentHub.OpenTunnel (PROTOCOL.md 6.1). The viewer socket answers each before the
// upgrade.
var (
	// ErrAgentOffline: the session's agent holds no socket on this replica.
	ErrAgentOffline = errors.New("websocket: the session's agent is not connected to this replica")
	// ErrTunnelNotReady: an agent speaking StreamSpace's messages has announced no tunnel for
	// the session (vnc_ready), or closed the last one.
	ErrTunnelNotReady = errors.New("websocket: the agent has no VNC tunnel open for the session")
	// ErrViewerBusy: an agent speaking StreamSpace's messages has one tunnel per session, and a
	// viewer holds it.
	ErrViewerBusy = errors.New("websocket: the session's one VNC tunnel already has a viewer")
	// ErrTooManyTunnels: a tunnel limit is reached; the error is a *TunnelLimitError.
	ErrTooManyTunnels = errors.New("websocket: too many VNC tunnels")
)

// TunnelLimitError names the limit a refused tunnel met: "user" or "agent".
type TunnelLimitError struct {
	Limit string
	Max   int
}

func (e *TunnelLimitError) Error() string {
	return fmt.Sprintf("websocket: too many VNC tunnels per %s (at most %d)", e.Limit, e.Max)
}

func (e *TunnelLimitError) Unwrap() error { return ErrTooManyTunnels }

// TunnelRequest asks for a tunnel from one viewer to one session's VNC server, through the
// session's agent. The caller has authorized the viewer for the session (Manager.AuthorizeViewer).
type TunnelRequest struct {
	// Session is the session as read when the viewer was authorized; its AgentID names the
	// agent to go through.
	Session models.Session
	// UserID is the viewer, counted toward the per-user limit.
	UserID string
	// ViewOnly drops the viewer's input (PROTOCOL.md 6.4).
	ViewOnly bool
}

// Tunnel is one viewer's reserved path to a session's VNC server. OpenTunnel makes it; Serve
// relays until either end leaves; Close gives the reservation back when Serve is never called.
type Tunnel struct {
	hub *AgentHub
	req TunnelRequest
}

// OpenTunnel reserves a tunnel for req through the session's agent, checking that the agent is
// connected here and the tunnel limits. It does no network I/O with the viewer.
func (h *AgentHub) OpenTunnel(ctx context.Context, req TunnelRequest) (*Tunnel, error) {
	return nil, errors.New("websocket: VNC tunnels are not implemented yet")
}

// Serve relays RFB bytes between conn, the viewer's upgraded socket, and the agent until
// either ends or ctx does, then closes conn with the code of PROTOCOL.md 6.1 and releases the
// tunnel. It returns why the tunnel ended (nil for a clean end).
func (t *Tunnel) Serve(ctx context.Context, conn *websocket.Conn) error {
	return errors.New("websocket: VNC tunnels are not implemented yet")
}

// Close releases a tunnel that will not be served (the upgrade failed). Safe to call after
// Serve, and more than once.
func (t *Tunnel) Close() {}
