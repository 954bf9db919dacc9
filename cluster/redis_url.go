package cluster

import (
	"fmt"
	"net/url"

	"github.com/redis/go-redis/v9"
)

// NewRedisClient makes the go-redis client a Redis URL names:
//   - redis://[user:pass@]host:port[/db] (rediss:// for TLS): one server;
//   - the same with ?master_name=NAME (and more sentinels as &addr=host:port): Sentinel;
//   - the same with one or more &addr=host:port and no master_name: Cluster.
//
// The remaining query parameters are go-redis's (dial_timeout, pool_size, …).
func NewRedisClient(rawURL string) (redis.UniversalClient, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", err)
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, fmt.Errorf("redis url: scheme %q, want redis or rediss", u.Scheme)
	}
	q := u.Query()
	switch {
	case q.Has("master_name"):
		o, err := redis.ParseFailoverURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("redis sentinel url: %w", err)
		}
		return redis.NewFailoverClient(o), nil
	case q.Has("addr"):
		o, err := redis.ParseClusterURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("redis cluster url: %w", err)
		}
		return redis.NewClusterClient(o), nil
	default:
		o, err := redis.ParseURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("redis url: %w", err)
		}
		return redis.NewClient(o), nil
	}
}
