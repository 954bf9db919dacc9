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
// Package agenttest holds a fake control plane to test agents against.
package agentclient
