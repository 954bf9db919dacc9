package websocket

import (
	"context"
	"encoding/json"

	"github.com/streamspace/streamspace-realtime/cluster"
)

// Kinds of the messages agent hubs send one another through the cluster directory.
const (
	// kindWake: the agent has new commands; its replica runs a delivery pass.
	kindWake = "wake"
	// kindBroadcast: a BroadcastMessage for every agent of the receiving replica.
	kindBroadcast = "agents.broadcast"
	// kindDisconnect: close the agent's connection (a disconnectOrder).
	kindDisconnect = "agents.disconnect"
)

// disconnectOrder is the payload of kindDisconnect.
type disconnectOrder struct {
	Code     int    `json:"code"`
	Reason   string `json:"reason"`
	Shutdown bool   `json:"shutdown,omitempty"`
}

// onReplicaMessage acts on a message for this replica. It runs on the directory's delivery
// path, so it only queues and signals.
func (h *AgentHub) onReplicaMessage(msg cluster.ReplicaMessage) {
	switch msg.Kind {
	case kindWake:
		if c := h.GetConnection(msg.AgentID); c != nil {
			c.wakeDispatcher()
		}
	case cluster.KindLost:
		// The agent connected to another replica; this connection is the stale one.
		if c := h.GetConnection(msg.AgentID); c != nil && c.connID == msg.Generation {
			c.closeWith(CloseReplaced, "replaced by a newer connection", "replaced")
		}
	case kindBroadcast:
		var b BroadcastMessage
		if err := json.Unmarshal(msg.Payload, &b); err != nil {
			h.cfg.Logger.Error("dropping malformed agent broadcast", "err", err)
			return
		}
		h.broadcastLocal(b.Message, b.ExcludeAgentID)
	case kindDisconnect:
		var d disconnectOrder
		if err := json.Unmarshal(msg.Payload, &d); err != nil {
			h.cfg.Logger.Error("dropping malformed disconnect order", "err", err)
			return
		}
		h.disconnectLocal(msg.AgentID, d.Code, d.Reason, d.Shutdown)
	case kindLogsOpen, kindLogsStop, kindLogsLines:
		h.logs.onReplicaMessage(msg)
	}
}

// wakeWaiting starts a delivery pass for this replica's agents that have commands waiting: a
// wake-up lost between replicas (Redis away at that moment) delays a command by one check
// interval at most.
func (h *AgentHub) wakeWaiting(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, defaultStoreCallTimeout)
	defer cancel()
	ids, err := h.store.AgentsWithPendingCommands(ctx)
	if err != nil {
		h.cfg.Logger.Warn("listing agents with waiting commands failed", "err", err)
		return
	}
	for _, id := range ids {
		if c := h.GetConnection(id); c != nil {
			c.wakeDispatcher()
		}
	}
}
