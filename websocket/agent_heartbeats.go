package websocket

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/streamspace/streamspace-realtime/db"
)

// heartbeatBatch keeps each agent's latest heartbeat until the next flush: however often agents
// beat, the database sees one transaction per HeartbeatFlush.
type heartbeatBatch struct {
	store interface {
		RecordAgentHeartbeats(ctx context.Context, beats []db.AgentHeartbeat) error
	}
	metrics *agentMetrics
	logger  *slog.Logger

	mu    sync.Mutex
	beats map[string]db.AgentHeartbeat // latest beat per agent since the last flush
}

func newHeartbeatBatch(store AgentStore, metrics *agentMetrics, logger *slog.Logger) *heartbeatBatch {
	return &heartbeatBatch{store: store, metrics: metrics, logger: logger, beats: make(map[string]db.AgentHeartbeat)}
}

// queue keeps the beat of the agent's connection connID for the next flush. A beat without
// capacity keeps the capacity the same connection reported earlier in the batch.
func (b *heartbeatBatch) queue(agentID, connID string, at time.Time, status string, capacity map[string]any) {
	b.metrics.heartbeats.Inc()
	b.mu.Lock()
	prev, ok := b.beats[agentID]
	if ok && prev.ConnectionID == connID && capacity == nil {
		capacity = prev.Capacity
	}
	b.beats[agentID] = db.AgentHeartbeat{
		AgentID: agentID, ConnectionID: connID, At: at, Status: status, Capacity: capacity,
	}
	b.mu.Unlock()
}

// flush writes the heartbeats queued since the last flush in one transaction.
func (b *heartbeatBatch) flush(ctx context.Context) {
	b.mu.Lock()
	if len(b.beats) == 0 {
		b.mu.Unlock()
		return
	}
	batch := make([]db.AgentHeartbeat, 0, len(b.beats))
	for _, beat := range b.beats {
		batch = append(batch, beat)
	}
	clear(b.beats)
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, defaultStoreCallTimeout)
	defer cancel()
	if err := b.store.RecordAgentHeartbeats(ctx, batch); err != nil {
		b.logger.Warn("writing heartbeats failed", "agents", len(batch), "err", err)
		return
	}
	b.metrics.flushes.Inc()
}
