package agentclient

import "sync/atomic"

// Stats counts what an Agent did since New. Counters only grow.
type Stats struct {
	// Connected is true while a connection is up.
	Connected bool
	// Connects counts connections established; Reconnects those after the first.
	Connects   uint64
	Reconnects uint64
	// CommandsReceived counts command frames, duplicates included; Duplicates those whose
	// commandId was already known (acknowledged again, not run again).
	CommandsReceived uint64
	Duplicates       uint64
	// Completed and Failed count handler outcomes (unknown actions count as Failed).
	Completed uint64
	Failed    uint64
	// ServerErrors counts "error" frames; UnknownFrames frames of types the Agent does not
	// handle (including "logs" without a LogsHandler) and malformed frames.
	ServerErrors  uint64
	UnknownFrames uint64
	// OutboxDropped counts results and status reports dropped because the outbox was full.
	OutboxDropped uint64
}

type counters struct {
	connected            atomic.Bool
	connects, reconnects atomic.Uint64
	received, duplicates atomic.Uint64
	completed, failed    atomic.Uint64
	serverErrors         atomic.Uint64
	unknown              atomic.Uint64
}

// Stats returns a snapshot of the Agent's counters.
func (a *Agent) Stats() Stats {
	a.outMu.Lock()
	dropped := a.out.dropped
	a.outMu.Unlock()
	c := &a.stats
	return Stats{
		Connected:        c.connected.Load(),
		Connects:         c.connects.Load(),
		Reconnects:       c.reconnects.Load(),
		CommandsReceived: c.received.Load(),
		Duplicates:       c.duplicates.Load(),
		Completed:        c.completed.Load(),
		Failed:           c.failed.Load(),
		ServerErrors:     c.serverErrors.Load(),
		UnknownFrames:    c.unknown.Load(),
		OutboxDropped:    dropped,
	}
}
