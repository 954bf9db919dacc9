// Package cluster carries what replicas of the server share: each organization's ordered event
// stream (Bus), and which replica holds each agent's connection together with the messages
// replicas send one another about agents (Directory). The in-process implementations serve a
// single node; the Redis ones (NewRedis) serve several replicas with the same contracts, and one
// test suite runs against both.
package cluster

import (
	"context"
	"errors"
	"strconv"
)

var (
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("cluster: closed")
	// ErrLocalOnly: the shared transport (Redis) failed, and the call was served on this replica
	// only. A Publish or Broadcast that returns it reached this replica's handlers; other
	// replicas missed it. The result returned beside it is valid.
	ErrLocalOnly = errors.New("cluster: shared transport unavailable, served on this replica only")
)

// Position names a place in an organization's event stream. Epoch names the
// stream's incarnation: offsets are only comparable within one epoch.
type Position struct {
	Epoch  string
	Offset uint64
}

// String renders the position as the `since` parameter of PROTOCOL.md 2.4.
func (p Position) String() string {
	return p.Epoch + ":" + strconv.FormatUint(p.Offset, 10)
}

// After reports whether p comes after q in the same epoch. Positions of different epochs are
// not ordered: a new epoch means the stream started over.
func (p Position) After(q Position) bool {
	return p.Epoch != q.Epoch || p.Offset > q.Offset
}

// Message is one entry of an organization's stream as delivered to a replica.
type Message struct {
	OrgID string
	Position
	// Payload is opaque to the bus; the publisher's encoding travels as is.
	Payload []byte
}

// Handler receives the messages of the organizations this replica watches, in offset order per
// organization. It runs on the bus's delivery path: it must not block.
type Handler func(Message)

// Bus is an ordered, per-organization publish/subscribe stream shared by all replicas.
// Implementations are safe for concurrent use.
type Bus interface {
	// Publish appends payload to orgID's stream and hands it to the handlers of every replica
	// that watches orgID. It returns the position the message was given.
	Publish(ctx context.Context, orgID string, payload []byte) (Position, error)
	// Position returns the position of the last message of orgID's stream.
	Position(ctx context.Context, orgID string) (Position, error)
	// Watch declares that this replica has clients of orgID. Once it returns, every message
	// published to orgID later reaches the handlers; the returned func withdraws the interest
	// and is idempotent. A replica receives only the organizations it watches, so one
	// organization's events never travel to a replica with no client of it.
	Watch(ctx context.Context, orgID string) (unwatch func(), err error)
	// Subscribe adds a handler; the returned func removes it and is idempotent.
	Subscribe(h Handler) (unsubscribe func())
	// Close stops deliveries; later Publish calls return ErrClosed.
	Close() error
}
