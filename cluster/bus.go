// Package cluster is what the replicas of a StreamSpace Realtime deployment share, so that
// browsers and agents connected to different replicas behave as if they were on one:
//
//   - a Bus: each organization's ordered event stream, with history a reconnecting browser
//     resumes from (websocket.Config.Bus);
//   - a Directory: which replica holds each agent's connection, and the messages replicas send
//     one another about agents (websocket.AgentHubConfig.Directory);
//   - Leases: counts of what all replicas hold (browser connections per user, per
//     organization) against cluster-wide limits.
//
// NewMemoryBus and NewMemoryDirectory serve a single process, and are what the websocket
// package uses when given none. NewRedis serves several replicas through one Redis, with the
// same contracts; NewRedisClient makes its go-redis client from a URL.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// checkReplay rejects the replays no stream can serve, before any lookup.
func checkReplay(since, until Position) error {
	if since.Epoch != until.Epoch || since.Offset > until.Offset {
		return fmt.Errorf("replay from %s to %s: %w", since, until, ErrHistoryGone)
	}
	return nil
}

var (
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("cluster: closed")
	// ErrLocalOnly: the shared transport (Redis) failed, and the call was served on this replica
	// only. A Publish or Broadcast that returns it reached this replica's handlers; other
	// replicas missed it. The result returned beside it is valid.
	ErrLocalOnly = errors.New("cluster: shared transport unavailable, served on this replica only")
	// ErrHistoryGone: the stream cannot be replayed from the position asked for: it is of
	// another epoch, ahead of the stream, or older than the retained history.
	ErrHistoryGone = errors.New("cluster: position not in the retained history")
)

// History bounds what each organization's stream retains so that a browser that reconnects with
// its last position (the `since` parameter, docs/PROTOCOL.md 2.4) is sent what it missed: the last
// Size messages, and beyond them those younger than TTL, up to Max in all; at most OrgBytes of
// them per organization, and at most TotalBytes for all organizations together. The byte
// bounds come first: an organization publishing large messages keeps fewer of them. When the
// total is over, only the organizations holding more than their share of it (TotalBytes
// divided by the number of organizations holding history) are trimmed, down to that share, so
// a large organization never pushes out a smaller one's history. A message counts as its
// payload's length plus HistoryEntryOverhead. Zero fields take the defaults; a negative Size
// keeps no history. It is given as RedisOptions.History, to NewMemoryBusWithHistory, or as
// websocket.Config.History for the bus a Manager makes itself.
type History struct {
	Size       int
	TTL        time.Duration
	Max        int
	OrgBytes   int64
	TotalBytes int64
}

// Defaults of History.
const (
	DefaultHistorySize       = 1000
	DefaultHistoryTTL        = 5 * time.Minute
	DefaultHistoryMax        = 10000
	DefaultHistoryOrgBytes   = 4 << 20
	DefaultHistoryTotalBytes = 256 << 20
	// HistoryEntryOverhead is what one retained message counts for beyond its payload: its
	// bookkeeping in memory (or in Redis).
	HistoryEntryOverhead = 64
)

func (h History) withDefaults() History {
	if h.Size == 0 {
		h.Size = DefaultHistorySize
	}
	if h.TTL <= 0 {
		h.TTL = DefaultHistoryTTL
	}
	if h.Max <= 0 {
		h.Max = DefaultHistoryMax
	}
	if h.Max < h.Size {
		h.Max = h.Size
	}
	if h.OrgBytes <= 0 {
		h.OrgBytes = DefaultHistoryOrgBytes
	}
	if h.TotalBytes <= 0 {
		h.TotalBytes = DefaultHistoryTotalBytes
	}
	if h.TotalBytes < h.OrgBytes {
		h.OrgBytes = h.TotalBytes
	}
	return h
}

// entryBytes is what a retained message of payload counts for against the byte bounds.
func entryBytes(payload []byte) int64 { return int64(len(payload)) + HistoryEntryOverhead }

// fairShare is what each of n organizations holding history may keep when the total is over.
func (h History) fairShare(n int64) int64 {
	if n < 1 {
		n = 1
	}
	return h.TotalBytes / n
}

// disabled reports whether no history is kept.
func (h History) disabled() bool { return h.Size < 0 }

// Position names a place in an organization's event stream. Epoch names the
// stream's incarnation: offsets are only comparable within one epoch.
type Position struct {
	Epoch  string
	Offset uint64
}

// String renders the position as "<epoch>:<offset>", the form of a browser's `since`
// parameter (docs/PROTOCOL.md 2.4), which websocket.ParseSince reads back.
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

// Bus is an ordered, per-organization publish/subscribe stream shared by all replicas: an event
// published on any replica reaches the browsers of its organization on every replica, in the
// same order, each event numbered with its Position. MemoryBus serves one process, RedisBus
// several replicas. Implementations are safe for concurrent use.
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
	// History returns orgID's messages after since up to and including until, in order, for a
	// client resuming from since whose live deliveries start after until. It returns
	// ErrHistoryGone when since is of another epoch than until, after it, or older than what
	// the stream retains.
	History(ctx context.Context, orgID string, since, until Position) ([]Message, error)
	// Subscribe adds a handler; the returned func removes it and is idempotent.
	Subscribe(h Handler) (unsubscribe func())
	// Close stops deliveries; later Publish calls return ErrClosed.
	Close() error
}
