// Package agentclient is the agent SDK of StreamSpace Realtime: everything a program needs to
// run sessions for the control plane on its own platform (Kubernetes, Docker, VMs, a cloud),
// following the wire contract of PROTOCOL.md section 3.
//
// An Agent registers (POST /api/v1/agents/register), holds one WebSocket to
// /api/v1/agents/connect, sends heartbeats, acknowledges every command at once and runs it off
// the read loop through the Handler registered for its action, then reports complete or
// failed. It reconnects with jittered exponential backoff, drops commands it has already
// handled (delivery is at least once), and keeps results and status reports that a dead
// connection could not carry in an outbox that the next connection sends first.
//
//	a, err := agentclient.New(agentclient.Config{
//		ServerURL: "https://realtime.example.com",
//		AgentID:   "docker-eu-1",
//		APIKey:    os.Getenv("STREAMSPACE_AGENT_KEY"),
//		Platform:  models.PlatformDocker,
//	})
//	if err != nil { ... }
//	a.Handle(models.ActionStartSession, func(ctx context.Context, cmd agentclient.Command) (map[string]any, error) {
//		...
//		return map[string]any{"podName": name}, nil
//	})
//	err = a.Run(ctx) // nil when ctx ends; ErrShutdown, ErrRejected or ErrReplaced otherwise
//
// # Session streaming
//
// With Config.Tunnels set, the Agent relays viewers' RFB streams to sessions' VNC servers
// (PROTOCOL.md 6). Each tunnel runs the TunnelHandler in its own goroutine, with a *Tunnel: a
// net.Conn whose Read gives the viewer's bytes and whose Write sends bytes to the viewer.
// ProxyTo builds the usual handler from a dial function:
//
//	Tunnels: agentclient.ProxyTo(func(ctx context.Context, sessionID string) (net.Conn, error) {
//		return dialer.DialContext(ctx, "tcp", vncAddrOf(sessionID))
//	}),
//
// The control plane learns a tunnel is open when the handler calls Accept or first reads or
// writes, so ProxyTo answers only after its dial succeeded; a handler error before any byte
// flowed is sent as the tunnel's error. Call OpenTunnel when a session starts running and
// CloseTunnel when it stops: the Agent refuses tunnels to other sessions.
//
// The Agent offers the tunnel/1 extension (X-Agent-Features) when it connects. A control plane
// that takes it up opens a tunnel per viewer, with binary data frames and a window each way:
// Write blocks while the control plane's window is zero, and Read grants credit as the handler
// consumes. One that does not (StreamSpace's own) gets StreamSpace's messages: one tunnel per
// session, opened by OpenTunnel and announced with vnc_ready, bytes as base64 in vnc_data, and
// a new tunnel right after each vnc_close, so viewers can come one after another. In both, the
// writer sends control frames (acks, results, heartbeats, credit) before tunnel data, and
// tunnels take turns, one chunk each (64 KiB with tunnel/1, 32 KiB of bytes in a vnc_data);
// a tunnel holds at most one chunk waiting, so a fast VNC server is slowed by TCP. An io.Copy
// to a Tunnel (ProxyTo's) reads straight into the frame that carries the bytes, and the
// default Dialer's write buffer takes a whole frame, so a chunk is one write on the socket.
//
// Package agenttest holds a fake control plane to test agents against.
package agentclient
