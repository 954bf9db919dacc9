package server

import (
	"errors"
	"fmt"
	"log/slog"
	"reflect"

	"github.com/streamspace/streamspace-realtime/websocket"
)

// KubernetesOpener builds the client of SessionSource "kubernetes" from a kubeconfig path
// (empty: the in-cluster config). closeFn releases the client; the server calls it at
// Shutdown. The server does not import package k8s itself: client-go initializes its API
// machinery in every process that links it, about half of an idle server's memory, so only a
// binary that may read Kubernetes supplies an opener (cmd/streamspace-realtime does when built
// with -tags kubernetes).
type KubernetesOpener func(kubeconfig string, log *slog.Logger) (client websocket.KubernetesClient, closeFn func(), err error)

// errNoKubernetes is the start of a server configured to read Kubernetes without the means to.
var errNoKubernetes = errors.New("STREAMSPACE_SESSION_SOURCE=kubernetes: this binary was built without Kubernetes support; " +
	"build it with -tags kubernetes (the container image is)")

// checkKubernetes refuses SessionSource "kubernetes" when there is neither a client nor an
// opener, before New opens anything.
func (c Config) checkKubernetes() error {
	if c.SessionSource == KubernetesSource && !hasKubernetes(c.Kubernetes) && c.OpenKubernetes == nil {
		return errNoKubernetes
	}
	return nil
}

// openKubernetes returns the session and log source's Kubernetes client: the configured one,
// one the opener builds from the kubeconfig (or the in-cluster config) when the session source
// is kubernetes, or nil for the database. closeFn, when not nil, releases the client the
// server built; a caller's client stays the caller's.
func openKubernetes(cfg Config, log *slog.Logger) (client websocket.KubernetesClient, closeFn func(), err error) {
	if hasKubernetes(cfg.Kubernetes) {
		return cfg.Kubernetes, nil, nil
	}
	if cfg.SessionSource != KubernetesSource {
		return nil, nil, nil
	}
	if cfg.OpenKubernetes == nil {
		return nil, nil, errNoKubernetes
	}
	c, closeFn, err := cfg.OpenKubernetes(cfg.Kubeconfig, log)
	if err != nil {
		return nil, nil, fmt.Errorf("STREAMSPACE_SESSION_SOURCE=kubernetes: %w", err)
	}
	if !hasKubernetes(c) {
		if closeFn != nil {
			closeFn()
		}
		return nil, nil, errors.New("STREAMSPACE_SESSION_SOURCE=kubernetes: the Kubernetes opener returned no client")
	}
	return c, closeFn, nil
}

// hasKubernetes reports whether c is a client: not nil, and no nil pointer (a nil *k8s.Client
// in Config.Kubernetes means none, as it did when the field was a pointer).
func hasKubernetes(c websocket.KubernetesClient) bool {
	if c == nil {
		return false
	}
	v := reflect.ValueOf(c)
	return v.Kind() != reflect.Pointer || !v.IsNil()
}
