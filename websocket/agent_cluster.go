package websocket

import (
	"context"
	"encoding/json"
	"log/slog"

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

// replicaLink is the agent side's line to the other replicas through the cluster directory:
// the claims that name the replica holding each agent, and the wake-ups, orders and broadcasts
// sent to them. What the other replicas send arrives at AgentHub.onReplicaMessage. The
// directory carries no command: a lost message delays one, never loses it.
type replicaLink struct {
	dir    cluster.Directory
	logger *slog.Logger
	// owned is the Redis connection NewAgentHubWithRedis made, closed with the link.
	owned *cluster.Redis
	unsub func()
}

// subscribe starts delivering the messages for this replica to onMessage, until close.
func (l *replicaLink) subscribe(onMessage func(cluster.ReplicaMessage)) {
	l.unsub = l.dir.Subscribe(onMessage)
}

// close ends the subscription and closes the Redis connection the hub made.
func (l *replicaLink) close() {
	if l.unsub != nil {
		l.unsub()
	}
	if l.owned != nil {
		_ = l.owned.Close()
	}
}

// claim names this replica's connection connID as the agent's; a claim Redis did not take is
// retried by the directory's refresh.
func (l *replicaLink) claim(ctx context.Context, agentID, connID string) {
	if err := l.dir.Claim(ctx, agentID, connID); err != nil {
		l.logger.Warn("claiming agent in the cluster failed; retried in the background",
			"agent_id", agentID, "err", err)
	}
}

// release drops the agent's claim if it still names connID (compare-and-delete): when the
// agent already holds a newer connection, here or on another replica, its claim stays.
func (l *replicaLink) release(ctx context.Context, agentID, connID string) {
	if _, err := l.dir.Release(ctx, agentID, connID); err != nil {
		l.logger.Warn("releasing agent in the cluster failed; its claim expires", "agent_id", agentID, "err", err)
	}
}

// locate returns the holder of the agent's connection on another replica.
func (l *replicaLink) locate(ctx context.Context, agentID string) (cluster.Owner, bool) {
	owner, ok, err := l.dir.Lookup(ctx, agentID)
	if err != nil {
		// Debug: during an outage every lookup fails, and the cluster logs the outage once.
		l.logger.Debug("locating agent in the cluster failed", "agent_id", agentID, "err", err)
		return cluster.Owner{}, false
	}
	return owner, ok && owner.Replica != l.dir.Replica()
}

// wake asks the replica holding the agent for a delivery pass, and reports whether another
// replica holds it.
func (l *replicaLink) wake(ctx context.Context, agentID string) bool {
	owner, ok := l.locate(ctx, agentID)
	if !ok {
		return false
	}
	if err := l.dir.Send(ctx, owner.Replica, cluster.ReplicaMessage{Kind: kindWake, AgentID: agentID}); err != nil {
		l.logger.Debug("waking the agent's replica failed; the command waits", "agent_id", agentID,
			"replica", owner.Replica, "err", err)
	}
	return true
}

// disconnect asks the replica holding the agent to close its connection, and reports whether
// the order went out.
func (l *replicaLink) disconnect(ctx context.Context, agentID string, order disconnectOrder) bool {
	owner, ok := l.locate(ctx, agentID)
	if !ok {
		return false
	}
	payload, _ := json.Marshal(order)
	msg := cluster.ReplicaMessage{Kind: kindDisconnect, AgentID: agentID, Payload: payload}
	if err := l.dir.Send(ctx, owner.Replica, msg); err != nil {
		l.logger.Warn("asking the agent's replica to disconnect it failed", "agent_id", agentID,
			"replica", owner.Replica, "err", err)
		return false
	}
	return true
}

// broadcast sends message to the agents of every replica, this one included.
func (l *replicaLink) broadcast(ctx context.Context, b BroadcastMessage) error {
	payload, err := json.Marshal(b)
	if err != nil {
		return err
	}
	return l.dir.Broadcast(ctx, cluster.ReplicaMessage{Kind: kindBroadcast, Payload: payload})
}

// onReplicaMessage acts on a message for this replica. It runs on the directory's delivery
// path, so it only queues and signals.
func (h *AgentHub) onReplicaMessage(msg cluster.ReplicaMessage) {
	switch msg.Kind {
	case kindWake:
		h.commands.wakeLocal(msg.AgentID)
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
