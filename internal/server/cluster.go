package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/streamspace/streamspace-realtime/cluster"
)

// clusterConnectTimeout bounds the first contact with Redis at start.
const clusterConnectTimeout = 10 * time.Second

// redisCluster is this replica's membership of a cluster: the Redis client and the cluster
// node (bus, agent directory) built on it.
type redisCluster struct {
	client redis.UniversalClient
	node   *cluster.Redis
}

// openCluster connects to the configured Redis, or explains why this replica refuses to
// start: serving alone would split the cluster.
func openCluster(ctx context.Context, cfg Config, log *slog.Logger, reg prometheus.Registerer) (*redisCluster, error) {
	client, err := cluster.NewRedisClient(cfg.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("STREAMSPACE_REDIS_URL: %w", err)
	}
	cluster.SetRedisLogger(log)
	ctx, cancel := context.WithTimeout(ctx, clusterConnectTimeout)
	defer cancel()
	node, err := cluster.NewRedis(ctx, client, cluster.RedisOptions{
		Replica:      cfg.Replica,
		Prefix:       cfg.RedisPrefix,
		OwnershipTTL: cfg.AgentOwnershipTTL,
		History:      cfg.history(),
		PeerAddr:     cfg.PeerAdvertiseAddr,
		Logger:       log,
		Registerer:   reg,
	})
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("STREAMSPACE_REDIS_URL: %w; refusing to start rather than serve as a lone replica", err)
	}
	log.Info("joined the cluster through redis", "replica", cfg.Replica, "prefix", cfg.RedisPrefix)
	return &redisCluster{client: client, node: node}, nil
}

// ready reports whether Redis answers and this replica's subscriptions are in place.
func (c *redisCluster) ready(ctx context.Context) error { return c.node.Ready(ctx) }

func (c *redisCluster) close() error {
	return errors.Join(c.node.Close(), c.client.Close())
}
