package server

import (
	"fmt"
	"log/slog"

	"github.com/streamspace/streamspace-realtime/k8s"
)

// openKubernetes returns the session and log source's Kubernetes client: the configured one,
// one built from the kubeconfig (or the in-cluster config) when the session source is
// kubernetes, or nil for the database. owned is the client the server must close.
func openKubernetes(cfg Config, log *slog.Logger) (client, owned *k8s.Client, err error) {
	if cfg.Kubernetes != nil {
		return cfg.Kubernetes, nil, nil
	}
	if cfg.SessionSource != KubernetesSource {
		return nil, nil, nil
	}
	rc, err := k8s.LoadConfig(cfg.Kubeconfig)
	if err != nil {
		return nil, nil, fmt.Errorf("STREAMSPACE_SESSION_SOURCE=kubernetes: %w", err)
	}
	c, err := k8s.NewForConfig(rc, k8s.Options{Logger: log})
	if err != nil {
		return nil, nil, fmt.Errorf("STREAMSPACE_SESSION_SOURCE=kubernetes: %w", err)
	}
	log.Info("sessions and pod logs come from Kubernetes", "api", rc.Host)
	return c, c, nil
}
