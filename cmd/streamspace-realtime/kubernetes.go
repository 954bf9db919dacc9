//go:build kubernetes

package main

import (
	"fmt"
	"log/slog"

	"github.com/streamspace/streamspace-realtime/k8s"
	"github.com/streamspace/streamspace-realtime/websocket"
)

// Kubernetes support, in a binary built with -tags kubernetes (the container image is): the
// only file of the command that imports package k8s, so that a binary built without the tag
// links no client-go and does not pay for its initialization (docs/ARCHITECTURE.md).
func init() { openKubernetes = openK8s }

// openK8s builds the Kubernetes client of --session-source kubernetes from the kubeconfig
// (empty: the in-cluster config, else $KUBECONFIG or ~/.kube/config).
func openK8s(kubeconfig string, log *slog.Logger) (websocket.KubernetesClient, func(), error) {
	rc, err := k8s.LoadConfig(kubeconfig)
	if err != nil {
		return nil, nil, err
	}
	c, err := k8s.NewForConfig(rc, k8s.Options{Logger: log})
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes client for %s: %w", rc.Host, err)
	}
	log.Info("sessions and pod logs come from Kubernetes", "api", rc.Host)
	return c, c.Close, nil
}
