// Package k8s is the Kubernetes view of StreamSpace: Session custom
// resources (stream.space/v1alpha1) and pod logs. It is the only package of
// the project that may import client-go, so the rest of the module builds and
// tests against models.Session values and io.ReadCloser streams alone.
package k8s

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// DefaultSyncTimeout bounds the first wait for a namespace's cache, so a
// missing CRD or RBAC rule fails a request instead of hanging it.
const DefaultSyncTimeout = 10 * time.Second

// Options configure a Client. Zero values take defaults.
type Options struct {
	// Logger receives watch errors and malformed-object notes; default slog.Default().
	Logger *slog.Logger
	// ResyncPeriod is the informers' resync period; default 0 (none).
	ResyncPeriod time.Duration
	// SyncTimeout is how long ListSessions waits for a namespace's first
	// sync; default DefaultSyncTimeout.
	SyncTimeout time.Duration
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.ResyncPeriod < 0 {
		o.ResyncPeriod = 0
	}
	if o.SyncTimeout <= 0 {
		o.SyncTimeout = DefaultSyncTimeout
	}
	return o
}

// Client reads sessions and pod logs from a Kubernetes cluster for the
// websocket Manager. A nil *Client means the database is the session source
// and agents relay logs.
//
// Concurrency contract: safe for concurrent use. The Client owns one informer
// per namespace it was asked about, started lazily by ListSessions; Close
// stops them all and waits for their goroutines, and is idempotent.
type Client struct {
	dyn   dynamic.Interface
	typed kubernetes.Interface
	opts  Options
	log   *slog.Logger

	mu     sync.Mutex
	closed bool
	caches map[string]*nsCache
	// stopping counts caches removed from the map by a failed sync that are
	// still shutting down, so Close can wait for them too.
	stopping sync.WaitGroup
}

// New builds a Client on existing clientsets (client-go's fake clientsets in
// tests).
func New(dyn dynamic.Interface, typed kubernetes.Interface, opts Options) *Client {
	opts = opts.withDefaults()
	return &Client{
		dyn:    dyn,
		typed:  typed,
		opts:   opts,
		log:    opts.Logger.With("component", "k8s"),
		caches: make(map[string]*nsCache),
	}
}

// NewForConfig builds the dynamic and typed clientsets from cfg.
func NewForConfig(cfg *rest.Config, opts Options) (*Client, error) {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("k8s: building dynamic client for %s: %w", cfg.Host, err)
	}
	typed, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("k8s: building typed client for %s: %w", cfg.Host, err)
	}
	return New(dyn, typed, opts), nil
}

// Open builds a Client from the kubeconfig as LoadConfig finds it, and reports the API
// server's address: what a server with Kubernetes as its session source starts with.
func Open(kubeconfig string, opts Options) (c *Client, host string, err error) {
	rc, err := LoadConfig(kubeconfig)
	if err != nil {
		return nil, "", err
	}
	c, err = NewForConfig(rc, opts)
	if err != nil {
		return nil, "", err
	}
	return c, rc.Host, nil
}

// LoadConfig returns the in-cluster config when kubeconfig is "" and the
// process runs in a pod; otherwise the current context of the kubeconfig file
// (with "", the usual $KUBECONFIG or ~/.kube/config), so the same binary runs
// in the cluster and on a laptop.
func LoadConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		cfg, inErr := rest.InClusterConfig()
		if inErr == nil {
			return cfg, nil
		}
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("k8s: not in a cluster (%v) and no usable default kubeconfig: %w", inErr, err)
		}
		return cfg, nil
	}
	rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: kubeconfig}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("k8s: loading kubeconfig %q: %w", kubeconfig, err)
	}
	return cfg, nil
}

// Close stops every informer the Client started and waits for their
// goroutines. It is idempotent, and a no-op on a nil Client so callers can
// defer it whichever source they chose.
func (c *Client) Close() {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.closed = true
	caches := c.caches
	c.caches = make(map[string]*nsCache)
	c.mu.Unlock()

	for _, nc := range caches {
		nc.shutdown()
	}
	c.stopping.Wait()
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}
