// Package cluster carries what replicas of the server must share: each
// organization's ordered event stream today, agent ownership and command
// deliveries as the scale-out work lands. The in-process Bus serves a single
// node; a Redis Bus implements the same interface for several replicas.
package cluster

import (
	"context"
	"errors"
	"strconv"
)

// ErrClosed is returned by a Bus after Close.
var ErrClosed = errors.New("cluster: bus closed")

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

// Message is one entry of an organization's stream as delivered to a replica.
type Message struct {
	OrgID string
	Position
	// Payload is opaque to the bus; the publisher's encoding travels as is.
	Payload []byte
}

// Handler receives every message of every organization, in offset order per
// organization. It runs on the bus's delivery path: it must not block.
type Handler func(Message)

// Bus is an ordered, per-organization publish/subscribe stream shared by all
// replicas. Implementations are safe for concurrent use.
type Bus interface {
	// Publish appends payload to orgID's stream and hands it to the handlers
	// of every replica. It returns the position the message was given.
	Publish(ctx context.Context, orgID string, payload []byte) (Position, error)
	// Position returns the position of the last message of orgID's stream.
	Position(ctx context.Context, orgID string) (Position, error)
	// Subscribe adds a handler; the returned func removes it and is idempotent.
	Subscribe(h Handler) (unsubscribe func())
	// Close stops deliveries; later Publish calls return ErrClosed.
	Close() error
}
