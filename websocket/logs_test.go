package websocket

import (
	"testing"

	"github.com/streamspace/streamspace-realtime/cluster"
)

// A hub refuses a PodLogs that reaches other replicas through another directory than its own:
// the streams of browsers elsewhere would never reach its agents.
func TestHubLogsNeedTheHubsDirectory(t *testing.T) {
	alone := cluster.NewMemoryDirectory("a")
	if p := NewPodLogs(PodLogsConfig{}); hubLogs(AgentHubConfig{Logs: p}, alone) != p {
		t.Fatal("a PodLogs without a directory is refused by a hub alone")
	}
	if p := NewPodLogs(PodLogsConfig{Directory: alone}); hubLogs(AgentHubConfig{Logs: p}, alone) != p {
		t.Fatal("a PodLogs of the hub's directory is refused")
	}
	if hubLogs(AgentHubConfig{}, alone) == nil {
		t.Fatal("no PodLogs made for a hub without one")
	}
	defer func() {
		if recover() == nil {
			t.Fatal("a PodLogs of another replica's directory is taken")
		}
	}()
	hubLogs(AgentHubConfig{Logs: NewPodLogs(PodLogsConfig{Directory: cluster.NewMemoryDirectory("b")})}, alone)
}

// openRoutes counts the log streams p still routes.
func openRoutes(p *PodLogs) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.routes)
}
