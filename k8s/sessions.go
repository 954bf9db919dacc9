package k8s

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"

	"github.com/streamspace/streamspace-realtime/models"
)

// SessionGVR is stream.space/v1alpha1 sessions.
var SessionGVR = schema.GroupVersionResource{Group: "stream.space", Version: "v1alpha1", Resource: "sessions"}

// nsCache is the informer of one namespace's Session resources. Its
// goroutines run until stop is closed; shutdown closes it and waits.
type nsCache struct {
	namespace string
	factory   dynamicinformer.DynamicSharedInformerFactory
	informer  cache.SharedIndexInformer
	stop      chan struct{}
	stopOnce  sync.Once

	mu      sync.Mutex
	lastErr error // the latest list/watch error, reported when a sync times out
}

func (nc *nsCache) shutdown() {
	nc.stopOnce.Do(func() { close(nc.stop) })
	nc.factory.Shutdown()
}

func (nc *nsCache) setErr(err error) {
	nc.mu.Lock()
	nc.lastErr = err
	nc.mu.Unlock()
}

func (nc *nsCache) err() error {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	return nc.lastErr
}

// ListSessions returns the Session resources of namespace, sorted by
// CreatedAt then ID. It reads a per-namespace informer cache, started on the
// first call and kept until Close, so only namespaced list/watch RBAC is needed
// and repeated calls cost no API request.
//
// The first call waits, bounded by ctx and Options.SyncTimeout, for the cache's
// first list. When SyncTimeout passes first, the informer is stopped and
// forgotten and ErrNotSynced is returned (joined with the last list error, if
// any), so the next call starts over with a fresh informer rather than waiting
// on one that may be stuck in backoff. When ctx ends first, the informer is
// kept for the next caller.
func (c *Client) ListSessions(ctx context.Context, namespace string) ([]models.Session, error) {
	if namespace == "" {
		return nil, fmt.Errorf("k8s: listing sessions: %w", errEmptyNamespace)
	}
	nc, err := c.namespaceCache(namespace)
	if err != nil {
		return nil, err
	}
	if err := c.waitSynced(ctx, nc); err != nil {
		return nil, err
	}
	objs := nc.informer.GetStore().List()
	out := make([]models.Session, 0, len(objs))
	for _, obj := range objs {
		if u, ok := obj.(*unstructured.Unstructured); ok {
			out = append(out, sessionFromObject(u))
		}
	}
	slices.SortFunc(out, func(a, b models.Session) int {
		if n := a.CreatedAt.Compare(b.CreatedAt); n != 0 {
			return n
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// namespaceCache returns the namespace's informer, creating and starting it
// on first use.
func (c *Client) namespaceCache(namespace string) (*nsCache, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("k8s: listing sessions in %q: %w", namespace, ErrClosed)
	}
	if nc, ok := c.caches[namespace]; ok {
		return nc, nil
	}

	factory := dynamicinformer.NewFilteredDynamicSharedInformerFactory(c.dyn, c.opts.ResyncPeriod, namespace, nil)
	nc := &nsCache{
		namespace: namespace,
		factory:   factory,
		informer:  factory.ForResource(SessionGVR).Informer(),
		stop:      make(chan struct{}),
	}
	log := c.log.With("namespace", namespace)
	// Both setters only fail once the informer has started; it has not.
	_ = nc.informer.SetWatchErrorHandlerWithContext(func(ctx context.Context, _ *cache.Reflector, err error) {
		nc.setErr(err)
		// A watch that ends or expires is routine: the informer relists.
		level := slog.LevelWarn
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
			level = slog.LevelDebug
		}
		log.Log(ctx, level, "k8s: session list/watch failed; retrying", "err", err)
	})
	_ = nc.informer.SetTransform(stripManagedFields)
	if _, err := nc.informer.AddEventHandler(idleTimeoutLogger(log)); err != nil {
		return nil, fmt.Errorf("k8s: watching sessions in %q: %w", namespace, err)
	}
	factory.Start(nc.stop)
	c.caches[namespace] = nc
	return nc, nil
}

// waitSynced waits for nc's first list; see ListSessions for the policy.
func (c *Client) waitSynced(ctx context.Context, nc *nsCache) error {
	synced := nc.informer.HasSyncedChecker().Done()
	select {
	case <-synced:
		return nil
	default:
	}
	timer := time.NewTimer(c.opts.SyncTimeout)
	defer timer.Stop()
	select {
	case <-synced:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("k8s: listing sessions in %q: waiting for first sync: %w", nc.namespace, ctx.Err())
	case <-nc.stop:
		if c.isClosed() {
			return fmt.Errorf("k8s: listing sessions in %q: %w", nc.namespace, ErrClosed)
		}
		return c.notSynced(nc)
	case <-timer.C:
		c.forget(nc)
		return c.notSynced(nc)
	}
}

func (c *Client) notSynced(nc *nsCache) error {
	if err := nc.err(); err != nil {
		return fmt.Errorf("k8s: listing sessions in %q: %w within %s: %w", nc.namespace, ErrNotSynced, c.opts.SyncTimeout, err)
	}
	return fmt.Errorf("k8s: listing sessions in %q: %w within %s", nc.namespace, ErrNotSynced, c.opts.SyncTimeout)
}

// forget removes nc from the registry, if it is still the registered cache
// of its namespace, and stops it.
func (c *Client) forget(nc *nsCache) {
	c.mu.Lock()
	if c.caches[nc.namespace] != nc {
		c.mu.Unlock()
		return
	}
	delete(c.caches, nc.namespace)
	c.stopping.Add(1)
	c.mu.Unlock()

	defer c.stopping.Done()
	nc.shutdown()
}

// stripManagedFields drops server-side-apply bookkeeping nobody here reads,
// the largest part of most cached objects.
func stripManagedFields(obj any) (any, error) {
	if u, ok := obj.(*unstructured.Unstructured); ok {
		u.SetManagedFields(nil)
	}
	return obj, nil
}
