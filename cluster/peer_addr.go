package cluster

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// PeerLocator finds the address at which another replica accepts direct links from its peers
// (package peer): a viewer's replica relays a desktop to the replica holding the session's
// agent that way, never through the shared store.
type PeerLocator interface {
	// PeerAddr returns replica's published address; ok is false when it published none or its
	// record expired (the replica is gone).
	PeerAddr(ctx context.Context, replica string) (addr string, ok bool, err error)
}

var (
	_ PeerLocator = (*RedisDirectory)(nil)
	_ PeerLocator = (*MemoryDirectory)(nil)
)

// peerKey holds one replica's address. It lives under the agents' hash tag, beside the claims
// it is read with, and expires with them: a replica that died stops being dialled once its
// agents are no longer its.
func (d *RedisDirectory) peerKey(replica string) string {
	return d.r.opts.Prefix + ":{agents}:peer:" + replica
}

// publishPeerAddr (re)writes this replica's address with the ownership TTL. It runs with every
// refresh of the claims, so a Redis that restarted empty has it again within a third of the TTL.
func (d *RedisDirectory) publishPeerAddr(ctx context.Context) error {
	addr := d.r.opts.PeerAddr
	if addr == "" {
		return nil
	}
	if err := d.r.client.Set(ctx, d.peerKey(d.r.opts.Replica), addr, d.r.opts.OwnershipTTL).Err(); err != nil {
		d.r.fail("peer_addr")
		return fmt.Errorf("publish peer address: %w", err)
	}
	return nil
}

// PeerAddr returns replica's published peer address.
func (d *RedisDirectory) PeerAddr(ctx context.Context, replica string) (string, bool, error) {
	if replica == "" {
		return "", false, nil
	}
	addr, err := d.r.client.Get(ctx, d.peerKey(replica)).Result()
	if errors.Is(err, redis.Nil) {
		return "", false, nil
	}
	if err != nil {
		d.r.fail("peer_addr")
		return "", false, fmt.Errorf("read peer address of %s: %w", replica, err)
	}
	return addr, true, nil
}

// PeerAddr reports none: a single process has no peers.
func (d *MemoryDirectory) PeerAddr(context.Context, string) (string, bool, error) {
	return "", false, nil
}
