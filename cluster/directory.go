package cluster

import (
	"context"
	"errors"
)

// ErrUnknownReplica: a message was sent to a replica that is not listening (gone, or never
// was). Messages about durable state (a command's wake-up) may be dropped on it: the state
// waits in the database for the agent's next connection.
var ErrUnknownReplica = errors.New("cluster: replica not listening")

// Owner names the holder of an agent's connection: the replica, and the connection's
// generation, which tells two connections of one agent apart.
type Owner struct {
	Replica    string
	Generation string
}

// Kinds of ReplicaMessage the cluster package itself sends.
const (
	// KindLost tells a replica that another connection of the agent (Generation names the one
	// that lost) now holds the agent elsewhere, so the old one should be closed.
	KindLost = "lost"
)

// ReplicaMessage is a message about an agent from one replica to another (or to all). Kind and
// Payload belong to the sender; the directory moves them as they are.
type ReplicaMessage struct {
	Kind       string `json:"k"`
	AgentID    string `json:"a,omitempty"`
	Generation string `json:"g,omitempty"`
	Payload    []byte `json:"p,omitempty"`
}

// Directory records which replica holds each agent's connection and carries messages between
// replicas, so that a command accepted on any replica reaches the agent wherever it is
// connected. MemoryDirectory serves one process, RedisDirectory several replicas. Claims are made by the replica that accepted the connection; the newest claim wins,
// and a release only removes the claim it names (compare-and-delete on replica and
// generation), so a late cleanup of an old connection never erases the agent's new home.
// Implementations are safe for concurrent use.
type Directory interface {
	// Replica names this replica.
	Replica() string
	// Claim records that this replica now holds agentID's connection of this generation. The
	// claim is kept alive while this replica runs, and restored if the shared store lost it;
	// a replica that held an older connection of the agent gets a KindLost message. An error
	// means the shared store did not take the claim yet; it is retried in the background.
	Claim(ctx context.Context, agentID, generation string) error
	// Release removes the claim if it is still this replica's of this generation, and reports
	// whether it did.
	Release(ctx context.Context, agentID, generation string) (bool, error)
	// Lookup returns the holder of agentID's connection, if any replica holds one.
	Lookup(ctx context.Context, agentID string) (Owner, bool, error)
	// Lookups is Lookup for many agents; agents no replica holds are absent from the map.
	Lookups(ctx context.Context, agentIDs []string) (map[string]Owner, error)
	// Connected lists the agents some replica holds, in no order.
	Connected(ctx context.Context) ([]string, error)
	// Send delivers msg to the handlers of one replica (this one included).
	Send(ctx context.Context, replica string, msg ReplicaMessage) error
	// Broadcast delivers msg to the handlers of every replica, this one included, once each.
	Broadcast(ctx context.Context, msg ReplicaMessage) error
	// Subscribe adds a handler of the messages sent to this replica; the returned func removes
	// it and is idempotent. Handlers run on the delivery path and must not block.
	Subscribe(h func(ReplicaMessage)) (unsubscribe func())
	// Close releases nothing in the shared store (claims expire on their own) and stops
	// deliveries and background work.
	Close() error
}
