// Package agentsim is the reference agent built on agentclient: a simulated platform whose
// sessions live in memory. It starts, stops, hibernates and wakes sessions by reporting the
// state transitions a real platform would go through, StepDelay apart, and streams simulated
// logs. It backs `streamspace-realtime agent` and serves as an example of the SDK.
package agentsim

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/streamspace/streamspace-realtime/agentclient"
	"github.com/streamspace/streamspace-realtime/models"
)

// DefaultStepDelay is the time between simulated state transitions.
const DefaultStepDelay = 200 * time.Millisecond

// vncPort is the port every simulated session serves VNC on.
const vncPort = 5900

// Config configures a Sim: the agent's Config (Capacity defaults to maxSessions 100) plus the
// simulation's timing.
type Config struct {
	agentclient.Config
	// StepDelay is the time between simulated state transitions; 0 means DefaultStepDelay.
	StepDelay time.Duration
	// VNC serves the tunnels to running sessions' desktops (PROTOCOL.md 6); nil: no
	// streaming. It becomes the agent's Config.Tunnels: a session that reaches running is
	// given to OpenTunnel, and CloseTunnel when it leaves running. Any TunnelHandler fits:
	// agentclient.ProxyTo a real VNC server (`agent --vnc`), or a built-in desktop.
	VNC agentclient.TunnelHandler
}

// Sim is a simulated agent.
//
// Concurrency contract: safe for concurrent use. Run runs the underlying agentclient.Agent,
// which owns every goroutine (command handlers run concurrently, each holding the session
// table's lock only between its steps, never while waiting or reporting).
type Sim struct {
	agent *agentclient.Agent
	clock clockwork.Clock
	step  time.Duration
	vnc   bool // sessions are streamed: running ones are given to OpenTunnel

	mu       sync.Mutex
	sessions map[string]*session
	nextIP   int
}

type session struct {
	id, pod, ip string
	state       string
}

// New validates cfg and returns a Sim that has not connected yet.
func New(cfg Config) (*Sim, error) {
	if cfg.StepDelay < 0 {
		return nil, fmt.Errorf("agentsim: new simulator: StepDelay must not be negative")
	}
	if cfg.StepDelay == 0 {
		cfg.StepDelay = DefaultStepDelay
	}
	if cfg.Capacity == nil {
		cfg.Capacity = map[string]any{"maxSessions": 100}
	}
	if cfg.Metadata == nil {
		cfg.Metadata = map[string]any{"simulated": true}
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.VNC != nil {
		cfg.Tunnels = cfg.VNC
	}
	a, err := agentclient.New(cfg.Config)
	if err != nil {
		return nil, fmt.Errorf("agentsim: new simulator: %w", err)
	}
	s := &Sim{agent: a, clock: cfg.Clock, step: cfg.StepDelay, vnc: cfg.Tunnels != nil, sessions: make(map[string]*session)}
	a.Handle(models.ActionStartSession, s.start)
	a.Handle(models.ActionStopSession, s.stop)
	a.Handle(models.ActionHibernateSession, s.hibernate)
	a.Handle(models.ActionWakeSession, s.wake)
	a.HandleLogs(s.logs)
	a.SetActiveSessions(s.count)
	return s, nil
}

// Run runs the agent until ctx ends (nil) or the control plane ends it (see agentclient.Run).
func (s *Sim) Run(ctx context.Context) error { return s.agent.Run(ctx) }

// Agent returns the underlying agent, for its Stats or SetDraining.
func (s *Sim) Agent() *agentclient.Agent { return s.agent }

// Sessions returns the state of every session the simulator holds, by session id.
func (s *Sim) Sessions() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]string, len(s.sessions))
	for id, ss := range s.sessions {
		out[id] = ss.state
	}
	return out
}

func (s *Sim) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// errNoSessionID fails a command whose payload lacks a session id.
var errNoSessionID = errors.New("payload.sessionId is required")

func sessionID(cmd agentclient.Command) (string, error) {
	id, _ := cmd.Payload["sessionId"].(string)
	if id == "" {
		return "", errNoSessionID
	}
	return id, nil
}

// wait sleeps one step on the simulator's clock.
func (s *Sim) wait(ctx context.Context) error {
	t := s.clock.NewTimer(s.step)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.Chan():
		return nil
	}
}

// streaming tells the agent whether a session in state serves tunnels: only running ones do.
func (s *Sim) streaming(id, state string) {
	if !s.vnc {
		return
	}
	if state == models.SessionStateRunning {
		// Fails only without Tunnels or a session id, both excluded here.
		_ = s.agent.OpenTunnel(context.Background(), id)
		return
	}
	s.agent.CloseTunnel(id)
}

// report sends a session's state; running sessions carry their VNC and pod details.
func (s *Sim) report(ctx context.Context, ss session) error {
	m := models.StatusMessage{
		SessionID:        ss.id,
		State:            ss.state,
		PlatformMetadata: map[string]any{"podName": ss.pod, "podIP": ss.ip},
	}
	if ss.state == models.SessionStateRunning {
		m.VNCReady, m.VNCPort = true, vncPort
	}
	return s.agent.ReportStatus(ctx, m)
}

func result(ss session) map[string]any {
	return map[string]any{"sessionId": ss.id, "podName": ss.pod, "state": ss.state}
}
